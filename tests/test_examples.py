"""The trace_graph examples run as scripts (the scripted server standing in for the LLM) and reach
their goals; each script checks its own result independently and exits 1 when it falls short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def environment() -> dict[str, str]:
    # No real endpoint leaks in: the examples must pass on the scripted server alone.
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("OPENAI_")}
    return {**inherited, "COLUMNS": "160", "NO_COLOR": "1"}


def run_example(name: str, *arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=environment(),
    )
    assert completed.returncode == 0, f"{name} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def test_numeric_optimization_reaches_the_minimum() -> None:
    output = run_example("numeric_optimization.py")
    assert "reached the minimum" in output and "slope" in output


def test_fix_buggy_code_repairs_both_bugs() -> None:
    output = run_example("fix_buggy_code.py")
    assert "raised (NameError) name 'hour' is not defined" in output
    assert "raised (TypeError) 'float' object is not subscriptable" in output
    assert "fixed: the repaired code gives the right average speed on every trip" in output


def test_prompt_optimization_reaches_a_perfect_validation_score(tmp_path: Path) -> None:
    output = run_example("prompt_optimization.py", "--out", str(tmp_path))
    assert "validation score: 0.00 -> 1.00" in output
    assert "Reply with only the number" in output and "Round to 1 decimal place." in output
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "history.csv").read_text().count("\n") == 6  # header, baseline, 4 steps
    assert (tmp_path / "checkpoint.json").is_file()
