"""The independent checker: it passes real optima and catches every kind of violation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solvers import FormulationError, SolveOptions, SolveStatus, check_solution, solve_formulation
from solvers.ir import Formulation


def production(constraints: list[dict[str, Any]] | None = None, **variable: Any) -> Formulation:
    return Formulation.model_validate(
        {
            "name": "production",
            "sets": [{"name": "Products", "elements": ["A", "B"]}, {"name": "Machines", "elements": [1, 2]}],
            "parameters": [
                {"name": "profit", "index": ["Products"], "value": {"A": 3, "B": 2}},
                {
                    "name": "hours",
                    "index": ["Machines", "Products"],
                    "value": {"1": {"A": 2, "B": 1}, "2": {"A": 1, "B": 3}},
                },
                {"name": "available", "index": ["Machines"], "value": {"1": 100, "2": 90}},
            ],
            "variables": [{"name": "make", "index": ["Products"], "upper": 40, **variable}],
            "objective": {"sense": "maximize", "expression": "sum(profit[p] * make[p] for p in Products)"},
            "constraints": constraints
            if constraints is not None
            else [
                {
                    "name": "capacity",
                    "for_all": [{"index": "m", "set": "Machines"}],
                    "expression": "sum(hours[m, p] * make[p] for p in Products) <= available[m]",
                },
                {"name": "mix", "expression": "-10 <= make['A'] - make['B'] <= 10"},
            ],
        }
    )


def test_a_real_optimum_is_verified() -> None:
    f = production()
    result = solve_formulation(f)
    assert result.status == SolveStatus.OPTIMAL
    report = check_solution(f, result.values, result.objective)
    assert report.ok, report.summary()
    assert report.checked_variables == 2 and report.checked_constraints == 3
    assert report.recomputed_objective == pytest.approx(result.objective)
    assert report.summary() == "verified: 2 variables, 3 constraints"


def test_constraint_violations_name_the_instance_and_amount() -> None:
    report = check_solution(production(), {"make[A]": 40.0, "make[B]": 30.0})
    assert not report.ok
    messages = {v.name: v.message for v in report.violations}
    # machine 1: 2*40 + 30 = 110 > 100; machine 2: 40 + 90 = 130 > 90; mix: 40 - 30 = 10 holds
    assert messages["capacity[1]"] == "capacity[1]: lhs 110 > rhs 100 by 10"
    assert messages["capacity[2]"] == "capacity[2]: lhs 130 > rhs 90 by 40"
    assert {v.kind for v in report.violations} == {"constraint"}
    assert [v.amount for v in report.violations] == [10, 40]


def test_both_ends_of_a_range_are_checked() -> None:
    low = check_solution(production(), {"make[A]": 0.0, "make[B]": 20.0})
    assert [v.message for v in low.violations] == ["mix: expression -20 < lower end -10 by 10"]
    high = check_solution(production(), {"make[A]": 40.0, "make[B]": 0.0})
    assert "mix: expression 40 > upper end 10 by 30" in [v.message for v in high.violations]
    reversed_range = production(
        constraints=[{"name": "mix", "expression": "10 >= make['A'] - make['B'] >= -10"}]
    )
    assert [
        v.message for v in check_solution(reversed_range, {"make[A]": 0.0, "make[B]": 20.0}).violations
    ] == ["mix: expression -20 < lower end -10 by 10"]


def test_bounds_integrality_and_missing_values() -> None:
    f = production(domain="integer", constraints=[])
    report = check_solution(f, {"make[A]": 40.5, "make[B]": -1.0})
    kinds = sorted((v.kind, v.name) for v in report.violations)
    assert kinds == [("bound", "make[A]"), ("bound", "make[B]"), ("integrality", "make[A]")]
    missing = check_solution(f, {"make[A]": 1.0})
    assert [(v.kind, v.name) for v in missing.violations] == [("missing_value", "make[B]")]
    assert missing.recomputed_objective is None
    binary = production(domain="binary", constraints=[])
    assert [v.kind for v in check_solution(binary, {"make[A]": 2.0, "make[B]": 0.5}).violations] == [
        "bound",
        "integrality",
    ]


def test_relative_tolerance() -> None:
    f = production(constraints=[{"name": "big", "expression": "make['A'] * 1e6 <= 1e7"}])
    # 1e-6 relative to rhs 1e7 allows ~10 units; 1e-9 does not
    values = {"make[A]": 10.000005, "make[B]": 0.0}
    assert check_solution(f, values).ok
    assert not check_solution(f, values, tolerance=1e-9).ok


def test_objective_is_recomputed_and_compared() -> None:
    f = production()
    values = {"make[A]": 30.0, "make[B]": 20.0}
    assert check_solution(f, values, objective=130.0).ok
    wrong = check_solution(f, values, objective=131.0)
    assert [v.kind for v in wrong.violations] == ["objective"]
    assert "reported 131 but the values give 130" in wrong.violations[0].message


def test_broken_formulations_raise() -> None:
    f = production(constraints=[{"name": "bad", "expression": "make[q] <= 1"}])
    with pytest.raises(FormulationError, match="'q' is not defined"):
        check_solution(f, {"make[A]": 0.0, "make[B]": 0.0})


# --- property: HiGHS's optimal solutions always pass the checker --------------------------
@st.composite
def random_lp(draw: st.DrawFn) -> Formulation:
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 4))
    names = [f"v{k}" for k in range(n)]
    coefficient = st.integers(-6, 6)
    variables = []
    for name in names:
        lower = draw(st.sampled_from([0, -5, None]))
        upper = draw(st.sampled_from([10, 3, None]))
        domain = draw(st.sampled_from(["continuous", "continuous", "integer"]))
        variables.append({"name": name, "lower": lower, "upper": upper, "domain": domain})
    constraints = []
    for k in range(m):
        terms = " + ".join(f"{draw(coefficient)} * {name}" for name in names)
        op = draw(st.sampled_from(["<=", ">=", "=="]))
        constraints.append({"name": f"c{k}", "expression": f"{terms} {op} {draw(st.integers(-20, 20))}"})
    objective = " + ".join(f"{draw(coefficient)} * {name}" for name in names)
    sense = draw(st.sampled_from(["minimize", "maximize"]))
    return Formulation.model_validate(
        {
            "variables": variables,
            "objective": {"sense": sense, "expression": objective},
            "constraints": constraints,
        }
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_lp())
def test_highs_optima_pass_the_checker(f: Formulation) -> None:
    result = solve_formulation(f, SolveOptions(diagnose_infeasible=False))
    assert result.status != SolveStatus.ERROR, result.message
    if result.status != SolveStatus.OPTIMAL:
        return
    report = check_solution(f, result.values, result.objective)
    assert report.ok, report.summary()
    # and the checker is not a rubber stamp: push a variable below its lower bound
    bounded = [v for v in f.variables if v.lower is not None]
    if bounded:
        shifted = dict(result.values)
        shifted[bounded[0].name] = bounded[0].lower - 1.5
        report = check_solution(f, shifted, result.objective)
        assert not report.ok and bounded[0].name in {v.name for v in report.violations}
