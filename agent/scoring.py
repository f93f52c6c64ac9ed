"""Is a predicted optimum right? Several published rules, reported side by side.

Papers disagree on what "correct" means, and the choice moves accuracy by several points, so a
report names its rule and shows the others next to it:

    rel_1e-6         |pred - gt| / (|gt| + 1) <= 1e-6          SIRL, OptiMind; our headline
    orlm_round_5pct  round both to integers, then |p - g| <= 0.05 |g| (g = 0: |p| <= 0.05)
                     ORLM and OptMATH (eval/execute.py; Python's round, i.e. half to even)
    abs_1e-4         |pred - gt| <= 1e-4                        ReSocratic/OptiBench per value
    mamo_rel_1e-4    |pred - gt| / |gt| <= 1e-4 (gt = 0: |pred| <= 1), or within one unit of the
                     label's last written decimal digit        Mamo's checker

A label of status "infeasible" (the sources' "No Best Solution" / -99999) is matched only by a
prediction whose status is infeasible or infeasible_or_unbounded, under every rule; such a
prediction is wrong against a numeric label. ORLM itself compares -99999 numerically; we treat it
as the no-solution marker its authors meant. Likewise an "unbounded" label is matched only by an
unbounded or infeasible_or_unbounded prediction. A missing or non-finite prediction is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from pydantic import BaseModel, Field

from agent.datasets import Label
from solvers.result import SolveResult, SolveStatus

HEADLINE_RULE = "rel_1e-6"
INFEASIBLE_PREDICTIONS = frozenset({SolveStatus.INFEASIBLE, SolveStatus.INFEASIBLE_OR_UNBOUNDED})
UNBOUNDED_PREDICTIONS = frozenset({SolveStatus.UNBOUNDED, SolveStatus.INFEASIBLE_OR_UNBOUNDED})
# A number counts as an answer only from a run that found a solution (a time-limited run's incumbent).
ANSWERING_STATUSES = frozenset({SolveStatus.OPTIMAL, SolveStatus.TIME_LIMIT})


class ScoringRule(BaseModel):
    name: str
    description: str
    used_by: str


class ScoreCard(BaseModel):
    """One item scored under every rule."""

    id: str = ""
    label_status: str
    label_objective: float | None = None
    predicted_status: SolveStatus | None = None
    predicted_objective: float | None = None
    correct: dict[str, bool] = Field(description="rule name -> verdict")

    @property
    def headline(self) -> bool:
        return self.correct[HEADLINE_RULE]


class ScoreSummary(BaseModel):
    items: int
    correct: dict[str, int]
    accuracy: dict[str, float]
    headline_rule: str = HEADLINE_RULE


def _rel_1e6(pred: float, gt: float, raw: str) -> bool:
    return abs(pred - gt) / (abs(gt) + 1.0) <= 1e-6


def _orlm_round_5pct(pred: float, gt: float, raw: str) -> bool:
    # Mirrors ORLM's eval/execute.py: Python round() on both sides, then 5% of the rounded label.
    p, g = round(pred), round(gt)
    if g == 0:
        return abs(p) <= 0.05
    return abs((p - g) / g) <= 0.05


def _abs_1e4(pred: float, gt: float, raw: str) -> bool:
    return abs(pred - gt) <= 1e-4


def _decimals_written(raw: str) -> int:
    text = raw.strip()
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text.lower() else 0


def _label_text(label: Label) -> str:
    """The label's number as written: `raw` for scalar answers, repr for results-dict labels."""
    try:
        if label.objective is not None and float(label.raw.strip()) == label.objective:
            return label.raw
    except ValueError:
        pass
    return repr(label.objective)


def _mamo_rel_1e4(pred: float, gt: float, raw: str) -> bool:
    # Mamo's compare_output_with_standard: one unit in the label's last written digit, or rel. 1e-4
    # (for gt = 0 its "rate" is |diff| * 1e-4, which reduces to |pred| <= 1).
    scale = 10.0 ** _decimals_written(raw)
    if abs(pred * scale - gt * scale) <= 1.0:
        return True
    if gt == 0:
        return abs(pred) <= 1.0
    return abs(pred - gt) / abs(gt) <= 1e-4


_RULES: dict[str, tuple[Callable[[float, float, str], bool], str, str]] = {
    "rel_1e-6": (_rel_1e6, "|pred-gt|/(|gt|+1) <= 1e-6", "SIRL, OptiMind (headline)"),
    "orlm_round_5pct": (
        _orlm_round_5pct,
        "round both to integers (half to even), then |p-g| <= 0.05|g|; g=0 needs p=0",
        "ORLM, OptMATH",
    ),
    "abs_1e-4": (_abs_1e4, "|pred-gt| <= 1e-4", "ReSocratic / OptiBench (per listed value)"),
    "mamo_rel_1e-4": (
        _mamo_rel_1e4,
        "|pred-gt|/|gt| <= 1e-4 (gt=0: |pred| <= 1) or within 1 unit of the label's last written digit",
        "Mamo",
    ),
}


def scoring_rules() -> list[ScoringRule]:
    """Every rule with what it checks and who uses it, headline first."""
    return [ScoringRule(name=name, description=desc, used_by=who) for name, (_, desc, who) in _RULES.items()]


def rule_names() -> list[str]:
    return list(_RULES)


def score(
    label: Label,
    objective: float | None,
    status: SolveStatus | str | None = None,
    item_id: str = "",
) -> ScoreCard:
    """Score one prediction. `status` None with a number means an optimum was reported.

    Raises ValueError for an unlabelled item: there is nothing to be right about.
    """
    if label.status == "unlabelled":
        raise ValueError(f"item {item_id or '?'} has no label to score against")
    if status is not None:
        predicted: SolveStatus | None = SolveStatus(status)
    else:
        predicted = SolveStatus.OPTIMAL if objective is not None else None
    if label.status == "infeasible":
        correct = dict.fromkeys(_RULES, predicted in INFEASIBLE_PREDICTIONS)
    elif label.status == "unbounded":
        correct = dict.fromkeys(_RULES, predicted in UNBOUNDED_PREDICTIONS)
    elif (
        predicted not in ANSWERING_STATUSES
        or objective is None
        or not math.isfinite(objective)
        or label.objective is None
    ):
        correct = dict.fromkeys(_RULES, False)
    else:
        text = _label_text(label)
        correct = {name: check(objective, label.objective, text) for name, (check, _, _) in _RULES.items()}
    return ScoreCard(
        id=item_id,
        label_status=label.status,
        label_objective=label.objective,
        predicted_status=predicted,
        predicted_objective=objective,
        correct=correct,
    )


def score_result(label: Label, result: SolveResult | None, item_id: str = "") -> ScoreCard:
    """Score a solver's answer; a time-limited run counts with its incumbent, an error with none."""
    if result is None or result.status == SolveStatus.ERROR:
        return score(label, None, None if result is None else SolveStatus.ERROR, item_id)
    return score(label, result.objective, result.status, item_id)


def summarize(cards: Iterable[ScoreCard]) -> ScoreSummary:
    cards = list(cards)
    correct = {name: sum(card.correct[name] for card in cards) for name in _RULES}
    accuracy = {name: (count / len(cards) if cards else 0.0) for name, count in correct.items()}
    return ScoreSummary(items=len(cards), correct=correct, accuracy=accuracy)
