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

# The solver core is re-exported lazily: importing `solvers.ir` alone should not pay for
# Pyomo and HiGHS (~0.6 s), and the sandbox forks from processes that import this package.
_LAZY_EXPORTS = {
    "build_model": "solvers.build",
    "solve_model": "solvers.highs",
    "solve_formulation": "solvers.api",
    "check_solution": "solvers.check",
    "FormulationError": "solvers.expressions",
    "ExpressionError": "solvers.expressions",
}
__all__ += list(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'solvers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
