"""Problem families: every one generates, solves to a verified optimum, round-trips through IR
JSON, has a complexity score that rises with the knob, and builds its infeasible / unbounded
variants as promised. Labels come from HiGHS and are re-checked independently."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from agent.synthesis.complexity import BANDS, EASY_BELOW, HARD_FROM, band_of, score_formulation
from agent.synthesis.families import (
    FAMILIES,
    MAX_LEVEL,
    SynthInstance,
    family_names,
    get_family,
    parse_families,
)
from agent.synthesis.families.base import constraint, formulation, index_set, table, variable
from agent.synthesis.generate import label_instance
from solvers.api import solve_formulation
from solvers.check import check_solution
from solvers.ir import Formulation
from solvers.result import SolveOptions, SolveStatus

REQUIRED = {
    "production_mix", "diet_blend", "transportation", "assignment", "knapsack", "facility_location",
    "lot_sizing", "staff_scheduling", "network_flow", "set_cover", "bin_packing", "portfolio",
    "multi_period_inventory",
}  # fmt: skip
NAMES = family_names()


def test_the_registry_has_every_required_family() -> None:
    assert len(NAMES) >= 12
    assert set(NAMES) >= REQUIRED
    assert [f.name for f in parse_families("all")] == NAMES
    assert [f.name for f in parse_families("knapsack, set_cover")] == ["knapsack", "set_cover"]
    with pytest.raises(KeyError, match="unknown family 'nope'"):
        parse_families("knapsack,nope")
    for family in FAMILIES.values():
        assert len(family.knob) == MAX_LEVEL and all(family.knob)


@pytest.mark.parametrize("level", [1, 3, 5])
@pytest.mark.parametrize("name", NAMES)
def test_family_generates_solves_and_round_trips(name: str, level: int) -> None:
    instance = get_family(name).generate(seed=11, level=level)
    f = instance.formulation
    assert Formulation.from_json(f.to_json()) == f
    assert SynthInstance.model_validate_json(instance.model_dump_json()) == instance
    result = solve_formulation(f, SolveOptions(time_limit=30, mip_gap=0.0, diagnose_infeasible=False))
    assert result.status == SolveStatus.OPTIMAL, result.message
    report = check_solution(f, result.values, result.objective)
    assert report.ok, report.summary()
    assert report.recomputed_objective == pytest.approx(result.objective, rel=1e-6, abs=1e-6)
    # the label the pipeline uses is the same optimum, polished and checked
    outcome = label_instance(instance, time_limit=30)
    assert outcome.label is not None and outcome.label.checked
    assert outcome.label.objective == pytest.approx(result.objective, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_names_and_descriptions_are_human(name: str) -> None:
    """The story writer works from these: every component is described and no name hides a digit."""
    for level in range(1, MAX_LEVEL + 1):
        instance = get_family(name).generate(seed=3, level=level)
        f = instance.formulation
        assert instance.domain and f.objective.description
        for component in [*f.sets, *f.parameters, *f.variables, *f.constraints]:
            assert component.description, f"{name} level {level}: {component.name} has no description"
        for s in f.sets:
            words = [e for e in s.elements if isinstance(e, str)]
            assert not any(re.search(r"\d", e) for e in words), f"{name}: digits in {s.name} {words}"
            assert all(isinstance(e, str) for e in s.elements) or all(isinstance(e, int) for e in s.elements)


@pytest.mark.parametrize("name", NAMES)
def test_complexity_rises_with_the_knob(name: str) -> None:
    family = get_family(name)
    for seed in (0, 1, 2):
        scores = [score_formulation(family.generate(seed, level).formulation).score for level in range(1, 6)]
        assert all(a < b for a, b in itertools.pairwise(scores)), f"{name} seed {seed}: {scores}"


def test_complexity_counts_what_the_instance_contains() -> None:
    lp = score_formulation(get_family("production_mix").generate(0, 1).formulation)
    assert (lp.continuous_vars, lp.integer_vars, lp.binary_vars) == (2, 0, 0)
    assert lp.constraint_instances == 2 and lp.constraint_kinds == 1 and lp.linking_kinds == 0
    assert not lp.quadratic and lp.band == "easy"
    mip = score_formulation(get_family("production_mix").generate(0, 4).formulation)
    assert mip.integer_vars == 5 and mip.binary_vars == 5
    assert mip.linking_kinds == 2  # make <= cap * run, make >= batch * run
    qp = score_formulation(get_family("portfolio").generate(0, 3).formulation)
    assert qp.quadratic and qp.continuous_vars == 4


def test_bands_follow_the_documented_thresholds() -> None:
    assert band_of(EASY_BELOW - 0.01) == "easy"
    assert band_of(EASY_BELOW) == "medium"
    assert band_of(HARD_FROM - 0.01) == "medium"
    assert band_of(HARD_FROM) == "hard"
    reached = {
        score_formulation(f.generate(0, level).formulation).band
        for f in FAMILIES.values()
        for level in (1, 3, 5)
    }
    assert reached == set(BANDS)


@pytest.mark.parametrize(
    ("name", "variant"),
    [(f.name, v) for f in FAMILIES.values() for v in sorted(f.variants) if v != "feasible"],
)
def test_infeasible_and_unbounded_variants_are_labelled_as_such(name: str, variant: str) -> None:
    family = get_family(name)
    for level in range(1, MAX_LEVEL + 1):
        instance = family.generate(seed=5, level=level, variant=variant)  # type: ignore[arg-type]
        outcome = label_instance(instance, time_limit=30)
        assert outcome.label is not None, f"{name} level {level}: {outcome.dropped}"
        assert outcome.label.status == variant and outcome.label.objective is None


def test_every_family_has_an_infeasible_variant_and_some_an_unbounded_one() -> None:
    assert all("infeasible" in f.variants for f in FAMILIES.values())
    assert any("unbounded" in f.variants for f in FAMILIES.values())
    with pytest.raises(ValueError, match="has no unbounded variant"):
        get_family("knapsack").generate(0, 1, "unbounded")
    with pytest.raises(ValueError, match="level must be"):
        get_family("knapsack").generate(0, 6)


def test_generation_is_seeded() -> None:
    family = get_family("transportation")
    assert family.generate(4, 3) == family.generate(4, 3)
    assert family.generate(4, 3).formulation != family.generate(5, 3).formulation


def test_mip_labels_are_polished_to_an_integral_solution() -> None:
    # Facility location links flows to open/closed sites with capacity x open; a raw MIP solution
    # can carry open = 0.9999999 and an objective like 867.499999.
    for seed in range(4):
        label = label_instance(get_family("facility_location").generate(seed, 1)).label
        assert label is not None and label.polished and label.checked
        assert label.objective is not None
        opened = [v for k, v in label.values.items() if k.startswith("open[")]
        assert all(v in (0.0, 1.0) for v in opened)
        recomputed = check_solution(
            get_family("facility_location").generate(seed, 1).formulation, label.values
        )
        assert recomputed.recomputed_objective == pytest.approx(label.objective, abs=1e-9)


def _market_split() -> SynthInstance:
    """A notoriously hard equality knapsack (Cornuejols-Dawande): no MIP solver closes it in 1 s."""
    rng = random.Random(5)
    items = [f"item{chr(97 + k // 26)}{chr(97 + k % 26)}" for k in range(36)]
    rows = ["north", "south", "east", "west"]
    weights = {r: {i: rng.randint(0, 99) for i in items} for r in rows}
    halves = {r: sum(weights[r].values()) // 2 for r in rows}
    f = formulation(
        "market_split",
        "Market split",
        [index_set("Items", items, "items"), index_set("Rows", rows, "regions")],
        [table("a", ["Rows", "Items"], weights, "weights"), table("b", ["Rows"], halves, "halves")],
        [variable("x", "chosen", ["Items"], "binary")],
        ("maximize", "sum(x[i] for i in Items)", "count"),
        [constraint("split", "sum(a[r, i] * x[i] for i in Items) == b[r]", "exact split", [("r", "Rows")])],
    )
    return SynthInstance(family="market_split", seed=0, level=1, domain="a test", formulation=f)


def test_a_time_limit_hit_is_dropped_not_labelled() -> None:
    outcome = label_instance(_market_split(), time_limit=1.0)
    assert outcome.label is None and outcome.dropped == "time_limit"
