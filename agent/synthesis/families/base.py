"""What every problem family shares: the instance model, the family record, IR and data helpers.

A family is an executable, seeded generator: `(rng, level, variant) -> (domain, Formulation)`.
Sizes are a deterministic function of the level (so the complexity score rises with the knob);
only the data values and the names are drawn from the seed. Data is built around a reference
solution the generator picks first, so the feasible variant is feasible by construction, and the
infeasible variant is infeasible by an argument stated next to its construction.

Set and element names are words (never digits): the story writer must not have to invent where a
number in a name came from. Integer sets are used only for time periods (`t - 1` arithmetic).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from solvers.ir import (
    Binding,
    Constraint,
    Formulation,
    IndexSet,
    ModelKind,
    Objective,
    Parameter,
    Variable,
    VariableDomain,
)

Variant = Literal["feasible", "infeasible", "unbounded"]
VARIANTS: tuple[Variant, ...] = ("feasible", "infeasible", "unbounded")
MAX_LEVEL = 5
# What the solver must say for each variant; checked when labelling (a mismatch is a generator bug).
EXPECTED_STATUS: dict[Variant, str] = {
    "feasible": "optimal",
    "infeasible": "infeasible",
    "unbounded": "unbounded",
}


class SynthInstance(BaseModel):
    """One generated problem: where it came from and its formulation."""

    model_config = ConfigDict(extra="forbid")

    family: str
    seed: int
    level: int = Field(ge=1, le=MAX_LEVEL, description="the complexity knob")
    variant: Variant = "feasible"
    domain: str = Field(description="the setting the names come from, e.g. 'a furniture workshop'")
    formulation: Formulation

    @property
    def key(self) -> str:
        return f"{self.family}:{self.seed}:{self.level}:{self.variant}"


Builder = Callable[[random.Random, int, Variant], tuple[str, Formulation]]


@dataclass(frozen=True)
class Family:
    """A registered generator. `knob[k-1]` says what level k adds."""

    name: str
    title: str
    knob: tuple[str, ...]
    variants: frozenset[Variant]
    build: Builder

    def generate(self, seed: int, level: int = 1, variant: Variant = "feasible") -> SynthInstance:
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be 1..{MAX_LEVEL}, got {level}")
        if variant not in self.variants:
            raise ValueError(
                f"family {self.name!r} has no {variant} variant (it has {sorted(self.variants)})"
            )
        # A string seed is hashed deterministically by `random` (not by PYTHONHASHSEED).
        rng = random.Random(f"{self.name}:{seed}:{level}:{variant}")
        domain, formulation = self.build(rng, level, variant)
        return SynthInstance(
            family=self.name, seed=seed, level=level, variant=variant, domain=domain, formulation=formulation
        )


# --- themes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Theme:
    """A setting and the name pools its sets draw from, plus the words its descriptions use."""

    domain: str
    pools: dict[str, tuple[str, ...]]
    words: dict[str, str]

    def names(self, rng: random.Random, role: str, count: int) -> list[str]:
        pool = self.pools[role]
        if count > len(pool):
            raise ValueError(f"theme {self.domain!r} has {len(pool)} {role}, {count} needed")
        return rng.sample(pool, count)

    def word(self, key: str) -> str:
        return self.words[key]


def pick_theme(rng: random.Random, themes: Sequence[Theme]) -> Theme:
    return themes[rng.randrange(len(themes))]


# --- numbers -------------------------------------------------------------------------------------
def step_value(rng: random.Random, low: float, high: float, step: float = 1.0) -> float | int:
    """A value in [low, high] on a grid of `step`, as an int when it is whole (for readable text)."""
    count = round((high - low) / step)
    return tidy(low + step * rng.randint(0, count))


def tidy(value: float) -> float | int:
    """Round away float noise (0.1 + 0.2) and give whole numbers as ints."""
    rounded = round(float(value), 6)
    return int(rounded) if rounded == int(rounded) else rounded


def round_up(value: float, step: float) -> float | int:
    return tidy(math.ceil(value / step - 1e-9) * step)


def round_down(value: float, step: float) -> float | int:
    return tidy(math.floor(value / step + 1e-9) * step)


def by_level(level: int, sizes: Sequence[int]) -> int:
    """The size for a level from a per-level table (index 0 is level 1)."""
    return sizes[level - 1]


# --- IR helpers ----------------------------------------------------------------------------------
def index_set(name: str, elements: Sequence[str | int], description: str) -> IndexSet:
    return IndexSet(name=name, elements=list(elements), description=description)


def scalar(name: str, value: float, description: str) -> Parameter:
    return Parameter(name=name, value=float(value), description=description)


def table(
    name: str, index: Sequence[str], value: dict[Any, Any], description: str, default: float | None = None
) -> Parameter:
    return Parameter(
        name=name, index=list(index), value=_string_keys(value), description=description, default=default
    )


def _string_keys(value: Any) -> Any:
    """JSON object keys are strings; integer elements (periods, bins) are written as their digits."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    return value


def variable(
    name: str,
    description: str,
    index: Sequence[str] = (),
    domain: VariableDomain = "continuous",
    upper: float | None = None,
) -> Variable:
    return Variable(name=name, description=description, index=list(index), domain=domain, upper=upper)


def constraint(
    name: str,
    expression: str,
    description: str,
    for_all: Sequence[tuple[str, str]] = (),
    where: str | None = None,
) -> Constraint:
    return Constraint(
        name=name,
        expression=expression,
        description=description,
        for_all=[Binding(index=i, set=s) for i, s in for_all],
        where=where,
    )


def formulation(
    name: str,
    description: str,
    sets: list[IndexSet],
    parameters: list[Parameter],
    variables: list[Variable],
    objective: tuple[str, str, str],
    constraints: list[Constraint],
    kind: ModelKind = "linear",
) -> Formulation:
    sense, expression, what = objective
    return Formulation(
        name=name,
        description=description,
        kind=kind,
        sets=sets,
        parameters=parameters,
        variables=variables,
        objective=Objective(sense=sense, expression=expression, description=what),  # type: ignore[arg-type]
        constraints=constraints,
    )


def quoted(element: str) -> str:
    """An element as a literal in an expression (`p != 'Gift cards'`)."""
    if "'" in element:
        raise ValueError(f"element {element!r} cannot be quoted")
    return f"'{element}'"


def integer_domain(level: int, from_level: int = 3) -> VariableDomain:
    """The integrality knob: whole-number decisions from `from_level` on."""
    return "integer" if level >= from_level else "continuous"


def rename_set(f: Formulation, old: str, new: str) -> Formulation:
    """The same formulation with set `old` called `new` everywhere (e.g. Periods -> Weeks), so the
    facts say "week 3" rather than "period 3"."""
    word = re.compile(rf"\b{re.escape(old)}\b")
    data = f.model_dump()
    for s in data["sets"]:
        if s["name"] == old:
            s["name"] = new
    for item in [*data["parameters"], *data["variables"]]:
        item["index"] = [new if name == old else name for name in item["index"]]
    for c in data["constraints"]:
        for binding in c["for_all"]:
            if binding["set"] == old:
                binding["set"] = new
        c["expression"] = word.sub(new, c["expression"])
        if c["where"]:
            c["where"] = word.sub(new, c["where"])
    data["objective"]["expression"] = word.sub(new, data["objective"]["expression"])
    return Formulation.model_validate(data)
