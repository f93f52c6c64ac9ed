"""The formulation IR: what an LLM fills in and a person reads.

A `Formulation` names its index sets, data, decision variables, one objective and named
constraints. Expressions are strings in a small algebraic language, e.g.

    sum(cost[i, j] * x[i, j] for i in Plants for j in Customers) <= budget

which `solvers.expressions` parses with a whitelisted AST walk (never `eval`).
Field order matters: an LLM filling the JSON schema writes `notes` first, and listing each
resource's per-unit use there measurably improves small models' formulations.
"""

from __future__ import annotations

import json
import keyword
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_NAMES = frozenset({"sum", "for", "in", "if", "and", "or", "not", "abs", "min", "max"})

Element = str | int
ParameterTable = dict[str, Any]  # nested {element: {element: number}} or flat {"a,b": number}


def _check_identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} name {value!r} is not an identifier (letters, digits, underscore)")
    if keyword.iskeyword(value) or value in RESERVED_NAMES:
        raise ValueError(f"{what} name {value!r} is a reserved word of the expression language")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IndexSet(_Strict):
    """A finite index set, e.g. Plants = ["Boston", "Denver"] or Periods = [1, 2, 3]."""

    name: str
    elements: list[Element] = Field(description="the members, strings or integers, no duplicates")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_identifier(value, "set")

    @field_validator("elements")
    @classmethod
    def _unique(cls, elements: list[Element]) -> list[Element]:
        keys = [str(e) for e in elements]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"set elements must be unique; repeated: {', '.join(duplicates)}")
        return elements


class Parameter(_Strict):
    """Known data: a scalar (`index` empty) or a table indexed by sets.

    An indexed value is a nested object, one level per index set
    (`{"Boston": {"NY": 3.0}}`), or a flat object keyed by comma-joined elements
    (`{"Boston,NY": 3.0}`). Missing entries take `default` when it is set.
    """

    name: str
    description: str = ""
    index: list[str] = Field(default_factory=list, description="names of the index sets, in order")
    value: float | ParameterTable
    default: float | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_identifier(value, "parameter")

    @model_validator(mode="after")
    def _shape(self) -> Parameter:
        if not self.index and isinstance(self.value, dict):
            raise ValueError(f"parameter {self.name!r} has a table value but no index sets")
        if self.index and not isinstance(self.value, dict):
            raise ValueError(f"parameter {self.name!r} is indexed by {self.index} but its value is a scalar")
        return self


VariableDomain = Literal["continuous", "integer", "binary"]


class Variable(_Strict):
    """A decision variable, optionally indexed over sets. Bounds default to [0, +inf)."""

    name: str
    description: str = ""
    index: list[str] = Field(default_factory=list, description="names of the index sets, in order")
    domain: VariableDomain = "continuous"
    lower: float | None = Field(default=0.0, description="lower bound; null for unbounded below")
    upper: float | None = Field(default=None, description="upper bound; null for unbounded above")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_identifier(value, "variable")

    @model_validator(mode="after")
    def _bounds(self) -> Variable:
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(
                f"variable {self.name!r}: lower bound {self.lower} exceeds upper bound {self.upper}"
            )
        return self


class Objective(_Strict):
    sense: Literal["minimize", "maximize"]
    expression: str
    name: str = "objective"
    description: str = ""


class Binding(_Strict):
    """One `for <index> in <set>` clause of an indexed constraint."""

    index: str
    set: str

    @field_validator("index")
    @classmethod
    def _index(cls, value: str) -> str:
        return _check_identifier(value, "index")


class Constraint(_Strict):
    """A named (in)equality, optionally repeated "for all" members of sets.

    `expression` holds one comparison (`<=`, `>=`, `==`) or a range `lo <= expr <= hi`.
    `where` filters the repetitions, e.g. `i != j`.
    """

    name: str
    description: str = ""
    for_all: list[Binding] = Field(default_factory=list)
    where: str | None = None
    expression: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_identifier(value, "constraint")


ModelKind = Literal["linear", "quadratic", "nonlinear"]


class Formulation(_Strict):
    """A complete optimization model. `kind` is a claim that building verifies."""

    notes: str = Field(
        default="",
        description="working notes written first: each resource and each product's per-unit use of it",
    )
    name: str = "model"
    description: str = ""
    kind: ModelKind = "linear"
    sets: list[IndexSet] = Field(default_factory=list)
    parameters: list[Parameter] = Field(default_factory=list)
    variables: Annotated[list[Variable], Field(min_length=1)]
    objective: Objective
    constraints: list[Constraint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Formulation:
        seen: dict[str, str] = {}
        groups = (
            ("set", [s.name for s in self.sets]),
            ("parameter", [p.name for p in self.parameters]),
            ("variable", [v.name for v in self.variables]),
            ("constraint", [c.name for c in self.constraints]),
        )
        for what, names in groups:
            for name in names:
                if name in seen:
                    raise ValueError(f"name {name!r} is used twice (as {seen[name]} and as {what})")
                seen[name] = what
        return self

    # --- conveniences -------------------------------------------------------------------------
    def set_named(self, name: str) -> IndexSet | None:
        return next((s for s in self.sets if s.name == name), None)

    def variable_named(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    def parameter_named(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def constraint_named(self, name: str) -> Constraint | None:
        return next((c for c in self.constraints if c.name == name), None)

    @property
    def has_integers(self) -> bool:
        return any(v.domain != "continuous" for v in self.variables)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_defaults=False)

    @classmethod
    def from_json(cls, text: str) -> Formulation:
        return cls.model_validate(json.loads(text))


def formulation_json_schema() -> dict[str, Any]:
    """JSON schema of `Formulation`, for structured LLM output."""
    return Formulation.model_json_schema()
