"""One call from a formulation to a verified-ready answer: `solve_formulation`."""

from __future__ import annotations

import importlib
import time
from typing import Any

from solvers.arrays import NotLinearError, build_arrays, solve_arrays
from solvers.build import build_model
from solvers.expressions import FormulationError
from solvers.highs import solve_model
from solvers.ir import Formulation
from solvers.result import InfeasibilityDiagnosis, SolveOptions, SolveResult, SolveStatus


def _diagnose(model: Any, options: SolveOptions) -> tuple[InfeasibilityDiagnosis | None, str]:
    """Ask solvers.diagnose why the model is infeasible; (None, reason) when that is not possible."""
    try:
        module = importlib.import_module("solvers.diagnose")
    except ModuleNotFoundError as error:
        if error.name != "solvers.diagnose":
            raise
        return None, "infeasibility diagnosis is not installed"
    try:
        return module.diagnose_infeasibility(model, options), ""
    except Exception as error:  # a failed diagnosis must not hide the solve result itself
        return None, f"infeasibility diagnosis failed: {type(error).__name__}: {error}"


def solve_formulation(f: Formulation, options: SolveOptions | None = None) -> SolveResult:
    """Build `f`, solve it with HiGHS and, when infeasible, explain why.

    Formulation problems come back as status "error" with every problem listed in `message`
    (written to be fed back to whoever wrote the formulation); nothing here raises for a bad
    model or a solver failure.
    """
    options = options or SolveOptions()
    start = time.perf_counter()
    try:
        result = _solve(f, options)
    except FormulationError as error:
        result = SolveResult(status=SolveStatus.ERROR, message=str(error), path="build")
    result.seconds = time.perf_counter() - start
    return result


def _solve(f: Formulation, options: SolveOptions) -> SolveResult:
    if options.path != "pyomo":
        # LP/MILP straight from the IR to arrays; Pyomo is built only if a diagnosis needs it
        try:
            arrays = build_arrays(f)
        except NotLinearError:
            pass
        else:
            result = solve_arrays(arrays, options)
            if _wants_diagnosis(result, options):
                _attach_diagnosis(result, build_model(f).model, options)  # builds: same checks passed
            return result
    built = build_model(f)
    result = solve_model(built.model, options)
    if _wants_diagnosis(result, options):
        _attach_diagnosis(result, built.model, options)
    return result


# Presolve often cannot tell infeasible from unbounded; the diagnosis ignores the objective, so it
# settles the question for the person reading the answer.
_DIAGNOSED_STATUSES = frozenset({SolveStatus.INFEASIBLE, SolveStatus.INFEASIBLE_OR_UNBOUNDED})


def _wants_diagnosis(result: SolveResult, options: SolveOptions) -> bool:
    return options.diagnose_infeasible and result.status in _DIAGNOSED_STATUSES


def _attach_diagnosis(result: SolveResult, model: Any, options: SolveOptions) -> None:
    result.diagnosis, note = _diagnose(model, options)
    if note:
        result.message = f"{result.message}; {note}" if result.message else note
