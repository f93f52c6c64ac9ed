"""Smoke test of benchmarks/solve_overhead.py: it runs, agrees with itself and prints its JSON.

Only tiny sizes: speed targets are read from the script's own output, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_per_size_ratios() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/solve_overhead.py", "--json", "--sizes", "200", "1000", "--repeat", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    sizes = report["sizes"]
    assert [row["variables"] for row in sizes] == [200, 1000]
    for row in sizes:
        for path in ("direct", "ir", "pyomo_fast", "stock"):
            assert row[f"{path}_s"] > 0
        assert row["ir_ratio"] == row["ir_s"] / row["direct_s"]
    assert "ratio_1e5" not in report  # only reported when 1e5 was measured
