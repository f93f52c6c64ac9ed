"""The default sanity rules: answers a problem's own logic rejects."""

from agent.prompts import SanityFacts, sanity_rules


def test_sanity_flags_a_do_nothing_minimization_whatever_the_wording() -> None:
    staffing = SanityFacts(
        question="A project requires 500 hours of labor. Minimize the total number of workers.",
        sense="minimize",
        objective=0.0,
        values={"full_time": 0.0, "part_time": 0.0},
        domains={"full_time": "integer", "part_time": "integer"},
    )
    assert any("does nothing" in concern for concern in sanity_rules(staffing))
    working = staffing.model_copy(update={"objective": 63.0, "values": {"full_time": 62.0, "part_time": 1.0}})
    assert sanity_rules(working) == []
