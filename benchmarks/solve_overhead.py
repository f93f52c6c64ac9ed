"""How much does the IR cost on top of HiGHS? A transportation LP at several sizes.

For each size (number of variables) the same seeded data is solved by:
  direct      numpy arrays -> highspy addRows/addCols -> run -> solution arrays (the baseline)
  ir          solve_formulation(formulation) with default options: the IR evaluated in bulk
              into sparse arrays (solvers.arrays; no Pyomo model is built for an LP/MILP that
              solves) -> HiGHS -> SolveResult with every value, dual and reduced cost by name.
              `ir_build_s` is the IR -> arrays part alone.
  pyomo_fast  build_model (Pyomo) + solve_model(path="fast") (standard-form compiler -> arrays)
  stock       build_model (Pyomo) + solve_model(path="pyomo") (pyomo.contrib SolverFactory('highs'))
Times are the best of --repeat runs after one warm-up solve (Pyomo's first standard-form
compile imports scipy.stats, ~1-2 s once per process). Ratios are against `direct` measured in
the same run. Objectives of all paths must agree or the script fails.

    python benchmarks/solve_overhead.py [--json] [--sizes 1000 10000 100000] [--repeat 3]
                                        [--no-stock] [--profile]

--profile prints cProfile's top entries for the `ir` path at the largest size (to stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highspy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solvers.api import solve_formulation
from solvers.arrays import build_arrays
from solvers.build import build_model
from solvers.highs import solve_model
from solvers.ir import Formulation
from solvers.result import SolveOptions, SolveStatus


@dataclass
class TransportData:
    cost: np.ndarray  # plants x customers
    supply: np.ndarray
    demand: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.cost.shape  # type: ignore[return-value]


def make_data(variables: int, seed: int = 2024) -> TransportData:
    plants = max(2, round(math.sqrt(variables / 10)))
    customers = max(2, variables // plants)
    rng = np.random.default_rng(seed)
    cost = np.round(rng.uniform(1.0, 20.0, size=(plants, customers)), 2)
    demand = rng.integers(10, 100, size=customers).astype(float)
    share = rng.dirichlet(np.ones(plants))
    supply = np.floor(share * demand.sum())
    supply[-1] += demand.sum() - supply.sum()  # balanced: total supply == total demand
    return TransportData(cost, supply, demand)


def make_formulation(data: TransportData) -> Formulation:
    plants, customers = data.shape
    p_names = [f"p{i}" for i in range(plants)]
    c_names = [f"c{j}" for j in range(customers)]
    return Formulation.model_validate(
        {
            "name": "transport",
            "sets": [{"name": "Plants", "elements": p_names}, {"name": "Customers", "elements": c_names}],
            "parameters": [
                {
                    "name": "supply",
                    "index": ["Plants"],
                    "value": dict(zip(p_names, data.supply.tolist(), strict=True)),
                },
                {
                    "name": "demand",
                    "index": ["Customers"],
                    "value": dict(zip(c_names, data.demand.tolist(), strict=True)),
                },
                {
                    "name": "cost",
                    "index": ["Plants", "Customers"],
                    "value": {
                        p: dict(zip(c_names, row, strict=True))
                        for p, row in zip(p_names, data.cost.tolist(), strict=True)
                    },
                },
            ],
            "variables": [{"name": "ship", "index": ["Plants", "Customers"]}],
            "objective": {
                "sense": "minimize",
                "expression": "sum(cost[i, j] * ship[i, j] for i in Plants for j in Customers)",
            },
            "constraints": [
                {
                    "name": "capacity",
                    "for_all": [{"index": "i", "set": "Plants"}],
                    "expression": "sum(ship[i, j] for j in Customers) <= supply[i]",
                },
                {
                    "name": "meet",
                    "for_all": [{"index": "j", "set": "Customers"}],
                    "expression": "sum(ship[i, j] for i in Plants) >= demand[j]",
                },
            ],
        }
    )


def solve_direct(data: TransportData) -> float:
    """The baseline: the LP straight into highspy as arrays; the solution stays an array."""
    plants, customers = data.shape
    n = plants * customers
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    lower = np.concatenate([np.full(plants, -np.inf), data.demand])
    upper = np.concatenate([data.supply, np.full(customers, np.inf)])
    empty = np.zeros(0, dtype=np.int32)
    highs.addRows(plants + customers, lower, upper, 0, empty, empty, np.zeros(0))
    columns = np.arange(n)
    indices = np.empty(2 * n, dtype=np.int32)
    indices[0::2] = columns // customers  # capacity row of the plant
    indices[1::2] = plants + columns % customers  # demand row of the customer
    starts = np.arange(0, 2 * n, 2, dtype=np.int32)
    highs.addCols(
        n, data.cost.ravel(), np.zeros(n), np.full(n, np.inf), 2 * n, starts, indices, np.ones(2 * n)
    )
    highs.run()
    assert highs.getModelStatus() == highspy.HighsModelStatus.kOptimal
    solution = highs.getSolution()
    np.asarray(solution.col_value), np.asarray(solution.row_dual), np.asarray(solution.col_dual)
    return float(highs.getInfo().objective_function_value)


def solve_ir(f: Formulation) -> float:
    result = solve_formulation(f)
    assert result.status == SolveStatus.OPTIMAL, result.message
    assert len(result.values) == len(result.reduced_costs) > 0 and result.duals
    return float(result.objective)  # type: ignore[arg-type]


def solve_pyomo(f: Formulation, path: str) -> float:
    built = build_model(f)
    result = solve_model(built.model, SolveOptions(path=path))  # type: ignore[arg-type]
    assert result.status == SolveStatus.OPTIMAL, result.message
    return float(result.objective)  # type: ignore[arg-type]


def best_of(repeat: int, run: Callable[[], float]) -> tuple[float, float]:
    best, value = math.inf, math.nan
    for _ in range(repeat):
        start = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - start)
    return best, value


def measure(size: int, repeat: int, stock: bool) -> dict[str, float | int | None]:
    data = make_data(size)
    start = time.perf_counter()
    f = make_formulation(data)
    validate_s = time.perf_counter() - start
    direct_s, direct_obj = best_of(repeat, lambda: solve_direct(data))
    ir_s, ir_obj = best_of(repeat, lambda: solve_ir(f))
    ir_build_s, _ = best_of(repeat, lambda: float(build_arrays(f).n_cols))
    pyomo_fast_s, pyomo_obj = best_of(max(1, repeat - 1), lambda: solve_pyomo(f, "fast"))
    stock_s, stock_obj = best_of(1, lambda: solve_pyomo(f, "pyomo")) if stock else (None, direct_obj)
    for name, objective in (("ir", ir_obj), ("pyomo_fast", pyomo_obj), ("stock", stock_obj)):
        if abs(objective - direct_obj) > 1e-6 * (1 + abs(direct_obj)):
            raise SystemExit(f"{name} objective {objective} differs from direct {direct_obj} at size {size}")
    return {
        "variables": data.cost.size,
        "constraints": sum(data.shape),
        "validate_ir_s": validate_s,
        "direct_s": direct_s,
        "ir_s": ir_s,
        "ir_ratio": ir_s / direct_s,
        "ir_build_s": ir_build_s,
        "pyomo_fast_s": pyomo_fast_s,
        "pyomo_fast_ratio": pyomo_fast_s / direct_s,
        "stock_s": stock_s,
        "stock_ratio": None if stock_s is None else stock_s / direct_s,
        "objective": direct_obj,
    }


def profile_ir(size: int) -> None:
    import cProfile
    import pstats

    f = make_formulation(make_data(size))
    profiler = cProfile.Profile()
    profiler.runcall(solve_ir, f)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-stock", action="store_true", help="skip the slow SolverFactory path")
    parser.add_argument("--profile", action="store_true", help="cProfile the ir path at the largest size")
    args = parser.parse_args()

    warm = make_formulation(make_data(100))  # one-time imports out of the timings
    solve_ir(warm), solve_pyomo(warm, "fast"), solve_pyomo(warm, "pyomo"), solve_direct(make_data(100))

    rows = [measure(size, args.repeat, not args.no_stock) for size in args.sizes]
    if args.profile:
        profile_ir(max(args.sizes))
    report: dict[str, object] = {"sizes": rows}
    for row in rows:
        if row["variables"] == 100_000:
            report["ratio_1e5"] = row["ir_ratio"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "variables",
        "direct s",
        "ir s",
        "ir ratio",
        "pyomo+fast s",
        "ratio",
        "stock s",
        "ratio",
        title="transport LP: time as a multiple of direct highspy",
    )
    for row in rows:
        stock_s, stock_ratio = row["stock_s"], row["stock_ratio"]
        table.add_row(
            f"{row['variables']:,}",
            f"{row['direct_s']:.4f}",
            f"{row['ir_s']:.4f}",
            f"{row['ir_ratio']:.2f}",
            f"{row['pyomo_fast_s']:.4f}",
            f"{row['pyomo_fast_ratio']:.2f}",
            "-" if stock_s is None else f"{stock_s:.4f}",
            "-" if stock_ratio is None else f"{stock_ratio:.2f}",
        )
    Console().print(table)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
