"""`optitrace chat` with piped stdin, as a real subprocess talking to the scripted loopback server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.chat.session import read_record
from tests.test_chat import BAKERY, BAKERY_DRAFT, PromptReader, as_json, edits_json
from trace_graph.llm.scripted_server import ScriptedLLMServer

# `agent.cli.chat_commands` registers `chat` on import; importing it first keeps these tests
# independent of whether agent.cli's COMMAND_MODULES lists it yet.
RUN_CHAT = "import agent.cli.chat_commands; from agent.cli import main; main()"
ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, base_url: str) -> Path:
    path.write_text(
        f'[llm]\nbase_url = "{base_url}"\nmax_retries = 1\nretry_deadline = 0.3\n'
        f'cache_path = "{path.parent / "cache.sqlite"}"\n'
    )
    return path


def chat_env(config: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL")
    }
    env.pop("OPTITRACE_MODEL", None)
    env["OPTITRACE_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_chat(lines: list[str], config: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CHAT, "chat", *args],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=240,
        env=chat_env(config),
        cwd=cwd,
    )


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as running:
        reader = PromptReader()
        reader.on("Problem: " + BAKERY, as_json(BAKERY_DRAFT))
        reader.on(
            "Request: oven hours are now 50", edits_json({"op": "set_rhs", "name": "oven", "value": 50})
        )
        reader.on(
            "Request: what if the oven had 45 hours?",
            edits_json({"op": "set_rhs", "name": "oven", "value": 45}),
        )
        running.responder = reader
        yield running


def test_piped_conversation_runs_to_eof(server: ScriptedLLMServer, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", server.base_url)
    done = run_chat(
        [
            BAKERY,
            "oven hours are now 50",
            "what if the oven had 45 hours?",
            "",
            "/undo",
            "/save session.json",
            "/export model.py",
            "/export model.lp",
        ],
        config,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # plain text for pipes
    assert f"> {BAKERY}" in out and "reaches 120" in out
    assert "+  oven: bread + 2*cake <= 50" in out and "New optimum: 150 (was 120, +30, +25%)" in out
    assert "would be 135 instead of 150" in out and "bread: 50 -> 45" in out
    assert "Undone: back to the previous model (objective 120)" in out
    record = read_record(tmp_path / "session.json")
    assert [t.intent for t in record.history] == ["new_problem", "edit", "what_if", "undo"]
    assert record.current.answer is not None and record.current.answer.objective == pytest.approx(120.0)
    assert (tmp_path / "model.py").is_file() and "c_u_oven_" in (tmp_path / "model.lp").read_text()
    assert server.request_count == 3  # formulate, edit, what-if: commands need no LLM


def test_a_saved_session_continues_with_load(server: ScriptedLLMServer, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", server.base_url)
    first = run_chat([BAKERY, "/save s.json", "/quit", "oven hours are now 50"], config, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "New optimum" not in first.stdout  # /quit ends the chat before the last line
    second = run_chat(["/model", "/set oven 60", "/help"], config, "--load", "s.json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Loaded model: optimal, objective 120." in second.stdout
    assert "oven: bread + 2*cake <= 40" in second.stdout  # /model
    assert "New optimum: 180 (was 120" in second.stdout and "/whynot" in second.stdout
    assert server.request_count == 1


def test_bad_inputs_and_a_dead_endpoint(tmp_path: Path) -> None:
    with ScriptedLLMServer() as gone:
        dead_url = gone.base_url
    config = write_config(tmp_path / "config.toml", dead_url)
    missing = run_chat([], config, "--load", "nope.json", cwd=tmp_path)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    foreign = run_chat([], config, "--load", "other.json", cwd=tmp_path)
    assert foreign.returncode == 1 and "not an OptiTrace chat session" in foreign.stderr
    dead = run_chat([BAKERY, "/help"], config, cwd=tmp_path)
    assert dead.returncode == 0, dead.stderr  # the turn fails clearly; the chat goes on
    assert "cannot be reached" in dead.stdout and "/whatif" in dead.stdout


def test_terminal_rendering_shows_panels_diff_and_comparison(server: ScriptedLLMServer) -> None:
    from rich.console import Console

    from agent.chat.session import ChatSession
    from agent.cli.chat_commands import render_turn
    from agent.modeler import ModelingAgent
    from trace_graph.llm.client import LLMClient

    with LLMClient(server.llm_config(), cache=False) as llm:
        session = ChatSession(ModelingAgent(llm), llm)
        console = Console(record=True, force_terminal=True, width=120)
        for text in (BAKERY, "oven hours are now 50", "what if the oven had 45 hours?", "/frobnicate"):
            render_turn(session.send(text), console)
    shown = console.export_text()
    assert "new problem" in shown and "loaves baked" in shown  # the decisions table
    assert "model change" in shown and "+  oven: bread + 2*cake <= 50" in shown
    assert "set the limit of oven to 45" in shown and "135" in shown  # the comparison table
    assert "Unknown command /frobnicate" in shown
