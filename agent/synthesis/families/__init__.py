"""The registry of problem families: seeded generators that emit `Formulation` instances.

from agent.synthesis.families import get_family, family_names
instance = get_family("transportation").generate(seed=7, level=3)
"""

from __future__ import annotations

from agent.synthesis.families.base import MAX_LEVEL, VARIANTS, Family, SynthInstance, Variant
from agent.synthesis.families.combinatorial import BIN_PACKING, KNAPSACK, SET_COVER
from agent.synthesis.families.finance import PORTFOLIO
from agent.synthesis.families.logistics import ASSIGNMENT, FACILITY_LOCATION, TRANSPORTATION
from agent.synthesis.families.network import NETWORK_FLOW
from agent.synthesis.families.planning import LOT_SIZING, MULTI_PERIOD_INVENTORY, STAFF_SCHEDULING
from agent.synthesis.families.production import DIET, PRODUCTION_MIX

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        PRODUCTION_MIX,
        DIET,
        TRANSPORTATION,
        ASSIGNMENT,
        KNAPSACK,
        FACILITY_LOCATION,
        LOT_SIZING,
        STAFF_SCHEDULING,
        NETWORK_FLOW,
        SET_COVER,
        BIN_PACKING,
        PORTFOLIO,
        MULTI_PERIOD_INVENTORY,
    )
}


def family_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None


def parse_families(spec: str) -> list[Family]:
    """'all' or a comma-separated list of family names."""
    if spec.strip().lower() == "all":
        return list(FAMILIES.values())
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise KeyError("no family named; use 'all' or a comma-separated list")
    return [get_family(name) for name in names]


__all__ = [
    "FAMILIES",
    "MAX_LEVEL",
    "VARIANTS",
    "Family",
    "SynthInstance",
    "Variant",
    "family_names",
    "get_family",
    "parse_families",
]
