"""Building formulations into Pyomo and solving them with HiGHS: every status, both paths."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyomo.environ as pyo
import pytest
from typer.testing import CliRunner

from agent.cli import app
from solvers import SolveOptions, SolveStatus, check_solution, solve_formulation, solve_model
from solvers.highs import load_into_highs
from solvers.ir import Formulation

ROOT = Path(__file__).resolve().parents[1]
TRANSPORT = ROOT / "examples" / "ir_transport.json"


def transport() -> Formulation:
    return Formulation.from_json(TRANSPORT.read_text())


def wyndor() -> Formulation:
    """Hillier & Lieberman's Wyndor Glass LP: optimum 36 at (2, 6), shadow prices 0, 1.5, 1."""
    return Formulation.model_validate(
        {
            "name": "wyndor",
            "sets": [
                {"name": "Plants", "elements": [1, 2, 3]},
                {"name": "Products", "elements": ["doors", "windows"]},
            ],
            "parameters": [
                {"name": "profit", "index": ["Products"], "value": {"doors": 3, "windows": 5}},
                {"name": "hours", "index": ["Plants"], "value": {"1": 4, "2": 12, "3": 18}},
                {
                    "name": "use",
                    "index": ["Plants", "Products"],
                    "default": 0,
                    "value": {"1,doors": 1, "2,windows": 2, "3,doors": 3, "3,windows": 2},
                },
            ],
            "variables": [{"name": "make", "index": ["Products"]}],
            "objective": {"sense": "maximize", "expression": "sum(profit[p] * make[p] for p in Products)"},
            "constraints": [
                {
                    "name": "capacity",
                    "for_all": [{"index": "k", "set": "Plants"}],
                    "expression": "sum(use[k, p] * make[p] for p in Products) <= hours[k]",
                }
            ],
        }
    )


KNAPSACK_VALUES = [10, 13, 7, 8, 12, 4, 9]
KNAPSACK_WEIGHTS = [5, 7, 3, 4, 6, 2, 5]


def knapsack(capacity: int = 17) -> Formulation:
    items = [f"item{k}" for k in range(len(KNAPSACK_VALUES))]
    return Formulation.model_validate(
        {
            "name": "knapsack",
            "sets": [{"name": "Items", "elements": items}],
            "parameters": [
                {
                    "name": "value",
                    "index": ["Items"],
                    "value": dict(zip(items, KNAPSACK_VALUES, strict=True)),
                },
                {
                    "name": "weight",
                    "index": ["Items"],
                    "value": dict(zip(items, KNAPSACK_WEIGHTS, strict=True)),
                },
                {"name": "capacity", "value": capacity},
            ],
            "variables": [{"name": "take", "index": ["Items"], "domain": "binary"}],
            "objective": {"sense": "maximize", "expression": "sum(value[i] * take[i] for i in Items)"},
            "constraints": [
                {"name": "fits", "expression": "sum(weight[i] * take[i] for i in Items) <= capacity"}
            ],
        }
    )


def brute_force_knapsack(capacity: int) -> int:
    best = 0
    for choice in itertools.product((0, 1), repeat=len(KNAPSACK_VALUES)):
        weight = sum(c * w for c, w in zip(choice, KNAPSACK_WEIGHTS, strict=True))
        if weight <= capacity:
            best = max(best, sum(c * v for c, v in zip(choice, KNAPSACK_VALUES, strict=True)))
    return best


def hard_knapsack(n: int = 60, m: int = 5, seed: int = 7) -> Formulation:
    """A multi-dimensional knapsack HiGHS needs about a minute to prove optimal on this machine."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(20, 100, size=(m, n))
    values = (weights.mean(axis=0) + rng.integers(0, 10, size=n)).astype(int)
    caps = weights.sum(axis=1) // 2
    items = [f"i{k}" for k in range(n)]
    resources = [f"r{k}" for k in range(m)]
    return Formulation.model_validate(
        {
            "name": "mkp",
            "sets": [{"name": "Items", "elements": items}, {"name": "Res", "elements": resources}],
            "parameters": [
                {
                    "name": "value",
                    "index": ["Items"],
                    "value": {it: int(values[k]) for k, it in enumerate(items)},
                },
                {
                    "name": "weight",
                    "index": ["Res", "Items"],
                    "value": {
                        r: {it: int(weights[a, k]) for k, it in enumerate(items)}
                        for a, r in enumerate(resources)
                    },
                },
                {
                    "name": "cap",
                    "index": ["Res"],
                    "value": {r: int(caps[a]) for a, r in enumerate(resources)},
                },
            ],
            "variables": [{"name": "take", "index": ["Items"], "domain": "binary"}],
            "objective": {"sense": "maximize", "expression": "sum(value[i] * take[i] for i in Items)"},
            "constraints": [
                {
                    "name": "capacity",
                    "for_all": [{"index": "r", "set": "Res"}],
                    "expression": "sum(weight[r, i] * take[i] for i in Items) <= cap[r]",
                }
            ],
        }
    )


def small(
    objective: str,
    constraints: list[str],
    sense: str = "minimize",
    kind: str = "linear",
    variables: list[dict[str, Any]] | None = None,
) -> Formulation:
    return Formulation.model_validate(
        {
            "kind": kind,
            "variables": variables or [{"name": "x"}, {"name": "y"}],
            "objective": {"sense": sense, "expression": objective},
            "constraints": [{"name": f"c{k}", "expression": e} for k, e in enumerate(constraints)],
        }
    )


# --- optimal LP, duals, reduced costs -----------------------------------------------------
@pytest.mark.parametrize("path", ["auto", "fast", "pyomo"])
def test_transport_lp_is_optimal_on_every_path(path: str) -> None:
    f = transport()
    result = solve_formulation(f, SolveOptions(path=path))
    assert result.status == SolveStatus.OPTIMAL, result.message
    assert result.objective == pytest.approx(153.675)
    assert result.path in ("fast", "pyomo")
    assert result.path == ("pyomo" if path == "pyomo" else "fast")
    assert sum(v for k, v in result.values.items() if k.endswith("Topeka]")) == pytest.approx(275)
    assert check_solution(f, result.values, result.objective).ok


@pytest.mark.parametrize("path", ["fast", "pyomo"])
def test_known_duals_and_reduced_costs(path: str) -> None:
    result = solve_formulation(wyndor(), SolveOptions(path=path))
    assert result.objective == pytest.approx(36)
    assert result.value("make", "doors") == pytest.approx(2)
    assert result.value("make", "windows") == pytest.approx(6)
    assert result.duals == pytest.approx({"capacity[1]": 0.0, "capacity[2]": 1.5, "capacity[3]": 1.0})
    assert result.reduced_costs == pytest.approx({"make[doors]": 0.0, "make[windows]": 0.0})


def test_duals_are_the_objective_change_per_unit_of_rhs() -> None:
    """The documented meaning of a dual, checked by actually moving the right-hand side."""
    base = solve_formulation(transport())
    moved = transport()
    demand = moved.parameter_named("demand")
    assert demand is not None and isinstance(demand.value, dict)
    demand.value["Topeka"] += 1
    again = solve_formulation(moved)
    assert again.objective - base.objective == pytest.approx(base.duals["meet_demand[Topeka]"])
    # a minimization's reduced cost: forcing one unit of an unused route costs that much more
    forced = transport()
    forced.constraints.append(
        forced.constraints[0].model_copy(
            update={"name": "force", "for_all": [], "expression": "ship['Seattle', 'Topeka'] >= 1"}
        )
    )
    assert solve_formulation(forced).objective - base.objective == pytest.approx(
        base.reduced_costs["ship[Seattle,Topeka]"]
    )


# --- MILP, gap, time limit ------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 9, 17, 30])
def test_knapsack_milp_matches_brute_force(capacity: int) -> None:
    f = knapsack(capacity)
    result = solve_formulation(f)
    assert result.status == SolveStatus.OPTIMAL
    assert result.objective == pytest.approx(brute_force_knapsack(capacity))
    assert result.duals == {} and result.bound is not None
    assert check_solution(f, result.values, result.objective).ok


def test_time_limit_returns_the_incumbent_and_gap() -> None:
    f = hard_knapsack()
    result = solve_formulation(f, SolveOptions(time_limit=0.05))
    assert result.status == SolveStatus.TIME_LIMIT, result.message
    assert "time limit" in result.message
    assert result.objective is not None and result.gap is not None and result.gap > 0
    assert result.bound is not None and result.bound > result.objective
    assert check_solution(f, result.values, result.objective).ok  # a real, feasible incumbent


def test_mip_gap_stops_early_as_optimal_within_the_gap() -> None:
    result = solve_formulation(hard_knapsack(), SolveOptions(mip_gap=0.05, time_limit=60))
    assert result.status == SolveStatus.OPTIMAL
    assert result.gap is not None and result.gap <= 0.05


# --- infeasible, unbounded, errors --------------------------------------------------------
def test_infeasible_reports_and_diagnoses() -> None:
    f = transport()
    demand = f.parameter_named("demand")
    assert demand is not None and isinstance(demand.value, dict)
    demand.value["Topeka"] = 10_000
    result = solve_formulation(f)
    assert result.status == SolveStatus.INFEASIBLE
    assert result.objective is None and result.values == {}
    if result.diagnosis is None:  # only when solvers.diagnose is not installed
        assert "not installed" in result.message
    else:
        names = {m.name for m in result.diagnosis.conflict}
        assert "meet_demand[Topeka]" in names
    plain = solve_formulation(f, SolveOptions(diagnose_infeasible=False))
    assert plain.status == SolveStatus.INFEASIBLE and plain.diagnosis is None


@pytest.mark.parametrize("path", ["fast", "pyomo"])
def test_unbounded_lp(path: str) -> None:
    result = solve_formulation(small("x + y", ["x - y <= 3"], sense="maximize"), SolveOptions(path=path))
    assert result.status == SolveStatus.UNBOUNDED


def test_unbounded_milp_is_resolved_on_fast_path_and_ambiguous_on_stock() -> None:
    integer = [{"name": "x", "domain": "integer", "lower": None}, {"name": "y", "domain": "integer"}]
    f = small("x + y", ["x - y <= 3"], sense="maximize", variables=integer)
    assert solve_formulation(f, SolveOptions(path="fast")).status == SolveStatus.UNBOUNDED
    # HiGHS's MIP presolve cannot tell these apart; the stock interface passes that on
    assert solve_formulation(f, SolveOptions(path="pyomo")).status == SolveStatus.INFEASIBLE_OR_UNBOUNDED


def test_formulation_errors_come_back_as_status_error() -> None:
    result = solve_formulation(small("x + w", ["x <= 1"]))
    assert result.status == SolveStatus.ERROR and result.path == "build"
    assert result.message.startswith("1 problem in formulation") and "'w' is not defined" in result.message


def test_nonlinear_models_get_a_clear_error() -> None:
    f = small("x + y", ["x * y >= 1", "x <= 3", "y <= 3"], kind="nonlinear")
    result = solve_formulation(f)
    assert result.status == SolveStatus.ERROR
    assert "HiGHS cannot solve this model" in result.message and "nonlinear" in result.message
    fast = solve_formulation(f, SolveOptions(path="fast"))
    assert fast.status == SolveStatus.ERROR and "LP/MILP only" in fast.message


def test_quadratic_objective_goes_through_the_stock_path() -> None:
    f = small(
        "(x - 3) ** 2 + (y - 1) ** 2",
        ["x + y <= 2"],
        kind="quadratic",
        variables=[{"name": "x", "lower": None}, {"name": "y", "lower": None}],
    )
    result = solve_formulation(f)
    assert result.status == SolveStatus.OPTIMAL and result.path == "pyomo"
    assert result.objective == pytest.approx(2.0, abs=1e-6)
    assert result.value("x") == pytest.approx(2.0, abs=1e-4) and result.value("y") == pytest.approx(
        0.0, abs=1e-4
    )


@pytest.mark.parametrize(
    "f",
    [transport(), wyndor(), knapsack(), small("2 * x - y + 4", ["-1 <= x - y <= 2", "x + y == 3"])],
    ids=["transport", "wyndor", "knapsack", "ranges"],
)
def test_fast_and_stock_paths_agree(f: Formulation) -> None:
    fast = solve_formulation(f, SolveOptions(path="fast"))
    stock = solve_formulation(f, SolveOptions(path="pyomo"))
    assert fast.status == stock.status == SolveStatus.OPTIMAL
    assert fast.objective == pytest.approx(stock.objective, rel=1e-9, abs=1e-9)
    assert set(fast.values) == set(stock.values)


# --- any Pyomo model ----------------------------------------------------------------------
def hand_written_model() -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    m.I = pyo.Set(initialize=["a", "b"])
    m.x = pyo.Var(m.I, bounds=(0, 10))
    m.y = pyo.Var(domain=pyo.Binary)
    m.unused = pyo.Var(bounds=(2, 5))
    m.fixed = pyo.Var(initialize=3.0)
    m.fixed.fix()
    m.band = pyo.Constraint(expr=pyo.inequality(1, m.x["a"] + m.x["b"] + m.y, 5 + m.fixed))
    m.low = pyo.Constraint(m.I, rule=lambda m, i: m.x[i] >= 1)
    m.o = pyo.Objective(expr=m.x["a"] + 2 * m.x["b"] - m.y + 3, sense=pyo.maximize)
    return m


def test_load_into_highs_maps_rows_and_columns() -> None:
    loaded = load_into_highs(hand_written_model())
    assert loaded.column_names == ["x[a]", "x[b]", "y"]
    assert loaded.row_names == ["band", "low[a]", "low[b]"]  # the range is one row
    assert loaded.row_components == [("band", None), ("low", "a"), ("low", "b")]
    assert loaded.row_lower.tolist() == [1, 1, 1] and loaded.row_upper.tolist() == [8, np.inf, np.inf]
    assert loaded.integer_columns.tolist() == [2] and loaded.is_mip
    assert (loaded.sense, loaded.objective_offset) == ("maximize", 3.0)
    assert sorted(v.name for v in loaded.omitted_variables) == ["fixed", "unused"]


def test_solve_model_reports_every_variable_and_can_load_values() -> None:
    model = hand_written_model()
    result = solve_model(model, load_solution=True)
    assert result.status == SolveStatus.OPTIMAL
    assert result.objective == pytest.approx(1 + 14 + 3)
    assert result.values == pytest.approx({"x[a]": 1, "x[b]": 7, "y": 0, "unused": 2, "fixed": 3})
    assert pyo.value(model.x["b"]) == pytest.approx(7)


def test_solver_failures_never_raise() -> None:
    model = hand_written_model()
    model.o2 = pyo.Objective(expr=model.x["a"])
    result = solve_model(model)
    assert result.status == SolveStatus.ERROR and "2 active objectives" in result.message
    trivially = pyo.ConcreteModel()
    trivially.x = pyo.Var()
    trivially.x.fix(2)
    trivially.c = pyo.Constraint(expr=trivially.x >= 3)
    trivially.o = pyo.Objective(expr=trivially.x)
    result = solve_model(trivially)
    assert result.status == SolveStatus.INFEASIBLE and "c" in result.message


def test_changing_thread_counts_between_solves() -> None:
    """HiGHS keeps one thread pool per process; run in a child so this process stays fork-safe."""
    program = (
        "from solvers import solve_formulation, SolveOptions, Formulation\n"
        f"f = Formulation.from_json(open({str(TRANSPORT)!r}).read())\n"
        "print([solve_formulation(f, SolveOptions(threads=t)).status.value for t in (1, 2, 1)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['optimal', 'optimal', 'optimal']"


# --- the CLI ------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_solves_and_verifies(tmp_path: Path) -> None:
    done = runner.invoke(app, ["solve-ir", str(TRANSPORT), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.output)
    assert payload["status"] == "optimal" and payload["objective"] == pytest.approx(153.675)
    assert payload["check"]["ok"] is True
    table = runner.invoke(app, ["solve-ir", str(TRANSPORT)])
    assert table.exit_code == 0 and "verified" in table.output and "meet_demand[Topeka]" in table.output


def test_cli_reports_infeasibility_with_diagnosis(tmp_path: Path) -> None:
    data = json.loads(TRANSPORT.read_text())
    data["parameters"][1]["value"]["Topeka"] = 10_000
    path = tmp_path / "infeasible.json"
    path.write_text(json.dumps(data))
    done = runner.invoke(app, ["solve-ir", str(path), "--json"])
    assert done.exit_code == 0
    payload = json.loads(done.output)
    assert payload["status"] == "infeasible" and payload["check"] is None
    assert payload["diagnosis"] is not None and payload["diagnosis"]["conflict"]


def test_cli_rejects_bad_files_without_tracebacks(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["solve-ir", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"variables": [')
    done = runner.invoke(app, ["solve-ir", str(broken)])
    assert done.exit_code == 2 and "not valid JSON" in done.output
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"variables": [{"name": "x", "domain": "real"}]}))
    done = runner.invoke(app, ["solve-ir", str(invalid)])
    assert done.exit_code == 2 and "not a valid formulation (2 problems)" in done.output
    assert "variables.0.domain" in done.output and "Traceback" not in done.output
    wrong = tmp_path / "wrong.json"
    wrong.write_text(small("x + w", ["x <= 1"]).to_json())
    done = runner.invoke(app, ["solve-ir", str(wrong)])
    assert done.exit_code == 1 and "'w' is not defined" in done.output
