"""What the sandbox costs per program: in-process vs a warm sandbox worker vs a fresh interpreter.

    python benchmarks/sandbox_overhead.py [--json] [--n 50]

The same tiny program (a 3-variable LP) is run n times in this interpreter (compile + exec +
build_model + solve_model) and n times through a warm `Sandbox` worker (fork, limits, uid drop,
the same work, reaping, scratch cleanup, two pipe round trips); `overhead_ms` is the difference
of the medians, measured in the same run. `fresh_interpreter_ms` is `python -c` doing the same
once per process, imports included -- what a naive subprocess per program would cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from solvers.highs import solve_model  # noqa: E402
from solvers.result import SolveOptions  # noqa: E402
from solvers.sandbox import Sandbox  # noqa: E402

TARGET_OVERHEAD_MS = 20.0
PROGRAM = """
import pyomo.environ as pyo

def build_model():
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(3), domain=pyo.NonNegativeReals)
    m.cap = pyo.Constraint(expr=m.x[0] + 2 * m.x[1] + 3 * m.x[2] <= 12)
    m.mix = pyo.Constraint(expr=m.x[0] - m.x[1] >= -2)
    m.obj = pyo.Objective(expr=2 * m.x[0] + 3 * m.x[1] + m.x[2], sense=pyo.maximize)
    return m
"""
OPTIONS = SolveOptions(time_limit=10)
FRESH = (
    "import sys; sys.path.insert(0, {root!r})\n"
    "from solvers.highs import solve_model\n"
    "from solvers.result import SolveOptions\n"
    "namespace = {{'__name__': 'program'}}\n"
    "exec(compile({program!r}, 'program.py', 'exec'), namespace)\n"
    "assert solve_model(namespace['build_model'](), SolveOptions(time_limit=10)).ok\n"
)


def in_process_once() -> float:
    started = time.perf_counter()
    namespace: dict = {"__name__": "program"}
    exec(compile(PROGRAM, "program.py", "exec"), namespace)
    result = solve_model(namespace["build_model"](), OPTIONS)
    elapsed = time.perf_counter() - started
    assert result.ok, result.message
    return elapsed * 1000


def sandbox_once(sandbox: Sandbox) -> float:
    started = time.perf_counter()
    result = sandbox.run(PROGRAM, options=OPTIONS, timeout=30)
    elapsed = time.perf_counter() - started
    assert result.ok and result.solve is not None and result.solve.ok, result.error
    return elapsed * 1000


def fresh_once() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH.format(root=str(ROOT), program=PROGRAM)], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="runs per variant")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    started = time.perf_counter()
    sandbox = Sandbox(workers=1)
    sandbox.start()  # before any in-process solve: HiGHS threads in this process stay out of the fork path
    start_seconds = time.perf_counter() - started
    try:
        for _ in range(3):  # warm-up: lazy imports, page faults
            sandbox_once(sandbox)
            in_process_once()
        # interleaved, so load from other processes on the machine hits both alike
        in_process, sandboxed = [], []
        for _ in range(args.n):
            in_process.append(in_process_once())
            sandboxed.append(sandbox_once(sandbox))
        isolation = sandbox.isolation
    finally:
        sandbox.close()
    fresh = [fresh_once() for _ in range(2)]

    report = {
        "n": args.n,
        "isolation": isolation,
        "in_process_ms": round(statistics.median(in_process), 2),
        "sandbox_ms": round(statistics.median(sandboxed), 2),
        "overhead_ms": round(statistics.median(sandboxed) - statistics.median(in_process), 2),
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "sandbox_p90_ms": round(statistics.quantiles(sandboxed, n=10)[-1], 2) if args.n >= 10 else None,
        "fresh_interpreter_ms": round(statistics.mean(fresh), 1),
        "sandbox_start_s": round(start_seconds, 3),
    }
    if not args.json:
        verdict = "within" if report["overhead_ms"] <= TARGET_OVERHEAD_MS else "OVER"
        print(
            f"in-process {report['in_process_ms']} ms, sandbox {report['sandbox_ms']} ms "
            f"(p90 {report['sandbox_p90_ms']}), overhead {report['overhead_ms']} ms -- {verdict} the "
            f"{TARGET_OVERHEAD_MS:g} ms target; fresh interpreter {report['fresh_interpreter_ms']} ms; "
            f"isolation {isolation}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
