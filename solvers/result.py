"""What comes back from solving: `SolveResult` and the reports attached to it."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    INFEASIBLE_OR_UNBOUNDED = "infeasible_or_unbounded"
    TIME_LIMIT = "time_limit"  # with an incumbent (objective, values, gap) when one was found
    ERROR = "error"


class SolveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time_limit: float | None = Field(default=None, description="seconds")
    mip_gap: float | None = Field(default=None, description="relative MIP gap at which to stop")
    threads: int = 1
    path: Literal["auto", "fast", "pyomo"] = Field(
        default="auto",
        description="fast = IR evaluated straight into sparse arrays for highspy (LP/MILP); "
        "pyomo = build the Pyomo model and solve it "
        "(standard form -> highspy, or SolverFactory('highs') for QP)",
    )
    want_duals: bool = True
    diagnose_infeasible: bool = True


class ConflictMember(BaseModel):
    """A constraint or bound that belongs to a conflicting (infeasible) set."""

    name: str  # component name as in the IR, with index, e.g. "capacity[Boston]"
    kind: Literal["constraint", "variable_bound"]
    description: str = ""


class Relaxation(BaseModel):
    """How far one constraint must move for the model to become feasible."""

    name: str
    amount: float  # >= 0, in the constraint's own units
    direction: Literal["increase_rhs", "decrease_rhs", "either"]
    description: str = ""


class InfeasibilityDiagnosis(BaseModel):
    method: Literal["iis", "elastic_deletion_filter"]
    conflict: list[ConflictMember]
    relaxations: list[Relaxation] = Field(default_factory=list)
    total_violation: float | None = None
    message: str


class SolveResult(BaseModel):
    status: SolveStatus
    objective: float | None = None
    values: dict[str, float] = Field(
        default_factory=dict, description='variable values keyed "x" or "x[i,j]" (Pyomo naming)'
    )
    duals: dict[str, float] = Field(default_factory=dict, description="LP only, keyed by constraint name")
    reduced_costs: dict[str, float] = Field(default_factory=dict, description="LP only, keyed by variable")
    gap: float | None = None
    bound: float | None = None
    solver: str = "highs"
    path: str = ""
    seconds: float = 0.0
    message: str = ""
    diagnosis: InfeasibilityDiagnosis | None = None

    @property
    def ok(self) -> bool:
        return self.status == SolveStatus.OPTIMAL

    def value(self, name: str, *index: object) -> float:
        key = name if not index else f"{name}[{','.join(str(i) for i in index)}]"
        return self.values[key]


class Violation(BaseModel):
    kind: Literal["bound", "integrality", "constraint", "missing_value", "objective"]
    name: str  # e.g. "x[1]" or "capacity[Boston]"
    amount: float
    message: str


class CheckReport(BaseModel):
    """The independent checker's verdict on a solution."""

    ok: bool
    tolerance: float
    violations: list[Violation] = Field(default_factory=list)
    recomputed_objective: float | None = None
    checked_constraints: int = 0
    checked_variables: int = 0

    def summary(self) -> str:
        if self.ok:
            return f"verified: {self.checked_variables} variables, {self.checked_constraints} constraints"
        lines = [f"{len(self.violations)} violation(s):"]
        lines += [f"- {v.message}" for v in self.violations[:20]]
        return "\n".join(lines)
