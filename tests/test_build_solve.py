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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agent.cli import app
from solvers import (
    FormulationError,
    SolveOptions,
    SolveStatus,
    build_model,
    check_solution,
    solve_formulation,
    solve_model,
)
from solvers.arrays import ArrayModel, build_arrays
from solvers.highs import TriviallyInfeasibleError, load_into_highs
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


# --- the array path builds exactly the matrix Pyomo builds --------------------------------
def rows_by_name(
    row_names: list[str], column_names: list[str], starts: Any, indices: Any, values: Any, rowwise: bool
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {name: {} for name in row_names}
    outer = row_names if rowwise else column_names
    for k, name in enumerate(outer):
        for position in range(starts[k], starts[k + 1]):
            other = indices[position]
            row, column = (name, column_names[other]) if rowwise else (row_names[other], name)
            if values[position] != 0:
                rows[row][column] = values[position]
    return rows


def pyomo_matrix(f: Formulation) -> dict[str, Any]:
    loaded = load_into_highs(build_model(f).model)
    lp = loaded.highs.getLp()
    matrix = lp.a_matrix_
    columns = loaded.column_names
    return {
        "rows": rows_by_name(
            loaded.row_names, columns, matrix.start_, matrix.index_, matrix.value_, rowwise=False
        ),
        "bounds": dict(
            zip(loaded.row_names, zip(loaded.row_lower, loaded.row_upper, strict=True), strict=True)
        ),
        "cost": {c: v for c, v in zip(columns, lp.col_cost_, strict=True) if v != 0},
        "offset": lp.offset_,
    }


def array_matrix(arrays: ArrayModel) -> dict[str, Any]:
    columns = arrays.column_names
    rows = rows_by_name(
        arrays.row_names, columns, arrays.row_starts, arrays.row_indices, arrays.row_values, rowwise=True
    )
    return {
        "rows": rows,
        "bounds": dict(
            zip(arrays.row_names, zip(arrays.row_lower, arrays.row_upper, strict=True), strict=True)
        ),
        "cost": {c: v for c, v in zip(columns, arrays.cost, strict=True) if v != 0},
        "offset": arrays.objective_offset,
    }


def features() -> Formulation:
    from tests.test_expressions import con, formulation

    return formulation(
        objective="sum(cost[i, j] * x[i, j] for i in Plants for j in Customers) + 5 + rate - z / 4",
        constraints=[
            con("flow", "inv[t] == inv[t - 1] + need[t]", [("t", "Periods")], where="t > 1"),
            con("hub", "sum(x[h, j] for h in Hubs for j in Customers) <= 100"),
            con(
                "some",
                "sum(x[i, j] for i in Plants for j in Customers "
                "if (i in Hubs and not j == 'NY') or cost[i, j] < 2) >= 1",
            ),
            con("big_m", "z >= max(cost[i, j] for j in Customers) * y[i] - abs(-1)", [("i", "Plants")]),
            con("band", "1 <= z <= 2 * rate"),
            con("reversed", "10 >= z + inv[1] >= min(-5, -rate)"),
            con("odd", "sum(inv[t] for t in Periods if t % 2 == 1 and t // 1 >= 1) <= 50"),
            con("power", "z <= rate ** 2"),
            con("negated", "-z + 3 * -inv[2] <= 10"),
            con("others", "sum(x[i, j] for i in Plants for j in Customers if i != 'Boston') <= 200"),
            con("ratio", "sum(x[i, j] / cost[i, j] for i in Plants for j in Customers) >= 1"),
            con("left_constant", "demand[j] <= sum(x[i, j] for i in Plants)", [("j", "Customers")]),
            con("both_sides", "x['Boston', j] >= x['Denver', j] - 1", [("j", "Customers")]),
            con("equal_left", "need[2] == inv[2]"),
            con("always", "sum(x[i, 'NY'] for i in Hubs if i != 'Boston') <= 1"),
        ],
    )


@pytest.mark.parametrize(
    "f", [transport(), wyndor(), knapsack(), hard_knapsack(8, 2), features()], ids=lambda f: f.name
)
def test_array_path_builds_the_pyomo_matrix(f: Formulation) -> None:
    arrays = build_arrays(f)
    ours, pyomos = array_matrix(arrays), pyomo_matrix(f)
    assert ours["rows"].keys() == pyomos["rows"].keys()
    for name, row in pyomos["rows"].items():
        assert ours["rows"][name] == pytest.approx(row), name
        assert ours["bounds"][name] == pytest.approx(pyomos["bounds"][name]), name
    assert ours["cost"] == pytest.approx(pyomos["cost"])
    assert ours["offset"] == pytest.approx(pyomos["offset"])


def test_array_path_evaluates_in_bulk_and_falls_back_per_instance() -> None:
    arrays = build_arrays(features())
    assert arrays.vectorized.pop("always") is False  # no variable left: the scalar walker explains
    assert all(arrays.vectorized.values()), arrays.vectorized
    assert arrays.always_true == ["always"]
    # a missing table entry: the bulk path gives up, the scalar path reports it like build_model
    f = transport()
    distance = f.parameter_named("distance")
    assert distance is not None and isinstance(distance.value, dict)
    del distance.value["Seattle"]["Topeka"]
    with pytest.raises(FormulationError) as from_arrays:
        build_arrays(f)
    with pytest.raises(FormulationError) as from_pyomo:
        build_model(f)
    assert str(from_arrays.value) == str(from_pyomo.value)
    assert "no entry for (Seattle, Topeka)" in str(from_arrays.value)


TEMPLATES = [
    ("sum(b[i, j] * x[i, j] for j in J) <= a[i]", [("i", "I")], None),
    ("sum(x[i, j] for i in I if i > 1) >= a[1] - 3", [("j", "J")], None),
    ("x[i, j] - x[i - 1, j] <= b[i, j]", [("i", "I"), ("j", "J")], "i > 1"),
    ("2 * y[i] + sum(x[i, j] for j in J if j != 'q') == a[i] * 3", [("i", "I")], None),
    ("-4 <= y[i] - y[k] <= 4", [("i", "I"), ("k", "I")], "i < k"),
    ("a[i] <= sum(b[i, j] * x[i, j] / 2 for j in J) + y[i]", [("i", "I")], "a[i] > 0"),
    ("sum(x[i, j] for i in I for j in J if b[i, j] >= 0) <= 100", [], None),
]


@st.composite
def indexed_formulation(draw: st.DrawFn) -> Formulation:
    n = draw(st.integers(1, 4))
    strings = draw(
        st.lists(st.sampled_from(["p", "q", "r", "New York", "a,b"]), min_size=1, max_size=3, unique=True)
    )
    numbers = st.integers(-5, 5)
    a = {str(i): draw(numbers) for i in range(1, n + 1)}
    b = {f"{i},{j}": draw(numbers) for i in range(1, n + 1) for j in strings if draw(st.booleans())}
    chosen = draw(st.lists(st.sampled_from(range(len(TEMPLATES))), min_size=1, max_size=4, unique=True))
    return Formulation.model_validate(
        {
            "name": "random",
            "sets": [{"name": "I", "elements": list(range(1, n + 1))}, {"name": "J", "elements": strings}],
            "parameters": [
                {"name": "a", "index": ["I"], "value": a},
                {
                    "name": "b",
                    "index": ["I", "J"],
                    "value": b,
                    "default": draw(st.sampled_from([None, 0, 1.5])),
                },
            ],
            "variables": [
                {"name": "x", "index": ["I", "J"], "upper": 10},
                {
                    "name": "y",
                    "index": ["I"],
                    "lower": None,
                    "domain": draw(st.sampled_from(["continuous", "integer"])),
                },
            ],
            "objective": {
                "sense": draw(st.sampled_from(["minimize", "maximize"])),
                "expression": "sum(b[i, j] * x[i, j] for i in I for j in J) - sum(a[i] * y[i] for i in I)",
            },
            "constraints": [
                {
                    "name": f"c{k}",
                    "expression": TEMPLATES[k][0],
                    "for_all": [{"index": i, "set": s} for i, s in TEMPLATES[k][1]],
                    "where": TEMPLATES[k][2],
                }
                for k in chosen
            ],
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(indexed_formulation())
def test_array_and_pyomo_paths_agree_on_random_formulations(f: Formulation) -> None:
    try:
        pyomos = pyomo_matrix(f)
    except FormulationError as error:
        with pytest.raises(FormulationError) as ours:
            build_arrays(f)
        assert str(ours.value) == str(error)
        return
    except TriviallyInfeasibleError:
        return  # e.g. all coefficients of a row cancel; the arrays keep such a row for HiGHS
    ours = array_matrix(build_arrays(f))
    assert ours["rows"].keys() == pyomos["rows"].keys()
    for name, row in pyomos["rows"].items():
        assert ours["rows"][name] == pytest.approx(row), name
        assert ours["bounds"][name] == pytest.approx(pyomos["bounds"][name]), name
    assert ours["cost"] == pytest.approx(pyomos["cost"])
    fast = solve_formulation(f, SolveOptions(diagnose_infeasible=False))
    stock = solve_formulation(f, SolveOptions(path="pyomo", diagnose_infeasible=False))
    # The stock path passes HiGHS's presolve ambiguity on (see the unbounded-MILP test above); the
    # fast path re-solves without presolve. "Infeasible or unbounded" agrees with either answer.
    assert fast.status == stock.status or (
        SolveStatus.INFEASIBLE_OR_UNBOUNDED in {fast.status, stock.status}
        and {fast.status, stock.status}
        <= {
            SolveStatus.INFEASIBLE,
            SolveStatus.UNBOUNDED,
            SolveStatus.INFEASIBLE_OR_UNBOUNDED,
        }
    )
    if fast.status == SolveStatus.OPTIMAL:
        assert fast.objective == pytest.approx(stock.objective, rel=1e-7, abs=1e-7)
