"""Guardrails for the optimizer's rewrites of the agent's prompts and code.

Each trainable parameter of the agent carries a constraint in words (agent.prompts.
PARAMETER_CONSTRAINTS). Words are not enough for a small optimizer model, so every proposed value
is checked here before it may stay: required fields and placeholders are still named, the worked
example still parses as a formulation draft (notes first) that builds and solves, example code
still compiles and defines build_model(), the sanity code keeps its signature and still passes a
known-correct answer, length limits hold, and no prompt copies a training or validation question.

An invalid value is not applied: `GuardedOptoPrime` / `GuardedOPRO` put the old value back, send the
reasons to that parameter as feedback, and ask the optimizer once more in the same step.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agent import prompts
from agent.draft import DraftError, FormulationDraft, draft_to_formulation, extract_program
from agent.modeler import ModelingAgent
from agent.steps import solve_ir
from solvers.result import SolveOptions
from trace_graph.bundle import bundle
from trace_graph.context import graph_context
from trace_graph.nodes import ExceptionNode, ParameterNode
from trace_graph.optimizers import OPRO, Lessons, OptoPrime, StepResult
from trace_graph.optimizers.base import ParameterUpdate

Validator = Callable[[Any], list[str]]  # a proposed value -> what is wrong with it ([] = fine)

_LIMIT = re.compile(r"Stay under (\d+) characters", re.IGNORECASE)
# A copied sentence this long is a problem statement, not an instruction.
_LEAK_SENTENCE_CHARS = 50


class RejectedUpdate(BaseModel):
    """A proposed value the guard refused, and why."""

    parameter: str
    problems: list[str]
    proposed: str = Field(description="the value, shortened")


def length_limit(constraint: str | None) -> int | None:
    """The character limit a parameter's constraint states ("Stay under N characters")."""
    match = _LIMIT.search(constraint or "")
    return int(match.group(1)) if match else None


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _sentences(text: str) -> list[str]:
    return [s for s in (_normalized(part) for part in re.split(r"(?<=[.?!])\s+", text)) if s]


class ParameterGuard:
    """Checks proposed values by agent attribute path (``system_prompt``, ``sanity_rules.code``)."""

    def __init__(self, validators: dict[str, Validator], forbidden_texts: Iterable[str] = ()) -> None:
        self.validators = validators
        # Long sentences of the training/validation questions: prompts must generalize, not quote.
        self._forbidden = {
            sentence
            for text in forbidden_texts
            for sentence in _sentences(text)
            if len(sentence) >= _LEAK_SENTENCE_CHARS
        }

    def normalize(self, path: str, value: Any) -> Any:
        """The value in its parameter's canonical layout (e.g. hints as '- ' lines): a layout slip
        is fixed here instead of costing a re-ask of a slow model."""
        normalizer = _NORMALIZERS.get(path)
        return normalizer(value) if normalizer is not None and isinstance(value, str) else value

    def problems(self, path: str, value: Any) -> list[str]:
        found: list[str] = []
        validator = self.validators.get(path)
        if validator is not None:
            found += validator(value)
        if isinstance(value, str) and self._forbidden and not path.endswith(".code"):
            normalized = _normalized(value)
            copied = [s for s in self._forbidden if s in normalized]
            if copied:
                found.append(
                    f"it copies a sentence of a training problem ({copied[0][:80]!r}); write general "
                    "instructions that help on every problem"
                )
        return found


# --- validators ----------------------------------------------------------------------------------
def _text_checks(value: Any, limit: int | None) -> list[str]:
    if not isinstance(value, str):
        return [f"it must be text, got {type(value).__name__}"]
    if not value.strip():
        return ["it is empty"]
    if limit is not None and len(value) > limit:
        return [f"it has {len(value)} characters; the limit is {limit} (the 4k-token context is shared)"]
    return []


def _must_mention(value: str, words: Iterable[str]) -> list[str]:
    lowered = value.lower()
    missing = [word for word in words if word.lower() not in lowered]
    return [f"it must still name {', '.join(missing)}"] if missing else []


def formulation_instructions_problems(value: str) -> list[str]:
    fields = ("notes", "variables", "objective", "constraints", "missing_information")
    problems = _must_mention(value, fields)
    lowered = value.lower()
    if not problems and lowered.index("notes") > lowered.index("variables"):
        problems.append("notes must come first (before variables): the model lists per-unit uses there")
    return problems


MAX_HINTS = 6
# No lessons is a valid state (the default): an optimizer may also drop the ones that did not help.
MAY_BE_EMPTY = frozenset({"modeling_hints"})


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s*")


def as_lessons(value: str) -> str:
    """Hints as '- ' lines, whatever bullets (or none) the model used."""
    lines = [_BULLET.sub("", line).strip() for line in value.splitlines()]
    return "\n".join(f"- {line}" for line in lines if line)


# What gives a lesson away as one problem's fix rather than a general rule. The embedded optimizer
# wrote "add the constraint `minimize 190*dawn + 150*day ...`" and "`stock_end_q1 = city_q1 + 100`";
# both lowered validation accuracy to 0 and were reverted, each after a 15-minute step.
_COEFFICIENT_TIMES_NAME = re.compile(r"\d\s*\*\s*[A-Za-z_]")
_SEVERAL_DIGITS = re.compile(r"\d{2,}")
_SNAKE_CASE_NAME = re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b")
_IR_FIELD_NAMES = frozenset({"for_all", "from_table", "key_columns", "missing_information"})


# The embedded optimizer's accepted "lesson": "The feedback indicates that the model was unable to
# build the model due to an undefined objective ..." (a report of what went wrong, not a rule).
_ABOUT_FEEDBACK = re.compile(r"\bfeedback\b", re.IGNORECASE)


def specific_details(lesson: str) -> list[str]:
    """The numbers, coefficient terms and variable-like names that tie a lesson to one problem."""
    found = _COEFFICIENT_TIMES_NAME.findall(lesson) + _SEVERAL_DIGITS.findall(lesson)
    found += [name for name in _SNAKE_CASE_NAME.findall(lesson) if name not in _IR_FIELD_NAMES]
    return found


def modeling_hints_problems(value: str) -> list[str]:
    """Lessons, one per line starting '- ', at most MAX_HINTS of them, each general."""
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    problems = []
    if any(not line.startswith("- ") for line in lines):
        problems.append("every line must be one lesson starting with '- '")
    if len(lines) > MAX_HINTS:
        problems.append(f"it has {len(lines)} lessons; keep the {MAX_HINTS} most useful")
    for number, line in enumerate(lines, start=1):
        details = specific_details(line)
        if details:
            quoted = ", ".join(dict.fromkeys(details))
            problems.append(
                f"lesson {number} quotes one problem's numbers or names ({quoted}); a lesson must hold "
                "for every problem, e.g. '- a minimum requirement is written with >='"
            )
        if _ABOUT_FEEDBACK.search(line):
            problems.append(
                f"lesson {number} describes the feedback; the agent never sees it: write the rule that "
                "prevents the mistake, e.g. '- a minimum requirement is written with >='"
            )
    return problems


def worked_example_problems(value: str) -> list[str]:
    """Exactly one 'Problem:' and one 'JSON:' with a notes-first draft that builds and solves."""
    if value.count("Problem:") != 1 or not value.lstrip().startswith("Problem:"):
        return ["it must start with 'Problem:' and hold exactly one example"]
    if "JSON:" not in value:
        return ["it must have a line starting 'JSON:' followed by the example's JSON formulation"]
    text = value.split("JSON:", 1)[1].strip()
    try:
        document = json.loads(text, strict=False)
    except ValueError as error:
        return [f"the text after 'JSON:' is not one valid JSON object ({error})"]
    if not isinstance(document, dict):
        return ["the text after 'JSON:' must be a JSON object"]
    if next(iter(document), None) != "notes":
        return ["the JSON must start with the notes field"]
    try:
        draft = FormulationDraft.model_validate(document)
        formulation = draft_to_formulation(draft)
    except ValidationError as error:
        return [
            f"the JSON is not a formulation draft: {error.errors()[0]['msg']} at {error.errors()[0]['loc']}"
        ]
    except DraftError as error:
        return [f"the example's model is invalid: {'; '.join(error.problems[:3])}"]
    solved = solve_ir(formulation, SolveOptions(time_limit=10.0, want_duals=False))
    if not solved.usable:
        return [f"the example's model does not solve: {solved.outcome}"]
    return []


def code_worked_example_problems(value: str) -> list[str]:
    if not value.lstrip().startswith("Problem:") or value.count("Problem:") != 1:
        return ["it must start with 'Problem:' and hold exactly one example"]
    if "```" not in value:
        return ["it must hold the program in one ```python block"]
    try:
        program = extract_program(value)
        ast.parse(program)
    except (ValueError, SyntaxError) as error:
        return [f"the example program is not valid Python: {error}"]
    if "def build_model" not in program:
        return ["the example program must define build_model()"]
    return []


# A correct answer to the default worked example: trained sanity code must not object to it.
_KNOWN_GOOD_FACTS = prompts.SanityFacts(
    question=prompts.WORKED_EXAMPLE.split("JSON:", 1)[0].removeprefix("Problem:").strip(),
    sense="maximize",
    objective=50 * 60 + 80 * 40,
    values={"city": 60.0, "mountain": 40.0},
    domains={"city": "integer", "mountain": "integer"},
    meanings={"city": "city bikes assembled (bikes)", "mountain": "mountain bikes assembled (bikes)"},
)


def sanity_code_problems(value: str) -> list[str]:
    """Compiles, keeps ``def sanity_rules(facts)``, returns a list of text, and accepts a right answer."""
    try:
        tree = ast.parse(value)
    except SyntaxError as error:
        return [f"it does not compile (line {error.lineno}: {error.msg})"]
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sanity_rules"]
    if len(functions) != 1 or len(functions[0].args.args) != 1:
        return ["it must define exactly one function sanity_rules(facts) with one argument"]
    # Run it the way the agent will: through a bundled function whose code is the proposal.
    # Its own naming context: the probe's nodes must not push the agent's names to `_1` suffixes.
    with graph_context():
        probe = bundle(trainable=True, name="sanity_rules")(prompts.sanity_rules)
        assert probe.parameter is not None
        probe.parameter.value = value
        result = probe(_KNOWN_GOOD_FACTS)
    if isinstance(result, ExceptionNode):
        return [f"it raised on a correct answer: {result.value}"]
    concerns = result.value
    if not isinstance(concerns, list) or not all(isinstance(item, str) for item in concerns):
        return [f"it must return a list of strings, returned {type(concerns).__name__}"]
    if concerns:
        return [f"it rejects a known-correct answer (the worked example's optimum): {concerns[0]}"]
    return []


_NORMALIZERS: dict[str, Callable[[str], str]] = {"modeling_hints": as_lessons}
_SPECIFIC: dict[str, Validator] = {
    "formulation_instructions": formulation_instructions_problems,
    "worked_example": worked_example_problems,
    "indexed_instructions": lambda value: _must_mention(value, ("sets", "parameters", "for_all")),
    "indexed_example": worked_example_problems,
    "data_instructions": lambda value: _must_mention(value, ("from_table", "key_columns")),
    "code_instructions": lambda value: _must_mention(value, ("build_model",)),
    "code_worked_example": code_worked_example_problems,
    "repair_instructions": lambda value: _must_mention(value, ("complete",)),
    "modeling_hints": modeling_hints_problems,
}


def agent_validators(agent: ModelingAgent) -> dict[str, Validator]:
    """A validator for each of the agent's parameters: its length limit, then its own rules."""
    validators: dict[str, Validator] = {}
    for path, parameter in agent.named_parameters():
        if parameter.is_code:
            validators[path] = lambda value: _text_checks(value, None) or sanity_code_problems(value)
            continue
        limit = length_limit(parameter.constraint)
        specific = _SPECIFIC.get(path)
        may_be_empty = path in MAY_BE_EMPTY

        def check(
            value: Any,
            limit: int | None = limit,
            specific: Validator | None = specific,
            may_be_empty: bool = may_be_empty,
        ) -> list[str]:
            if may_be_empty and isinstance(value, str) and not value.strip():
                return []
            return _text_checks(value, limit) or (specific(value) if specific else [])

        validators[path] = check
    return validators


# --- optimizers that apply the guard ----------------------------------------------------------------
class GuardMixin:
    """Wraps an optimizer's ``step()``: invalid updates are undone and sent back as feedback once.

    Also clears feedback on ``also_clear`` parameters (agent parameters this optimizer does not
    train): backward() still reaches them, and their records would otherwise keep every run's graph
    alive for the whole training.
    """

    guard: ParameterGuard
    paths: dict[ParameterNode, str]
    also_clear: list[ParameterNode]
    guard_retries: int
    rejected: list[RejectedUpdate]
    _last_score: float | None

    def setup_guard(
        self,
        guard: ParameterGuard,
        paths: dict[ParameterNode, str],
        also_clear: Iterable[ParameterNode] = (),
        retries: int = 1,
        rejected_log: list[RejectedUpdate] | None = None,
    ) -> None:
        self.guard = guard
        self.paths = paths
        self.also_clear = list(also_clear)
        self.guard_retries = retries
        # Every rejection, for the training log (optimizers taking turns share one list).
        self.rejected = rejected_log if rejected_log is not None else []
        self._last_score = None

    def observe_score(self, score: float) -> None:
        self._last_score = score
        super().observe_score(score)  # type: ignore[misc]

    def zero_feedback(self) -> None:
        super().zero_feedback()  # type: ignore[misc]
        for parameter in self.also_clear:
            parameter.zero_feedback()

    def step(self) -> StepResult:
        result: StepResult = super().step()  # type: ignore[misc]
        rejected = self._undo_invalid(result)
        for _ in range(self.guard_retries):
            if not rejected:
                break
            for update, problems in rejected:
                parameter = self._parameter(update.name)
                constraint = f" Its constraint: {parameter.constraint}" if parameter.constraint else ""
                parameter.backward(
                    f"Your proposed new value of {update.name} was rejected and NOT applied: "
                    f"{'; '.join(problems)}.{constraint} Propose a value that fixes this, or leave "
                    f"{update.name} unchanged."
                )
            if self._last_score is not None:  # OPRO: the retry re-records the same values' score
                super().observe_score(self._last_score)  # type: ignore[misc]
            retry: StepResult = super().step()  # type: ignore[misc]
            rejected = self._undo_invalid(retry)
            result = _merged(result, retry)
        return result

    def _parameter(self, key: str) -> ParameterNode:
        return dict(self.named_parameters())[key]  # type: ignore[attr-defined]

    def _undo_invalid(self, result: StepResult) -> list[tuple[ParameterUpdate, list[str]]]:
        rejected = []
        kept = []
        for update in result.updates:
            parameter = self._parameter(update.name)
            path = self.paths.get(parameter, update.name)
            normalized = self.guard.normalize(path, update.new_value)
            if normalized != update.new_value:
                parameter.value = normalized
                update.new_value = normalized
            problems = self.guard.problems(path, update.new_value)
            if problems:
                parameter.value = update.old_value
                rejected.append((update, problems))
                result.errors.append(f"{update.name}: rejected ({'; '.join(problems)})")
                self.rejected.append(
                    RejectedUpdate(parameter=path, problems=problems, proposed=str(update.new_value)[:300])
                )
            else:
                kept.append(update)
        result.updates = kept
        return rejected


def _merged(first: StepResult, second: StepResult) -> StepResult:
    """One step's result from an answer and its retry (an update of both keeps the first old value)."""
    updates = {update.name: update for update in first.updates}
    for update in second.updates:
        earlier = updates.get(update.name)
        updates[update.name] = (
            update if earlier is None else update.model_copy(update={"old_value": earlier.old_value})
        )
    return StepResult(
        updates=list(updates.values()),
        reasoning="\n".join(text for text in (first.reasoning, second.reasoning) if text),
        raw_reply=second.raw_reply,
        errors=first.errors + second.errors,
        skipped=second.skipped,
        prompt_chars=first.prompt_chars + second.prompt_chars,
        usage=first.usage + second.usage,
    )


class GuardedOptoPrime(GuardMixin, OptoPrime):
    """OptoPrime whose rewrites pass the agent's guard (call ``setup_guard`` after construction)."""


class GuardedOPRO(GuardMixin, OPRO):
    """OPRO whose rewrites pass the agent's guard (call ``setup_guard`` after construction)."""


class GuardedLessons(GuardMixin, Lessons):
    """Lessons whose additions pass the agent's guard (call ``setup_guard`` after construction)."""


GuardedOptimizer = GuardedOptoPrime | GuardedOPRO | GuardedLessons
