"""An independent check of a solution against its formulation, in plain Python floats.

No Pyomo and no solver: the formulation's own expressions are re-evaluated by the float
backend of the expression walker, so a bug in the model builder or a solver's tolerance cannot
certify itself. Tolerances are relative: a violation counts when it exceeds
`tolerance * (1 + |rhs|)`.
"""

from __future__ import annotations

import itertools
import math

from solvers.expressions import (
    CompiledConstraint,
    ExpressionError,
    FloatAlgebra,
    FormulationError,
    MissingValueError,
    VariableInfo,
    compile_formulation,
    evaluate,
    instance_name,
)
from solvers.ir import Formulation
from solvers.result import CheckReport, Violation

_BELOW = {"<=": ">", ">=": "<", "==": "!="}


def _allowed(tolerance: float, reference: float) -> float:
    return tolerance * (1.0 + abs(reference))


def _check_variable(
    variable: VariableInfo, values: dict[str, float], tolerance: float, out: list[Violation]
) -> int:
    lower = variable.lower
    upper = variable.upper
    if variable.domain == "binary":
        lower = 0.0 if lower is None else max(lower, 0.0)
        upper = 1.0 if upper is None else min(upper, 1.0)
    integer = variable.domain != "continuous"
    count = 0
    for key in variable.instance_keys():
        count += 1
        name = instance_name(variable.name, key)
        value = values.get(name)
        if value is None or not math.isfinite(value):
            what = "has no value" if value is None else f"has the non-finite value {value}"
            out.append(Violation(kind="missing_value", name=name, amount=math.inf, message=f"{name} {what}"))
            continue
        if lower is not None and value < lower - _allowed(tolerance, lower):
            amount = lower - value
            out.append(
                Violation(
                    kind="bound",
                    name=name,
                    amount=amount,
                    message=f"{name}: value {value:.10g} < lower bound {lower:.10g} by {amount:.4g}",
                )
            )
        if upper is not None and value > upper + _allowed(tolerance, upper):
            amount = value - upper
            out.append(
                Violation(
                    kind="bound",
                    name=name,
                    amount=amount,
                    message=f"{name}: value {value:.10g} > upper bound {upper:.10g} by {amount:.4g}",
                )
            )
        if integer:
            nearest = round(value)
            amount = abs(value - nearest)
            if amount > _allowed(tolerance, nearest):
                out.append(
                    Violation(
                        kind="integrality",
                        name=name,
                        amount=amount,
                        message=f"{name}: value {value:.10g} is not integral ({variable.domain}); "
                        f"{amount:.4g} away from {nearest}",
                    )
                )
    return count


def _pair_violation(left: float, op: str, right: float) -> float:
    """How far `left op right` is from holding (0 when it holds)."""
    if op == "<=":
        return max(0.0, left - right)
    if op == ">=":
        return max(0.0, right - left)
    return abs(left - right)


def _check_range(
    label: str, parts: tuple[float, ...], ops: tuple[str, ...], tolerance: float, out: list[Violation]
) -> None:
    """`lo <= e <= hi` (or `hi >= e >= lo`): report the expression against the end it crosses."""
    value = parts[1]
    lower, upper = (parts[0], parts[2]) if ops[0] == "<=" else (parts[2], parts[0])
    if value < lower - _allowed(tolerance, lower):
        amount = lower - value
        message = f"{label}: expression {value:.10g} < lower end {lower:.10g} by {amount:.4g}"
        out.append(Violation(kind="constraint", name=label, amount=amount, message=message))
    if value > upper + _allowed(tolerance, upper):
        amount = value - upper
        message = f"{label}: expression {value:.10g} > upper end {upper:.10g} by {amount:.4g}"
        out.append(Violation(kind="constraint", name=label, amount=amount, message=message))


def _check_constraint(
    compiled: CompiledConstraint, tolerance: float, out: list[Violation], errors: list[ExpressionError]
) -> int:
    ops = compiled.relation.ops
    count = 0
    for key, env, problem in compiled.checked_instances():
        if problem is not None:
            errors.append(problem)
            continue
        label = instance_name(compiled.name, key)
        try:
            parts = evaluate(compiled.relation, env, f"constraint {label}")
        except MissingValueError:
            continue  # the variable itself is already reported as missing
        except ExpressionError as error:
            errors.append(error)
            continue
        count += 1
        if len(parts) == 3:
            _check_range(label, parts, ops, tolerance, out)
            continue
        for (left, right), op in zip(itertools.pairwise(parts), ops, strict=True):
            amount = _pair_violation(left, op, right)
            if amount > _allowed(tolerance, right):
                out.append(
                    Violation(
                        kind="constraint",
                        name=label,
                        amount=amount,
                        message=f"{label}: lhs {left:.10g} {_BELOW[op]} rhs {right:.10g} by {amount:.4g}",
                    )
                )
    return count


def check_solution(
    f: Formulation,
    values: dict[str, float],
    objective: float | None = None,
    tolerance: float = 1e-6,
) -> CheckReport:
    """Re-evaluate every bound, integrality, constraint instance and (if given) the objective.

    `values` are keyed by Pyomo names ("x", "x[Boston,NY]"); a missing one is a violation.
    Raises `FormulationError` when the formulation itself cannot be evaluated.
    """
    compiled = compile_formulation(f, FloatAlgebra(values))
    if compiled.errors:
        raise FormulationError(compiled.errors, f.name)
    violations: list[Violation] = []
    errors: list[ExpressionError] = []
    checked_variables = sum(
        _check_variable(v, values, tolerance, violations) for v in compiled.table.variables.values()
    )
    checked_constraints = sum(
        _check_constraint(c, tolerance, violations, errors) for c in compiled.constraints
    )
    if errors:
        raise FormulationError(errors, f.name)
    recomputed: float | None = None
    if compiled.objective is not None:
        try:
            recomputed = float(evaluate(compiled.objective, {}, "objective"))
        except MissingValueError:
            recomputed = None
    if objective is not None and recomputed is not None:
        amount = abs(recomputed - objective)
        if amount > _allowed(tolerance, recomputed):
            violations.append(
                Violation(
                    kind="objective",
                    name=f.objective.name,
                    amount=amount,
                    message=f"objective: reported {objective:.10g} but the values give {recomputed:.10g} "
                    f"(off by {amount:.4g})",
                )
            )
    return CheckReport(
        ok=not violations,
        tolerance=tolerance,
        violations=violations,
        recomputed_objective=recomputed,
        checked_constraints=checked_constraints,
        checked_variables=checked_variables,
    )
