"""Concurrent solves from a cold process: the first standard-form compile must not race."""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import threading
    import pyomo.environ as pyo
    from solvers.highs import solve_model
    from solvers.result import SolveOptions

    def model():
        m = pyo.ConcreteModel()
        m.x = pyo.Var(within=pyo.NonNegativeReals)
        m.c = pyo.Constraint(expr=m.x <= 4)
        m.o = pyo.Objective(expr=m.x, sense=pyo.maximize)
        return m

    statuses = []
    def run():
        statuses.append(solve_model(model(), SolveOptions(want_duals=False)).status.value)

    threads = [threading.Thread(target=run) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sorted(set(statuses)), len(statuses))
    """
)


def test_cold_concurrent_solves_all_succeed() -> None:
    # a fresh interpreter, because the race only exists before the compiler's first use
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['optimal'] 24", done.stdout + done.stderr
