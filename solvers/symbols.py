"""What expressions refer to: sets, parameter tables, variables; Pyomo-compatible names; errors.

`SymbolTable.from_formulation` resolves a formulation's declarations once. Parameter tables are
kept as sorted numpy arrays (flat position -> value), which the array builder indexes in bulk;
the dictionary view the scalar walker needs is built on first use. Tables with 1e5 entries
load in milliseconds through a bulk path; anything unusual goes through a careful per-entry
path that reports each bad key.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from solvers.ir import Formulation, Parameter

Element = str | int


class ExpressionError(ValueError):
    """A problem in one component of a formulation, phrased as feedback.

    `component` is e.g. "constraint capacity[Boston]" or "objective"; `token` is the offending
    source text (or name); `message` says what is wrong and how to fix it.
    """

    def __init__(self, message: str, *, component: str = "", token: str = "") -> None:
        self.message = message
        self.component = component
        self.token = token
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.component}: " if self.component else ""
        at = f" [at `{self.token}`]" if self.token else ""
        return f"{where}{self.message}{at}"

    def in_component(self, component: str) -> ExpressionError:
        """The same error attributed to `component` (set once the instance is known)."""
        return ExpressionError(self.message, component=component, token=self.token)

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only constructor: make pickling (e.g. across processes) work
        return (_rebuild_error, (self.message, self.component, self.token))


def _rebuild_error(message: str, component: str, token: str) -> ExpressionError:
    return ExpressionError(message, component=component, token=token)


class MissingValueError(LookupError):
    """A variable has no value (raised by the float backend; the checker reports it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)


# --- naming: identical to Pyomo's component names, without importing Pyomo --------------------
_SPECIAL = re.compile(r"[()\[\],.'\":\\]")
_NUMBER = re.compile(r"(?:[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?inf|nan)")


def _element_repr(element: Element) -> str:
    if not isinstance(element, str):
        return repr(element)
    quoted = repr(element)
    if _SPECIAL.search(element) or _NUMBER.fullmatch(element):
        return quoted
    return element


def instance_name(component: str, key: Sequence[Element]) -> str:
    """Pyomo's name for `component[key]`: "x", "x[1]", "x[Boston,NY]", "x['a,b',3]"."""
    if not key:
        return component
    return f"{component}[{','.join(_element_repr(e) for e in key)}]"


def element_key(value: object) -> str:
    """How elements are matched: as strings, with integral floats read as ints (2.0 -> "2")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _listing(items: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --- the symbol table: sets, parameter tables, variables -------------------------------------
def _object_array(items: list[Any]) -> np.ndarray:
    """A 1-D object array (np.array would turn ["1", 2] into strings or numbers)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@dataclass
class SetInfo:
    name: str
    elements: list[Element]
    keys: dict[str, Element]  # element_key -> element as declared

    @cached_property
    def position(self) -> dict[str, int]:
        """element_key -> position in `elements`."""
        return {element_key(e): k for k, e in enumerate(self.elements)}

    @cached_property
    def all_int(self) -> bool:
        return all(isinstance(e, int) for e in self.elements)

    @cached_property
    def element_array(self) -> np.ndarray:
        return _object_array(self.elements)

    @cached_property
    def name_parts(self) -> np.ndarray:
        """How each element is written inside a Pyomo name, e.g. "Boston" or "'a,b'"."""
        return _object_array([_element_repr(e) for e in self.elements])

    def lookup(self, value: object) -> Element | None:
        return self.keys.get(element_key(value))


@dataclass
class ParameterInfo:
    """A scalar, or a table stored as sorted flat positions (row-major over `sets`) and values."""

    name: str
    sets: list[SetInfo]
    scalar: float | None  # set when not indexed
    default: float | None
    flat_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    flat_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    description: str = ""

    @property
    def signature(self) -> str:
        return ", ".join(s.name for s in self.sets)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(s.elements) for s in self.sets)

    @property
    def complete(self) -> bool:
        """Every combination has an entry (so flat position == row of `flat_values`)."""
        return len(self.flat_keys) == int(np.prod(self.shape))

    @cached_property
    def table(self) -> dict[Any, float]:
        """element (one index set) or tuple of elements -> value; built on first use."""
        if not self.sets or not len(self.flat_keys):
            return {}
        positions = np.unravel_index(self.flat_keys, self.shape)
        columns = [s.element_array[p].tolist() for s, p in zip(self.sets, positions, strict=True)]
        values = self.flat_values.tolist()
        if len(columns) == 1:
            return dict(zip(columns[0], values, strict=True))
        return dict(zip(zip(*columns, strict=True), values, strict=True))


@dataclass
class VariableInfo:
    name: str
    sets: list[SetInfo]
    domain: str
    lower: float | None
    upper: float | None
    description: str = ""

    @property
    def signature(self) -> str:
        return ", ".join(s.name for s in self.sets)

    def instance_keys(self) -> Iterator[tuple[Element, ...]]:
        return itertools.product(*(s.elements for s in self.sets))


@dataclass
class SymbolTable:
    """Everything an expression can refer to, resolved from a `Formulation`."""

    sets: dict[str, SetInfo] = field(default_factory=dict)
    parameters: dict[str, ParameterInfo] = field(default_factory=dict)
    variables: dict[str, VariableInfo] = field(default_factory=dict)
    errors: list[ExpressionError] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # declared, but the declaration has errors

    @classmethod
    def from_formulation(cls, f: Formulation) -> SymbolTable:
        table = cls()
        for s in f.sets:
            table.sets[s.name] = SetInfo(s.name, list(s.elements), {element_key(e): e for e in s.elements})
        for p in f.parameters:
            info = table._parameter(p)
            if info is not None:
                table.parameters[p.name] = info
            else:
                table.broken.add(p.name)
        for v in f.variables:
            sets = table._index_sets(v.index, f"variable {v.name}")
            if sets is not None:
                table.variables[v.name] = VariableInfo(
                    v.name, sets, v.domain, v.lower, v.upper, v.description
                )
            else:
                table.broken.add(v.name)
        return table

    def names(self) -> list[str]:
        return [*self.sets, *self.parameters, *self.variables]

    def _index_sets(self, names: list[str], component: str) -> list[SetInfo] | None:
        sets: list[SetInfo] = []
        for name in names:
            found = self.sets.get(name)
            if found is None:
                self.errors.append(
                    ExpressionError(
                        f"index set {name!r} is not declared.{_suggest(name, list(self.sets))} "
                        f"Declared sets: {_listing(list(self.sets))}.",
                        component=component,
                        token=name,
                    )
                )
                return None
            sets.append(found)
        return sets

    def _parameter(self, p: Parameter) -> ParameterInfo | None:
        component = f"parameter {p.name}"
        sets = self._index_sets(p.index, component)
        if sets is None:
            return None
        if not sets:
            return ParameterInfo(p.name, [], float(p.value), p.default, description=p.description)  # type: ignore[arg-type]
        assert isinstance(p.value, dict)
        arrays = _bulk_table(p.value, sets)
        if arrays is None:
            arrays = self._careful_table(p.value, sets, component)
            if arrays is None:
                return None
        keys, values = arrays
        order = np.argsort(keys, kind="stable")
        return ParameterInfo(p.name, sets, None, p.default, keys[order], values[order], p.description)

    def _careful_table(
        self, value: dict[str, Any], sets: list[SetInfo], component: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Entry by entry, reporting every bad key and value; flat and mixed tables land here."""
        before = len(self.errors)
        entries: dict[tuple[int, ...], float] = {}
        for parts, raw in _flatten_table(value, len(sets), component, self.errors):
            key: list[int] = []
            for part, s in zip(parts, sets, strict=True):
                position = s.position.get(element_key(part))
                if position is None:
                    self.errors.append(
                        ExpressionError(
                            f"key {part!r} is not an element of set {s.name}."
                            f"{_suggest(str(part), list(s.keys))} Elements: {_listing(s.elements)}.",
                            component=component,
                            token=str(part),
                        )
                    )
                    break
                key.append(position)
            else:
                number = _as_number(raw)
                if number is None or number != number:  # NaN never equals itself
                    self.errors.append(
                        ExpressionError(
                            f"the entry for {','.join(map(str, parts))} is {raw!r}, not a number.",
                            component=component,
                            token=str(raw),
                        )
                    )
                    continue
                entries[tuple(key)] = number
        if len(self.errors) > before:
            return None
        shape = tuple(len(s.elements) for s in sets)
        if not entries:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        positions = np.array(list(entries), dtype=np.int64).T
        keys = np.ravel_multi_index(tuple(positions), shape).astype(np.int64)
        return keys, np.fromiter(entries.values(), dtype=float, count=len(entries))


def _bulk_table(value: dict[str, Any], sets: list[SetInfo]) -> tuple[np.ndarray, np.ndarray] | None:
    """Nested objects of numbers with canonical keys, converted a whole level at a time.

    Returns None at the first thing it does not expect; the careful path then explains it.
    """
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    last = len(sets) - 1

    def walk(level: dict[str, Any], depth: int, prefix: int) -> bool:
        positions = sets[depth].position
        if depth == last:
            found = list(map(positions.get, level.keys()))
            raw = list(level.values())
            if None in found or not set(map(type, raw)) <= {int, float}:
                return False
            numbers = np.array(raw, dtype=float)
            if np.isnan(numbers).any():
                return False
            keys.append(prefix * len(positions) + np.array(found, dtype=np.int64))
            values.append(numbers)
            return True
        for key, inner in level.items():
            position = positions.get(key)
            if position is None or not isinstance(inner, dict):
                return False
            if not walk(inner, depth + 1, prefix * len(positions) + position):
                return False
        return True

    if not walk(value, 0, 0):
        return None
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(keys), np.concatenate(values)


def _as_number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def _split_flat_key(key: str) -> list[str]:
    text = key.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return [part.strip().strip("'\"") for part in text.split(",")]


def _flatten_table(
    value: dict[str, Any], depth: int, component: str, errors: list[ExpressionError]
) -> Iterator[tuple[list[str], Any]]:
    """Yield (key parts, raw value) from a nested and/or flat "a,b" keyed table."""
    for key, item in value.items():
        if isinstance(item, dict):
            if depth <= 1:
                errors.append(
                    ExpressionError(
                        f"the table is nested deeper than its {depth} remaining index set(s).",
                        component=component,
                        token=str(key),
                    )
                )
                continue
            for parts, raw in _flatten_table(item, depth - 1, component, errors):
                yield [str(key), *parts], raw
            continue
        if item is None:  # an explicit null means "no entry": the default applies
            continue
        parts = [str(key).strip()] if depth == 1 else _split_flat_key(str(key))
        if len(parts) != depth:
            errors.append(
                ExpressionError(
                    f"key {key!r} has {len(parts)} part(s) where {depth} index element(s) are expected; "
                    'use nested objects {"a": {"b": 1}} or flat keys "a,b".',
                    component=component,
                    token=str(key),
                )
            )
            continue
        yield parts, item


class FormulationError(ValueError):
    """Every problem found in a formulation, each an `ExpressionError`, in one readable message."""

    def __init__(self, errors: list[ExpressionError], name: str = "model") -> None:
        self.errors = list(errors)
        self.name = name
        count = len(self.errors)
        lines = [f"{count} problem{'s' if count != 1 else ''} in formulation {name!r}:"]
        lines += [f"- {error}" for error in self.errors]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FormulationError, (self.errors, self.name))
