"""Turn a solved formulation into words: decisions, binding constraints, readable math, a summary.

Everything here reads the formulation's own names and descriptions (which the LLM wrote in the
problem's words and units), so the explanation speaks the problem's language without another
LLM call.
"""

from __future__ import annotations

from agent.answer import Decision
from solvers.ir import Constraint, Formulation, Parameter, Variable
from solvers.result import CheckReport, SolveResult

BINDING_TOLERANCE = 1e-6
DUAL_TOLERANCE = 1e-9
MAX_DECISIONS = 200  # indexed models can have thousands of zero entries; nobody reads them


def format_number(value: float) -> str:
    if abs(value - round(value)) < 1e-9 * max(1.0, abs(value)):
        return str(round(value))
    return f"{value:.6g}"


def split_key(key: str) -> tuple[str, list[str]]:
    """'x[Boston,NY]' -> ('x', ['Boston', 'NY']); 'x' -> ('x', [])."""
    name, bracket, rest = key.partition("[")
    if not bracket:
        return key, []
    return name, [part.strip() for part in rest.rstrip("]").split(",")]


def variable_meaning(formulation: Formulation, key: str) -> str:
    name, index = split_key(key)
    variable = formulation.variable_named(name)
    meaning = variable.description if variable and variable.description else name
    return f"{meaning} ({', '.join(index)})" if index else meaning


def decisions_of(formulation: Formulation, solve: SolveResult, limit: int = MAX_DECISIONS) -> list[Decision]:
    """Scalar decisions always; indexed entries only when nonzero (the zeros are the default)."""
    decisions: list[Decision] = []
    for key, value in solve.values.items():
        _, index = split_key(key)
        if index and abs(value) <= 1e-9:
            continue
        decisions.append(Decision(variable=key, value=value, meaning=variable_meaning(formulation, key)))
        if len(decisions) >= limit:
            break
    return decisions


def binding_constraints(
    slacks: dict[str, float], duals: dict[str, float] | None = None, tolerance: float = BINDING_TOLERANCE
) -> list[str]:
    """Constraints at their limit: slack ~0, or (LP) a nonzero dual, in the order given."""
    duals = duals or {}
    names = list(dict.fromkeys([*slacks, *duals]))
    return [
        name
        for name in names
        if abs(slacks.get(name, float("inf"))) <= tolerance or abs(duals.get(name, 0.0)) > DUAL_TOLERANCE
    ]


# --- readable math ---------------------------------------------------------------------------------
def _indexed(name: str, index: list[str]) -> str:
    return f"{name}[{', '.join(index)}]" if index else name


def _constraint_line(constraint: Constraint) -> str:
    line = f"  {constraint.name}: {constraint.expression}"
    if constraint.for_all:
        line += "    for all " + ", ".join(f"{b.index} in {b.set}" for b in constraint.for_all)
    if constraint.where:
        line += f" where {constraint.where}"
    if constraint.description:
        line += f"    # {constraint.description}"
    return line


def _variable_line(variable: Variable) -> str:
    lower, upper = variable.lower, variable.upper
    if variable.domain == "binary":
        bounds = "in {0, 1}"
    elif lower is not None and upper is not None:
        bounds = f"in [{format_number(lower)}, {format_number(upper)}]"
    elif lower is not None:
        bounds = f">= {format_number(lower)}"
    elif upper is not None:
        bounds = f"<= {format_number(upper)}"
    else:
        bounds = "free"
    kind = "" if variable.domain == "binary" else f", {variable.domain}"
    note = f"    # {variable.description}" if variable.description else ""
    return f"  {_indexed(variable.name, variable.index)} {bounds}{kind}{note}"


def _parameter_line(parameter: Parameter) -> str:
    if isinstance(parameter.value, dict):
        count = _count_leaves(parameter.value)
        return f"  {_indexed(parameter.name, parameter.index)}: table of {count} values"
    return f"  {parameter.name} = {format_number(parameter.value)}"


def _count_leaves(table: dict) -> int:
    return sum(_count_leaves(v) if isinstance(v, dict) else 1 for v in table.values())


def model_math(formulation: Formulation) -> str:
    objective = formulation.objective
    lines = [f"{objective.sense} {objective.expression}"]
    if objective.description:
        lines[0] += f"    # {objective.description}"
    if formulation.constraints:
        lines.append("subject to")
        lines += [_constraint_line(c) for c in formulation.constraints]
    lines.append("variables")
    lines += [_variable_line(v) for v in formulation.variables]
    if formulation.sets or formulation.parameters:
        lines.append("data")
        lines += [f"  {s.name} = {{{', '.join(str(e) for e in s.elements)}}}" for s in formulation.sets]
        lines += [_parameter_line(p) for p in formulation.parameters]
    return "\n".join(lines)


# --- the short explanation -------------------------------------------------------------------------
def explanation(
    formulation: Formulation,
    solve: SolveResult,
    decisions: list[Decision],
    binding: list[str],
    check: CheckReport | None = None,
) -> str:
    objective = formulation.objective
    goal = objective.description or objective.expression
    if solve.objective is None:
        return f"No optimal plan: the solver reported {solve.status.value}. {solve.message}".strip()
    parts = [f"The best plan to {objective.sense} {goal} reaches {format_number(solve.objective)}."]
    shown = [f"{d.meaning or d.variable} = {format_number(d.value)}" for d in decisions[:12]]
    if shown:
        more = f" (and {len(decisions) - 12} more)" if len(decisions) > 12 else ""
        parts.append("Decisions: " + "; ".join(shown) + more + ".")
    if binding:
        described = []
        for name in binding[:8]:
            constraint = formulation.constraint_named(split_key(name)[0])
            about = constraint.description if constraint else ""
            described.append(f"{name} ({about})" if about else name)
        parts.append("Limiting constraints (used up exactly): " + "; ".join(described) + ".")
    if check is not None:
        parts.append(
            "An independent check confirmed the plan meets every constraint."
            if check.ok
            else f"The independent check found problems: {check.summary()}"
        )
    return " ".join(parts)
