"""Infeasibility diagnosis on small Pyomo models whose conflicts are known by hand."""

from __future__ import annotations

import highspy
import pyomo.environ as pyo
import pytest

from solvers import diagnose
from solvers.api import solve_formulation
from solvers.build import build_model
from solvers.diagnose import diagnose_infeasibility
from solvers.highs import load_into_highs
from solvers.ir import Formulation
from solvers.result import ConflictMember, InfeasibilityDiagnosis, SolveOptions


def _constraint_names(diagnosis: InfeasibilityDiagnosis) -> set[str]:
    return {m.name for m in diagnosis.conflict if m.kind == "constraint"}


def _bound_names(diagnosis: InfeasibilityDiagnosis) -> set[str]:
    return {m.name for m in diagnosis.conflict if m.kind == "variable_bound"}


def _infeasible(model: pyo.ConcreteModel) -> bool:
    """Independent check: HiGHS on the loaded model, no diagnosis code involved."""
    loaded = load_into_highs(model)
    loaded.highs.run()
    return loaded.highs.getModelStatus() == highspy.HighsModelStatus.kInfeasible


def _only(model: pyo.ConcreteModel, members: list[ConflictMember]) -> pyo.ConcreteModel:
    """A copy keeping just `members`: other constraints off, other variable bounds removed."""
    copy = model.clone()
    keep = {m.name for m in members if m.kind == "constraint"}
    for con in copy.component_data_objects(pyo.Constraint, active=True):
        if con.name not in keep:
            con.deactivate()
    sides = {m.name: m.description.split(" (")[0] for m in members if m.kind == "variable_bound"}
    for var in copy.component_data_objects(pyo.Var):
        lower, upper = var.bounds
        if var.is_integer():
            var.domain = pyo.Integers  # a Binary domain would bring its 0..1 bounds back
        text = sides.get(var.name, "")
        var.setlb(lower if text.startswith(f"{var.name} >=") or "<= " + var.name in text else None)
        var.setub(upper if text.startswith(f"{var.name} <=") or var.name + " <=" in text else None)
    return copy


def _assert_irreducible(model: pyo.ConcreteModel, diagnosis: InfeasibilityDiagnosis) -> None:
    assert _infeasible(_only(model, diagnosis.conflict)), "the reported set is not a conflict"
    for k, member in enumerate(diagnosis.conflict):
        rest = diagnosis.conflict[:k] + diagnosis.conflict[k + 1 :]
        assert not _infeasible(_only(model, rest)), f"{member.name} is not needed for the conflict"


def _shipping(integer_extra: bool = False, harmless: int = 4) -> pyo.ConcreteModel:
    """Boston needs 240 units, i.e. 120 Denver shipments (2 units each); Denver can ship 100.

    Every other constraint is slack at any sensible point, so the only conflict is
    {demand[Boston], supply[Denver]}. Raising Denver's capacity by 20 costs 20; lowering Boston's
    demand instead costs 40, so the smallest fix is unique.
    """
    m = pyo.ConcreteModel()
    m.Plants = pyo.Set(initialize=["Denver", "Austin"])
    m.Cities = pyo.Set(initialize=["Boston"])
    m.ship = pyo.Var(m.Plants, bounds=(0, None), doc="shipments from each plant")
    capacity = {"Denver": 100, "Austin": 500}
    m.supply = pyo.Constraint(
        m.Plants, rule=lambda m, p: m.ship[p] <= capacity[p], doc="plant shipping capacity"
    )
    m.demand = pyo.Constraint(
        m.Cities, rule=lambda m, c: 2 * m.ship["Denver"] >= 240, doc="Boston needs 240 units from Denver"
    )
    m.Extra = pyo.RangeSet(harmless)
    m.harmless = pyo.Constraint(m.Extra, rule=lambda m, k: m.ship["Austin"] + m.ship["Denver"] <= 10_000 + k)
    m.budget = pyo.Constraint(expr=sum(m.ship[p] for p in m.Plants) <= 1_000, doc="trucks available")
    if integer_extra:
        # An integer variable elsewhere turns the model into a MILP without touching the conflict.
        m.trucks = pyo.Var(within=pyo.NonNegativeIntegers, bounds=(0, 9))
        m.fleet = pyo.Constraint(expr=m.trucks >= 2)
    m.cost = pyo.Objective(expr=sum(m.ship[p] for p in m.Plants))
    return m


def test_lp_iis_names_exactly_the_conflicting_constraints_with_descriptions() -> None:
    diagnosis = diagnose_infeasibility(_shipping())
    assert diagnosis.method == "iis"
    assert _constraint_names(diagnosis) == {"demand[Boston]", "supply[Denver]"}
    descriptions = {m.name: m.description for m in diagnosis.conflict}
    assert descriptions["demand[Boston]"] == "Boston needs 240 units from Denver"
    assert descriptions["supply[Denver]"] == "plant shipping capacity"
    assert "demand[Boston] (Boston needs 240 units from Denver)" in diagnosis.message
    assert "supply[Denver] (plant shipping capacity)" in diagnosis.message
    _assert_irreducible(_shipping(), diagnosis)


def test_lp_relaxation_is_the_hand_computed_smallest_fix() -> None:
    diagnosis = diagnose_infeasibility(_shipping())
    assert len(diagnosis.relaxations) == 1
    fix = diagnosis.relaxations[0]
    assert fix.name == "supply[Denver]"
    assert fix.direction == "increase_rhs"
    assert fix.amount == pytest.approx(20.0)
    assert diagnosis.total_violation == pytest.approx(20.0)
    assert "raise the right-hand side of supply[Denver] by 20" in diagnosis.message


def test_milp_uses_the_deletion_filter_and_finds_the_same_conflict() -> None:
    diagnosis = diagnose_infeasibility(_shipping(integer_extra=True, harmless=40))
    assert diagnosis.method == "elastic_deletion_filter"
    assert _constraint_names(diagnosis) == {"demand[Boston]", "supply[Denver]"}
    assert _bound_names(diagnosis) == set()
    assert diagnosis.total_violation == pytest.approx(20.0)
    assert "may not be minimal" not in diagnosis.message
    _assert_irreducible(_shipping(integer_extra=True, harmless=40), diagnosis)


def test_integrality_caused_conflict_is_found_and_explained() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(within=pyo.Integers, doc="crates")
    m.y = pyo.Var(bounds=(0, 10))
    m.split = pyo.Constraint(expr=2 * m.x == 3, doc="three units in pairs")
    m.room = pyo.Constraint(expr=m.x + m.y <= 100)
    m.spare = pyo.Constraint(expr=m.y >= 1)
    m.obj = pyo.Objective(expr=m.x + m.y)
    diagnosis = diagnose_infeasibility(m)
    assert diagnosis.method == "elastic_deletion_filter"
    assert [(c.name, c.description) for c in diagnosis.conflict] == [("split", "three units in pairs")]
    # 2x can reach 2 or 4: either side is one unit away.
    assert diagnosis.total_violation == pytest.approx(1.0)
    assert [r.name for r in diagnosis.relaxations] == ["split"]
    assert diagnosis.relaxations[0].amount == pytest.approx(1.0)
    assert "integrality (x must take whole-number values)" in diagnosis.message


def test_knapsack_conflict_needs_the_binary_bounds() -> None:
    """Three of four items must be packed; any three weigh at least 4+5+6 = 15 > 12."""
    m = pyo.ConcreteModel()
    m.Items = pyo.Set(initialize=[1, 2, 3, 4])
    weight = {1: 4, 2: 5, 3: 6, 4: 7}
    m.pack = pyo.Var(m.Items, within=pyo.Binary)
    m.count = pyo.Constraint(expr=sum(m.pack[i] for i in m.Items) >= 3, doc="pack at least three items")
    m.weight = pyo.Constraint(expr=sum(weight[i] * m.pack[i] for i in m.Items) <= 12, doc="bag holds 12 kg")
    m.pair = pyo.Constraint(expr=m.pack[1] + m.pack[4] <= 2)
    m.value = pyo.Objective(expr=sum(m.pack[i] for i in m.Items), sense=pyo.maximize)
    diagnosis = diagnose_infeasibility(m)
    assert _constraint_names(diagnosis) == {"count", "weight"}
    # Without "pack[i] <= 1" three units of the lightest item would fit, so bounds are part of it
    # too; which ones depends on the filter's order, but the set must be irreducible.
    assert _bound_names(diagnosis)
    _assert_irreducible(m, diagnosis)
    # Smallest fix: 12 -> 15 on the weight, or 3 -> 2 items (1 unit) on the count.
    assert diagnosis.total_violation == pytest.approx(1.0)
    assert diagnosis.relaxations[0].name == "count"
    assert diagnosis.relaxations[0].direction == "decrease_rhs"


def test_bound_caused_lp_conflict_reports_the_bounds() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 3), doc="morning shifts")
    m.y = pyo.Var(bounds=(0, 4), doc="evening shifts")
    m.z = pyo.Var(bounds=(0, 100))
    m.cover = pyo.Constraint(expr=m.x + m.y >= 10, doc="ten shifts must be covered")
    m.other = pyo.Constraint(expr=m.z + m.x <= 50)
    m.obj = pyo.Objective(expr=m.x + m.y + m.z)
    diagnosis = diagnose_infeasibility(m)
    assert diagnosis.method == "iis"
    assert _constraint_names(diagnosis) == {"cover"}
    assert _bound_names(diagnosis) == {"x", "y"}
    descriptions = {m.name: m.description for m in diagnosis.conflict}
    assert descriptions["x"].startswith("x <= 3")
    assert "morning shifts" in descriptions["x"]
    assert "1 constraint and 2 variable bounds" in diagnosis.message
    _assert_irreducible(m, diagnosis)
    assert diagnosis.relaxations[0].name == "cover"
    assert diagnosis.relaxations[0].amount == pytest.approx(3.0)


def test_contradictory_bounds_alone() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(5, 3))
    m.y = pyo.Var(bounds=(0, None))
    m.use = pyo.Constraint(expr=m.x + m.y <= 100)
    m.obj = pyo.Objective(expr=m.y)
    diagnosis = diagnose_infeasibility(m)
    assert _constraint_names(diagnosis) == set()
    assert _bound_names(diagnosis) == {"x"}
    assert diagnosis.relaxations == []


def test_integer_bounds_without_an_integer_between_them_milp() -> None:
    m = pyo.ConcreteModel()
    m.n = pyo.Var(within=pyo.Integers, bounds=(0.2, 0.8))
    m.y = pyo.Var(bounds=(0, 4))
    m.use = pyo.Constraint(expr=m.n + m.y <= 100)
    m.obj = pyo.Objective(expr=m.y)
    diagnosis = diagnose_infeasibility(m)
    assert diagnosis.method == "elastic_deletion_filter"
    assert _constraint_names(diagnosis) == set()
    assert _bound_names(diagnosis) == {"n"}
    assert "No change to the constraints can fix this" in diagnosis.message


def test_variable_outside_every_constraint_with_empty_domain() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 10))
    m.lonely = pyo.Var(bounds=(2, 1))
    m.c = pyo.Constraint(expr=m.x >= 1)
    m.obj = pyo.Objective(expr=m.x)
    diagnosis = diagnose_infeasibility(m)
    assert [(c.name, c.kind) for c in diagnosis.conflict] == [("lonely", "variable_bound")]


def test_constraint_without_free_variables_is_reported() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 10))
    m.y = pyo.Var(bounds=(0, 10))
    m.y.fix(3)
    m.minimum = pyo.Constraint(expr=m.y >= 5, doc="at least five")
    m.c = pyo.Constraint(expr=m.x + m.y <= 10)
    m.obj = pyo.Objective(expr=m.x)
    diagnosis = diagnose_infeasibility(m)
    assert _constraint_names(diagnosis) == {"minimum"}
    assert diagnosis.relaxations[0].amount == pytest.approx(2.0)
    assert diagnosis.relaxations[0].direction == "decrease_rhs"


@pytest.mark.parametrize("integer", [False, True])
def test_feasible_model_reports_no_conflict(integer: bool) -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 10), within=pyo.Integers if integer else pyo.Reals)
    m.c = pyo.Constraint(expr=m.x >= 3)
    # An unbounded objective must not matter: diagnosis only asks for feasibility.
    m.obj = pyo.Objective(expr=m.x, sense=pyo.maximize)
    diagnosis = diagnose_infeasibility(m)
    assert diagnosis.conflict == []
    assert diagnosis.relaxations == []
    assert diagnosis.total_violation == 0.0
    assert diagnosis.message.startswith("The model is feasible")


def test_equality_conflict_includes_the_needed_bound_and_raises_the_rhs() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, None))
    m.y = pyo.Var(bounds=(0, None), doc="overtime")
    m.total = pyo.Constraint(expr=m.x + m.y == 10, doc="exactly ten")
    m.floor = pyo.Constraint(expr=3 * m.x >= 36, doc="x at least 12")
    m.obj = pyo.Objective(expr=m.x)
    diagnosis = diagnose_infeasibility(m)
    # x + y = 10 and x >= 12 force y = -2: y's lower bound is part of the conflict.
    assert _constraint_names(diagnosis) == {"total", "floor"}
    assert _bound_names(diagnosis) == {"y"}
    assert next(c for c in diagnosis.conflict if c.name == "y").description == "y >= 0 (overtime)"
    _assert_irreducible(m, diagnosis)
    # total 10 -> 12 costs 2; floor 36 -> 30 would cost 6.
    assert [(r.name, r.direction) for r in diagnosis.relaxations] == [("total", "increase_rhs")]
    assert diagnosis.relaxations[0].amount == pytest.approx(2.0)


def test_range_constraint_lower_side_is_lowered() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, None))
    m.y = pyo.Var(bounds=(0, None))
    m.band = pyo.Constraint(expr=pyo.inequality(14, 2 * m.x + 2 * m.y, 30), doc="between 14 and 30")
    m.cap = pyo.Constraint(expr=3 * m.x + 3 * m.y <= 15, doc="x + y at most 5")
    m.obj = pyo.Objective(expr=m.x)
    diagnosis = diagnose_infeasibility(m)
    assert _constraint_names(diagnosis) == {"band", "cap"}
    # band's lower side 14 -> 10 costs 4; cap 15 -> 21 would cost 6.
    assert [(r.name, r.direction) for r in diagnosis.relaxations] == [("band", "decrease_rhs")]
    assert diagnosis.relaxations[0].amount == pytest.approx(4.0)
    assert "lower the right-hand side of band by 4" in diagnosis.message


def test_quadratic_objective_does_not_stop_the_diagnosis() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 4))
    m.need = pyo.Constraint(expr=m.x >= 6, doc="at least six")
    m.obj = pyo.Objective(expr=(m.x - 1) ** 2)
    diagnosis = diagnose_infeasibility(m)
    assert _constraint_names(diagnosis) == {"need"}
    assert _bound_names(diagnosis) == {"x"}
    assert m.obj.active  # the caller's model is left as it was


def test_nonlinear_model_gets_a_clear_message() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 1))
    m.c = pyo.Constraint(expr=m.x * m.x >= 4)
    m.obj = pyo.Objective(expr=m.x)
    diagnosis = diagnose_infeasibility(m)
    assert diagnosis.conflict == []
    assert "linear" in diagnosis.message


def test_many_harmless_constraints_with_a_time_budget() -> None:
    diagnosis = diagnose_infeasibility(
        _shipping(integer_extra=True, harmless=400), SolveOptions(time_limit=30)
    )
    assert _constraint_names(diagnosis) == {"demand[Boston]", "supply[Denver]"}


def test_lp_falls_back_to_the_deletion_filter_when_the_iis_is_not_irreducible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the "reduce to irreducible" bit HiGHS returns a merely reducible set, which the
    # diagnosis must not pass off as an IIS.
    monkeypatch.setattr(diagnose, "IIS_STRATEGY", 2)
    model = _shipping(harmless=20)
    result = diagnose_infeasibility(model)
    assert result.method == "elastic_deletion_filter"
    assert _constraint_names(result) == {"demand[Boston]", "supply[Denver]"}
    _assert_irreducible(model, result)


def test_exhausted_time_budget_says_so_instead_of_guessing() -> None:
    m = pyo.ConcreteModel()
    m.n = pyo.Var(within=pyo.Integers, bounds=(0, 1))
    m.low = pyo.Constraint(expr=m.n >= 0.5)
    m.high = pyo.Constraint(expr=m.n <= 0.7)
    m.obj = pyo.Objective(expr=m.n)
    result = diagnose_infeasibility(m, SolveOptions(time_limit=1e-9))
    assert result.conflict == []
    assert "time limit" in result.message


def test_model_without_any_free_variable_is_feasible() -> None:
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 1))
    m.obj = pyo.Objective(expr=0)
    result = diagnose_infeasibility(m)
    assert result.conflict == []
    assert result.message.startswith("The model is feasible")


def _transport_formulation(boston_need: float) -> Formulation:
    return Formulation.model_validate(
        {
            "name": "transport",
            "sets": [
                {"name": "Plants", "elements": ["Denver", "Austin"]},
                {"name": "Cities", "elements": ["Boston", "Chicago"]},
            ],
            "parameters": [
                {"name": "capacity", "index": ["Plants"], "value": {"Denver": 300, "Austin": 200}},
                {"name": "need", "index": ["Cities"], "value": {"Boston": boston_need, "Chicago": 0}},
            ],
            "variables": [{"name": "ship", "index": ["Plants", "Cities"], "description": "units shipped"}],
            "objective": {
                "sense": "minimize",
                "expression": "sum(ship[p, c] for p in Plants for c in Cities)",
            },
            "constraints": [
                {
                    "name": "supply",
                    "description": "a plant ships at most its capacity",
                    "for_all": [{"index": "p", "set": "Plants"}],
                    "expression": "sum(ship[p, c] for c in Cities) <= capacity[p]",
                },
                {
                    "name": "demand",
                    "description": "every city receives what it needs",
                    "for_all": [{"index": "c", "set": "Cities"}],
                    "expression": "sum(ship[p, c] for p in Plants) >= need[c]",
                },
            ],
        }
    )


def test_formulation_built_from_the_ir_is_diagnosed_in_its_own_names() -> None:
    built = build_model(_transport_formulation(boston_need=700))
    diagnosis = diagnose_infeasibility(built.model)
    # Boston needs 700 but both plants together make 500: both capacities and Boston's demand.
    assert _constraint_names(diagnosis) == {"supply[Denver]", "supply[Austin]", "demand[Boston]"}
    descriptions = {m.name: m.description for m in diagnosis.conflict}
    assert descriptions["supply[Austin]"] == "a plant ships at most its capacity"
    assert descriptions["demand[Boston]"] == "every city receives what it needs"
    assert diagnosis.total_violation == pytest.approx(200.0)
    assert sum(r.amount for r in diagnosis.relaxations) == pytest.approx(200.0)
    assert {r.name for r in diagnosis.relaxations} <= _constraint_names(diagnosis)
    _assert_irreducible(built.model, diagnosis)

    feasible = diagnose_infeasibility(build_model(_transport_formulation(boston_need=400)).model)
    assert feasible.conflict == []


def test_solve_formulation_attaches_the_diagnosis() -> None:
    result = solve_formulation(_transport_formulation(boston_need=700))
    assert result.status == "infeasible"
    assert result.diagnosis is not None
    assert _constraint_names(result.diagnosis) == {"supply[Denver]", "supply[Austin]", "demand[Boston]"}
