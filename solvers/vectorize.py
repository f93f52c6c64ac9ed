"""Bulk evaluation of IR expressions with numpy, over "frames" of index bindings.

A frame is a table with one row per binding of the indices in scope (e.g. every (i, j) of a
`sum(... for i in S for j in T if c)`), stored as integer positions into each index's set.
Values are numbers (floats or one per row), set elements (`Elements`) or linear expressions
(`Lin`: constants per row plus (row, column, coefficient) terms). A sum expands the frame,
filters it, evaluates its body column-wise and folds back with `bincount`, so a component is
evaluated once however many instances it has.

Only formulations the scalar walker (`solvers.expressions`) has already compiled come here,
so names and shapes are known to be right. Anything unusual, or any data problem (a missing
table entry, an element outside its set, a division by zero), raises `Unvectorizable`; the
caller then evaluates that component with the scalar walker, which explains the problem.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from solvers.symbols import SetInfo, SymbolTable, VariableInfo, element_key

# Frames larger than this (rows of bindings) are left to the scalar walker, which is slower but
# needs no memory proportional to the product of the sets.
MAX_FRAME_ROWS = 20_000_000


class Unvectorizable(Exception):
    """The numpy evaluator gives up on a component; the scalar walker takes it."""


# --- the column layout ----------------------------------------------------------------------
@dataclass
class ColumnBlock:
    """The columns of one variable: `offset` + row-major position over its index sets."""

    variable: VariableInfo
    offset: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(s.elements) for s in self.variable.sets)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def names(self) -> list[str]:
        """Pyomo-style names of all columns, built a set at a time (~0.1 us per name)."""
        name = self.variable.name
        if not self.variable.sets:
            return [name]
        first, *rest = self.variable.sets
        names = [f"{name}[{part}" for part in first.name_parts.tolist()]
        for s in rest:
            parts = s.name_parts.tolist()
            names = [f"{prefix},{part}" for prefix in names for part in parts]
        return [prefix + "]" for prefix in names]


def layout(table: SymbolTable) -> dict[str, ColumnBlock]:
    blocks: dict[str, ColumnBlock] = {}
    offset = 0
    for variable in table.variables.values():
        block = ColumnBlock(variable, offset)
        blocks[variable.name] = block
        offset += block.size
    return blocks


# --- the numpy evaluator ----------------------------------------------------------------------
@dataclass
class Lin:
    """One affine expression per frame row: constants plus (row, column, coefficient) terms."""

    const: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    coefs: np.ndarray

    def scaled(self, factor: Any) -> Lin:
        if isinstance(factor, np.ndarray):
            return Lin(self.const * factor, self.rows, self.cols, self.coefs * factor[self.rows])
        return Lin(self.const * factor, self.rows, self.cols, self.coefs * factor)

    def plus(self, other: Lin) -> Lin:
        return Lin(
            self.const + other.const,
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.cols, other.cols]),
            np.concatenate([self.coefs, other.coefs]),
        )


@dataclass
class Elements:
    """Set elements per frame row, as positions into `set`."""

    set: SetInfo
    positions: np.ndarray


@dataclass
class Frame:
    size: int
    positions: dict[str, np.ndarray]  # index name -> positions into its set
    sets: dict[str, SetInfo]

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {name: p[rows] for name, p in self.positions.items()}


def empty_ints() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def filled(value: Any, size: int) -> np.ndarray:
    """`value` (a number or one per row) as a fresh float array of `size` rows."""
    return np.broadcast_to(np.asarray(value, dtype=float), (size,)).copy()


class Vectorizer:
    """Evaluates expression ASTs over whole frames. Raises `Unvectorizable` on anything odd."""

    def __init__(self, table: SymbolTable, blocks: dict[str, ColumnBlock]) -> None:
        self.table = table
        self.blocks = blocks
        self._translations: dict[tuple[str, str], np.ndarray] = {}

    # -- values -------------------------------------------------------------------------------
    def value(self, node: ast.AST, frame: Frame) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id, frame)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, frame)
        if isinstance(node, ast.BinOp):
            return self._binop(node, frame)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.value(node.operand, frame)
            if isinstance(node.op, ast.UAdd):
                return operand
            return operand.scaled(-1.0) if isinstance(operand, Lin) else -self._number(operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self._call(node, node.func.id, frame)
        raise Unvectorizable(type(node).__name__)

    def _name(self, name: str, frame: Frame) -> Any:
        if name in frame.positions:
            return Elements(frame.sets[name], frame.positions[name])
        param = self.table.parameters.get(name)
        if param is not None:
            return param.scalar
        block = self.blocks[name]
        return self._columns(np.full(frame.size, block.offset, dtype=np.int64), frame.size)

    @staticmethod
    def _columns(cols: np.ndarray, size: int) -> Lin:
        return Lin(np.zeros(size), np.arange(size, dtype=np.int64), cols, np.ones(size))

    def _number(self, value: Any) -> Any:
        """A numeric value (float or array); int-set elements count as their numbers."""
        if isinstance(value, Elements):
            if not value.set.all_int:
                raise Unvectorizable("arithmetic on element names")
            return np.asarray(value.set.elements, dtype=float)[value.positions]
        if isinstance(value, np.ndarray | np.number | float | int) and not isinstance(value, bool):
            return value
        raise Unvectorizable(f"not a number: {type(value).__name__}")

    def _subscript(self, node: ast.Subscript, frame: Frame) -> Any:
        name = node.value.id  # type: ignore[attr-defined]
        key_nodes = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        param = self.table.parameters.get(name)
        sets = param.sets if param is not None else self.blocks[name].variable.sets
        positions = [self._positions(self.value(k, frame), s) for k, s in zip(key_nodes, sets, strict=True)]
        shape = tuple(len(s.elements) for s in sets)
        broadcast = np.broadcast_arrays(*positions, np.zeros(frame.size, dtype=np.int64))[:-1]
        flat = np.ravel_multi_index(tuple(broadcast), shape).astype(np.int64)
        if param is None:
            return self._columns(self.blocks[name].offset + flat, frame.size)
        if param.complete:
            return param.flat_values[flat]
        keys = param.flat_keys
        if not len(keys):
            if param.default is None:
                raise Unvectorizable("empty table")
            return np.full(frame.size, param.default)
        where = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
        found = keys[where] == flat
        if param.default is None:
            if not found.all():
                raise Unvectorizable("missing table entry")
            return param.flat_values[where]
        return np.where(found, param.flat_values[where], param.default)

    def _translation(self, running: SetInfo, declared: SetInfo) -> np.ndarray:
        """Position in `running` -> position in `declared` (-1 when absent)."""
        key = (running.name, declared.name)
        if key not in self._translations:
            lookup = declared.position
            self._translations[key] = np.array(
                [lookup.get(element_key(e), -1) for e in running.elements], dtype=np.int64
            )
        return self._translations[key]

    def _positions(self, value: Any, declared: SetInfo) -> Any:
        if isinstance(value, Elements):
            if value.set is declared:
                return value.positions
            positions = self._translation(value.set, declared)[value.positions]
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            found = declared.position.get(element_key(value))
            if found is None:
                raise Unvectorizable("element not in set")
            return found
        elif isinstance(value, np.ndarray) and declared.all_int:
            numbers = np.asarray(value, dtype=float)
            if not np.all(numbers == np.round(numbers)):
                raise Unvectorizable("non-integral element")
            elements = np.asarray(declared.elements, dtype=np.int64)
            order = np.argsort(elements, kind="stable")
            ordered = elements[order]
            where = np.minimum(np.searchsorted(ordered, numbers.astype(np.int64)), len(ordered) - 1)
            if not len(ordered) or not np.all(ordered[where] == numbers):
                raise Unvectorizable("element not in set")
            return order[where]
        else:
            raise Unvectorizable("unsupported index")
        if len(positions) and positions.min() < 0:
            raise Unvectorizable("element not in set")
        return positions

    def _binop(self, node: ast.BinOp, frame: Frame) -> Any:
        left, right = self.value(node.left, frame), self.value(node.right, frame)
        op = node.op
        if isinstance(op, ast.Add | ast.Sub):
            if isinstance(op, ast.Sub):
                right = right.scaled(-1.0) if isinstance(right, Lin) else -self._number(right)
            if isinstance(left, Lin) or isinstance(right, Lin):
                return self._lin(left, frame.size).plus(self._lin(right, frame.size))
            return self._number(left) + self._number(right)
        if isinstance(op, ast.Mult):
            if isinstance(left, Lin) and isinstance(right, Lin):
                raise Unvectorizable("product of variables")
            if isinstance(left, Lin):
                return left.scaled(self._number(right))
            if isinstance(right, Lin):
                return right.scaled(self._number(left))
            return self._number(left) * self._number(right)
        if isinstance(op, ast.Div | ast.Mod | ast.FloorDiv):
            denominator = self._number(right)
            if np.any(np.asarray(denominator) == 0):
                raise Unvectorizable("division by zero")
            if isinstance(left, Lin):
                if not isinstance(op, ast.Div):
                    raise Unvectorizable("% of variables")
                return left.scaled(1.0 / denominator)
            numerator = self._number(left)
            if isinstance(op, ast.Div):
                return numerator / denominator
            return numerator % denominator if isinstance(op, ast.Mod) else numerator // denominator
        if isinstance(op, ast.Pow):
            if isinstance(left, Lin):
                if isinstance(right, int | float) and right == 1:
                    return left
                raise Unvectorizable("power of variables")
            with np.errstate(all="ignore"):
                result = np.power(np.asarray(self._number(left), dtype=float), self._number(right))
            if not np.all(np.isfinite(result)):
                raise Unvectorizable("power out of range")
            return result
        raise Unvectorizable(type(op).__name__)

    @staticmethod
    def _lin(value: Any, size: int) -> Lin:
        if isinstance(value, Lin):
            return value
        return Lin(filled(value, size), empty_ints(), empty_ints(), np.zeros(0))

    def _call(self, node: ast.Call, function: str, frame: Frame) -> Any:
        if function == "sum":
            generator = node.args[0]
            assert isinstance(generator, ast.GeneratorExp)
            child, origin = self.expand(frame, generator.generators)
            body = self.value(generator.elt, child)
            if isinstance(body, Lin):
                const = np.bincount(origin, weights=filled(body.const, child.size), minlength=frame.size)
                return Lin(const, origin[body.rows], body.cols, body.coefs)
            numbers = filled(self._number(body), child.size)
            return np.bincount(origin, weights=numbers, minlength=frame.size)
        if function == "abs":
            return np.abs(self._number(self.value(node.args[0], frame)))
        pick = np.minimum if function == "min" else np.maximum
        if len(node.args) == 1 and isinstance(node.args[0], ast.GeneratorExp):
            generator = node.args[0]
            child, origin = self.expand(frame, generator.generators)
            if np.any(np.bincount(origin, minlength=frame.size) == 0):
                raise Unvectorizable(f"{function} over an empty selection")
            result = np.full(frame.size, np.inf if function == "min" else -np.inf)
            pick.at(result, origin, filled(self._number(self.value(generator.elt, child)), child.size))
            return result
        values = [self._number(self.value(a, frame)) for a in node.args]
        return _reduce(pick, values)

    # -- frames and filters ---------------------------------------------------------------------
    def expand(self, frame: Frame, generators: list[ast.comprehension]) -> tuple[Frame, np.ndarray]:
        """The frame of `for i in S ... if c` bindings, and each new row's row in `frame`."""
        origin = np.arange(frame.size, dtype=np.int64)
        for comprehension in generators:
            index = comprehension.target.id  # type: ignore[attr-defined]
            bound = self.table.sets[comprehension.iter.id]  # type: ignore[attr-defined]
            m = len(bound.elements)
            if frame.size * m > MAX_FRAME_ROWS:
                raise Unvectorizable("frame too large")
            parent = np.repeat(np.arange(frame.size, dtype=np.int64), m)
            positions = frame.take(parent)
            positions[index] = np.tile(np.arange(m, dtype=np.int64), frame.size)
            frame = Frame(frame.size * m, positions, {**frame.sets, index: bound})
            origin = origin[parent]
            for condition in comprehension.ifs:
                frame, origin = self._filter(frame, origin, self.condition(condition, frame))
        return frame, origin

    @staticmethod
    def _filter(frame: Frame, origin: np.ndarray, mask: Any) -> tuple[Frame, np.ndarray]:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), (frame.size,))
        rows = np.flatnonzero(mask)
        return Frame(len(rows), frame.take(rows), frame.sets), origin[rows]

    def condition(self, node: ast.AST, frame: Frame) -> Any:
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, frame) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return combine.reduce(np.broadcast_arrays(*parts, np.zeros(frame.size, dtype=bool))[:-1])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return np.logical_not(self.condition(node.operand, frame))
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Compare):
            result: Any = True
            left = self.value(node.left, frame)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn):
                    members = self.table.sets[comparator.id]  # type: ignore[attr-defined]
                    inside = self._membership(left, members)
                    result = np.logical_and(
                        result, inside if isinstance(op, ast.In) else np.logical_not(inside)
                    )
                    continue
                right = self.value(comparator, frame)
                result = np.logical_and(result, self._compare(left, op, right))
                left = right
            return result
        raise Unvectorizable(type(node).__name__)

    def _membership(self, value: Any, members: SetInfo) -> Any:
        if isinstance(value, Elements):
            return self._translation(value.set, members)[value.positions] >= 0
        if isinstance(value, str | int) and not isinstance(value, bool):
            return element_key(value) in members.keys
        raise Unvectorizable("membership of numbers")

    def _compare(self, left: Any, op: ast.cmpop, right: Any) -> Any:
        if isinstance(op, ast.Eq | ast.NotEq):
            if isinstance(left, Elements) and isinstance(right, Elements) and left.set is right.set:
                equal = left.positions == right.positions
            elif _is_named(left) or _is_named(right):
                equal = np.equal(self._keys(left), self._keys(right))
            else:
                equal = np.equal(self._number(left), self._number(right))
            return equal if isinstance(op, ast.Eq) else np.logical_not(equal)
        compare = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal}
        function = compare.get(type(op))  # type: ignore[call-overload]
        if function is None:
            raise Unvectorizable(type(op).__name__)
        return function(self._number(left), self._number(right))

    @staticmethod
    def _keys(value: Any) -> Any:
        """Element keys for ==/!= between names (element_key semantics, as the scalar walker)."""
        if isinstance(value, Elements):
            keys = np.empty(len(value.set.elements), dtype=object)
            keys[:] = [element_key(e) for e in value.set.elements]
            return keys[value.positions]
        if isinstance(value, str | int) and not isinstance(value, bool):
            return element_key(value)
        raise Unvectorizable("comparing names with computed numbers")


def _is_named(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, Elements) and not value.set.all_int)


def _reduce(pick: Any, values: list[Any]) -> Any:
    result = values[0]
    for value in values[1:]:
        result = pick(result, value)
    return result
