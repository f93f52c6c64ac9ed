"""The native engine (llama.cpp's llama-server with batched slots): command line, missing binary, build
options, and a full start / find / stop cycle against a scripted executable named llama-server."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from agent.local_llm import native, registry, server
from agent.local_llm.registry import LocalModel
from agent.local_llm.server import LocalServer
from tests.test_local_llm import fake_model, isolated_environment  # noqa: F401  (fixtures)

SCRIPTED_LLAMA_SERVER = f"""#!{sys.executable}
import http.server, json, sys
arguments = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(arguments["--model"] + ".args.json", "w") as record:
    json.dump(sys.argv[1:], record)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"object": "list", "data": [{{"id": arguments["--alias"]}}]}}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((arguments["--host"], int(arguments["--port"])), Handler).serve_forever()
"""


@pytest.fixture()
def scripted_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(textwrap.dedent(SCRIPTED_LLAMA_SERVER))
    binary.chmod(0o755)
    monkeypatch.setenv(native.BINARY_ENV, str(binary))
    return binary


def options(command: list[str]) -> dict[str, str]:
    """Option -> value; a flag without a value (followed by another option) maps to ""."""
    given: dict[str, str] = {}
    for index, word in enumerate(command[1:], start=1):
        if word.startswith("--"):
            following = command[index + 1] if index + 1 < len(command) else "--"
            given[word] = "" if following.startswith("--") else following
    return given


def test_native_command_gives_every_slot_the_full_context(
    fake_model: tuple[LocalModel, bytes],  # noqa: F811
    scripted_binary: Path,
) -> None:
    model, _ = fake_model
    command = LocalServer(model, threads=2, n_ctx=4096, engine="native", parallel=3).command(
        Path("/w.gguf"), 9
    )
    assert command[0] == str(scripted_binary)
    given = options(command)
    assert given["--alias"] == model.name and given["--model"] == "/w.gguf"
    assert (given["--host"], given["--port"]) == ("127.0.0.1", "9")
    assert given["--parallel"] == "3" and given["--ctx-size"] == str(3 * 4096)
    assert given["--threads"] == given["--threads-batch"] == "2"
    assert int(given["--cache-ram"]) == native.PROMPT_CACHE_MIB
    assert given["--no-webui"] == ""


def test_a_missing_binary_says_how_to_build_it(
    fake_model: tuple[LocalModel, bytes],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = fake_model
    with pytest.raises(native.NativeServerMissingError, match="optitrace llm build-native"):
        LocalServer(model, threads=1, engine="native").start()
    monkeypatch.setenv(native.BINARY_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(native.NativeServerMissingError, match="OPTITRACE_LLAMA_SERVER points at"):
        LocalServer(model, threads=1, engine="native").start()
    assert server.running_servers() == []


def test_engine_and_parallel_are_checked(fake_model: tuple[LocalModel, bytes]) -> None:  # noqa: F811
    model, _ = fake_model
    with pytest.raises(registry.LocalModelError, match="unknown engine 'vllm'"):
        LocalServer(model, engine="vllm")
    with pytest.raises(registry.LocalModelError, match="one request at a time"):
        LocalServer(model, engine="python", parallel=4)
    with pytest.raises(registry.LocalModelError, match="at least 1"):
        LocalServer(model, engine="native", parallel=0)


def test_build_options_follow_the_cpu_and_never_use_native_tuning() -> None:
    plain = native.cmake_options({"avx2", "fma"})
    assert "-DGGML_NATIVE=OFF" in plain and "-DBUILD_SHARED_LIBS=OFF" in plain
    assert not any("AVX512" in option for option in plain)
    wide = native.cmake_options({"avx2", "avx512f", "avx512bw", "avx512vl", "amx_tile"})
    assert "-DGGML_AVX512=ON" in wide and not any("AMX" in option for option in wide)


def test_a_build_without_cmake_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(native.NativeBuildError, match="cmake is not installed"):
        native.build_native_server(tmp_path / "llama-server")
    assert not (tmp_path / "llama-server").exists()


def test_a_native_server_starts_is_found_and_stops(
    fake_model: tuple[LocalModel, bytes],  # noqa: F811
    scripted_binary: Path,
) -> None:
    model, _ = fake_model
    local = LocalServer(model, threads=1, n_ctx=1024, engine="native", parallel=2, shared=True)
    with local:
        [state] = server.running_servers(model.name)
        assert (state.engine, state.parallel, state.port) == ("native", 2, local.port)
        assert server.server_answers(state)
        weights = registry.weights_path(model)
        recorded = Path(str(weights) + ".args.json").read_text()
        assert '"--parallel", "2"' in recorded and '"--ctx-size", "2048"' in recorded
        pid = state.pid
    assert server.running_servers() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
