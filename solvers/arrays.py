"""IR -> sparse arrays -> HiGHS, without Pyomo: the fast path of `solve_formulation` for LP/MILP.

Building a Pyomo model and compiling it back to arrays costs 10-20 us per variable, several
times HiGHS's own solve time on easy LPs. Here each objective and constraint component is
evaluated ONCE over all its instances with numpy: a `sum(... for i in S for j in T if c)`
expands its "frame" of bindings to |S|*|T| rows, filters them, evaluates the body column-wise
and folds the result back with `bincount`. Linear expressions travel as (row, column,
coefficient) triples.

The static checks and every error message come from the scalar walker (`solvers.expressions`):
it compiles the formulation first, and any component the numpy evaluator cannot take, or in
which it meets a data problem (a missing table entry, an element outside its set, a division
by zero, an instance with no variables left), is re-evaluated instance by instance with the
scalar walker in a linear-form algebra. Both paths therefore accept and reject the same
formulations with the same words; tests compare their matrices.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import highspy
import numpy as np

from solvers.build import evaluate_instances, reserved_name_errors
from solvers.expressions import (
    CompiledConstraint,
    CompiledFormulation,
    ExpressionError,
    FormulationError,
    Relation,
    SetInfo,
    SymbolTable,
    VariableInfo,
    compile_formulation,
    evaluate,
    instance_name,
)
from solvers.highs import fresh_highs, solve_loaded
from solvers.ir import Formulation
from solvers.result import SolveOptions, SolveResult
from solvers.vectorize import (
    MAX_FRAME_ROWS,
    ColumnBlock,
    Frame,
    Lin,
    Unvectorizable,
    Vectorizer,
    empty_ints,
    filled,
    layout,
)


class NotLinearError(ValueError):
    """The formulation has quadratic or nonlinear terms: build it with Pyomo instead."""


# --- the scalar fallback: linear forms as {column: coefficient} + constant -------------------
class Affine:
    """A linear form for the scalar walker; supports what linear expressions use."""

    __slots__ = ("const", "terms")

    def __init__(self, terms: dict[int, float] | None = None, const: float = 0.0) -> None:
        self.terms = terms if terms is not None else {}
        self.const = const

    def _plus(self, other: Any, sign: float) -> Affine:
        if isinstance(other, Affine):
            terms = dict(self.terms)
            for column, coefficient in other.terms.items():
                terms[column] = terms.get(column, 0.0) + sign * coefficient
            return Affine(terms, self.const + sign * other.const)
        return Affine(dict(self.terms), self.const + sign * other)

    def __add__(self, other: Any) -> Affine:
        return self._plus(other, 1.0)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Affine:
        return self._plus(other, -1.0)

    def __rsub__(self, other: Any) -> Affine:
        return (-self)._plus(other, 1.0)

    def __mul__(self, other: Any) -> Affine:
        if isinstance(other, Affine):
            if other.terms and self.terms:
                raise NotLinearError("product of two linear forms")
            return self * other.const if not other.terms else other * self.const
        return Affine({c: v * other for c, v in self.terms.items()}, self.const * other)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Affine:
        return self * (1.0 / other)

    def __neg__(self) -> Affine:
        return self * -1.0

    def __pos__(self) -> Affine:
        return self

    def __pow__(self, power: Any) -> Any:
        if power == 1:
            return self
        raise NotLinearError("power of a linear form")


class AffineAlgebra:
    def __init__(self, blocks: dict[str, ColumnBlock]) -> None:
        self.blocks = blocks

    def variable_getter(self, variable: VariableInfo) -> Callable[[Any], Affine]:
        block = self.blocks[variable.name]
        if not variable.sets:
            return lambda key: Affine({block.offset: 1.0})
        indexes = [{e: k for k, e in enumerate(s.elements)} for s in variable.sets]
        shape = block.shape
        if len(indexes) == 1:
            (index,) = indexes
            return lambda key: Affine({block.offset + index[key]: 1.0})

        def column(key: tuple[Any, ...]) -> Affine:
            flat = 0
            for element, index, size in zip(key, indexes, shape, strict=True):
                flat = flat * size + index[element]
            return Affine({block.offset + flat: 1.0})

        return column

    def total(self, terms: list[Any]) -> Any:
        out = Affine()
        accumulated = out.terms
        for term in terms:
            if isinstance(term, Affine):
                for column, coefficient in term.terms.items():
                    accumulated[column] = accumulated.get(column, 0.0) + coefficient
                out.const += term.const
            else:
                out.const += term
        # like Pyomo's quicksum: a sum without variable terms is a plain number
        return out if accumulated else out.const


# --- assembling the model ---------------------------------------------------------------------
@dataclass
class _Rows:
    """Rows of one constraint component, relative to its own first row."""

    lower: np.ndarray
    upper: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    coefs: np.ndarray
    names: Callable[[], list[str]]


def _bounds_from(parts: list[Any], ops: tuple[str, ...], size: int) -> tuple[Lin, np.ndarray, np.ndarray]:
    """(body, lower, upper) per instance, oriented exactly as Pyomo orients the same constraint.

    Pyomo's rule for `a <= b` (and `b >= a`, and `a == b`): the body is `a` when `b` has no
    variables, `b` when `a` has none, else `a - b`. Matching it keeps duals' signs and IIS
    bounds identical whichever path solved the model.
    """
    if len(parts) == 3:
        low, middle, high = parts if ops[0] == "<=" else parts[::-1]
        body = Vectorizer._lin(middle, size)
        lower, upper = filled(low, size) - body.const, filled(high, size) - body.const
        if np.any(lower > upper):
            raise Unvectorizable("empty range")
        return body, lower, upper
    first, second = (Vectorizer._lin(p, size) for p in (parts if ops[0] != ">=" else parts[::-1]))
    has_first = np.bincount(first.rows, minlength=size) > 0
    has_second = np.bincount(second.rows, minlength=size) > 0
    if np.any(~has_first & ~has_second):
        raise Unvectorizable("an instance without variables")  # the scalar path explains it
    flipped = ~has_first  # only the right-hand side has variables: Pyomo keeps it as the body
    sign = np.where(flipped, -1.0, 1.0)
    body = first.plus(second.scaled(-1.0)).scaled(sign)
    bound = -body.const  # = sign * (second - first) constants
    if ops[0] == "==":
        return body, bound, bound.copy()
    lower = np.where(flipped, bound, -np.inf)
    upper = np.where(flipped, np.inf, bound)
    return body, lower, upper


def _instance_names(name: str, sets: list[SetInfo], positions: list[np.ndarray]) -> list[str]:
    if not sets:
        return [name]
    columns = [s.name_parts[p].tolist() for s, p in zip(sets, positions, strict=True)]
    return [f"{name}[{','.join(parts)}]" for parts in zip(*columns, strict=True)]


class _Assembler:
    def __init__(
        self, f: Formulation, compiled: CompiledFormulation[Any], blocks: dict[str, ColumnBlock]
    ) -> None:
        self.f = f
        self.compiled = compiled
        self.blocks = blocks
        self.vectorizer = Vectorizer(compiled.table, blocks)
        self.errors: list[ExpressionError] = []
        self.always_true: list[str] = []
        self.vectorized: dict[str, bool] = {}

    def objective(self, n_cols: int) -> tuple[np.ndarray, float]:
        tree = ast.parse(self.f.objective.expression.strip(), mode="eval")
        try:
            value = self.vectorizer.value(tree.body, Frame(1, {}, {}))
            body = Vectorizer._lin(value, 1)
            self.vectorized["objective"] = True
            cost = np.bincount(body.cols, weights=body.coefs, minlength=n_cols)
            return cost, float(body.const[0])
        except Unvectorizable:
            self.vectorized["objective"] = False
        assert self.compiled.objective is not None
        try:
            form = evaluate(self.compiled.objective, {}, "objective")
        except ExpressionError as error:
            self.errors.append(error)
            return np.zeros(n_cols), 0.0
        cost = np.zeros(n_cols)
        if isinstance(form, Affine):
            for column, coefficient in form.terms.items():
                cost[column] += coefficient
            return cost, float(form.const)
        return cost, float(form)

    def constraint(self, compiled: CompiledConstraint) -> _Rows | None:
        try:
            rows = self._vectorized(compiled)
            self.vectorized[compiled.name] = True
            return rows
        except Unvectorizable:
            self.vectorized[compiled.name] = False
        return self._scalar(compiled)

    def _vectorized(self, compiled: CompiledConstraint) -> _Rows:
        c = compiled.constraint
        sizes = [len(s.elements) for s in compiled.index_sets]
        if math.prod(sizes) > MAX_FRAME_ROWS:
            raise Unvectorizable("too many instances")
        grids = np.meshgrid(*(np.arange(n, dtype=np.int64) for n in sizes), indexing="ij")
        names = [b.index for b in c.for_all]
        frame = Frame(
            math.prod(sizes),
            {n: g.ravel() for n, g in zip(names, grids, strict=True)},
            {n: s for n, s in zip(names, compiled.index_sets, strict=True)},
        )
        if c.where and c.where.strip():
            where = ast.parse(c.where.strip(), mode="eval").body
            frame, _ = Vectorizer._filter(
                frame, np.arange(frame.size), self.vectorizer.condition(where, frame)
            )
        tree = ast.parse(c.expression.strip(), mode="eval").body
        assert isinstance(tree, ast.Compare)
        parts = [self.vectorizer.value(n, frame) for n in [tree.left, *tree.comparators]]
        body, lower, upper = _bounds_from(parts, compiled.relation.ops, frame.size)
        if len(parts) == 3 and frame.size and np.any(np.bincount(body.rows, minlength=frame.size) == 0):
            raise Unvectorizable("an instance without variables")  # the scalar path explains it
        positions = [frame.positions[n] for n in names]
        sets = compiled.index_sets
        return _Rows(
            lower, upper, body.rows, body.cols, body.coefs, lambda: _instance_names(c.name, sets, positions)
        )

    def _scalar(self, compiled: CompiledConstraint) -> _Rows | None:
        instances = evaluate_instances(compiled)
        self.errors += instances.errors
        self.always_true += instances.always_true
        if instances.errors:
            return None
        lower: list[float] = []
        upper: list[float] = []
        rows: list[int] = []
        cols: list[int] = []
        coefs: list[float] = []
        keys: list[tuple[Any, ...]] = []
        for row, (key, parts) in enumerate(instances.parts):
            body, low, high = _scalar_bounds(parts, compiled.relation)
            keys.append(key)
            lower.append(low)
            upper.append(high)
            for column, coefficient in body.terms.items():
                rows.append(row)
                cols.append(column)
                coefs.append(coefficient)
        name = compiled.name
        return _Rows(
            np.array(lower, dtype=float),
            np.array(upper, dtype=float),
            np.array(rows, dtype=np.int64),
            np.array(cols, dtype=np.int64),
            np.array(coefs, dtype=float),
            lambda: [instance_name(name, key) for key in keys],
        )


def _scalar_bounds(parts: tuple[Any, ...], relation: Relation) -> tuple[Affine, float, float]:
    """The scalar twin of `_bounds_from` (same orientation rule)."""
    ops = relation.ops
    if len(parts) == 3:
        low, middle, high = parts if ops[0] == "<=" else parts[::-1]
        body = Affine() + middle
        return body, low - body.const, high - body.const
    first, second = (Affine() + p for p in (parts if ops[0] != ">=" else parts[::-1]))
    flipped = not first.terms
    body = (second - first) if flipped else (first - second)
    bound = -body.const
    if ops[0] == "==":
        return body, bound, bound
    return (body, bound, math.inf) if flipped else (body, -math.inf, bound)


@dataclass
class ArrayModel:
    """A linear formulation as arrays: columns by variable block, rows by constraint (CSR)."""

    formulation: Formulation
    blocks: list[ColumnBlock]
    cost: np.ndarray
    objective_offset: float
    col_lower: np.ndarray
    col_upper: np.ndarray
    integer_columns: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    row_starts: np.ndarray
    row_indices: np.ndarray
    row_values: np.ndarray
    row_name_parts: list[Callable[[], list[str]]] = field(default_factory=list)
    always_true: list[str] = field(default_factory=list)
    vectorized: dict[str, bool] = field(default_factory=dict)  # component -> evaluated in bulk
    row_mask: np.ndarray | None = None  # which rows of `row_name_parts` were kept

    @property
    def n_cols(self) -> int:
        return len(self.cost)

    @property
    def n_rows(self) -> int:
        return len(self.row_lower)

    @property
    def is_mip(self) -> bool:
        return len(self.integer_columns) > 0

    @cached_property
    def column_names(self) -> list[str]:
        return list(itertools.chain.from_iterable(block.names() for block in self.blocks))

    @cached_property
    def row_names(self) -> list[str]:
        names = itertools.chain.from_iterable(names() for names in self.row_name_parts)
        if self.row_mask is None:
            return list(names)
        return [name for name, kept in zip(names, self.row_mask.tolist(), strict=True) if kept]


def _csr(
    rows: np.ndarray, cols: np.ndarray, coefs: np.ndarray, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise storage with duplicate (row, column) entries summed and zeros dropped."""
    order = np.argsort(rows * max(n_cols, 1) + cols, kind="stable")
    rows, cols, coefs = rows[order], cols[order], coefs[order]
    if len(rows) > 1:
        fresh = np.concatenate([[True], (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])])
        if not fresh.all():
            starts = np.flatnonzero(fresh)
            coefs = np.add.reduceat(coefs, starts)
            rows, cols = rows[starts], cols[starts]
    keep = coefs != 0
    rows, cols, coefs = rows[keep], cols[keep], coefs[keep]
    starts = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=starts[1:])
    return starts, cols, coefs


def build_arrays(f: Formulation) -> ArrayModel:
    """The LP/MILP of `f` as arrays, or `FormulationError` (the same problems `build_model`
    reports) or `NotLinearError` (build it with Pyomo instead)."""
    table = SymbolTable.from_formulation(f)
    blocks = layout(table)
    compiled = compile_formulation(f, AffineAlgebra(blocks), table=table)
    # the same problems as build_model, in the same order: static ones, names Pyomo refuses,
    # then (if every variable could be declared) what evaluating the instances finds
    reserved = reserved_name_errors(f)
    if reserved:
        raise FormulationError([*compiled.errors, *reserved], f.name)
    if any(v.name in table.broken for v in f.variables):
        raise FormulationError(compiled.errors, f.name)
    degrees = [c.relation.degree for c in compiled.constraints]
    if compiled.objective is not None:
        degrees.append(compiled.objective.degree)
    if max(degrees, default=0) > 1:
        raise NotLinearError(f"formulation {f.name!r} is not linear")

    n_cols = sum(block.size for block in blocks.values())
    assembler = _Assembler(f, compiled, blocks)
    cost, offset = np.zeros(n_cols), 0.0
    if compiled.objective is not None:
        cost, offset = assembler.objective(n_cols)
    pieces = [(c, assembler.constraint(c)) for c in compiled.constraints]
    if compiled.errors or assembler.errors:
        raise FormulationError([*compiled.errors, *assembler.errors], f.name)
    kept = [rows for _, rows in pieces if rows is not None]
    counts = [len(r.lower) for r in kept]
    firsts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_rows = int(firsts[-1])
    all_rows = np.concatenate(
        [r.rows + first for r, first in zip(kept, firsts, strict=False)] or [empty_ints()]
    )
    all_cols = np.concatenate([r.cols for r in kept] or [empty_ints()])
    all_coefs = np.concatenate([r.coefs for r in kept] or [np.zeros(0)])
    starts, indices, values = _csr(all_rows, all_cols, all_coefs, n_rows, n_cols)
    row_lower = np.concatenate([r.lower for r in kept] or [np.zeros(0)])
    row_upper = np.concatenate([r.upper for r in kept] or [np.zeros(0)])
    # Rows whose coefficients all cancelled (e.g. 0 * x <= 5) and that hold anyway are dropped,
    # as Pyomo's compiler drops them; ones that cannot hold stay and make HiGHS say infeasible.
    counts = np.diff(starts)
    keep = ~((counts == 0) & (row_lower <= 1e-9) & (row_upper >= -1e-9))
    if not keep.all():
        starts = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        row_lower, row_upper = row_lower[keep], row_upper[keep]

    col_lower = np.empty(n_cols)
    col_upper = np.empty(n_cols)
    integer = np.zeros(n_cols, dtype=bool)
    for block in blocks.values():
        v = block.variable
        lower = -np.inf if v.lower is None else v.lower
        upper = np.inf if v.upper is None else v.upper
        if v.domain == "binary":
            lower, upper = max(lower, 0.0), min(upper, 1.0)
        span = slice(block.offset, block.offset + block.size)
        col_lower[span], col_upper[span] = lower, upper
        integer[span] = v.domain != "continuous"
    return ArrayModel(
        formulation=f,
        blocks=list(blocks.values()),
        cost=cost,
        objective_offset=offset,
        col_lower=col_lower,
        col_upper=col_upper,
        integer_columns=np.flatnonzero(integer).astype(np.int32),
        row_lower=row_lower,
        row_upper=row_upper,
        row_starts=starts,
        row_indices=indices,
        row_values=values,
        row_name_parts=[r.names for r in kept],
        row_mask=None if keep.all() else keep,
        always_true=assembler.always_true,
        vectorized=assembler.vectorized,
    )


@dataclass
class LoadedArrays:
    """An `ArrayModel` inside a `highspy.Highs` (what `solvers.highs.solve_loaded` needs)."""

    highs: highspy.Highs
    arrays: ArrayModel

    @property
    def objective_offset(self) -> float:
        return self.arrays.objective_offset

    @property
    def column_names(self) -> list[str]:
        return self.arrays.column_names

    @property
    def row_names(self) -> list[str]:
        return self.arrays.row_names

    @property
    def is_mip(self) -> bool:
        return self.arrays.is_mip

    def extra_values(self) -> dict[str, float]:
        return {}  # every variable instance is a column


def load_arrays(arrays: ArrayModel) -> LoadedArrays:
    highs = fresh_highs()
    empty = np.zeros(0, dtype=np.int32)
    highs.addCols(
        arrays.n_cols, arrays.cost, arrays.col_lower, arrays.col_upper, 0, empty, empty, np.zeros(0)
    )
    highs.addRows(
        arrays.n_rows,
        arrays.row_lower,
        arrays.row_upper,
        len(arrays.row_values),
        arrays.row_starts[:-1].astype(np.int32),
        arrays.row_indices.astype(np.int32),
        arrays.row_values,
    )
    count = len(arrays.integer_columns)
    if count:
        highs.changeColsIntegrality(count, arrays.integer_columns, np.ones(count, dtype=np.uint8))
    if arrays.formulation.objective.sense == "maximize":
        highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
    if arrays.objective_offset:
        highs.changeObjectiveOffset(arrays.objective_offset)
    return LoadedArrays(highs, arrays)


def solve_arrays(arrays: ArrayModel, options: SolveOptions | None = None) -> SolveResult:
    """Solve an `ArrayModel` with HiGHS; values, duals and reduced costs keyed by Pyomo names."""
    return solve_loaded(load_arrays(arrays), options, path="fast")
