"""The solver-side steps of the agent, as plain functions: build + solve, verify, slacks.

The modeler wraps these in bundled operations; keeping them here keeps the workflow readable
and lets the steps be tested without an LLM. Every expected failure becomes a `Solved` value with
evidence text, never an exception, so one bad formulation cannot end the agent's run.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent import evidence
from agent.data_tables import DataTable
from solvers.api import solve_formulation
from solvers.check import check_solution
from solvers.expressions import (
    ExpressionError,
    FloatAlgebra,
    FormulationError,
    compile_formulation,
    evaluate,
    instance_name,
)
from solvers.ir import Formulation
from solvers.result import CheckReport, SolveOptions, SolveResult, SolveStatus
from solvers.sandbox import Sandbox

SOLVED_STATUSES = (SolveStatus.OPTIMAL, SolveStatus.TIME_LIMIT)


class Solved(BaseModel):
    """What building and solving one candidate gave: a SolveResult, or the evidence why not."""

    stage: Literal["build", "solve"]
    outcome: str = Field(description='short: "optimal", "build error", "infeasible", "runtime error", ...')
    solve: SolveResult | None = None
    failure: str | None = Field(default=None, description="feedback text when this is not a usable solve")
    program_summary: dict[str, Any] | None = Field(default=None, description="code mode: the model's size")

    @property
    def usable(self) -> bool:
        return self.solve is not None and self.solve.status in SOLVED_STATUSES and bool(self.solve.values)


def _declared_names(formulation: Formulation) -> list[str]:
    return [
        *(s.name for s in formulation.sets),
        *(p.name for p in formulation.parameters),
        *(v.name for v in formulation.variables),
    ]


def _from_solve(solve: SolveResult, unlimited: list[str] | None = None) -> Solved:
    if solve.status in SOLVED_STATUSES and solve.values:
        return Solved(stage="solve", outcome=solve.status.value, solve=solve)
    failure = evidence.solve_failed(solve, unlimited or [])
    return Solved(stage="solve", outcome=solve.status.value, solve=solve, failure=failure)


def unconstrained_variables(formulation: Formulation) -> list[str]:
    """Variables with no upper bound that no constraint mentions: the usual cause of an unbounded
    model when a small LLM drops one product from every resource constraint."""
    mentioned: set[str] = set()
    for constraint in formulation.constraints:
        mentioned.update(re.findall(r"[A-Za-z_]\w*", constraint.expression))
    return [
        v.name
        for v in formulation.variables
        if v.name not in mentioned and v.upper is None and v.domain != "binary"
    ]


def solve_ir(formulation: Formulation, options: SolveOptions) -> Solved:
    """Build the IR into Pyomo and solve it; formulation problems become build evidence."""
    solve = solve_formulation(formulation, options)
    if solve.status == SolveStatus.ERROR and solve.path == "build":
        # solve_formulation reports a FormulationError as "N problems ...:\n- one\n- two".
        lines = solve.message.splitlines()
        problems = [line[2:] for line in lines if line.startswith("- ")] or lines
        return Solved(
            stage="build",
            outcome="build error",
            failure=evidence.build_failed(problems, _declared_names(formulation)),
        )
    unbounded = solve.status in (SolveStatus.UNBOUNDED, SolveStatus.INFEASIBLE_OR_UNBOUNDED)
    return _from_solve(solve, unconstrained_variables(formulation) if unbounded else None)


def solve_program(
    sandbox: Sandbox, source: str, tables: list[DataTable], options: SolveOptions, timeout: float
) -> Solved:
    """Run a generated Pyomo program in the sandbox. Tables reach `build_model(data)` as row lists."""
    data = {t.name: [dict(row) for row in t.rows] for t in tables} if tables else None
    # HiGHS must stop (keeping its incumbent) before the sandbox's wall clock kills the program.
    limit = min(options.time_limit or timeout, 0.8 * timeout)
    options = options.model_copy(update={"time_limit": limit})
    result = sandbox.run(source, data=data, options=options, timeout=timeout)
    status = str(getattr(result.status, "value", result.status))
    summary = result.model.model_dump() if result.model is not None else None
    if status != "ok" or result.solve is None:
        return Solved(
            stage="build",
            outcome=status.replace("_", " "),
            failure=evidence.program_failed(status, result.error or ""),
        )
    solved = _from_solve(result.solve)
    solved.program_summary = summary
    return solved


def verify_ir(formulation: Formulation, solve: SolveResult, tolerance: float) -> CheckReport | None:
    """The independent checker's verdict; None when the formulation cannot be evaluated (then the
    build already failed and said why)."""
    try:
        return check_solution(formulation, solve.values, objective=solve.objective, tolerance=tolerance)
    except FormulationError:
        return None


_SENSE = re.compile(r"sense\s*=\s*(?:[\w.]+\.)?(maximize|minimize)\b")


def program_sense(source: str) -> Literal["minimize", "maximize"]:
    """The objective sense a Pyomo program declares (Pyomo's default is minimize)."""
    match = _SENSE.search(source)
    return "maximize" if match and match.group(1) == "maximize" else "minimize"


def constraint_slacks(formulation: Formulation, values: dict[str, float]) -> dict[str, float]:
    """Slack of every constraint instance at `values` (>= 0 when satisfied; 0 = binding).

    Evaluated with the IR's own expression compiler on floats, so it needs no solver and names
    instances exactly as the solver and checker do ("capacity[Boston]").
    """
    compiled = compile_formulation(formulation, FloatAlgebra(values))
    slacks: dict[str, float] = {}
    for constraint in compiled.constraints:
        for key, env in constraint.instances():
            name = instance_name(constraint.name, key)
            try:
                parts = evaluate(constraint.relation, env, f"constraint {name}")
            except (ExpressionError, LookupError):
                continue  # the checker reports these; a slack is just not known
            gaps = []
            for op, left, right in zip(constraint.relation.ops, parts, parts[1:], strict=False):
                if op in ("<=", "<"):
                    gaps.append(float(right) - float(left))
                elif op in (">=", ">"):
                    gaps.append(float(left) - float(right))
                else:  # an equality is always at its limit
                    gaps.append(abs(float(left) - float(right)))
            if gaps:
                slacks[name] = min(gaps)
    return slacks
