"""Labels from HiGHS: every instance is solved, its optimum polished and checked independently.

* A time-limit hit is dropped (its "optimum" would be a guess), as is a solver error.
* `infeasible_or_unbounded` (HiGHS presolve cannot always tell) is settled by re-solving with a
  zero objective: a feasibility problem is never unbounded.
* MIP optima are polished: the integer and binary values are rounded, fixed, and the remaining LP
  re-solved. The label is then the exact objective of an integral solution (no 867.499999 from a
  binary at 0.9999999 times a big-M), and `check_solution` re-verifies it against the IR.
* The status must be the one the variant was built for; anything else is a generator bug and the
  instance is dropped with that reason.
"""

from __future__ import annotations

import itertools
import time
from typing import Literal

from pydantic import BaseModel, Field

from agent.synthesis.families.base import EXPECTED_STATUS, SynthInstance
from solvers.api import solve_formulation
from solvers.check import check_solution
from solvers.expressions import FormulationError, instance_name
from solvers.ir import Binding, Constraint, Formulation, Parameter
from solvers.result import SolveOptions, SolveResult, SolveStatus

LabelStatus = Literal["optimal", "infeasible", "unbounded"]


class InstanceLabel(BaseModel):
    status: LabelStatus
    objective: float | None = None
    solver_objective: float | None = Field(default=None, description="the MIP objective before polishing")
    polished: bool = False
    checked: bool = Field(default=False, description="check_solution verified the labelled solution")
    seconds: float = 0.0
    values: dict[str, float] = Field(default_factory=dict)


class LabelOutcome(BaseModel):
    label: InstanceLabel | None = None
    dropped: str | None = Field(default=None, description="why no label: time_limit, solver_error, ...")
    solver_status: str = ""


def _options(time_limit: float) -> SolveOptions:
    # mip_gap 0: the default relative gap (1e-4) would let a label sit 0.01% off the optimum,
    # far outside the rel 1e-6 scoring rule.
    return SolveOptions(time_limit=time_limit, mip_gap=0.0, diagnose_infeasible=False, want_duals=False)


def _fixed_copy(f: Formulation, values: dict[str, float]) -> Formulation:
    """`f` with every integer/binary variable fixed to its rounded value (as data + equalities)."""
    data = f.model_copy(deep=True)
    taken = {
        *(p.name for p in f.parameters),
        *(v.name for v in f.variables),
        *(c.name for c in f.constraints),
    }
    taken |= {s.name for s in f.sets}
    sets = {s.name: s.elements for s in f.sets}
    for v in data.variables:
        if v.domain == "continuous":
            continue
        table_name = _fresh(f"fixed_{v.name}", taken)
        row_name = _fresh(f"fix_{v.name}", taken)
        if not v.index:
            value = float(round(values.get(instance_name(v.name, ()), 0.0)))
            data.parameters.append(Parameter(name=table_name, value=value))
            data.constraints.append(Constraint(name=row_name, expression=f"{v.name} == {table_name}"))
        else:
            flat = {
                ",".join(str(e) for e in key): float(round(values.get(instance_name(v.name, key), 0.0)))
                for key in itertools.product(*(sets[name] for name in v.index))
            }
            indices = [f"fix_k{k}" for k in range(len(v.index))]
            ref = ", ".join(indices)
            data.parameters.append(Parameter(name=table_name, index=list(v.index), value=flat))
            data.constraints.append(
                Constraint(
                    name=row_name,
                    expression=f"{v.name}[{ref}] == {table_name}[{ref}]",
                    for_all=[Binding(index=i, set=s) for i, s in zip(indices, v.index, strict=True)],
                )
            )
        v.domain = "continuous"
    return data


def _fresh(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def _polish(f: Formulation, result: SolveResult, time_limit: float) -> tuple[float, dict[str, float]] | None:
    """(objective, values) of the LP with the integers fixed, or None if that LP is not optimal."""
    try:
        fixed = _fixed_copy(f, result.values)
    except (ValueError, KeyError):
        return None
    polished = solve_formulation(fixed, _options(time_limit))
    if polished.status != SolveStatus.OPTIMAL or polished.objective is None:
        return None
    return polished.objective, polished.values


def _settle_infeasible_or_unbounded(f: Formulation, time_limit: float) -> SolveStatus:
    feasibility = f.model_copy(deep=True)
    feasibility.objective.expression = "0"
    return solve_formulation(feasibility, _options(time_limit)).status


def label_instance(instance: SynthInstance, *, time_limit: float = 30.0) -> LabelOutcome:
    """Solve `instance` with HiGHS and return its label, or why there is none."""
    f = instance.formulation
    started = time.perf_counter()
    result = solve_formulation(f, _options(time_limit))
    status = result.status
    if status == SolveStatus.INFEASIBLE_OR_UNBOUNDED:
        settled = _settle_infeasible_or_unbounded(f, time_limit)
        status = SolveStatus.INFEASIBLE if settled == SolveStatus.INFEASIBLE else SolveStatus.UNBOUNDED
    if status == SolveStatus.TIME_LIMIT:
        return LabelOutcome(dropped="time_limit", solver_status=status.value)
    if status == SolveStatus.ERROR:
        return LabelOutcome(dropped=f"solver_error: {result.message[:300]}", solver_status=status.value)
    if status.value != EXPECTED_STATUS[instance.variant]:
        return LabelOutcome(
            dropped=f"unexpected_status: {instance.variant} variant solved as {status.value}",
            solver_status=status.value,
        )
    if status != SolveStatus.OPTIMAL:
        label = InstanceLabel(status=status.value, seconds=time.perf_counter() - started)  # type: ignore[arg-type]
        return LabelOutcome(label=label, solver_status=status.value)
    objective, values, polished = result.objective, result.values, False
    if f.has_integers:
        fixed = _polish(f, result, time_limit)
        if fixed is not None:
            (objective, values), polished = fixed, True
    try:
        report = check_solution(f, values, objective)
    except FormulationError as error:
        return LabelOutcome(dropped=f"check_error: {error}", solver_status=status.value)
    if not report.ok:
        return LabelOutcome(dropped=f"check_failed: {report.summary()[:300]}", solver_status=status.value)
    label = InstanceLabel(
        status="optimal",
        objective=objective,
        solver_objective=result.objective,
        polished=polished,
        checked=True,
        seconds=time.perf_counter() - started,
        values=values,
    )
    return LabelOutcome(label=label, solver_status=status.value)
