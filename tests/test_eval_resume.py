"""Resume after a killed run: the eval CLI runs as a subprocess against the scripted server (with
latency, so the kill lands mid-run), is SIGKILLed once some records are on disk, then re-run with
--resume. Nothing finished may be asked again, and the final record set must be complete with no
duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from agent.datasets import load_dataset
from agent.evaluation import write_report
from tests.test_evaluation import formulation_reaching, problem_of
from trace_graph.llm import ChatRequest, ScriptedLLMServer

REPO = Path(__file__).resolve().parents[1]
LIMIT = 12
MODES = ("oneshot", "agent")


def eval_command(server: ScriptedLLMServer, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from agent.cli import main; main()",
        "eval",
        "--dataset",
        "nl4opt",
        "--limit",
        str(LIMIT),
        "--mode",
        "both",
        "--workers",
        "2",
        # Without the reply cache a re-asked problem reaches the server, where this test counts it.
        "--no-cache",
        "--out",
        str(run_dir),
        *extra,
    ]


def environment(server: ScriptedLLMServer, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="test-key",
        OPTITRACE_MODEL=server.model,
        OPTITRACE_CONFIG=str(tmp_path / "no-config.toml"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    return env


def complete_records(path: Path) -> list[dict[str, object]]:
    """Whole lines only: the kill may have torn the last one."""
    if not path.is_file():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def test_a_killed_run_resumes_without_re_asking_finished_problems(tmp_path: Path) -> None:
    dataset = load_dataset("nl4opt", limit=LIMIT)

    def respond(request: ChatRequest) -> str:
        return formulation_reaching(problem_of(request, dataset).label.objective or 0.0)

    run_dir = tmp_path / "run"
    records_path = run_dir / "records.jsonl"
    with ScriptedLLMServer(responder=respond, latency=0.3) as server:
        env = environment(server, tmp_path)
        first = subprocess.Popen(
            eval_command(server, run_dir), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while len(complete_records(records_path)) < 4:
            assert first.poll() is None, first.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no records in time"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL

        finished_first = complete_records(records_path)
        assert 4 <= len(finished_first) < LIMIT * len(MODES), "the kill must land mid-run"
        done_keys = {(r["problem_id"], r["mode"]) for r in finished_first}
        killed = write_report([run_dir])  # what a reader sees before resuming
        assert killed.missing == LIMIT * len(MODES) - len(done_keys) and "killed" in killed.stopped[0]
        asked_in_first_run = server.request_count  # the dead process asks nothing more

        second = subprocess.run(
            eval_command(server, run_dir, "--resume", "--json"),
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=240,
        )
        assert second.returncode == 0, second.stderr.decode()[-3000:]
        assert not server.errors
        asked_again = Counter(problem_of(r, dataset).id for r in server.requests[asked_in_first_run:])

    final = complete_records(records_path)
    keys = [(r["problem_id"], r["mode"]) for r in final]
    expected = {(p.id, mode) for p in dataset.problems for mode in MODES}
    assert len(keys) == len(set(keys)), "duplicate records"
    assert set(keys) == expected
    assert records_path.read_text().endswith("\n")

    resumed = {key: r for key, r in zip(keys, final, strict=True) if key not in done_keys}
    assert len(resumed) == len(expected) - len(done_keys)
    for problem in dataset.problems:
        # Each re-asked request belongs to a mode this problem had not finished, and the
        # resumed records account for every one of them.
        expected_calls = sum(
            int(resumed[(problem.id, mode)]["llm_calls"]) for mode in MODES if (problem.id, mode) in resumed
        )
        assert asked_again[problem.id] == expected_calls, problem.id
        if all((problem.id, mode) in done_keys for mode in MODES):
            assert asked_again[problem.id] == 0, f"{problem.id} was finished but asked again"
    assert all(r["correct"]["rel_1e-6"] for r in final)

    output = json.loads(second.stdout)
    assert output["already_done"] == len(done_keys) and output["written"] == len(expected) - len(done_keys)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][0]["finished"] is None  # killed
    assert manifest["finished"] is not None and manifest["sessions"][1]["already_done"] == len(done_keys)
    assert (run_dir / "report.md").is_file()
