"""Self-consistency voting: near-equal grouping, majority, ties and confidence."""

from __future__ import annotations

from agent.voting import group_objectives, near_equal, vote


def test_near_equal_is_relative_with_a_floor_of_one() -> None:
    assert near_equal(120.0, 120.0 + 1e-5)  # 1e-5 <= 1e-6 * 120
    assert not near_equal(120.0, 120.01)
    assert near_equal(0.0, 5e-7)  # around zero the scale is 1, not 0
    assert not near_equal(0.0, 1e-5)


def test_groups_keep_first_value_and_first_seen_order_on_equal_counts() -> None:
    groups, failed = group_objectives([5.0, None, 7.0, 5.0000000001, 7.0, None])
    assert [(g.value, g.members) for g in groups] == [(5.0, [0, 3]), (7.0, [2, 4])]
    assert failed == [1, 5]


def test_unanimous_samples_give_high_confidence() -> None:
    outcome = vote([120.0, 120.0, 120.0000001])
    assert outcome.winner is not None and outcome.winner.value == 120.0
    assert outcome.confidence == "high"
    assert outcome.agreement == 1.0


def test_failed_samples_count_against_the_winner() -> None:
    outcome = vote([120.0, None, None])
    assert outcome.winner is not None and outcome.winner.count == 1
    assert outcome.confidence == "low"
    assert "failed x2" in outcome.summary()


def test_strict_majority_is_medium_and_a_tie_is_low_without_a_winner() -> None:
    majority = vote([10.0, 10.0, 12.0])
    assert majority.confidence == "medium" and majority.winner and majority.winner.value == 10.0
    tie = vote([10.0, 12.0])
    assert tie.tied and tie.winner is None and tie.confidence == "low"
    assert tie.chosen is not None and tie.chosen.value == 10.0  # the first seen answers, flagged low


def test_no_objective_at_all() -> None:
    outcome = vote([None, None])
    assert outcome.winner is None and outcome.chosen is None and outcome.confidence == "low"
    assert "no sample" in outcome.summary()


def test_single_sample_is_medium() -> None:
    assert vote([3.0]).confidence == "medium"
