"""IR -> Pyomo: `build_model(formulation)` gives a `ConcreteModel` whose components carry the IR's
names (so solver output, duals and conflicts speak the formulation's language) or raises a
`FormulationError` listing every problem found, not just the first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pyomo.environ as pyo

from solvers.expressions import (
    NONLINEAR,
    CompiledConstraint,
    ExpressionError,
    FormulationError,
    SymbolTable,
    VariableInfo,
    compile_formulation,
    evaluate,
    instance_name,
)
from solvers.ir import Formulation

__all__ = [
    "BuiltModel",
    "ExpressionError",
    "FormulationError",
    "Instances",
    "PyomoAlgebra",
    "build_model",
    "evaluate_instances",
]

# Runtime errors (data-dependent) are reported for this many instances of one constraint; the
# rest are counted, because 10,000 copies of one mistake help nobody.
ERRORS_PER_CONSTRAINT = 3
_DOMAINS = {"continuous": pyo.Reals, "integer": pyo.Integers, "binary": pyo.Binary}


class PyomoAlgebra:
    """Variables are the model's `VarData`; sums are `quicksum`s (flat linear expressions)."""

    def __init__(self, model: pyo.ConcreteModel) -> None:
        self.model = model

    def variable_getter(self, variable: VariableInfo) -> Callable[[Any], Any]:
        component = self.model.component(variable.name)
        if component is None:  # its declaration failed (reported); nothing will be evaluated
            return lambda key: None
        if not variable.sets:
            return lambda key: component
        # a plain dict lookup is ~5x faster than IndexedComponent.__getitem__
        return dict(component.items()).__getitem__

    def total(self, terms: list[Any]) -> Any:
        return pyo.quicksum(terms) if terms else 0.0


@dataclass
class BuiltModel:
    """A Pyomo model built from a formulation, with its name maps."""

    model: pyo.ConcreteModel
    formulation: Formulation
    table: SymbolTable
    variables: dict[str, pyo.Var]
    constraints: dict[str, pyo.Constraint]
    objective: pyo.Objective | None
    degree: int  # highest polynomial degree in the objective and constraints
    always_true: list[str] = field(default_factory=list)  # instances left out: no variables, holds

    @property
    def is_linear(self) -> bool:
        return self.degree <= 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _pyomo_relation(parts: tuple[Any, ...], ops: tuple[str, ...]) -> Any:
    if len(parts) == 2:
        left, right = parts
        op = ops[0]
        if op == "<=":
            return left <= right
        if op == ">=":
            return left >= right
        return left == right
    low, body, high = parts if ops[0] == "<=" else parts[::-1]
    return pyo.inequality(low, body, high)


def _constant_holds(parts: tuple[float, ...], ops: tuple[str, ...], tolerance: float = 1e-9) -> bool:
    for (a, b), op in zip(itertools.pairwise(parts), ops, strict=True):
        scale = tolerance * (1 + abs(b))
        ok = a <= b + scale if op == "<=" else a >= b - scale if op == ">=" else abs(a - b) <= scale
        if not ok:
            return False
    return True


def _format_parts(parts: tuple[Any, ...], ops: tuple[str, ...]) -> str:
    text = f"{parts[0]:g}"
    for op, part in zip(ops, parts[1:], strict=True):
        text += f" {op} {part:g}"
    return text


class _Builder:
    def __init__(self, f: Formulation) -> None:
        self.f = f
        self.model = pyo.ConcreteModel(name=f.name)
        if f.description:
            self.model.doc = f.description
        self.errors: list[ExpressionError] = []
        self.always_true: list[str] = []

    def add(self, name: str, component: Any, what: str) -> bool:
        try:
            self.model.add_component(name, component)
        except ValueError:
            self.errors.append(
                ExpressionError(
                    f"{what} name {name!r} is reserved by Pyomo models; rename it (e.g. {name}_).",
                    component=f"{what} {name}",
                    token=name,
                )
            )
            return False
        return True

    def declare(self, table: SymbolTable) -> tuple[dict[str, pyo.Var], bool]:
        """Sets and variables first: compiling expressions needs the `VarData`s."""
        for s in self.f.sets:
            pyomo_set = pyo.Set(initialize=list(s.elements), ordered=True, dimen=1, doc=s.description or None)
            self.add(s.name, pyomo_set, "set")
        variables: dict[str, pyo.Var] = {}
        complete = True
        for v in self.f.variables:
            info = table.variables.get(v.name)
            if info is None:  # its index sets are wrong: already reported by the table
                complete = False
                continue
            index = [self.model.component(s.name) for s in info.sets]
            var = pyo.Var(
                *index, domain=_DOMAINS[v.domain], bounds=(v.lower, v.upper), doc=v.description or None
            )
            if self.add(v.name, var, "variable"):
                variables[v.name] = var
            else:
                complete = False
        return variables, complete

    def objective(self, node: Any) -> pyo.Objective | None:
        objective = self.f.objective
        try:
            expr = evaluate(node, {}, "objective")
        except ExpressionError as error:
            self.errors.append(error)
            return None
        sense = pyo.maximize if objective.sense == "maximize" else pyo.minimize
        component = pyo.Objective(expr=expr, sense=sense, doc=objective.description or None)
        return component if self.add(objective.name, component, "objective") else None

    def constraint(self, compiled: CompiledConstraint) -> pyo.Constraint | None:
        instances = evaluate_instances(compiled)
        self.errors += instances.errors
        self.always_true += instances.always_true
        if instances.errors:
            return None
        ops = compiled.relation.ops
        expressions = {key: _pyomo_relation(parts, ops) for key, parts in instances.parts}
        doc = compiled.constraint.description or None
        if not compiled.index_sets:
            if () not in expressions:  # always true: nothing to add
                return None
            component = pyo.Constraint(expr=expressions[()], doc=doc)
        else:
            index = [self.model.component(s.name) for s in compiled.index_sets]

            def rule(_model: Any, *key: Any) -> Any:
                return expressions.get(key, pyo.Constraint.Skip)

            component = pyo.Constraint(*index, rule=rule, doc=doc)
        return component if self.add(compiled.name, component, "constraint") else None


@dataclass
class Instances:
    """The evaluated instances of one constraint: what to add, what is wrong, what always holds."""

    parts: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)  # (key, parts)
    errors: list[ExpressionError] = field(default_factory=list)
    always_true: list[str] = field(default_factory=list)


def evaluate_instances(compiled: CompiledConstraint) -> Instances:
    """Evaluate every instance of a constraint, in whatever algebra it was compiled for.

    Instances whose sides are plain numbers (no variable left) are dropped when they hold and
    reported when they do not; data problems are reported for the first few instances and
    counted for the rest. Shared by the Pyomo builder and the array builder, so both report
    the same problems in the same words.
    """
    name, ops, token = compiled.name, compiled.relation.ops, compiled.relation.token
    out = Instances()
    failed = 0

    def fail(error: ExpressionError) -> None:
        nonlocal failed
        failed += 1
        if len(out.errors) < ERRORS_PER_CONSTRAINT:
            out.errors.append(error)

    for key, env, problem in compiled.checked_instances():
        if problem is not None:
            fail(problem)
            continue
        label = instance_name(name, key)
        try:
            parts = evaluate(compiled.relation, env, f"constraint {label}")
        except ExpressionError as error:
            fail(error)
            continue
        if all(_is_number(p) for p in parts):
            if _constant_holds(parts, ops):
                out.always_true.append(label)
            else:
                fail(_never_holds(label, parts, ops, token))
            continue
        if len(parts) == 3 and _is_number(parts[0]) and _is_number(parts[2]):
            low, high = (parts[0], parts[2]) if ops[0] == "<=" else (parts[2], parts[0])
            if low > high:
                message = f"the range is empty: lower end {low:g} exceeds upper end {high:g}."
                fail(ExpressionError(message, component=f"constraint {label}", token=token))
                continue
        out.parts.append((key, parts))
    if failed > len(out.errors):
        out.errors.append(
            ExpressionError(
                f"{failed - len(out.errors)} more instance(s) fail the same way.",
                component=f"constraint {name}",
            )
        )
    return out


def _never_holds(label: str, parts: tuple[float, ...], ops: tuple[str, ...], token: str) -> ExpressionError:
    return ExpressionError(
        f"no variable is left in this instance and it reduces to `{_format_parts(parts, ops)}`, "
        "which is false, so the model is infeasible. Often a sum over an empty selection; "
        "restrict the instances with `where`, or fix the data.",
        component=f"constraint {label}",
        token=token,
    )


@cache
def _pyomo_reserved_words() -> frozenset[str]:
    return frozenset(dir(pyo.ConcreteModel()))  # what Block.add_component refuses


def reserved_name_errors(f: Formulation) -> list[ExpressionError]:
    """Names a Pyomo model cannot hold as components (e.g. "name", "solve", "clone")."""
    reserved = _pyomo_reserved_words()
    named = [
        *(("set", s.name) for s in f.sets),
        *(("variable", v.name) for v in f.variables),
        ("objective", f.objective.name),
        *(("constraint", c.name) for c in f.constraints),
    ]
    return [
        ExpressionError(
            f"{what} name {name!r} is reserved by Pyomo models; rename it (e.g. {name}_).",
            component=f"{what} {name}",
            token=name,
        )
        for what, name in named
        if name in reserved
    ]


def build_model(f: Formulation) -> BuiltModel:
    """Build the Pyomo model of `f`, or raise `FormulationError` with every problem found."""
    builder = _Builder(f)
    table = SymbolTable.from_formulation(f)
    reserved = reserved_name_errors(f)
    variables: dict[str, pyo.Var] = {}
    complete = False
    if not reserved:
        variables, complete = builder.declare(table)
    compiled = compile_formulation(f, PyomoAlgebra(builder.model), table=table)
    if reserved:
        raise FormulationError([*compiled.errors, *reserved], f.name)
    builder.errors = [*compiled.errors, *builder.errors]
    objective = None
    if compiled.objective is not None and complete:
        objective = builder.objective(compiled.objective)
    constraints: dict[str, pyo.Constraint] = {}
    if complete:
        for c in compiled.constraints:
            component = builder.constraint(c)
            if component is not None:
                constraints[c.name] = component
    if builder.errors:
        raise FormulationError(builder.errors, f.name)
    degrees = [c.relation.degree for c in compiled.constraints]
    if compiled.objective is not None:
        degrees.append(compiled.objective.degree)
    return BuiltModel(
        model=builder.model,
        formulation=f,
        table=table,
        variables=variables,
        constraints=constraints,
        objective=objective,
        degree=min(max(degrees, default=0), NONLINEAR),
        always_true=builder.always_true,
    )
