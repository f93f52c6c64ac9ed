"""Why is a model infeasible? A small conflicting set plus the cheapest fix.

`diagnose_infeasibility` takes any LP/MILP Pyomo model (built from the IR or by generated code)
and returns an `InfeasibilityDiagnosis`:

* LP: HiGHS's own IIS (elasticity LPs, then a reduction to an irreducible set), mapped back to
  constraint names, their `doc` descriptions and variable bounds.
* MILP, or when the IIS is unavailable: a deletion filter. Candidates are dropped in blocks
  (halving a block when dropping all of it makes the model feasible); a dropped block stays
  dropped while the rest is still infeasible. Every kept member was tested alone, so the result
  is irreducible unless a solve was inconclusive or the time budget ran out. Rows go first, then
  the bounds of the surviving rows' variables. When the MILP's LP relaxation is already
  infeasible, its IIS is a conflict of the MILP too, so only its members are filtered (with
  integrality) - a handful of MILP solves instead of hundreds.
* Both: an elastic copy (one non-negative slack per finite constraint side, minimising their
  sum, integrality kept) gives the smallest total relaxation that restores feasibility.

All solves share one wall-clock budget (`SolveOptions.time_limit`, default 60 s) so a big model
cannot hang the caller.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import highspy
import numpy as np
import pyomo.environ as pyo
from pyomo.core.base.constraint import ConstraintData
from pyomo.core.base.var import VarData

from solvers.highs import LoadedModel, NotLinearError, TriviallyInfeasibleError, load_into_highs
from solvers.result import ConflictMember, InfeasibilityDiagnosis, Relaxation, SolveOptions

DEFAULT_TIME_LIMIT = 60.0
# Slacks below this are solver noise (HiGHS's primal feasibility tolerance is 1e-7).
SLACK_TOLERANCE = 1e-6
# The elastic MILP may take at most this share of the remaining budget, so the deletion filter
# (which is what names the conflict) always gets time too.
ELASTIC_BUDGET_SHARE = 0.4
# For a MILP the LP relaxation's IIS is only a shortcut, so it must leave time for the filter.
IIS_BUDGET_SHARE = 0.3
# kIisStrategyFromLp | kIisStrategyIrreducible: the default "light" strategy only checks bounds.
IIS_STRATEGY = 2 | 4
_IIS_FEASIBLE, _IIS_IRREDUCIBLE = -1, 3
_IIS_LOWER, _IIS_UPPER, _IIS_BOXED = 2, 3, 4
_DESCRIPTION_CHARS = 160
MESSAGE_LINES = 20  # members listed in the message; the full set is in `conflict`

Method = Literal["iis", "elastic_deletion_filter"]
Side = Literal["lower", "upper"]


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


@dataclass(frozen=True)
class _Unit:
    """Something the deletion filter can drop: a whole row, or one side of a column's bounds."""

    kind: Literal["row", "bound"]
    index: int
    side: Side | None = None


@dataclass
class _Elastic:
    """The min-total-violation solve: per row, how far its lower/upper side had to move."""

    solved: bool  # a slack vector is available
    optimal: bool
    bounds_alone_infeasible: bool = False
    total: float | None = None
    lower_slack: np.ndarray = field(default_factory=lambda: np.zeros(0))
    upper_slack: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _fresh_highs(lp: highspy.HighsLp, seconds: float) -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.passModel(lp)
    # Feasibility is all we ask, so the original objective goes (it could even be unbounded).
    n_cols = highs.getNumCol()
    if n_cols:
        highs.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), np.zeros(n_cols))
    highs.changeObjectiveOffset(0.0)
    highs.changeObjectiveSense(highspy.ObjSense.kMinimize)
    highs.setOptionValue("time_limit", max(seconds, 0.01))
    return highs


def _verdict(highs: highspy.Highs) -> bool | None:
    """True = infeasible, False = feasible, None = could not tell (time limit, numerical trouble)."""
    status = highs.getModelStatus()
    # An empty model (every variable fixed or unused) has nothing that could conflict.
    if status in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kModelEmpty):
        return False
    # With a zero objective nothing is unbounded, so "infeasible or unbounded" means infeasible.
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return True
    if highs.getInfo().primal_solution_status == 2:  # a feasible point was found before a limit
        return False
    return None


class _FeasibilityOracle:
    """One HiGHS instance whose rows and bounds are switched off and on between solves."""

    def __init__(self, lp: highspy.HighsLp, clock: _Clock) -> None:
        self.clock = clock
        self.highs = _fresh_highs(lp, clock.remaining())
        self.row_lower = np.asarray(lp.row_lower_, dtype=float)
        self.row_upper = np.asarray(lp.row_upper_, dtype=float)
        self.col_lower = np.asarray(lp.col_lower_, dtype=float).copy()
        self.col_upper = np.asarray(lp.col_upper_, dtype=float).copy()
        self.original_col_lower = self.col_lower.copy()
        self.original_col_upper = self.col_upper.copy()
        self.integer_columns = np.flatnonzero(
            [t != highspy.HighsVarType.kContinuous for t in lp.integrality_]
        ).astype(np.int32)

    def set_dropped(self, units: Sequence[_Unit], dropped: bool) -> None:
        for unit in units:
            if unit.kind == "row":
                lower, upper = (
                    (-highspy.kHighsInf, highspy.kHighsInf)
                    if dropped
                    else (self.row_lower[unit.index], self.row_upper[unit.index])
                )
                self.highs.changeRowBounds(unit.index, lower, upper)
                continue
            if unit.side == "lower":
                self.col_lower[unit.index] = -np.inf if dropped else self.original_col_lower[unit.index]
            else:
                self.col_upper[unit.index] = np.inf if dropped else self.original_col_upper[unit.index]
            self.highs.changeColBounds(unit.index, self.col_lower[unit.index], self.col_upper[unit.index])

    def set_integrality(self, integer: bool) -> None:
        n = len(self.integer_columns)
        if n:
            kind = highspy.HighsVarType.kInteger if integer else highspy.HighsVarType.kContinuous
            self.highs.changeColsIntegrality(n, self.integer_columns, np.full(n, int(kind), dtype=np.uint8))

    def infeasible(self) -> bool | None:
        if self.clock.expired():
            return None
        self.highs.setOptionValue("time_limit", max(self.clock.remaining(), 0.01))
        self.highs.run()
        return _verdict(self.highs)


def _deletion_filter(oracle: _FeasibilityOracle, units: list[_Unit]) -> tuple[list[_Unit], bool]:
    """Drop what is not needed for infeasibility; returns (kept units, whether the set is irreducible).

    Blocks are tried whole first and halved only when dropping them restores feasibility, so a
    conflict of k members among n costs about 2k log2(n) solves instead of n.
    """
    kept: list[_Unit] = []
    irreducible = True

    def visit(block: list[_Unit]) -> None:
        nonlocal irreducible
        if not block:
            return
        if oracle.clock.expired():
            kept.extend(block)
            irreducible = False
            return
        oracle.set_dropped(block, True)
        verdict = oracle.infeasible()
        if verdict is True:
            return
        oracle.set_dropped(block, False)
        if len(block) == 1:
            kept.extend(block)
            irreducible = irreducible and verdict is False
            return
        middle = len(block) // 2
        visit(block[:middle])
        visit(block[middle:])

    visit(units)
    return kept, irreducible


def _elastic(lp: highspy.HighsLp, seconds: float) -> _Elastic:
    """Minimise the total constraint violation: one slack per finite row side, integrality kept."""
    highs = _fresh_highs(lp, seconds)
    n_cols, n_rows = highs.getNumCol(), highs.getNumRow()
    row_lower = np.asarray(lp.row_lower_, dtype=float)
    row_upper = np.asarray(lp.row_upper_, dtype=float)
    lower_rows = np.flatnonzero(np.isfinite(row_lower)).astype(np.int32)
    upper_rows = np.flatnonzero(np.isfinite(row_upper)).astype(np.int32)
    for rows, coefficient in ((lower_rows, 1.0), (upper_rows, -1.0)):
        # activity + s >= lower  and  activity - s <= upper: s is how far the side must move.
        n = len(rows)
        if n:
            highs.addCols(
                n,
                np.ones(n),
                np.zeros(n),
                np.full(n, highspy.kHighsInf),
                n,
                np.arange(n, dtype=np.int32),
                rows,
                np.full(n, coefficient),
            )
    highs.run()
    status = highs.getModelStatus()
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        # Every row can absorb any violation, so only bounds and integrality are left to blame.
        return _Elastic(solved=False, optimal=True, bounds_alone_infeasible=True)
    if highs.getInfo().primal_solution_status != 2:
        return _Elastic(solved=False, optimal=False)
    values = np.asarray(highs.getSolution().col_value, dtype=float)
    lower_slack, upper_slack = np.zeros(n_rows), np.zeros(n_rows)
    lower_slack[lower_rows] = values[n_cols : n_cols + len(lower_rows)]
    upper_slack[upper_rows] = values[n_cols + len(lower_rows) :]
    return _Elastic(
        solved=True,
        optimal=status == highspy.HighsModelStatus.kOptimal,
        total=float(lower_slack.sum() + upper_slack.sum()),
        lower_slack=lower_slack,
        upper_slack=upper_slack,
    )


def _columns_in_rows(lp: highspy.HighsLp, rows: Sequence[int]) -> list[int]:
    """Column positions with a nonzero in any of `rows` (the matrix may be stored either way)."""
    matrix = lp.a_matrix_
    starts = np.asarray(matrix.start_, dtype=np.int64)
    inner = np.asarray(matrix.index_, dtype=np.int64)
    outer = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    row_of, col_of = (inner, outer) if matrix.format_ == highspy.MatrixFormat.kColwise else (outer, inner)
    wanted = np.zeros(lp.num_row_, dtype=bool)
    wanted[list(rows)] = True
    return sorted({int(c) for c in col_of[wanted[row_of]]})


# --- naming --------------------------------------------------------------------------------------


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DESCRIPTION_CHARS else text[: _DESCRIPTION_CHARS - 3] + "..."


def _constraint_description(con: ConstraintData) -> str:
    doc = con.parent_component().doc
    if doc:
        return _short(doc)
    try:  # no description written: the algebra is the next best thing
        return _short(str(con.expr))
    except Exception:  # an unprintable expression should not cost the diagnosis
        return ""


def _bound_text(var: VarData, side: Side | Literal["both"]) -> str:
    """E.g. "x[a] <= 5 (integer; crates per truck)": the bound first, then what the variable is."""
    lower, upper = var.bounds
    if side == "lower":
        text = f"{var.name} >= {lower:g}"
    elif side == "upper":
        text = f"{var.name} <= {upper:g}"
    else:
        text = f"{lower:g} <= {var.name} <= {upper:g}"
    kind = "binary" if var.is_binary() else "integer" if var.is_integer() else ""
    notes = "; ".join(note for note in (kind, _short(var.parent_component().doc or "")) if note)
    return text + (f" ({notes})" if notes else "")


def _bound_member(var: VarData, side: Side | Literal["both"]) -> ConflictMember:
    return ConflictMember(name=var.name, kind="variable_bound", description=_bound_text(var, side))


def _relaxations(loaded: LoadedModel, elastic: _Elastic) -> list[Relaxation]:
    out: list[Relaxation] = []
    for row in np.flatnonzero(
        (elastic.lower_slack > SLACK_TOLERANCE) | (elastic.upper_slack > SLACK_TOLERANCE)
    ):
        con = loaded.rows[row]
        description = _constraint_description(con)
        # A <= side that must give raises its right-hand side; a >= side lowers it.
        if elastic.upper_slack[row] > SLACK_TOLERANCE:
            out.append(
                Relaxation(
                    name=con.name,
                    amount=float(elastic.upper_slack[row]),
                    direction="increase_rhs",
                    description=description,
                )
            )
        if elastic.lower_slack[row] > SLACK_TOLERANCE:
            out.append(
                Relaxation(
                    name=con.name,
                    amount=float(elastic.lower_slack[row]),
                    direction="decrease_rhs",
                    description=description,
                )
            )
    return out


# --- messages ------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fix_sentence(relaxations: list[Relaxation], total: float | None, optimal: bool) -> str:
    if not relaxations:
        return ""
    verbs = {"increase_rhs": "raise", "decrease_rhs": "lower", "either": "move"}
    steps = [f"{verbs[r.direction]} the right-hand side of {r.name} by {r.amount:.6g}" for r in relaxations]
    head = "Smallest fix" if optimal else "A fix (the time limit stopped the search for the smallest)"
    tail = f" (total violation {total:.6g})" if total is not None and len(relaxations) > 1 else ""
    return f"{head}{tail}: " + "; ".join(steps) + "."


def _bound_lines(bounds: list[ConflictMember]) -> list[str]:
    """One line per bound, except that many equal bounds of one indexed variable share a line."""
    groups: dict[str, list[ConflictMember]] = {}
    for member in bounds:
        component = member.name.split("[", 1)[0]
        # "x[3] >= 0 (binary)" and "x[7] >= 0 (binary)" share the pattern "x[...] >= 0 (binary)"
        pattern = member.description.replace(member.name, f"{component}[...]", 1)
        groups.setdefault(pattern if "[" in member.name else member.description, []).append(member)
    lines = []
    for pattern, members in groups.items():
        if len(members) <= 3:
            lines += [f"  - {m.description or m.name}" for m in members]
            continue
        names = ", ".join(m.name for m in members[:4])
        lines.append(f"  - {pattern} for {len(members)} entries: {names}, ...")
    return lines


def _conflict_message(
    conflict: list[ConflictMember], irreducible: bool, whole_number_variables: list[str] | None = None
) -> str:
    """`whole_number_variables`: set when the conflict disappears once integrality is dropped."""
    if not conflict:
        return (
            "HiGHS reports the model infeasible, but no conflicting set could be isolated "
            "(the time limit ran out or the checks were inconclusive)."
        )
    constraints = [m for m in conflict if m.kind == "constraint"]
    bounds = [m for m in conflict if m.kind == "variable_bound"]
    parts = []
    if constraints:
        parts.append(_plural(len(constraints), "constraint"))
    if bounds:
        parts.append(_plural(len(bounds), "variable bound"))
    if len(conflict) == 1:
        lines = [f"This {parts[0].removeprefix('1 ')} can never hold:"]
    else:
        lines = [f"These {' and '.join(parts)} cannot all hold at once:"]
    listed = [f"  - {m.name}" + (f" ({m.description})" if m.description else "") for m in constraints]
    listed += _bound_lines(bounds)
    if len(listed) > MESSAGE_LINES:
        listed = [*listed[:MESSAGE_LINES], f"  ... and {len(listed) - MESSAGE_LINES} more (see `conflict`)"]
    lines += listed
    if whole_number_variables:
        shown = ", ".join(whole_number_variables[:5]) + (", ..." if len(whole_number_variables) > 5 else "")
        lines.append(
            f"This is caused by integrality ({shown} must take whole-number values): "
            "with fractional values allowed the model is feasible."
        )
    if not irreducible:
        lines.append(
            "The set may not be minimal: the time limit ran out or a check was inconclusive "
            "before every member could be tested."
        )
    return "\n".join(lines)


def _feasible(method: Method) -> InfeasibilityDiagnosis:
    return InfeasibilityDiagnosis(
        method=method,
        conflict=[],
        total_violation=0.0,
        message="The model is feasible: HiGHS found a point satisfying every constraint and bound, "
        "so there is no conflict. If a solve reported it infeasible, suspect numerical tolerances "
        "or a time limit.",
    )


def _unavailable(message: str, method: Method = "elastic_deletion_filter") -> InfeasibilityDiagnosis:
    return InfeasibilityDiagnosis(method=method, conflict=[], message=message)


# --- checks HiGHS never sees ---------------------------------------------------------------------


def _empty_domains(variables: Sequence[VarData]) -> list[ConflictMember]:
    """Variables whose own bounds (or fixed value) leave no value at all.

    The loader omits fixed variables and variables in no row, so these are checked here.
    """
    members: list[ConflictMember] = []
    for var in variables:
        lower, upper = var.bounds
        if var.fixed and var.value is not None:
            value = var.value
            if (lower is not None and value < lower - SLACK_TOLERANCE) or (
                upper is not None and value > upper + SLACK_TOLERANCE
            ):
                members.append(
                    ConflictMember(
                        name=var.name,
                        kind="variable_bound",
                        description=f"fixed at {value:g}, outside its bounds [{lower}, {upper}]",
                    )
                )
            continue
        if lower is not None and upper is not None:
            empty = lower > upper + SLACK_TOLERANCE or (
                var.is_integer() and np.ceil(lower - SLACK_TOLERANCE) > np.floor(upper + SLACK_TOLERANCE)
            )
            if empty:
                members.append(_bound_member(var, "both"))
    return members


def _trivially_infeasible(
    model: pyo.ConcreteModel, error: TriviallyInfeasibleError
) -> InfeasibilityDiagnosis:
    conflict: list[ConflictMember] = []
    relaxations: list[Relaxation] = []
    for name in error.constraints:
        con = model.find_component(name)
        if not isinstance(con, ConstraintData):
            conflict.append(ConflictMember(name=name, kind="constraint"))
            continue
        description = _constraint_description(con)
        conflict.append(ConflictMember(name=name, kind="constraint", description=description))
        body = pyo.value(con.body)
        if con.ub is not None and body > con.ub:
            relaxations.append(
                Relaxation(name=name, amount=body - con.ub, direction="increase_rhs", description=description)
            )
        elif con.lb is not None and body < con.lb:
            relaxations.append(
                Relaxation(name=name, amount=con.lb - body, direction="decrease_rhs", description=description)
            )
    total = sum(r.amount for r in relaxations) if relaxations else None
    message = "\n".join(
        [
            f"{_plural(len(conflict), 'constraint')} can never hold: no free variable is left in "
            "them (every variable is fixed or absent) and the constant violates the bound:",
            *[f"  - {m.name}" + (f" ({m.description})" if m.description else "") for m in conflict],
            _fix_sentence(relaxations, total, optimal=True),
        ]
    ).strip()
    return InfeasibilityDiagnosis(
        method="iis", conflict=conflict, relaxations=relaxations, total_violation=total, message=message
    )


# --- the two methods -----------------------------------------------------------------------------


@dataclass
class _Conflict:
    """A conflicting set by position: rows, and the bound sides of columns."""

    rows: list[int]
    bounds: dict[int, Side | Literal["both"]]
    irreducible: bool = True

    def members(self, loaded: LoadedModel) -> list[ConflictMember]:
        members = [
            ConflictMember(
                name=loaded.rows[r].name,
                kind="constraint",
                description=_constraint_description(loaded.rows[r]),
            )
            for r in sorted(self.rows)
        ]
        members += [_bound_member(loaded.columns[c], side) for c, side in sorted(self.bounds.items())]
        return members

    def integer_variables(self, loaded: LoadedModel, lp: highspy.HighsLp) -> list[str]:
        columns = set(_columns_in_rows(lp, self.rows)) | set(self.bounds) if self.rows else set(self.bounds)
        integer = set(loaded.integer_columns.tolist())
        return [loaded.columns[c].name for c in sorted(columns & integer)]


_IIS_SIDES: dict[int, Side | Literal["both"]] = {_IIS_LOWER: "lower", _IIS_UPPER: "upper", _IIS_BOXED: "both"}


def _iis_conflict(loaded: LoadedModel, seconds: float) -> tuple[_Conflict | None, bool]:
    """HiGHS's IIS of the (LP relaxation of the) loaded model.

    Returns (the conflict, or None when HiGHS could not find an irreducible one; whether HiGHS
    proved the LP feasible). HiGHS's IIS is LP-only, so integrality is switched off first.
    """
    highs = loaded.highs
    n_int = len(loaded.integer_columns)
    if n_int:
        continuous = np.full(n_int, int(highspy.HighsVarType.kContinuous), dtype=np.uint8)
        highs.changeColsIntegrality(n_int, loaded.integer_columns, continuous)
    highs.setOptionValue("iis_strategy", IIS_STRATEGY)
    highs.setOptionValue("time_limit", max(seconds, 0.01))
    status, iis = highs.getIis()
    if status == highspy.HighsStatus.kError or not iis.valid_:
        return None, False
    if iis.status_ == _IIS_FEASIBLE:
        return None, True
    if iis.status_ != _IIS_IRREDUCIBLE or not (len(iis.row_index_) or len(iis.col_index_)):
        return None, False
    # A "free" column bound status means the column is in the system but none of its bounds is.
    bounds = {
        int(col): _IIS_SIDES[bound]
        for col, bound in zip(iis.col_index_, iis.col_bound_, strict=True)
        if bound in _IIS_SIDES
    }
    return _Conflict(rows=[int(r) for r in iis.row_index_], bounds=bounds), False


def _bound_units(oracle: _FeasibilityOracle, columns: Sequence[int]) -> list[_Unit]:
    return [
        _Unit("bound", c, side)
        for c in columns
        for side, value in (("lower", oracle.original_col_lower[c]), ("upper", oracle.original_col_upper[c]))
        if np.isfinite(value)
    ]


def _restrict_to(oracle: _FeasibilityOracle, lp: highspy.HighsLp, seed: _Conflict) -> bool:
    """Drop every row and bound outside `seed`; True if the rest is (still) proved infeasible.

    The seed is the LP relaxation's IIS: infeasible without integrality, so infeasible with it.
    The check guards against tolerances telling the two solves apart.
    """
    seed_rows = set(seed.rows)
    outside_rows = [_Unit("row", r) for r in range(lp.num_row_) if r not in seed_rows]
    inside_bounds = _seed_bound_units(seed)
    outside_bounds = [u for u in _bound_units(oracle, range(lp.num_col_)) if u not in inside_bounds]
    oracle.set_dropped(outside_rows + outside_bounds, True)
    if oracle.infeasible() is True:
        return True
    oracle.set_dropped(outside_rows + outside_bounds, False)
    return False


def _seed_bound_units(seed: _Conflict) -> set[_Unit]:
    units: set[_Unit] = set()
    for col, side in seed.bounds.items():
        for one in ("lower", "upper") if side == "both" else (side,):
            units.add(_Unit("bound", col, one))
    return units


def _filter_conflict(
    lp: highspy.HighsLp, oracle: _FeasibilityOracle, elastic: _Elastic, seed: _Conflict | None
) -> _Conflict:
    """Deletion filter over rows, then over the bounds of the surviving rows' variables.

    With a `seed` (an LP-relaxation IIS) only its members are candidates, which turns hundreds of
    MILP solves into a handful; without one every row and bound is.
    """
    carried_slack: set[int] = set()
    if elastic.solved:
        positive = (elastic.lower_slack > SLACK_TOLERANCE) | (elastic.upper_slack > SLACK_TOLERANCE)
        carried_slack = set(np.flatnonzero(positive).tolist())
    candidate_rows = sorted(seed.rows) if seed else range(lp.num_row_)
    # Rows that needed slack are tested last, so the filter drops unrelated rows first and the
    # conflict it keeps tends to be the one the relaxation talks about.
    row_order = [r for r in candidate_rows if r not in carried_slack]
    row_order += [r for r in candidate_rows if r in carried_slack]
    kept_rows, rows_irreducible = _deletion_filter(oracle, [_Unit("row", r) for r in row_order])
    rows = [u.index for u in kept_rows]

    if seed:
        bound_candidates = sorted(_seed_bound_units(seed), key=lambda u: (u.index, str(u.side)))
    else:
        bound_candidates = _bound_units(oracle, _columns_in_rows(lp, rows) if rows else range(lp.num_col_))
    kept_bounds, bounds_irreducible = _deletion_filter(oracle, bound_candidates)
    found: dict[int, set[str]] = {}
    for unit in kept_bounds:
        found.setdefault(unit.index, set()).add(str(unit.side))
    bounds: dict[int, Side | Literal["both"]] = {
        c: "both" if len(sides) == 2 else ("lower" if "lower" in sides else "upper")
        for c, sides in found.items()
    }
    return _Conflict(rows=rows, bounds=bounds, irreducible=rows_irreducible and bounds_irreducible)


def _diagnose_loaded(loaded: LoadedModel, clock: _Clock) -> InfeasibilityDiagnosis:
    lp = loaded.highs.getLp()  # before the IIS step relaxes integrality in loaded.highs
    # For a MILP the LP relaxation's IIS is only a starting point, so it gets part of the budget.
    iis, lp_feasible = _iis_conflict(loaded, clock.remaining() * (IIS_BUDGET_SHARE if loaded.is_mip else 1.0))
    if not loaded.is_mip and lp_feasible:
        return _feasible("iis")
    if not loaded.is_mip and iis is not None:
        # The IIS names the conflict; the elastic LP only prices the fix.
        elastic = _elastic(lp, clock.remaining())
        return _report(loaded, lp, "iis", iis, elastic, integrality_causes_it=False)

    oracle = _FeasibilityOracle(lp, clock)
    verdict = oracle.infeasible()
    if verdict is False:
        return _feasible("elastic_deletion_filter")
    if verdict is None:
        return _unavailable(
            "Could not tell whether the model is infeasible: HiGHS hit the diagnosis time limit "
            f"({clock.seconds:g} s) or had numerical trouble before proving it."
        )
    elastic = _elastic(lp, clock.remaining() * ELASTIC_BUDGET_SHARE)
    seed = iis if iis is not None and _restrict_to(oracle, lp, iis) else None
    conflict = _filter_conflict(lp, oracle, elastic, seed)
    integrality_causes_it = loaded.is_mip and _lp_relaxation_feasible(oracle) is True
    return _report(loaded, lp, "elastic_deletion_filter", conflict, elastic, integrality_causes_it)


def _lp_relaxation_feasible(oracle: _FeasibilityOracle) -> bool | None:
    """Whether the conflict the filter left in `oracle` holds once integrality is dropped."""
    oracle.set_integrality(False)
    verdict = oracle.infeasible()
    oracle.set_integrality(True)
    return None if verdict is None else not verdict


def _report(
    loaded: LoadedModel,
    lp: highspy.HighsLp,
    method: Method,
    conflict: _Conflict,
    elastic: _Elastic,
    integrality_causes_it: bool,
) -> InfeasibilityDiagnosis:
    relaxations = _relaxations(loaded, elastic) if elastic.solved else []
    whole_numbers = conflict.integer_variables(loaded, lp) or ["some variables"]
    members = conflict.members(loaded)
    lines = [
        _conflict_message(members, conflict.irreducible, whole_numbers if integrality_causes_it else None)
    ]
    if elastic.bounds_alone_infeasible:
        lines.append(
            "No change to the constraints can fix this: the variable bounds (and integrality) "
            "alone admit no value."
        )
    else:
        lines.append(_fix_sentence(relaxations, elastic.total, elastic.optimal))
    return InfeasibilityDiagnosis(
        method=method,
        conflict=members,
        relaxations=relaxations,
        total_violation=elastic.total,
        message="\n".join(line for line in lines if line),
    )


def _without_objectives(model: pyo.ConcreteModel) -> pyo.ConcreteModel:
    copy = model.clone()
    for objective in copy.component_data_objects(pyo.Objective, active=True, descend_into=True):
        objective.deactivate()
    return copy


def diagnose_infeasibility(
    model: pyo.ConcreteModel, options: SolveOptions | None = None
) -> InfeasibilityDiagnosis:
    """Explain why `model` (an LP or MILP) has no feasible point.

    Returns the conflicting constraints and bounds, the smallest total relaxation of the
    constraints' right-hand sides that restores feasibility, and a readable message. A feasible
    model, a nonlinear model or a solver failure give a diagnosis whose message says so.
    """
    options = options or SolveOptions()
    clock = _Clock(options.time_limit if options.time_limit is not None else DEFAULT_TIME_LIMIT)
    try:
        try:
            loaded = load_into_highs(model)
        except (NotLinearError, ValueError) as error:
            if isinstance(error, TriviallyInfeasibleError):
                raise
            # Feasibility ignores the objective, so a quadratic objective or a second objective
            # must not stop the diagnosis: retry on a copy without objectives.
            loaded = load_into_highs(_without_objectives(model))
    except TriviallyInfeasibleError as error:
        return _trivially_infeasible(model, error)
    except NotLinearError as error:
        return _unavailable(f"Infeasibility diagnosis needs linear constraints (LP or MILP): {error}")
    except ValueError as error:
        return _unavailable(f"The model could not be loaded for diagnosis: {error}")

    empty = _empty_domains(loaded.omitted_variables)
    if empty:
        message = _conflict_message(empty, irreducible=True)
        return InfeasibilityDiagnosis(
            method="iis",
            conflict=empty,
            message=message + "\nNo change to the constraints can fix this: widen these bounds.",
        )
    try:
        return _diagnose_loaded(loaded, clock)
    except Exception as error:  # a diagnosis is advice: a solver failure must not lose the solve result
        return _unavailable(f"Infeasibility diagnosis failed ({type(error).__name__}): {error}")
