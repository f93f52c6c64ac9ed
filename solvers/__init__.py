"""Everything between "a formulation exists" and "a verified answer comes back"."""

from solvers.ir import Formulation, formulation_json_schema
from solvers.result import CheckReport, InfeasibilityDiagnosis, SolveOptions, SolveResult, SolveStatus

__all__ = [
    "CheckReport",
    "Formulation",
    "InfeasibilityDiagnosis",
    "SolveOptions",
    "SolveResult",
    "SolveStatus",
    "formulation_json_schema",
]
