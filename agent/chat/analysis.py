"""Questions about a solved model, answered by solving, not by guessing: re-solve after an edit,
what-if (an edit on a copy), why-not (force a decision, compare), sensitivity in words from duals
and reduced costs, and the infeasibility diagnosis with a checked smallest relaxation.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from agent import explain
from agent.answer import AgentAnswer, AnswerStatus
from agent.chat.edits import AddConstraint, ModelEdit, SetRhs, apply_edits, constant_side
from agent.explain import format_number, split_key
from agent.steps import constraint_slacks, verify_ir
from solvers.api import solve_formulation
from solvers.expressions import element_key, instance_name
from solvers.ir import Formulation
from solvers.result import SolveOptions, SolveResult, SolveStatus

SOLVED = (SolveStatus.OPTIMAL, SolveStatus.TIME_LIMIT)
VALUE_TOLERANCE = 1e-6
DUAL_TOLERANCE = 1e-9
MAX_LISTED = 12  # lines of one kind in a reply; the structured fields keep everything


def objective_words(f: Formulation) -> str:
    return f.objective.description or f"the objective ({f.objective.expression})"


# --- (re)solving ----------------------------------------------------------------------------------
def answer_for(
    question: str, f: Formulation, options: SolveOptions, *, check_tolerance: float = 1e-6
) -> AgentAnswer:
    """Solve `f` and explain it the way the agent explains its own answers (no LLM involved)."""
    solve = solve_formulation(f, options)
    answer = AgentAnswer(
        question=question,
        status=AnswerStatus(solve.status.value),
        objective=solve.objective,
        sense=f.objective.sense,
        formulation=f,
        solve=solve,
        model_math=explain.model_math(f),
        mode="agent",
    )
    if solve.status == SolveStatus.ERROR:
        answer.error = solve.message or "the model could not be solved"
        answer.confidence = "low"
        return answer
    if solve.status not in SOLVED or not solve.values:
        answer.explanation = explain.explanation(f, solve, [], [])
        if solve.diagnosis is not None:
            answer.explanation += "\n" + solve.diagnosis.message
        return answer
    answer.check = verify_ir(f, solve, check_tolerance)
    answer.decisions = explain.decisions_of(f, solve)
    answer.binding_constraints = explain.binding_constraints(constraint_slacks(f, solve.values), solve.duals)
    answer.explanation = explain.explanation(
        f, solve, answer.decisions, answer.binding_constraints, answer.check
    )
    answer.confidence = "medium" if answer.check is None or answer.check.ok else "low"
    return answer


def summary(answer: AgentAnswer) -> str:
    """A solved model in a few sentences."""
    if answer.status in (AnswerStatus.OPTIMAL, AnswerStatus.TIME_LIMIT) and answer.explanation:
        return answer.explanation
    if answer.status == AnswerStatus.INFEASIBLE:
        text = "The model is infeasible: no plan satisfies every constraint."
        if answer.solve is not None and answer.solve.diagnosis is not None:
            text += "\n" + answer.solve.diagnosis.message
        return text + "\nSay 'diagnose' for the conflict and a fix, or /undo."
    if answer.status == AnswerStatus.NEEDS_CLARIFICATION:
        return "The problem lacks data:\n" + "\n".join(f"- {q}" for q in answer.clarifying_questions)
    detail = answer.error or answer.explanation or (answer.solve.message if answer.solve else "")
    return f"No solution ({answer.status.value}). {detail}".strip()


# --- comparisons ----------------------------------------------------------------------------------
class DecisionChange(BaseModel):
    variable: str
    meaning: str = ""
    before: float | None
    after: float | None


class Comparison(BaseModel):
    """A hypothetical model against the current one."""

    kind: Literal["what_if", "why_not"]
    change: str = Field(description="what the hypothetical changes, in words")
    sense: Literal["minimize", "maximize"]
    goal: str
    base_status: str
    base_objective: float | None
    new_status: str
    new_objective: float | None
    delta: float | None = None
    percent: float | None = None
    changes: list[DecisionChange] = Field(default_factory=list)
    solve: SolveResult
    explanation: str = ""


def _changed_decisions(f: Formulation, base: SolveResult | None, new: SolveResult) -> list[DecisionChange]:
    before = base.values if base is not None else {}
    after = new.values
    changes = []
    for key in dict.fromkeys([*before, *after]):
        old, fresh = before.get(key), after.get(key)
        if old is not None and fresh is not None and abs(old - fresh) <= VALUE_TOLERANCE * (1 + abs(old)):
            continue
        changes.append(
            DecisionChange(variable=key, meaning=explain.variable_meaning(f, key), before=old, after=fresh)
        )
    return changes


def compare(
    base: AgentAnswer, new: AgentAnswer, kind: Literal["what_if", "why_not"], change: str
) -> Comparison:
    assert base.formulation is not None and new.solve is not None
    f = base.formulation
    delta = percent = None
    if base.objective is not None and new.objective is not None and new.status == AnswerStatus.OPTIMAL:
        delta = new.objective - base.objective
        percent = 100.0 * delta / abs(base.objective) if abs(base.objective) > 1e-12 else None
    return Comparison(
        kind=kind,
        change=change,
        sense=f.objective.sense,
        goal=objective_words(f),
        base_status=base.status.value,
        base_objective=base.objective,
        new_status=new.status.value,
        new_objective=new.objective,
        delta=delta,
        percent=percent,
        changes=_changed_decisions(f, base.solve, new.solve) if new.solve.values else [],
        solve=new.solve,
    )


def _delta_words(comparison: Comparison) -> str:
    if comparison.delta is None:
        return ""
    sign = "+" if comparison.delta >= 0 else "-"
    text = f"{sign}{format_number(abs(comparison.delta))}"
    if comparison.percent is not None:
        text += f", {sign}{abs(comparison.percent):.3g}%"
    return text


def _changes_words(comparison: Comparison) -> str:
    if not comparison.changes:
        return "No decision changes."
    shown = [
        f"{c.meaning or c.variable}: {_value(c.before)} -> {_value(c.after)}"
        for c in comparison.changes[:MAX_LISTED]
    ]
    more = (
        f" (and {len(comparison.changes) - MAX_LISTED} more)" if len(comparison.changes) > MAX_LISTED else ""
    )
    return "Changed decisions: " + "; ".join(shown) + more + "."


def _value(value: float | None) -> str:
    return "-" if value is None else format_number(value)


def _infeasible_words(new: AgentAnswer) -> str:
    diagnosis = new.solve.diagnosis if new.solve is not None else None
    return diagnosis.message if diagnosis is not None else (new.solve.message if new.solve else "")


def what_if(base: AgentAnswer, edits: list[ModelEdit], options: SolveOptions) -> Comparison:
    """Solve a copy of the current model with `edits`; the current model is not touched."""
    assert base.formulation is not None
    changed = apply_edits(base.formulation, edits)
    new = answer_for(base.question, changed, options)
    change = "; ".join(e.describe() for e in edits)
    comparison = compare(base, new, "what_if", change)
    goal = comparison.goal
    unchanged = comparison.delta is not None and abs(comparison.delta) <= VALUE_TOLERANCE * (
        1 + abs(comparison.base_objective or 0.0)
    )
    if new.status == AnswerStatus.OPTIMAL and unchanged:
        comparison.explanation = (
            f"With this change ({change}) {goal} would stay {format_number(new.objective or 0.0)}. "
            f"{_changes_words(comparison)} The current model is unchanged."
        )
    elif new.status == AnswerStatus.OPTIMAL and comparison.base_objective is not None:
        comparison.explanation = (
            f"With this change ({change}) {goal} would be {format_number(new.objective or 0.0)} instead of "
            f"{format_number(comparison.base_objective)} ({_delta_words(comparison)}). "
            f"{_changes_words(comparison)} The current model is unchanged."
        )
    elif new.status == AnswerStatus.OPTIMAL:
        comparison.explanation = (
            f"With this change ({change}) {goal} would be {format_number(new.objective or 0.0)} "
            f"(the current model has no optimum: {comparison.base_status}). The current model is unchanged."
        )
    elif new.status == AnswerStatus.INFEASIBLE:
        comparison.explanation = (
            f"With this change ({change}) the model would be infeasible. {_infeasible_words(new)}\n"
            "The current model is unchanged."
        )
    else:
        comparison.explanation = (
            f"With this change ({change}) the solver reports {new.status.value}. {new.error or ''} "
            "The current model is unchanged."
        ).strip()
    return comparison


# --- why not --------------------------------------------------------------------------------------
class WhyNotReply(BaseModel):
    """The LLM's pick: which decision the question is about, and the value to try."""

    variable: str = Field(description='a decision name exactly as listed, e.g. "open[B]"')
    value: float | None = Field(default=None, description="the value the user asks about; null if none")


class ForcedDecision(BaseModel):
    """A decision to force in a why-not question, resolved against the model."""

    key: str  # Pyomo name, e.g. "open[B]"
    variable: str
    elements: list[str | int] = Field(default_factory=list)
    domain: str
    current: float
    op: Literal["==", ">=", "<="]
    value: float

    @property
    def expression(self) -> str:
        if not self.elements:
            target = self.variable
        else:
            target = f"{self.variable}[{', '.join(repr(e) for e in self.elements)}]"
        return f"{target} {self.op} {format_number(self.value)}"


_KEY = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:[\[(](.*)[\])])?\s*$")


def resolve_forced(
    f: Formulation, solve: SolveResult, key: str, value: float | None = None
) -> ForcedDecision:
    """Read "open[B]" / "open['B']" / "chairs" against the model; raises ValueError naming the choices."""
    match = _KEY.match(key)
    if not match:
        raise ValueError(f"{key!r} is not a decision name like x or x[i]")
    name, inside = match.group(1), match.group(2)
    variable = f.variable_named(name)
    if variable is None:
        names = ", ".join(v.name for v in f.variables)
        raise ValueError(f"there is no decision named {name!r}; decisions: {names}")
    parts = [p.strip().strip("'\"") for p in inside.split(",")] if inside and inside.strip() else []
    if len(parts) != len(variable.index):
        example = [k for k in solve.values if k.startswith(name + "[")][:4]
        raise ValueError(
            f"{name} is indexed by ({', '.join(variable.index)}); name one entry, e.g. {', '.join(example)}"
        )
    elements: list[str | int] = []
    for part, set_name in zip(parts, variable.index, strict=True):
        index_set = f.set_named(set_name)
        members = {element_key(e): e for e in (index_set.elements if index_set else [])}
        if element_key(part) not in members:
            raise ValueError(f"{part!r} is not in {set_name} ({', '.join(members)})")
        elements.append(members[element_key(part)])
    pyomo_key = instance_name(name, elements)
    current = solve.values.get(pyomo_key, 0.0)
    if variable.domain == "binary":
        target = value if value is not None else 1.0 - round(current)
        return ForcedDecision(
            key=pyomo_key, variable=name, elements=elements, domain="binary", current=current,
            op="==", value=float(round(target)),
        )  # fmt: skip
    if value is None:
        value = 1.0 if current < 1.0 - VALUE_TOLERANCE else float(int(current)) + 1.0
    op: Literal[">=", "<="] = ">=" if value >= current else "<="
    return ForcedDecision(
        key=pyomo_key, variable=name, elements=elements, domain=variable.domain, current=current,
        op=op, value=value,
    )  # fmt: skip


def decision_listing(f: Formulation, solve: SolveResult, limit: int = 60) -> str:
    """Decision names with values and meanings for the why-not prompt (zeros first: they are asked about)."""
    keys = sorted(solve.values, key=lambda k: abs(solve.values[k]) > VALUE_TOLERANCE)
    lines = [
        f"{key} = {format_number(solve.values[key])}  ({explain.variable_meaning(f, key)})"
        for key in keys[:limit]
    ]
    if len(keys) > limit:
        lines.append(f"... and {len(keys) - limit} more")
    return "\n".join(lines)


WHY_NOT_SYSTEM = "You match a question about an optimization plan to one decision. Answer with JSON only."


def why_not_prompt(f: Formulation, solve: SolveResult, question: str) -> list[dict[str, str]]:
    user = (
        f"Decisions of the current plan (name = value (meaning)):\n{decision_listing(f, solve)}\n\n"
        "Which decision does the question ask about, and what value does the user want "
        '(null if the question gives none)? Example: {"variable": "make[chairs]", "value": null}\n\n'
        f"Question: {question.strip()}\nJSON:"
    )
    return [{"role": "system", "content": WHY_NOT_SYSTEM}, {"role": "user", "content": user}]


def mentioned_decision(solve: SolveResult, text: str) -> str | None:
    """A decision named verbatim in the question ("why is open[B] 0?"), if exactly one is."""
    found = [key for key in solve.values if re.search(rf"(?<![\w\[]){re.escape(key)}(?![\w\[])", text)]
    return found[0] if len(found) == 1 else None


def _unused_name(f: Formulation, base: str) -> str:
    taken = {c.name for c in f.constraints} | {v.name for v in f.variables} | {p.name for p in f.parameters}
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    return name


def why_not(base: AgentAnswer, forced: ForcedDecision, options: SolveOptions) -> Comparison:
    """Force the decision, re-solve a copy, and explain the objective's price of forcing it."""
    assert base.formulation is not None
    f = base.formulation
    meaning = explain.variable_meaning(f, forced.key)
    edit = AddConstraint(
        name=_unused_name(f, "why_not_" + forced.variable),
        expression=forced.expression,
        description=f"forced for a why-not question: {meaning}",
    )
    new = answer_for(base.question, apply_edits(f, [edit]), options)
    change = f"force {forced.expression} ({meaning}; now {format_number(forced.current)})"
    comparison = compare(base, new, "why_not", change)
    goal = comparison.goal
    if new.status == AnswerStatus.INFEASIBLE:
        comparison.explanation = (
            f"{forced.expression} is impossible: with it the model is infeasible. {_infeasible_words(new)}"
        )
    elif new.status != AnswerStatus.OPTIMAL or comparison.delta is None:
        comparison.explanation = f"With {forced.expression} the solver reports {new.status.value}."
    else:
        worse = comparison.delta < 0 if comparison.sense == "maximize" else comparison.delta > 0
        amount = format_number(abs(comparison.delta))
        new_value = format_number(new.objective or 0.0)
        if abs(comparison.delta) <= VALUE_TOLERANCE * (1 + abs(comparison.base_objective or 0.0)):
            comparison.explanation = (
                f"Forcing {forced.expression} costs nothing: {goal} stays {new_value}. "
                "An equally good plan exists with it (the optimum is not unique)."
            )
        elif worse:
            comparison.explanation = (
                f"Forcing {forced.expression} makes {goal} {new_value} instead of "
                f"{format_number(comparison.base_objective or 0.0)}: it would cost {amount} "
                f"({_delta_words(comparison)}). That is why the best plan has {forced.key} = "
                f"{format_number(forced.current)}. {_changes_words(comparison)}"
            )
        else:
            comparison.explanation = (
                f"Forcing {forced.expression} IMPROVES {goal} to {new_value} ({_delta_words(comparison)}): "
                "the current plan was not optimal (e.g. a time limit stopped the solver)."
            )
    return comparison


# --- sensitivity ----------------------------------------------------------------------------------
class ConstraintSensitivity(BaseModel):
    name: str
    description: str = ""
    dual: float
    slack: float | None = None
    limit: float | None = None
    binding: bool


class VariableSensitivity(BaseModel):
    name: str
    meaning: str = ""
    value: float
    reduced_cost: float


class Sensitivity(BaseModel):
    available: bool
    constraints: list[ConstraintSensitivity] = Field(default_factory=list)
    variables: list[VariableSensitivity] = Field(default_factory=list)
    text: str


def _change_words(amount: float, goal: str) -> str:
    verb = "raises" if amount > 0 else "lowers"
    return f"{verb} {goal} by {format_number(abs(amount))}"


def sensitivity(answer: AgentAnswer) -> Sensitivity:
    """Duals and reduced costs in words (LPs); for integer models, say why not and offer what-if."""
    f, solve = answer.formulation, answer.solve
    if f is None or solve is None or solve.status != SolveStatus.OPTIMAL:
        status = answer.status.value
        return Sensitivity(
            available=False, text=f"Sensitivity needs an optimal model; the current one is {status}."
        )
    if f.has_integers:
        integers = ", ".join(v.name for v in f.variables if v.domain != "continuous")
        return Sensitivity(
            available=False,
            text=(
                f"Duals and reduced costs are not available: the model has integer decisions ({integers}), "
                "so it is a MILP and prices of constraints are not defined. Ask a what-if instead, e.g. "
                f"'what if {f.constraints[0].name if f.constraints else 'a limit'} is ...?' or "
                "/whatif NAME VALUE, and I solve it and compare."
            ),
        )
    if not solve.duals:
        return Sensitivity(available=False, text="The solver returned no duals for this model.")
    goal = objective_words(f)
    slacks = constraint_slacks(f, solve.values)
    constraints: list[ConstraintSensitivity] = []
    for name, dual in solve.duals.items():
        base_name = split_key(name)[0]
        constraint = f.constraint_named(base_name)
        found = constant_side(constraint.expression) if constraint is not None and name == base_name else None
        slack = slacks.get(name)
        constraints.append(
            ConstraintSensitivity(
                name=name,
                description=constraint.description if constraint else "",
                dual=dual,
                slack=slack,
                limit=found.value if found else None,
                binding=abs(dual) > DUAL_TOLERANCE or (slack is not None and abs(slack) <= VALUE_TOLERANCE),
            )
        )
    variables = [
        VariableSensitivity(
            name=key,
            meaning=explain.variable_meaning(f, key),
            value=solve.values.get(key, 0.0),
            reduced_cost=cost,
        )
        for key, cost in solve.reduced_costs.items()
        if abs(cost) > DUAL_TOLERANCE
    ]
    lines: list[str] = []
    priced = [c for c in constraints if abs(c.dual) > DUAL_TOLERANCE]
    for c in priced[:MAX_LISTED]:
        about = f" ({c.description})" if c.description else ""
        limit = f" (now {format_number(c.limit)})" if c.limit is not None else ""
        lines.append(
            f"{c.name}{about} is binding: each extra unit of its limit{limit} {_change_words(c.dual, goal)} "
            f"(dual {format_number(c.dual)})."
        )
    degenerate = [c for c in constraints if c.binding and abs(c.dual) <= DUAL_TOLERANCE]
    for c in degenerate[:MAX_LISTED]:
        lines.append(f"{c.name} is binding but its dual is 0: one more unit of it would not change {goal}.")
    slack_ones = [c for c in constraints if not c.binding]
    if slack_ones:
        listed = ", ".join(
            f"{c.name} (slack {format_number(c.slack)})" if c.slack is not None else c.name
            for c in slack_ones[:MAX_LISTED]
        )
        lines.append(f"Not binding, so more of them is worth nothing (dual 0): {listed}.")
    for v in variables[:MAX_LISTED]:
        at = "is 0" if abs(v.value) <= VALUE_TOLERANCE else f"is {format_number(v.value)}, at a bound"
        named = f"{v.name} ({v.meaning})" if v.meaning and v.meaning != v.name else v.name
        lines.append(
            f"{named} {at}: each unit more {_change_words(v.reduced_cost, goal)} "
            f"(reduced cost {format_number(v.reduced_cost)})."
        )
    if not lines:
        lines.append("No constraint has a nonzero dual: small changes of the limits do not move the optimum.")
    return Sensitivity(available=True, constraints=constraints, variables=variables, text="\n".join(lines))


# --- infeasibility --------------------------------------------------------------------------------
class Diagnosis(BaseModel):
    infeasible: bool
    conflict: list[str] = Field(default_factory=list, description="readable lines, one per member")
    fix: list[SetRhs] = Field(default_factory=list, description="the smallest relaxation as edits")
    fix_objective: float | None = Field(default=None, description="the optimum after the fix, as checked")
    text: str


def _member_line(f: Formulation, name: str, description: str) -> str:
    constraint = f.constraint_named(split_key(name)[0])
    if constraint is None:
        return f"{name}: {description}" if description else name
    about = f"  ({constraint.description})" if constraint.description else ""
    return f"{name}: {constraint.expression}{about}"


def diagnose(answer: AgentAnswer, options: SolveOptions) -> Diagnosis:
    """The conflict by named constraints and the smallest relaxation, checked by solving it."""
    f, solve = answer.formulation, answer.solve
    if f is None or solve is None:
        return Diagnosis(infeasible=False, text="There is no solved model to diagnose.")
    if solve.status != SolveStatus.INFEASIBLE:
        objective = f", objective {format_number(solve.objective)}" if solve.objective is not None else ""
        return Diagnosis(
            infeasible=False,
            text=f"The current model is not infeasible (status {solve.status.value}{objective}); "
            "nothing to diagnose.",
        )
    diagnosis = solve.diagnosis
    if diagnosis is None:
        return Diagnosis(
            infeasible=True,
            text=f"The model is infeasible, but no diagnosis is available. {solve.message}".strip(),
        )
    conflict = [
        _member_line(f, m.name, m.description)
        if m.kind == "constraint"
        else f"bound {m.description or m.name}"
        for m in diagnosis.conflict
    ]
    lines = ["These constraints cannot all hold together:"] + [f"  - {line}" for line in conflict[:20]]
    fix, fix_objective = _checked_fix(answer, options)
    if fix:
        steps = "; ".join(f"/set {e.name} {format_number(e.value)}" for e in fix)
        lines.append(
            f"Smallest relaxation: {steps} (checked: the model then solves, "
            f"{objective_words(f)} = {format_number(fix_objective or 0.0)})."
        )
    elif diagnosis.relaxations:
        lines.append(diagnosis.message.splitlines()[-1])
    elif "No change to the constraints" in diagnosis.message:
        lines.append("No change to the constraints can fix it: the variable bounds themselves conflict.")
    return Diagnosis(
        infeasible=True, conflict=conflict, fix=fix, fix_objective=fix_objective, text="\n".join(lines)
    )


def _checked_fix(answer: AgentAnswer, options: SolveOptions) -> tuple[list[SetRhs], float | None]:
    """The diagnosis's relaxations as /set edits, kept only if the relaxed model really solves."""
    f, solve = answer.formulation, answer.solve
    assert f is not None and solve is not None and solve.diagnosis is not None
    edits: list[SetRhs] = []
    for relaxation in solve.diagnosis.relaxations:
        constraint = f.constraint_named(relaxation.name)  # indexed instances have no single limit
        found = constant_side(constraint.expression) if constraint is not None else None
        if found is None:
            return [], None
        step = relaxation.amount if relaxation.direction == "increase_rhs" else -relaxation.amount
        edits.append(SetRhs(name=relaxation.name, value=round(found.value + step, 9)))
    if not edits:
        return [], None
    try:
        relaxed = apply_edits(f, list(edits))
    except ValueError:
        return [], None
    result = solve_formulation(relaxed, options.model_copy(update={"diagnose_infeasible": False}))
    if result.status != SolveStatus.OPTIMAL:
        return [], None
    return edits, result.objective
