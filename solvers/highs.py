"""Solving any Pyomo `ConcreteModel` with HiGHS.

Two paths:

* fast (LP/MILP): Pyomo's standard-form compiler turns the model into sparse arrays, which go
  into one `highspy.Highs` in bulk; the solution arrays are mapped back by column position.
  Measured 2-4x cheaper than Pyomo's own HiGHS interfaces on 1e5-variable models.
* stock (anything HiGHS accepts that is not linear, e.g. a quadratic objective):
  `pyomo.contrib.solver`'s `highs`.

Importing this module starts no solver and no threads: the sandbox forks children from
processes that import it, and HiGHS's worker threads do not survive a fork.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import highspy
import numpy as np
import pyomo.environ as pyo
from pyomo.common.errors import (
    InfeasibleConstraintException,
    InvalidConstraintError,
    InvalidExpressionError,
)
from pyomo.core.base.constraint import ConstraintData
from pyomo.core.base.var import VarData
from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

from solvers.result import SolveOptions, SolveResult, SolveStatus

Sense = Literal["minimize", "maximize"]


class NotLinearError(ValueError):
    """The model has nonlinear terms, so the array path cannot take it."""


class TriviallyInfeasibleError(ValueError):
    """Some constraint has no variables left and its constant violates its bounds."""

    def __init__(self, constraints: list[str]) -> None:
        self.constraints = constraints
        super().__init__("constraint(s) with no variables that can never hold: " + ", ".join(constraints))


@dataclass
class LoadedModel:
    """A Pyomo model loaded into a `highspy.Highs`, with the maps back to Pyomo names.

    Column `k` of HiGHS is `columns[k]`; row `r` is `rows[r]` (a range constraint `lo <= e <= hi`
    is ONE row with both bounds). Variables that appear in no row and not in the objective, and
    fixed variables, are not columns: they are listed in `omitted_variables`.
    """

    highs: highspy.Highs
    columns: list[VarData]
    rows: list[ConstraintData]
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    integer_columns: np.ndarray  # column positions with integrality
    objective_offset: float
    sense: Sense
    objective_name: str | None
    omitted_variables: list[VarData] = field(default_factory=list)

    @cached_property
    def column_names(self) -> list[str]:
        """Pyomo names, e.g. "x[Boston,NY]" (computed on first use: ~2 us per name)."""
        return [v.name for v in self.columns]

    @cached_property
    def row_names(self) -> list[str]:
        """Pyomo names of the rows' constraints, e.g. "capacity[Boston]"."""
        return [c.name for c in self.rows]

    @cached_property
    def row_components(self) -> list[tuple[str, Any]]:
        """Per row: (constraint component name, index); index is None for a scalar constraint."""
        out: list[tuple[str, Any]] = []
        for con in self.rows:
            parent = con.parent_component()
            out.append((parent.name, con.index() if parent.is_indexed() else None))
        return out

    @property
    def is_mip(self) -> bool:
        return len(self.integer_columns) > 0

    def extra_values(self) -> dict[str, float]:
        """Values for the omitted variables: fixed ones keep theirs, others 0 moved into bounds."""
        return _omitted_values(self.omitted_variables)


def _active_objectives(model: pyo.ConcreteModel) -> list[Any]:
    return list(model.component_data_objects(pyo.Objective, active=True, descend_into=True))


def _infeasible_constant_constraints(model: pyo.ConcreteModel) -> list[str]:
    """Names of constraints whose body has no free variable and violates a bound.

    Only called on the compiler's error path, so a full scan is affordable.
    """
    from pyomo.core.expr.visitor import identify_variables

    bad: list[str] = []
    for con in model.component_data_objects(pyo.Constraint, active=True, descend_into=True):
        if any(not v.fixed for v in identify_variables(con.body, include_fixed=False)):
            continue
        body = pyo.value(con.body)
        lower, upper = con.lb, con.ub
        if (lower is not None and body < lower - 1e-9) or (upper is not None and body > upper + 1e-9):
            bad.append(con.name)
    return bad


def _merge_rows(rows: list[Any], rhs: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray, np.ndarray]:
    """Mixed-form rows -> one row per constraint with lower/upper bounds.

    The compiler emits a range constraint as two consecutive rows (upper then lower) with the
    same coefficients; HiGHS takes both bounds on one row, which keeps duals and IIS per constraint.
    Returns (kept row positions, constraint per kept row, lower, upper).
    """
    n = len(rows)
    bound_type = np.fromiter((r.bound_type for r in rows), dtype=np.int8, count=n)
    lower = np.where(bound_type <= 0, rhs, -np.inf)
    upper = np.where(bound_type >= 0, rhs, np.inf)
    keep = np.ones(n, dtype=bool)
    for k in range(1, n):
        if rows[k].constraint is rows[k - 1].constraint:
            # row k is the lower-bound twin of row k-1
            lower[k - 1] = rhs[k]
            keep[k] = False
    kept = np.flatnonzero(keep)
    constraints = [rows[k].constraint for k in kept]
    return kept, constraints, lower[kept], upper[kept]


def fresh_highs() -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("log_to_console", False)
    return highs


# Pyomo 6.10's standard-form compiler finishes initialising itself (deferred imports such as
# scipy) on first use, and threads that race through that first use fail with "'NoneType' object
# is not callable". The first compile in a process is therefore serialised; later ones run freely.
_first_compile_lock = threading.Lock()
_compiler_initialised = False


def _compile_standard_form(model: pyo.ConcreteModel) -> Any:
    global _compiler_initialised
    if not _compiler_initialised:
        with _first_compile_lock:
            if not _compiler_initialised:
                info = LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)
                _compiler_initialised = True
                return info
    return LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)


def load_into_highs(model: pyo.ConcreteModel) -> LoadedModel:
    """Load an LP/MILP Pyomo model into a new `highspy.Highs` through numpy arrays.

    Uses Pyomo's `LinearStandardFormCompiler` in mixed form with the objective's own sense, so
    rows keep their `<=`/`>=`/`==` meaning and variable bounds stay column bounds (the IIS then
    talks about the model's own constraints and bounds). Nothing is solved and no option other
    than silencing output is set.

    Raises:
        NotLinearError: a constraint or the objective has nonlinear terms.
        TriviallyInfeasibleError: a constraint without variables can never hold.
        ValueError: more than one active objective.
    """
    objectives = _active_objectives(model)
    if len(objectives) > 1:
        raise ValueError(f"the model has {len(objectives)} active objectives; HiGHS solves one")
    try:
        info = _compile_standard_form(model)
    except (InvalidConstraintError, InvalidExpressionError) as error:
        raise NotLinearError(str(error)) from error
    except InfeasibleConstraintException as error:
        raise TriviallyInfeasibleError(_infeasible_constant_constraints(model) or [str(error)]) from error

    columns: list[VarData] = list(info.columns)
    n_cols = len(columns)
    a_matrix = info.A.tocsc() if info.A.format != "csc" else info.A
    rhs = np.asarray(info.rhs, dtype=float)
    kept, constraints, row_lower, row_upper = _merge_rows(info.rows, rhs)
    if len(kept) != len(info.rows):
        a_matrix = a_matrix[kept, :].tocsc()
    n_rows = len(constraints)

    cost = np.zeros(n_cols)
    offset = 0.0
    sense: Sense = "minimize"
    objective_name = None
    if objectives:
        if info.c.shape[0]:
            cost = np.asarray(info.c[[0], :].toarray()).ravel()
            offset = float(info.c_offset[0])
        objective = objectives[0]
        sense = "maximize" if objective.sense == pyo.maximize else "minimize"
        objective_name = objective.name

    col_lower = np.empty(n_cols)
    col_upper = np.empty(n_cols)
    integer_flags = np.zeros(n_cols, dtype=bool)
    for k, var in enumerate(columns):
        lower, upper = var.bounds
        col_lower[k] = -np.inf if lower is None else lower
        col_upper[k] = np.inf if upper is None else upper
        integer_flags[k] = var.is_integer()
    integer_columns = np.flatnonzero(integer_flags).astype(np.int32)

    highs = fresh_highs()
    empty_i = np.zeros(0, dtype=np.int32)
    highs.addRows(n_rows, row_lower, row_upper, 0, empty_i, empty_i, np.zeros(0))
    highs.addCols(
        n_cols,
        cost,
        col_lower,
        col_upper,
        int(a_matrix.nnz),
        a_matrix.indptr[:-1].astype(np.int32),
        a_matrix.indices.astype(np.int32),
        a_matrix.data.astype(np.float64),
    )
    if len(integer_columns):
        highs.changeColsIntegrality(
            len(integer_columns), integer_columns, np.ones(len(integer_columns), dtype=np.uint8)
        )
    if sense == "maximize":
        highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
    if offset:
        highs.changeObjectiveOffset(offset)

    in_columns = {id(v) for v in columns}
    omitted = [v for v in model.component_data_objects(pyo.Var, descend_into=True) if id(v) not in in_columns]
    return LoadedModel(
        highs=highs,
        columns=columns,
        rows=constraints,
        col_lower=col_lower,
        col_upper=col_upper,
        row_lower=row_lower,
        row_upper=row_upper,
        integer_columns=integer_columns,
        objective_offset=offset,
        sense=sense,
        objective_name=objective_name,
        omitted_variables=omitted,
    )


# --- solving ---------------------------------------------------------------------------------
# HiGHS runs on one process-wide thread pool; a Highs object asking for another thread count
# than the pool was started with fails with kError, so the pool is reset first.
_pool_threads: int | None = None


def _use_threads(threads: int) -> int:
    global _pool_threads
    threads = max(1, threads)
    if _pool_threads is not None and _pool_threads != threads:
        highspy.Highs.resetGlobalScheduler(True)
    _pool_threads = threads
    return threads


def _configure(highs: highspy.Highs, options: SolveOptions) -> None:
    highs.setOptionValue("threads", _use_threads(options.threads))
    if options.time_limit is not None:
        highs.setOptionValue("time_limit", float(options.time_limit))
    if options.mip_gap is not None:
        highs.setOptionValue("mip_rel_gap", float(options.mip_gap))


_STOPPED_EARLY = {
    highspy.HighsModelStatus.kTimeLimit: "time limit reached",
    highspy.HighsModelStatus.kIterationLimit: "iteration limit reached",
    highspy.HighsModelStatus.kSolutionLimit: "solution limit reached",
    highspy.HighsModelStatus.kObjectiveBound: "objective bound reached",
    highspy.HighsModelStatus.kObjectiveTarget: "objective target reached",
    highspy.HighsModelStatus.kInterrupt: "interrupted",
    highspy.HighsModelStatus.kHighsInterrupt: "interrupted",
}
_TERMINAL = {
    highspy.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: SolveStatus.INFEASIBLE,
    highspy.HighsModelStatus.kUnbounded: SolveStatus.UNBOUNDED,
    highspy.HighsModelStatus.kUnboundedOrInfeasible: SolveStatus.INFEASIBLE_OR_UNBOUNDED,
}


def _default_value(var: VarData) -> float:
    """A value for a variable the solver never saw: its fixed value, else 0 moved into bounds."""
    if var.fixed and var.value is not None:
        return float(var.value)
    lower, upper = var.bounds
    value = 0.0
    if lower is not None and value < lower:
        value = math.ceil(lower) if var.is_integer() else float(lower)
    if upper is not None and value > upper:
        value = math.floor(upper) if var.is_integer() else float(upper)
    return float(value)


def _omitted_values(variables: list[VarData]) -> dict[str, float]:
    return {v.name: _default_value(v) for v in variables}


class Solvable(Protocol):
    """What turning a HiGHS solution into a `SolveResult` needs to know about the model."""

    highs: highspy.Highs
    objective_offset: float

    @property
    def column_names(self) -> list[str]: ...

    @property
    def row_names(self) -> list[str]: ...

    @property
    def is_mip(self) -> bool: ...

    def extra_values(self) -> dict[str, float]: ...


def run_highs(highs: highspy.Highs, options: SolveOptions) -> Any:
    """Apply the options, run, and return HiGHS's model status."""
    _configure(highs, options)
    highs.run()
    status = highs.getModelStatus()
    if status == highspy.HighsModelStatus.kUnboundedOrInfeasible:
        # presolve often cannot tell which; the solver without presolve can
        highs.setOptionValue("presolve", "off")
        highs.clearSolver()
        highs.run()
        status = highs.getModelStatus()
    return status


def solve_loaded(loaded: Solvable, options: SolveOptions | None = None, path: str = "fast") -> SolveResult:
    """Solve a model already in HiGHS and map the answer back to names."""
    options = options or SolveOptions()
    start = time.perf_counter()
    status = run_highs(loaded.highs, options)
    result = highs_answer(loaded, status, options, path)
    result.seconds = time.perf_counter() - start
    return result


def highs_answer(loaded: Solvable, status: Any, options: SolveOptions, path: str) -> SolveResult:
    """HiGHS's status and solution as a `SolveResult` keyed by names."""
    highs = loaded.highs
    info = highs.getInfo()
    if status == highspy.HighsModelStatus.kModelEmpty:
        return SolveResult(
            status=SolveStatus.OPTIMAL,
            objective=loaded.objective_offset,
            values=loaded.extra_values(),
            path=path,
        )
    has_solution = info.primal_solution_status == 2  # 2 = feasible
    if status in _TERMINAL:
        result = SolveResult(status=_TERMINAL[status], path=path)
        if result.status != SolveStatus.OPTIMAL:
            return result
    elif status in _STOPPED_EARLY:
        found = "best solution found so far is reported" if has_solution else "no feasible solution found yet"
        result = SolveResult(
            status=SolveStatus.TIME_LIMIT,
            path=path,
            message=f"stopped early ({_STOPPED_EARLY[status]}); {found}",
        )
        if not has_solution:
            return result
    else:
        message = f"HiGHS stopped with status {highs.modelStatusToString(status)}"
        return SolveResult(status=SolveStatus.ERROR, path=path, message=message)
    solution = highs.getSolution()
    names = loaded.column_names
    result.values = dict(zip(names, np.asarray(solution.col_value).tolist(), strict=True))
    result.values.update(loaded.extra_values())
    result.objective = float(info.objective_function_value)
    if loaded.is_mip:
        result.bound = float(info.mip_dual_bound)
        result.gap = float(info.mip_gap) if math.isfinite(info.mip_gap) else None
    elif options.want_duals and solution.dual_valid:
        # "+ 0.0" turns HiGHS's -0.0 into 0.0, which reads better in reports
        row_dual = (np.asarray(solution.row_dual) + 0.0).tolist()
        result.duals = dict(zip(loaded.row_names, row_dual, strict=True))
        col_dual = (np.asarray(solution.col_dual) + 0.0).tolist()
        result.reduced_costs = dict(zip(names, col_dual, strict=True))
    return result


def _solve_stock(model: pyo.ConcreteModel, options: SolveOptions) -> SolveResult:
    """pyomo.contrib.solver's HiGHS interface: takes quadratic objectives the arrays cannot."""
    from pyomo.contrib.solver.common.factory import SolverFactory
    from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

    threads = _use_threads(options.threads)
    config: dict[str, Any] = {
        "tee": False,
        "load_solutions": False,
        "raise_exception_on_nonoptimal_result": False,
        "threads": threads,
    }
    if options.time_limit is not None:
        config["time_limit"] = float(options.time_limit)
    if options.mip_gap is not None:
        config["rel_gap"] = float(options.mip_gap)
    results = SolverFactory("highs").solve(model, **config)
    condition = results.termination_condition
    statuses = {
        TerminationCondition.convergenceCriteriaSatisfied: SolveStatus.OPTIMAL,
        TerminationCondition.provenInfeasible: SolveStatus.INFEASIBLE,
        TerminationCondition.locallyInfeasible: SolveStatus.INFEASIBLE,
        TerminationCondition.unbounded: SolveStatus.UNBOUNDED,
        TerminationCondition.infeasibleOrUnbounded: SolveStatus.INFEASIBLE_OR_UNBOUNDED,
        TerminationCondition.maxTimeLimit: SolveStatus.TIME_LIMIT,
        TerminationCondition.iterationLimit: SolveStatus.TIME_LIMIT,
        TerminationCondition.objectiveLimit: SolveStatus.TIME_LIMIT,
        TerminationCondition.interrupted: SolveStatus.TIME_LIMIT,
    }
    status = statuses.get(condition, SolveStatus.ERROR)
    result = SolveResult(status=status, path="pyomo")
    if status == SolveStatus.ERROR:
        result.message = f"HiGHS (via Pyomo) ended with {condition.name}"
        return result
    has_solution = results.solution_status in (SolutionStatus.feasible, SolutionStatus.optimal)
    if status == SolveStatus.TIME_LIMIT:
        result.message = f"stopped early ({condition.name}); " + (
            "best solution found so far is reported" if has_solution else "no feasible solution found yet"
        )
    if status not in (SolveStatus.OPTIMAL, SolveStatus.TIME_LIMIT) or not has_solution:
        return result
    loader = results.solution_loader
    primals = loader.get_vars()
    result.values = {v.name: float(x) for v, x in primals.items()}
    unseen = [v for v in model.component_data_objects(pyo.Var, descend_into=True) if v not in primals]
    result.values.update(_omitted_values(unseen))
    result.objective = results.incumbent_objective
    integer = any(v.is_integer() for v in primals)
    if integer:
        result.bound = results.objective_bound
        if result.bound is not None and result.objective is not None:
            result.gap = abs(result.objective - result.bound) / max(1e-10, abs(result.objective))
    elif options.want_duals and status == SolveStatus.OPTIMAL:
        try:
            result.duals = {c.name: float(d) + 0.0 for c, d in loader.get_duals().items()}
            result.reduced_costs = {v.name: float(r) + 0.0 for v, r in loader.get_reduced_costs().items()}
        except Exception:  # duals are a bonus; some models have none
            result.duals, result.reduced_costs = {}, {}
    return result


def solve_model(
    model: pyo.ConcreteModel, options: SolveOptions | None = None, *, load_solution: bool = False
) -> SolveResult:
    """Solve any Pyomo model with HiGHS; never raises for solver-side failures.

    `options.path`: "fast" (arrays; LP/MILP only), "pyomo" (contrib SolverFactory('highs')),
    "auto" (fast, falling back to pyomo for quadratic objectives). Values are keyed by Pyomo
    names; LP duals are d(objective)/d(right-hand side) per constraint (HiGHS's convention, in
    either sense) and reduced costs d(objective)/d(variable). With `load_solution`, the values
    are also written into the model's variables.
    """
    options = options or SolveOptions()
    start = time.perf_counter()
    try:
        result = _solve(model, options)
    except Exception as error:  # a solve must report, not crash the caller
        result = SolveResult(
            status=SolveStatus.ERROR, message=f"{type(error).__name__}: {error}", path=options.path
        )
    if load_solution and result.values:
        _load_values(model, result.values)
    result.seconds = time.perf_counter() - start
    return result


def _solve(model: pyo.ConcreteModel, options: SolveOptions) -> SolveResult:
    if options.path == "pyomo":
        return _solve_stock(model, options)
    try:
        loaded = load_into_highs(model)
    except NotLinearError as error:
        if options.path == "fast":
            return SolveResult(
                status=SolveStatus.ERROR,
                path="fast",
                message=f"the fast path takes LP/MILP only: {error}",
            )
        return _guarded_stock(model, options, str(error))
    except TriviallyInfeasibleError as error:
        return SolveResult(status=SolveStatus.INFEASIBLE, path="fast", message=str(error))
    return solve_loaded(loaded, options)


def _guarded_stock(model: pyo.ConcreteModel, options: SolveOptions, why: str) -> SolveResult:
    try:
        return _solve_stock(model, options)
    except Exception as error:  # e.g. IncompatibleModelError for general nonlinear models
        return SolveResult(
            status=SolveStatus.ERROR,
            path="pyomo",
            message=f"HiGHS cannot solve this model ({type(error).__name__}: {error}). "
            f"It solves LP, MILP and convex quadratic objectives; the linear form failed because: {why}",
        )


def _load_values(model: pyo.ConcreteModel, values: dict[str, float]) -> None:
    for var in model.component_data_objects(pyo.Var, descend_into=True):
        value = values.get(var.name)
        if value is not None and not var.fixed:
            var.set_value(value, skip_validation=True)
