"""Back-translation: number extraction and matching, the facts an instance is written from, the
story checker, and the refinement loop against the scripted loopback LLM server."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.synthesis.backtranslate import (
    StoryFrame,
    StoryWriter,
    check_story,
    clean_patch,
    clean_story,
    framed_story,
    instance_facts,
    splice,
    story_prompt,
)
from agent.synthesis.families import FAMILIES, MAX_LEVEL, SynthInstance, get_family
from agent.synthesis.numbers import extract_numbers, match_numbers, number_signature
from trace_graph.llm.client import LLMClient
from trace_graph.llm.scripted_server import ChatRequest, ScriptedLLMServer


# --- numbers -------------------------------------------------------------------------------------
def values(text: str) -> list[float]:
    return [n.value for n in extract_numbers(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It holds 1,200 units.", [1200.0]),
        ("A cake sells for $3.50 each.", [3.5]),
        ("Costs rose by 15% this year.", [15.0]),
        ("We need twelve drivers and twenty-five trucks.", [12.0, 25.0]),
        ("A budget of 2.5 million dollars, or $12k per month.", [2.5e6, 12_000.0]),
        ("Shipments take 3-5 days.", [3.0, 5.0]),
        ("The temperature fell to -7 degrees.", [-7.0]),
        ("Plant A1 and quarter Q3 are busy.", []),
        ("two hundred boxes", [200.0]),
        ("The price is 45. The end.", [45.0]),
    ],
)
def test_numbers_are_extracted_as_written(text: str, expected: list[float]) -> None:
    assert values(text) == expected


def test_percent_and_ordinals_are_marked() -> None:
    first, second, third = extract_numbers("Returns of 7.5 percent, the 3rd site, and 0.4.")
    assert first.percent and first.candidates() == (7.5, 0.075)
    assert second.kind == "ordinal" and second.value == 3
    assert not third.percent and third.candidates() == (0.4,)


def test_list_item_numbers_are_positions_not_data() -> None:
    """Seen from the real 1.5B model: the facts restated as a numbered list."""
    numbers = extract_numbers("The facts:\n1. Portland can ship 220 cases.\n  2) Boston can ship 3.5 tons.\n")
    assert [(n.value, n.kind) for n in numbers] == [
        (1, "ordinal"),
        (220, "digits"),
        (2, "ordinal"),
        (3.5, "digits"),
    ]
    assert match_numbers(numbers, required=[220, 3.5]).ok


def test_matching_finds_missing_and_invented_numbers() -> None:
    numbers = extract_numbers("Each chair earns $45 and uses 2 hours; 7.5% of 2024 is interesting.")
    match = match_numbers(numbers, required=[45, 2, 0.075, 120], allowed=[0, 1])
    assert match.missing == [120]
    assert [n.text for n in match.invented] == ["2024"]
    assert not match.ok


def test_small_count_words_and_ordinals_are_never_invented() -> None:
    numbers = extract_numbers("The two plants ship on the 1st and 2nd shift; forty boxes fell off.")
    match = match_numbers(numbers, required=[], allowed=[0, 1])
    assert [n.text for n in match.invented] == ["forty"]


def test_number_signature_is_canonical() -> None:
    assert number_signature("It costs $1,200 or 1200.0, plus 7.5%; the 2nd time.") == {"1200", "7.5"}


# --- facts and the checker -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_facts_contain_every_required_number(name: str) -> None:
    for level in range(1, MAX_LEVEL + 1):
        instance = get_family(name).generate(seed=2, level=level)
        facts = instance_facts(instance)
        assert facts.required, "every family has data"
        check = check_story(facts.text + "\nWhat is the best plan?", facts)
        assert check.passed, f"{name} level {level}: missing {check.missing}, invented {check.invented}"
        # short enough for a 4k-context model: at ~3 characters per token (digits tokenize poorly)
        # the prompt stays near 1,300 tokens, leaving room for feedback and a 900-token story
        assert len(story_prompt(facts, "a teacher writing a homework problem")) < 4000


def bakery() -> SynthInstance:
    """A level-1 production-mix instance: two products, two resources."""
    return get_family("production_mix").generate(seed=0, level=1)


def first_availability(instance: SynthInstance) -> float:
    """The first resource's availability: a value the story states exactly once."""
    available = instance.formulation.parameter_named("available")
    assert available is not None and isinstance(available.value, dict)
    value = float(next(iter(available.value.values())))
    (entry,) = [r for r in instance_facts(instance).required if r.value == value]
    assert len(entry.meaning) == 1  # no other datum shares the value
    return value


def story_for(instance: SynthInstance, skip: float | None = None, extra: str = "") -> str:
    """A prose story of a level-1 production-mix instance, optionally leaving one number out."""
    f = instance.formulation

    def show(value: float) -> str:
        return "" if skip is not None and value == skip else f"{value:g}"

    products = f.sets[0].elements
    resources = f.sets[1].elements
    profit = f.parameter_named("profit").value
    usage = f.parameter_named("usage").value
    available = f.parameter_named("available").value
    assert isinstance(profit, dict) and isinstance(usage, dict) and isinstance(available, dict)
    parts = [f"I run {instance.domain} that makes {' and '.join(map(str, products))}."]
    for p in products:
        needs = ", ".join(f"{show(usage[r][p])} {r}" for r in resources)
        parts.append(f"Each unit of {p} earns ${show(profit[p])} and needs {needs}.")
    parts.append(
        "Each week we have "
        + " and ".join(f"{show(available[r])} {r}" for r in resources)
        + " available."
        + extra
    )
    whole = f.variables[0].domain == "integer"
    parts.append("Only whole units can be made." if whole else "Fractional amounts are fine.")
    parts.append("How many of each should we make to maximize total weekly profit?")
    return " ".join(parts)


def test_checker_accepts_a_faithful_story_with_formatted_numbers() -> None:
    instance = bakery()
    facts = instance_facts(instance)
    story = story_for(instance)
    assert check_story(story, facts).passed
    big = max(r.value for r in facts.required)
    formatted = story.replace(f"{big:g} ", f"{big:,.2f} ", 1)  # "1,200.00"-style
    assert check_story(formatted, facts).passed


def test_checker_catches_a_missing_number_and_names_it() -> None:
    instance = bakery()
    facts = instance_facts(instance)
    gone = first_availability(instance)
    check = check_story(story_for(instance, skip=gone), facts)
    assert not check.passed
    assert [m.value for m in check.missing] == [gone]
    feedback = check.feedback(facts)
    assert f"{gone:g}" in feedback and "available" in feedback


def test_checker_catches_invented_numbers_and_a_missing_question() -> None:
    instance = bakery()
    facts = instance_facts(instance)
    story = story_for(instance, extra=" We have been open since 1987 and employ 37 bakers.")
    check = check_story(story, facts)
    assert not check.passed and check.invented == ["1987", "37"]
    assert "1987, 37" in check.feedback(facts)
    no_question = check_story(story_for(instance).replace("?", "."), facts)
    assert not no_question.passed and not no_question.asks_question
    assert "question" in no_question.feedback(facts)


def test_the_story_must_say_whether_amounts_are_whole_or_fractional() -> None:
    continuous = bakery()
    facts = instance_facts(continuous)
    silent = story_for(continuous).replace(" Fractional amounts are fine.", "")
    check = check_story(silent, facts)
    assert not check.passed and check.unstated_fractional == ["units of each product to make per week"]
    assert "may be fractional" in check.feedback(facts)
    integer = get_family("production_mix").generate(seed=0, level=3)
    integer_facts = instance_facts(integer)
    assert integer_facts.whole and not integer_facts.fractional
    base = check_story("Make chairs and tables. How many?", integer_facts)
    assert base.unstated_whole == integer_facts.whole
    assert check_story("Chairs need not be whole. How many?", integer_facts).unstated_whole
    assert not check_story("Only whole chairs count. How many?", integer_facts).unstated_whole


def test_a_patch_goes_before_the_question_without_echoed_sentences() -> None:
    story = "A plant makes monitors.\n\nEach needs 4 hours. How many should it make?"
    echoed = "A plant makes monitors. Each needs 4 hours. Monitors earn $90. How many should it make?"
    assert (
        splice(story, echoed)
        == "A plant makes monitors.\n\nEach needs 4 hours. Monitors earn $90. How many should it make?"
    )
    assert splice(story, "Each needs 4 hours.") == story
    assert (
        splice("A plant makes monitors.", "They earn $90. How many?")
        == "A plant makes monitors. They earn $90. How many?"
    )
    assert (
        clean_patch("New sentences:\n- Monitors earn $90.\n- Phones earn $50.")
        == "Monitors earn $90. Phones earn $50."
    )


def test_clean_story_drops_labels_and_solutions() -> None:
    raw = "**Problem:** A shop sells pens. How many?\n\nSolution: Let x be the pens..."
    assert clean_story(raw) == "A shop sells pens. How many?"
    # what the real 1.5B model wrote for a transportation instance: a story, then a model
    story = "A company ships cases. What is the cheapest plan?"
    solving = story + "\n\n1. **Define Variables:**\n   - Let \\( P_m \\) be"
    assert clean_story(solving) == story


def test_a_story_carrying_its_own_model_fails_the_check() -> None:
    instance = bakery()
    facts = instance_facts(instance)
    for leak in (" Let x be the chairs made.", " Maximize 3x + 5y subject to the limits.", " Use \\( x \\)."):
        check = check_story(story_for(instance, extra=leak), facts)
        assert not check.passed and check.formulation_leak, leak
        assert "equations" in check.feedback(facts)


# --- the refinement loop with the scripted LLM server ----------------------------------------------
def test_a_story_missing_a_number_is_refined_with_feedback_naming_it(scripted_llm: ScriptedLLMServer) -> None:
    instance = bakery()
    facts = instance_facts(instance)
    gone = first_availability(instance)
    meaning = next(r.meaning[0] for r in facts.required if r.value == gone)
    (line,) = [line for line in facts.lines if line.startswith("Amount of each resource available")]
    draft = story_for(instance, skip=gone)
    patch = f"Sentences:\n- On top of that, {gone:g} hours of the first resource are there each week."

    def responder(request: ChatRequest) -> str:
        return patch if "Facts to add:" in request.last_user_text else "Problem: " + draft

    scripted_llm.responder = responder
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, max_rounds=3).write(instance)
    assert result.passed and result.rounds == 2 and result.llm_calls == 2
    assert [r.strategy for r in result.history] == ["fresh", "patch"]
    assert [m.value for m in result.history[0].check.missing] == [gone]
    # the patch goes in before the closing question
    question = "How many of each should we make to maximize total weekly profit?"
    assert result.story == draft.replace(question, f"On top of that, {gone:g} hours of the first resource "
                                                   f"are there each week. {question}")  # fmt: skip
    first, second = scripted_llm.requests
    assert "Facts:" in first.last_user_text and f"{gone:g}" in first.last_user_text
    # the second request shows the draft, names the missing number with its meaning, and quotes
    # the fact line that holds it
    assert [m.role for m in second.messages] == ["system", "user"]
    assert draft in second.last_user_text
    assert f"{gone:g} ({meaning})" in second.last_user_text and line in second.last_user_text
    assert result.model == "scripted-model" and result.persona


def test_a_patch_asks_for_unstated_integrality_and_a_missing_question(
    scripted_llm: ScriptedLLMServer,
) -> None:
    instance = bakery()
    facts = instance_facts(instance)
    bare = (
        story_for(instance)
        .replace(" Fractional amounts are fine.", "")
        .replace(" How many of each should we make to maximize total weekly profit?", "")
    )
    scripted_llm.add(bare, "Any fraction of a unit may be made. What plan maximizes total weekly profit?")
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, complete_structure=False).write(instance)
    assert result.passed and result.rounds == 2
    first_check = result.history[0].check
    assert not first_check.asks_question and first_check.unstated_fractional
    request = scripted_llm.requests[1].last_user_text
    assert "fractional amounts are allowed" in request and facts.goal in request
    assert result.story is not None and result.story.startswith(bare) and result.story.endswith("profit?")


def test_a_poor_draft_is_redone_from_scratch_with_the_feedback(scripted_llm: ScriptedLLMServer) -> None:
    instance = bakery()
    leaked = story_for(instance) + " Let x be the number of units made."
    scripted_llm.add(leaked, story_for(instance))
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client).write(instance)
    assert result.passed and result.rounds == 2 and result.history[0].check.formulation_leak
    second = scripted_llm.requests[1]
    assert [m.role for m in second.messages] == ["system", "user"]  # the leaked draft is not shown
    text = second.last_user_text
    assert "equations" in text and text.index("rejected") < text.index("Facts:")


def test_unstated_integrality_and_question_are_completed_without_a_round(
    scripted_llm: ScriptedLLMServer,
) -> None:
    instance = bakery()
    bare = (
        story_for(instance)
        .replace(" Fractional amounts are fine.", "")
        .replace(" How many of each should we make to maximize total weekly profit?", "")
    )
    scripted_llm.add(bare)
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client).write(instance)
    assert result.passed and result.rounds == 1 and scripted_llm.request_count == 1
    assert result.history[0].strategy == "fresh+completed"
    assert result.story == (
        f"{bare} The units of each product to make per week may be fractional. "
        "What plan will maximize the total profit per week?"
    )


@pytest.mark.parametrize(("refine", "roles"), [("edit", 4), ("fresh", 2), ("patch", 2)])
def test_the_refinement_strategy_can_be_forced(
    scripted_llm: ScriptedLLMServer, refine: str, roles: int
) -> None:
    instance = bakery()
    whole = story_for(instance)
    first = "Nothing useful here?"
    scripted_llm.add(first, whole.removesuffix(first) if refine == "patch" else whole)
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, refine=refine).write(instance)  # type: ignore[arg-type]
    assert result.passed and len(scripted_llm.requests[1].messages) == roles
    assert result.history[1].strategy == refine


def test_the_writer_gives_up_after_the_allowed_rounds(scripted_llm: ScriptedLLMServer) -> None:
    instance = bakery()
    scripted_llm.responder = lambda request: story_for(instance, extra=" It opened in 1987.")
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, max_rounds=2).write(instance)
    assert not result.passed and result.story is None and result.rounds == 2
    assert scripted_llm.request_count == 2
    assert all(r.check.invented == ["1987"] for r in result.history)
    assert "1987" in scripted_llm.requests[1].last_user_text


def test_a_refused_request_ends_the_item_with_an_error(scripted_llm: ScriptedLLMServer) -> None:
    from trace_graph.llm.scripted_server import ScriptedReply

    scripted_llm.add(ScriptedReply.error(400, "context length exceeded"))
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client).write(bakery())
    assert not result.passed and result.rounds == 0 and result.error and "context length" in result.error


# --- framed stories: the model writes the opening and the question, the facts stay as written ------
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_framed_story_of_every_family_passes_the_checker_with_a_number_free_frame(name: str) -> None:
    for level in (1, MAX_LEVEL):
        instance = get_family(name).generate(seed=3, level=level)
        facts = instance_facts(instance)
        frame = StoryFrame(
            opening="We run this operation and must plan it.", question="What is the best plan"
        )
        story = framed_story(facts, frame)
        assert check_story(story, facts).passed, (name, level, check_story(story, facts).summary())
        assert story.endswith("What is the best plan?") and "Setting:" not in story


def test_framed_writing_keeps_the_data_verbatim_and_the_frame_free_of_numbers(
    scripted_llm: ScriptedLLMServer,
) -> None:
    instance = get_family("set_cover").generate(seed=0, level=1)
    facts = instance_facts(instance)
    scripted_llm.add(
        '{"opening": "Since 1987 we have placed towers in 12 towns. A telecom company must choose '
        'where to build towers.", "question": "Which sites should it build on to cover every district '
        'at the least cost?"}'
    )
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, style="framed").write(instance)
    assert result.passed and result.rounds == 1 and result.llm_calls == 1 and result.style == "framed"
    assert "use no numbers" in scripted_llm.requests[0].last_user_text.lower()
    assert result.story is not None and result.story.startswith("A telecom company must choose")
    # the frame's length is bounded for a grammar-constrained server (a looping reply ends), not on parse
    sent = scripted_llm.requests[0].response_format["json_schema"]["schema"]  # type: ignore[index]
    bounds = {name: field["maxLength"] for name, field in sent["properties"].items()}
    assert bounds == {"opening": 600, "question": 300}
    assert StoryFrame(opening="x" * 2000, question="Which?").opening == "x" * 2000
    assert "1987" not in result.story and "12 towns" not in result.story
    for line in facts.lines[1:]:  # every fact line, relations included, exactly as the facts say
        assert line in result.story
    assert result.story.endswith("at the least cost?")


def test_a_framed_reply_that_is_not_json_is_asked_again_and_counted(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add(
        "Sure! Here is an opening.",
        '{"opening": "A bakery plans its week.", "question": "How many of each should it make?"}',
    )
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        result = StoryWriter(client, style="framed").write(bakery())
    assert result.passed and result.rounds == 1 and result.llm_calls == 2


def test_frame_sentences_that_restate_data_are_dropped_and_empty_parts_templated() -> None:
    instance = get_family("transportation").generate(seed=0, level=2)
    facts = instance_facts(instance)
    restating = StoryFrame(
        opening="A retailer supplies three stores. Omaha can ship 15 pieces to Raleigh. It wants low costs.",
        question="Ship 20 from Houston?",
    )
    story = framed_story(facts, restating)
    assert story.startswith("A retailer supplies three stores. It wants low costs.\n\n")
    assert "Omaha can ship 15" not in story and "Ship 20" not in story
    assert story.endswith("What plan will minimize the total cost?")
    assert check_story(story, facts).passed
    bare = framed_story(facts, StoryFrame(opening="We have 3 warehouses.", question=""))
    assert bare.startswith(instance.domain[:1].upper()) and "has a plan to make." in bare.split("\n")[0]


@pytest.mark.parametrize("style", ["narrative", "framed"])
def test_a_reply_from_the_cache_counts_as_a_call_in_both_styles(
    scripted_llm: ScriptedLLMServer, tmp_path: Path, style: str
) -> None:
    instance = bakery()
    frame = '{"opening": "A bakery plans its week.", "question": "How many of each should it make?"}'
    scripted_llm.responder = lambda request: frame if style == "framed" else story_for(instance)
    config = scripted_llm.llm_config(cache_path=tmp_path / "cache.sqlite")
    counts = []
    for _ in range(2):
        with LLMClient(config) as client:
            result = StoryWriter(client, style=style).write(instance)  # type: ignore[arg-type]
        assert result.passed
        counts.append(result.llm_calls)
    assert counts == [1, 1] and scripted_llm.request_count == 1  # the second run came from the cache
