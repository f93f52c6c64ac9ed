"""Start, find, check and stop llama.cpp's OpenAI-compatible server for an embedded model, on loopback.

The server is `python -m llama_cpp.server` (engine "python", the default) or llama.cpp's own
`llama-server` with several batched slots (engine "native", see `native.py`), in its own process
group, logging to a file in the cache dir. Each running server leaves a small state file (pid, port,
model, ...) so `llm status` and other commands can find it; a state file whose pid is dead or whose
port does not answer is stale and is removed on sight.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent.local_llm.native import find_native_server, native_command
from agent.local_llm.registry import (
    INSTALL_COMMAND,
    LocalModel,
    LocalModelError,
    ensure_weights,
    get_model,
    optitrace_cache_dir,
)

HOST = "127.0.0.1"
THREADS_ENV = "OPTITRACE_LLM_THREADS"
# Opt-in RAM cache of recent prompts' KV states (MB; 0 = off). llama-cpp-python also copies each
# state's logits (~0.6 MB per token for a 152k vocabulary) without counting them against the
# limit: at 256 MB the server grew from ~2 GB to ~10.5 GB RSS, for ~46% of prompt tokens reused
# and at most ~13% less server time during synthesis. Worth it on a large machine, not by default.
PROMPT_CACHE_ENV = "OPTITRACE_LLM_PROMPT_CACHE_MB"


def prompt_cache_megabytes() -> int:
    raw = os.environ.get(PROMPT_CACHE_ENV, "0").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise LocalModelError(f"{PROMPT_CACHE_ENV} must be a whole number of MB, got {raw!r}") from None
    if value < 0:
        raise LocalModelError(f"{PROMPT_CACHE_ENV} must be 0 (off) or more, got {value}")
    return value


# Modules `python -m llama_cpp.server` needs; find_spec checks them without loading llama.cpp.
RUNTIME_MODULES = (
    "llama_cpp",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
STOP_GRACE_SECONDS = 10.0
ENGINES = ("python", "native")
_PR_SET_PDEATHSIG = 1


class RuntimeMissingError(LocalModelError):
    pass


class ServerStartError(LocalModelError):
    pass


def missing_runtime_modules() -> list[str]:
    return [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]


def require_runtime() -> None:
    missing = missing_runtime_modules()
    if missing:
        raise RuntimeMissingError(
            f"the local LLM runtime is not installed (missing: {', '.join(missing)}). Install it with: "
            f"{INSTALL_COMMAND}  -- llama-cpp-python compiles from source, which takes about 4 minutes "
            "on an idle 2-core machine (longer when busy)."
        )


class ThreadChoice(BaseModel):
    threads: int
    cores: int
    load: float
    reason: str


def _cores() -> int:
    # Affinity, not os.cpu_count(): a container or taskset may give us fewer cores than the host has.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """Threads for llama.cpp: the free cores, since oversubscribing a busy 2-core box was 10x slower."""
    cores = _cores()
    load = _load_average()
    if requested is not None:
        return ThreadChoice(threads=max(1, requested), cores=cores, load=load, reason="requested")
    override = os.environ.get(THREADS_ENV)
    if override:
        try:
            return ThreadChoice(threads=max(1, int(override)), cores=cores, load=load, reason=THREADS_ENV)
        except ValueError:
            raise LocalModelError(f"{THREADS_ENV} must be a whole number, got {override!r}") from None
    free = min(cores, max(1, cores - round(load)))
    return ThreadChoice(threads=free, cores=cores, load=load, reason="free cores")


def fetch_model_ids(base_url: str, timeout: float = 2.0, api_key: str = "not-needed") -> list[str] | None:
    """The ids GET {base_url}/models lists, or None when nothing (OpenAI-compatible) answers."""
    headers = {"Authorization": f"Bearer {api_key}"}
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    # Loopback health checks must not go through an HTTP_PROXY from the environment.
    is_loopback = urllib.parse.urlsplit(base_url).hostname in {"127.0.0.1", "localhost", "::1"}
    handlers = [urllib.request.ProxyHandler({})] if is_loopback else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            payload = json.load(response)
    except (OSError, ValueError):
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [str(entry.get("id")) for entry in data if isinstance(entry, dict)]


class ServerState(BaseModel):
    """What a running embedded server leaves on disk so other commands can find it."""

    model_config = ConfigDict(extra="forbid")

    pid: int
    port: int
    model: str
    started_at: datetime
    threads: int
    n_ctx: int
    log_path: Path
    owner_pid: int
    shared: bool  # True for `llm serve`: other processes may use it; on-demand servers die with their owner
    engine: str = "python"
    parallel: int = 1  # requests decoded together (native engine); the python engine queues them

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


def server_dir() -> Path:
    return optitrace_cache_dir() / "llm-server"


def _state_path(pid: int) -> Path:
    return server_dir() / f"server-{pid}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_llama_server(pid: int, port: int) -> bool:
    # Guards against pid reuse before we trust or signal a pid read from a state file.
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # The native binary is argv[0]; started through an interpreter (a script) it is argv[1].
    programs = {Path(argument.decode(errors="replace")).name for argument in arguments[:2]}
    runs_server = b"llama_cpp.server" in arguments or "llama-server" in programs
    return runs_server and str(port).encode() in arguments


def running_servers(model: str | None = None) -> list[ServerState]:
    """Embedded servers whose process is alive; stale state files are removed on sight.

    Liveness is the pid plus its command line, not /v1/models: llama-cpp-python serves that route
    under the same lock as completions, so a busy server does not answer it until the current
    request finishes (tens of seconds on CPU). Use `server_answers` to ask.
    """
    found: list[ServerState] = []
    directory = server_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("server-*.json")):
        try:
            state = ServerState.model_validate_json(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if not (_pid_alive(state.pid) and _is_llama_server(state.pid, state.port)):
            path.unlink(missing_ok=True)
            if not state.shared:  # its owner was killed before it could tidy up
                state.log_path.unlink(missing_ok=True)
            continue
        if model is None or state.model == model:
            found.append(state)
    return found


def server_answers(state: ServerState, timeout: float = 2.0) -> bool:
    return state.model in (fetch_model_ids(state.base_url, timeout=timeout) or [])


def stop_process_group(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is still there after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid) or _is_zombie(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] == "Z"


def stop_server(state: ServerState) -> bool:
    """Stop a server found through its state file (e.g. `llm stop`); False if it was not running."""
    if not (_pid_alive(state.pid) and _is_llama_server(state.pid, state.port)):
        _state_path(state.pid).unlink(missing_ok=True)
        return False
    stop_process_group(state.pid)
    _state_path(state.pid).unlink(missing_ok=True)
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like uvicorn: connections of a just-stopped server in TIME_WAIT must not count as "in use";
        # a live listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    # Runs in the child before exec: if the parent is killed outright (no atexit), the kernel sends
    # the server SIGTERM instead of leaving a 2-3 GB orphan behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# PDEATHSIG fires when the *thread* that forked the child ends, not the process. Commands start the
# server on demand from worker threads (eval, train), so every spawn goes through this one thread,
# which lives exactly as long as the process: a killed `optitrace eval` takes its server with it.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optitrace-llm-spawner")


def spawn_tied_to_process(command: list[str], **popen_options: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen` whose child gets SIGTERM when this process dies, however it dies."""
    return _spawner.submit(subprocess.Popen, command, preexec_fn=_die_with_parent, **popen_options).result()


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class LocalServer:
    """llama.cpp's OpenAI-compatible server for one registry model, bound to 127.0.0.1.

    Use as a context manager, or call start()/stop(); an atexit hook stops it if the caller forgets.
    """

    def __init__(
        self,
        model: LocalModel | str | None = None,
        port: int | None = None,
        threads: int | None = None,
        n_ctx: int | None = None,
        *,
        shared: bool = False,
        startup_timeout: float = 180.0,
        progress: bool = True,
        engine: str = "python",
        parallel: int = 1,
    ) -> None:
        if engine not in ENGINES:
            raise LocalModelError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if parallel < 1 or (engine == "python" and parallel != 1):
            raise LocalModelError(
                f"--parallel {parallel}: the python engine serves one request at a time; "
                "use --engine native for parallel slots (and at least 1)"
            )
        self.engine = engine
        self.parallel = parallel
        self.model = model if isinstance(model, LocalModel) else get_model(model)
        self.requested_port = port
        self.thread_choice = choose_threads(threads)
        self.n_ctx = n_ctx or self.model.n_ctx
        self.shared = shared
        self.startup_timeout = startup_timeout
        self.progress = progress
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = server_dir() / f"{self.model.name}.log"  # per port once the port is known
        self._forget_log_on_stop = False
        self.startup_seconds: float | None = None

    @property
    def threads(self) -> int:
        return self.thread_choice.threads

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalModelError("the local server has not been started")
        return f"http://{HOST}:{self.port}/v1"

    def command(self, weights: Path, port: int) -> list[str]:
        if self.engine == "native":
            return native_command(
                find_native_server(), weights, self.model.name, HOST, port,
                n_ctx=self.n_ctx, threads=self.threads, parallel=self.parallel,
            )  # fmt: skip
        threads = str(self.threads)
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(weights),
            "--model_alias", self.model.name,
            "--host", HOST,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", threads,
            "--n_threads_batch", threads,
            # Queue concurrent requests instead of cutting off a running stream.
            "--interrupt_requests", "false",
            *self._prompt_cache_arguments(),
        ]  # fmt: skip

    @staticmethod
    def _prompt_cache_arguments() -> list[str]:
        """Keep KV states of earlier prompts when asked to: the agent and the story writer
        alternate, and each call otherwise re-reads its ~700-token system prompt at ~55 tokens/s."""
        megabytes = prompt_cache_megabytes()
        if megabytes == 0:
            return []
        return ["--cache", "true", "--cache_type", "ram", "--cache_size", str(megabytes << 20)]

    def start(self) -> LocalServer:
        if self.process is not None:
            return self
        if self.engine == "python":
            require_runtime()
        weights = ensure_weights(self.model.name, progress=self.progress)
        port = self.requested_port or free_port()
        command = self.command(weights, port)
        if not _port_is_free(port):
            raise ServerStartError(f"port {port} on {HOST} is already in use; pick another with --port")
        # One log per port: two servers (e.g. `llm serve` and an on-demand one) must not clobber each other.
        self.log_path = server_dir() / f"{self.model.name}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = spawn_tied_to_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C goes to us, we stop it cleanly
            )
        self.port = port
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        # An on-demand server's log only matters if it fails to start (its tail is in the error);
        # random ports would otherwise pile up logs. `llm serve` keeps its log.
        self._forget_log_on_stop = not self.shared
        self._write_state()
        return self

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"the local LLM server exited with code {self.process.returncode} while starting. "
                    f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if self.model.name in (fetch_model_ids(self.base_url, timeout=1.0) or []):
                return
            time.sleep(0.25)
        raise ServerStartError(
            f"the local LLM server did not answer {self.base_url}/models "
            f"within {self.startup_timeout:.0f} s. "
            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _write_state(self) -> None:
        assert self.process is not None and self.port is not None
        state = ServerState(
            pid=self.process.pid,
            port=self.port,
            model=self.model.name,
            started_at=datetime.now(UTC),
            threads=self.threads,
            n_ctx=self.n_ctx,
            log_path=self.log_path,
            owner_pid=os.getpid(),
            shared=self.shared,
            engine=self.engine,
            parallel=self.parallel,
        )
        path = _state_path(self.process.pid)
        temp = path.with_suffix(".tmp")
        temp.write_text(state.model_dump_json(indent=1) + "\n")
        os.replace(temp, path)

    def stopped_elsewhere(self) -> bool:
        """True when `optitrace llm stop` (or anyone using the state file) ended this server."""
        return self.process is not None and not _state_path(self.process.pid).exists()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        _state_path(process.pid).unlink(missing_ok=True)
        crashed = process.poll() is not None
        if not crashed:
            stop_process_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_SECONDS)
        if self._forget_log_on_stop and not crashed:  # a crash log is worth keeping
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
