"""One training item's outcome -> the feedback text an optimizer reads, and a score.

The optimizer does not see the label any other way, so a wrong answer's feedback says both numbers
and which way the model is off, and what that direction usually means for this kind of model (a
maximization that comes out too low is over-constrained; too high, under-constrained). Failures
reuse the agent's own evidence (parse, build, solver, verification, infeasibility diagnosis,
unbounded variables), because that text already names the failing parts. Texts avoid the word
"score" followed by a number: OPRO reads such figures out of feedback as scores.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from agent import evidence
from agent.answer import AgentAnswer, AnswerStatus, Attempt
from agent.datasets import Problem
from agent.explain import format_number
from agent.scoring import HEADLINE_RULE, ScoreCard, score
from solvers.result import SolveStatus

OutcomeKind = Literal[
    "correct",
    "wrong_objective",
    "missed_infeasibility",
    "missed_unboundedness",
    "infeasible",
    "unbounded",
    "parse_error",
    "build_error",
    "solver_error",
    "verification_failed",
    "needs_clarification",
    "crash",
]

# Evidence and model listings are cut so that one item cannot crowd a minibatch out of the
# optimizer's prompt budget (OptoPrime's default per-feedback limit is 1,500 characters).
_EVIDENCE_CHARS = 600
_MODEL_CHARS = 500
# Answer statuses that are solver verdicts, for scoring (clarification requests predict nothing).
_VERDICTS = {
    status: SolveStatus(status.value)
    for status in AnswerStatus
    if status.value in {verdict.value for verdict in SolveStatus}
}
_FORMULATE_OUTCOMES = frozenset({"unreadable reply", "no program", "request refused"})


class ItemOutcome(BaseModel):
    """How the agent did on one labelled item, for the trainer and the training log."""

    problem_id: str
    kind: OutcomeKind
    correct: bool = Field(description=f"right under the {HEADLINE_RULE} rule")
    score: float = Field(description="1.0 when correct, else 0.0: validation accuracy is its mean")
    feedback: str
    status: str
    predicted_objective: float | None = None
    label_objective: float | None = None
    label_status: str
    repair_rounds: int = 0
    llm_calls: int = 0
    seconds: float = 0.0


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " ...(cut)"


def _attempt_history(answer: AgentAnswer) -> str:
    if len(answer.attempts) <= 1:
        return ""
    steps = " -> ".join(f"round {a.round}: {a.outcome}" for a in answer.attempts)
    return f"\nRounds: {steps}."


def _last_failure(answer: AgentAnswer) -> Attempt | None:
    for attempt in reversed(answer.attempts):
        if attempt.outcome != "ok" and attempt.feedback.strip():
            return attempt
    return None


def _error_kind(answer: AgentAnswer) -> OutcomeKind:
    attempt = answer.attempts[-1] if answer.attempts else None
    if attempt is None:
        return "solver_error"
    if attempt.stage == "formulate" or attempt.outcome in _FORMULATE_OUTCOMES:
        return "parse_error"
    if attempt.stage == "build":
        return "build_error"
    return "solver_error"


def classify(answer: AgentAnswer, card: ScoreCard, crashed: bool) -> OutcomeKind:
    """The kind of outcome, most specific first."""
    if crashed:
        return "crash"
    if card.headline:
        return "correct"
    status = answer.status
    if status == AnswerStatus.NEEDS_CLARIFICATION:
        return "needs_clarification"
    if status == AnswerStatus.ERROR:
        return _error_kind(answer)
    if status == AnswerStatus.INFEASIBLE:
        return "infeasible"
    if status in (AnswerStatus.UNBOUNDED, AnswerStatus.INFEASIBLE_OR_UNBOUNDED):
        return "unbounded"
    if card.label_status == "infeasible":
        return "missed_infeasibility"
    if card.label_status == "unbounded":
        return "missed_unboundedness"
    if answer.check is not None and not answer.check.ok:
        return "verification_failed"
    return "wrong_objective"


def _direction(predicted: float, label: float, sense: str | None) -> str:
    """Which way the optimum is off, and what that usually means for the model."""
    gap = predicted - label
    words = f"{'too high' if gap > 0 else 'too low'} by {format_number(abs(gap))}"
    if label != 0:
        words += f" ({abs(gap) / abs(label):.1%} of the correct value)"
    if label != 0 and math.isclose(predicted, -label, rel_tol=1e-6):
        return words + ": the sign is flipped (objective sense or the sign of the objective's terms)."
    restrictive = (sense == "maximize" and gap < 0) or (sense == "minimize" and gap > 0)
    kind = {"maximize": "maximization", "minimize": "minimization"}.get(sense or "")
    if kind is None:
        hint = "check the objective sense, the coefficients and each constraint."
    elif restrictive:
        hint = (
            f"for a {kind} this means the model is too restrictive: a coefficient too large, "
            "a <= that should be >= (or the reverse), an extra limit the problem does not state, or an "
            "objective term missing."
        )
    else:
        hint = (
            f"for a {kind} this means the model is too loose: a constraint or requirement "
            "missing, a coefficient too small, or a bound the problem states left out."
        )
    return f"{words}; {hint}"


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def _integrality_hint(predicted: float, label: float) -> str:
    if _whole(label) and not _whole(predicted):
        return (
            "\nThe correct optimum is a whole number and the model's is not: countable decisions "
            "(items, people, vehicles) must be integer variables."
        )
    return ""


def item_feedback(
    problem: Problem,
    answer: AgentAnswer,
    *,
    crash: str | None = None,
    side_failures: list[str] | None = None,
) -> ItemOutcome:
    """Score ``answer`` against ``problem``'s label and write the feedback.

    ``crash`` is the explanation of an exception node the solve ended in; ``side_failures`` are
    explanations of steps that failed without costing the answer (e.g. trained sanity code that
    raised). Raises ValueError for an unlabelled problem: nothing can be learned from it.
    """
    card = score(problem.label, answer.objective, _VERDICTS.get(answer.status), problem.id)
    kind = classify(answer, card, crash is not None)
    label = problem.label
    label_text = {
        "infeasible": "infeasible (no plan satisfies the problem)",
        "unbounded": "unbounded (the objective can improve without limit)",
    }.get(label.status, format_number(label.objective) if label.objective is not None else "?")
    predicted = answer.objective
    predicted_text = format_number(predicted) if predicted is not None else "none"
    failure = _last_failure(answer)
    evidence_text = _cut(failure.feedback, _EVIDENCE_CHARS) if failure is not None else ""

    if kind == "correct":
        text = f"Correct: the optimum {predicted_text} matches the correct answer {label_text}."
        if answer.repair_rounds:
            first = answer.attempts[0].outcome if answer.attempts else "a failed check"
            text += (
                f" But only after {answer.repair_rounds} repair round(s) (the first formulation ended in "
                f"{first}): the prompts should make the first formulation right."
            )
        else:
            text += " Keep what made the first formulation right."
    elif kind == "crash":
        explanation = _cut(crash or "", 1200)
        text = f"The agent crashed and gave no answer (correct optimum: {label_text}).\n{explanation}"
    elif kind == "wrong_objective":
        assert predicted is not None and label.objective is not None
        text = (
            f"Wrong objective: the model's optimum is {predicted_text} ({answer.sense or 'sense unknown'}), "
            f"the correct optimum is {label_text}. The model's optimum is "
            f"{_direction(predicted, label.objective, answer.sense)}"
            f"{_integrality_hint(predicted, label.objective)}"
        )
        if answer.model_math:
            text += f"\nThe model it wrote:\n{_cut(answer.model_math, _MODEL_CHARS)}"
    elif kind == "missed_infeasibility":
        text = (
            f"Wrong: the problem has no feasible plan, but the model found an optimum {predicted_text}. "
            "A requirement or limit stated in the problem is missing or too weak."
        )
    elif kind == "missed_unboundedness":
        text = (
            f"Wrong: the problem's objective can improve without limit, but the model found an optimum "
            f"{predicted_text}. The model limits something the problem leaves unlimited, or its sense is "
            "reversed."
        )
    elif kind == "verification_failed":
        assert answer.check is not None
        text = (
            f"Wrong: the model's optimum {predicted_text} (correct: {label_text}) failed the independent "
            f"check.\n{_cut(evidence.verification_failed(answer.check), _EVIDENCE_CHARS)}"
        )
    elif kind in ("infeasible", "unbounded"):
        detail = evidence_text or (
            evidence.solve_failed(answer.solve) if answer.solve is not None else answer.error or ""
        )
        text = (
            f"Wrong: the model is {answer.status.value.replace('_', ' ')}, but the problem "
            f"{'is' if label.status != 'optimal' else 'has the optimum'} {label_text}."
            f"\n{_cut(detail, _EVIDENCE_CHARS)}"
        )
    elif kind == "needs_clarification":
        asked = "; ".join(answer.clarifying_questions) or "(no question given)"
        text = (
            f"Wrong: the agent asked for data instead of answering ({_cut(asked, 300)}), but the problem "
            f"gives everything needed; the correct optimum is {label_text}."
        )
    else:  # parse_error, build_error, solver_error
        what = {
            "parse_error": "no formulation could be read from the LLM's reply",
            "build_error": "the formulation could not be built into a model",
            "solver_error": "the solver failed on the model",
        }[kind]
        detail = evidence_text or answer.error or ""
        text = f"Failed: {what} (correct optimum: {label_text}).\n{_cut(detail, _EVIDENCE_CHARS)}"

    if kind != "correct":
        text += _attempt_history(answer)
    for failure_text in side_failures or []:
        text += f"\nAlso, a step failed without costing the answer:\n{_cut(failure_text, _EVIDENCE_CHARS)}"
    return ItemOutcome(
        problem_id=problem.id,
        kind=kind,
        correct=card.headline,
        score=1.0 if card.headline else 0.0,
        feedback=text,
        status=answer.status.value,
        predicted_objective=predicted,
        label_objective=label.objective,
        label_status=label.status,
        repair_rounds=answer.repair_rounds,
        llm_calls=answer.usage.calls,
        seconds=answer.seconds,
    )
