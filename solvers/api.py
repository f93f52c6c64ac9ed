"""One call from a formulation to a verified-ready answer: `solve_formulation`."""

from __future__ import annotations

import importlib
import time
from typing import Any

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
        built = build_model(f)
    except FormulationError as error:
        return SolveResult(
            status=SolveStatus.ERROR, message=str(error), path="build", seconds=time.perf_counter() - start
        )
    result = solve_model(built.model, options)
    if result.status == SolveStatus.INFEASIBLE and options.diagnose_infeasible:
        result.diagnosis, note = _diagnose(built.model, options)
        if note:
            result.message = f"{result.message}; {note}" if result.message else note
    result.seconds = time.perf_counter() - start
    return result
