"""Issue 4's proof, as a user types it: `optitrace solve "<bakery>" --json` with no endpoint configured
starts the embedded model on demand and prints status optimal, objective 120 (`pytest -m local_llm`).

A fresh XDG cache dir means the weights are assembled and checked on first use, and no LLM reply
can come from an earlier run's cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.local_llm, pytest.mark.timeout(1200)]

from agent.local_llm import registry, server  # noqa: E402

if server.missing_runtime_modules() or registry.missing_chunk_packages(registry.get_model()):
    pytest.skip(f"the embedded model is not installed ({registry.INSTALL_COMMAND})", allow_module_level=True)

BAKERY = (
    "A bakery makes bread and cake. Bread earns $3 profit, cake $5. Each bread needs 1 hour of oven time "
    "and each cake 2 hours; 40 oven hours are available. At most 15 cakes can be sold. How many of each "
    "maximizes profit?"
)


def test_optitrace_solve_bakery_with_no_endpoint_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPTITRACE_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OPTITRACE_CONFIG=str(tmp_path / "absent.toml"))
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "solve", BAKERY, "--json"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["status"] == "optimal", done.stdout
    assert abs(answer["objective"] - 120.0) <= 1e-6 * 121, done.stdout
    leftover = list((tmp_path / "cache").glob("optitrace/**/server-*.json"))
    assert not leftover, f"the on-demand server was left running: {leftover}"
