"""Answer-comparison rules on hand-made edge cases."""

from __future__ import annotations

import math

import pytest

from agent.datasets import Label, parse_answer, parse_results
from agent.scoring import HEADLINE_RULE, rule_names, score, score_result, scoring_rules, summarize
from solvers.result import SolveResult, SolveStatus

ALL = ("rel_1e-6", "orlm_round_5pct", "abs_1e-4", "mamo_rel_1e-4")


def verdicts(
    label: Label, objective: float | None, status: SolveStatus | str | None = None
) -> dict[str, bool]:
    return score(label, objective, status).correct


def test_rules_are_listed_headline_first() -> None:
    rules = scoring_rules()
    assert [r.name for r in rules] == list(ALL) == rule_names()
    assert rules[0].name == HEADLINE_RULE
    assert all(r.description and r.used_by for r in rules)


def test_integer_label_vs_float_prediction() -> None:
    label = parse_answer("1160.0")
    assert verdicts(label, 1160.0000001) == dict.fromkeys(ALL, True)
    assert verdicts(label, 1160) == dict.fromkeys(ALL, True)
    # 0.01 off: too much for 1e-6 and 1e-4 absolute; ORLM rounds it away; Mamo allows one unit
    # in the label's last written digit (0.1 here).
    assert verdicts(label, 1160.01) == {
        "rel_1e-6": False,
        "orlm_round_5pct": True,
        "abs_1e-4": False,
        "mamo_rel_1e-4": True,
    }
    assert verdicts(label, 1219.0) == dict.fromkeys(ALL, False)  # 59/1160 > 5%
    assert verdicts(label, 1217.0)["orlm_round_5pct"] is True  # 57/1160 < 5%


def test_zero_label() -> None:
    label = parse_answer("0")
    assert verdicts(label, 0.0) == dict.fromkeys(ALL, True)
    assert verdicts(label, 5e-7) == dict.fromkeys(ALL, True)
    # 0.5 rounds (half to even) to 0, which ORLM accepts; Mamo's zero case allows |pred| <= 1.
    assert verdicts(label, 0.5) == {
        "rel_1e-6": False,
        "orlm_round_5pct": True,
        "abs_1e-4": False,
        "mamo_rel_1e-4": True,
    }
    assert verdicts(label, 0.6)["orlm_round_5pct"] is False  # rounds to 1, and 5% of 0 is 0
    assert verdicts(label, 1.5) == dict.fromkeys(ALL, False)


def test_negative_labels() -> None:
    label = parse_answer("-1900.0")
    assert verdicts(label, -1900.001) == {
        "rel_1e-6": True,
        "orlm_round_5pct": True,
        "abs_1e-4": False,
        "mamo_rel_1e-4": True,
    }
    assert verdicts(label, 1900.0) == dict.fromkeys(ALL, False)
    assert verdicts(label, -1990.0)["orlm_round_5pct"] is True
    assert verdicts(label, -2000.0)["orlm_round_5pct"] is False


def test_mamo_one_unit_in_the_last_written_digit() -> None:
    label = parse_answer("57.0")
    assert verdicts(label, 57.05)["mamo_rel_1e-4"] is True
    assert verdicts(label, 57.2)["mamo_rel_1e-4"] is False
    results = parse_results({"x": "1.0", "profit": "3600.0"})
    assert verdicts(results, 3600.05)["mamo_rel_1e-4"] is True
    assert verdicts(results, 3601.0)["mamo_rel_1e-4"] is False


def test_infeasible_label() -> None:
    label = parse_answer("No Best Solution")
    assert verdicts(label, None, SolveStatus.INFEASIBLE) == dict.fromkeys(ALL, True)
    assert verdicts(label, None, "infeasible_or_unbounded") == dict.fromkeys(ALL, True)
    assert verdicts(label, None, SolveStatus.UNBOUNDED) == dict.fromkeys(ALL, False)
    assert verdicts(label, -99999.0) == dict.fromkeys(ALL, False)
    assert verdicts(label, None) == dict.fromkeys(ALL, False)
    assert verdicts(parse_answer("-99999"), None, SolveStatus.INFEASIBLE) == dict.fromkeys(ALL, True)


def test_unbounded_label() -> None:
    label = parse_answer("unbounded")
    assert label.status == "unbounded" and label.objective is None
    assert verdicts(label, None, SolveStatus.UNBOUNDED) == dict.fromkeys(ALL, True)
    assert verdicts(label, None, "infeasible_or_unbounded") == dict.fromkeys(ALL, True)
    assert verdicts(label, None, SolveStatus.INFEASIBLE) == dict.fromkeys(ALL, False)
    assert verdicts(label, 1e9) == dict.fromkeys(ALL, False)  # a big optimum is still an optimum


def test_infeasible_prediction_against_a_number_is_wrong() -> None:
    label = parse_answer("0")
    assert verdicts(label, None, SolveStatus.INFEASIBLE) == dict.fromkeys(ALL, False)
    assert verdicts(label, 0.0, SolveStatus.INFEASIBLE) == dict.fromkeys(ALL, False)


def test_missing_or_non_finite_predictions_are_wrong() -> None:
    label = parse_answer("10")
    assert verdicts(label, None) == dict.fromkeys(ALL, False)
    assert verdicts(label, math.nan) == dict.fromkeys(ALL, False)
    assert verdicts(label, math.inf) == dict.fromkeys(ALL, False)
    assert verdicts(label, 10.0, SolveStatus.ERROR) == dict.fromkeys(ALL, False)


def test_unlabelled_items_cannot_be_scored() -> None:
    with pytest.raises(ValueError, match="no label"):
        score(Label(status="unlabelled"), 1.0, item_id="x/1")


def test_scoring_solver_results() -> None:
    label = parse_answer("42")
    assert score_result(label, SolveResult(status=SolveStatus.OPTIMAL, objective=42.0)).headline
    assert score_result(label, SolveResult(status=SolveStatus.TIME_LIMIT, objective=42.0)).headline
    assert not score_result(label, SolveResult(status=SolveStatus.ERROR, objective=42.0)).headline
    assert not score_result(label, None).headline
    card = score_result(label, SolveResult(status=SolveStatus.OPTIMAL, objective=41.0), item_id="t/1")
    assert card.id == "t/1" and card.predicted_objective == 41.0 and card.label_objective == 42.0


def test_summary_counts_each_rule() -> None:
    label = parse_answer("100")
    cards = [score(label, 100.0), score(label, 100.4), score(label, None)]
    summary = summarize(cards)
    assert summary.items == 3
    assert summary.correct == {"rel_1e-6": 1, "orlm_round_5pct": 2, "abs_1e-4": 1, "mamo_rel_1e-4": 2}
    assert summary.accuracy["rel_1e-6"] == pytest.approx(1 / 3)
    assert summarize([]).accuracy["rel_1e-6"] == 0.0
