"""Run generated Pyomo programs safely: `Sandbox.run(source) -> SandboxResult`.

The program contract
--------------------
A program is Python source that defines ``build_model()`` -- or ``build_model(data)``, receiving
the JSON-able dict passed as ``run(..., data=...)`` -- and returns a Pyomo ``ConcreteModel``.
The HARNESS chooses and runs the solver (``solvers.highs.solve_model``); the program must not
solve the model or print results. Its top level runs with ``__name__ == "program"``, so an
``if __name__ == "__main__":`` block is skipped. Anything it prints is captured and returned
(head and tail, truncated); writing more than ``output_limit_bytes`` gets it killed.

How it is contained
-------------------
Each pool slot is a long-lived worker (``solvers.sandbox_worker``) that pre-imports
pyomo.environ, numpy and highspy and runs inside ``bwrap``: read-only bind of ``/``, private
tmpfs over /tmp, /var/tmp, /root, /home, /run and $HOME (the Python install and the project are
bound back read-only when they live there), new net/pid/ipc/uts namespaces (no network at all),
cleared environment, ``--die-with-parent``, ``--new-session``. It forks one child per program;
the child limits its address space, CPU time, open files, processes and file size, and -- when the
worker runs as root -- drops to a dedicated unprivileged uid per slot (which also makes the
process limit effective: the kernel does not enforce RLIMIT_NPROC for root). The worker enforces
the wall-clock timeout, kills whatever the program left behind and empties the scratch
directories before the next program. The parent backs the worker's timeout with its own and
restarts a worker that died or hung.

When ``bwrap`` is missing or fails its self-test the sandbox logs a loud warning and falls back to
rlimited forked children with no namespaces (``isolation="rlimit-only"`` in every result): the
program can then read the file system and use the network. Force it with
``Sandbox(isolation="rlimit-only")`` or ``OPTITRACE_SANDBOX_ISOLATION=rlimit-only``.

Limits per run: ``timeout`` (wall clock, seconds), ``cpu_seconds``, ``memory_mb`` (the child's
whole address space, which includes the ~300 MB the pre-imported libraries already map),
64 open files, 64 MB per written file, 64 processes. Unless ``options.time_limit`` is set it
becomes 80% of ``timeout``, so HiGHS stops with its incumbent before the wall clock kills it.

Threads: ``Sandbox(workers=N)`` keeps N workers; ``run()`` is thread-safe and blocks until a
worker is free, so N threads run N programs at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from solvers.result import SolveOptions, SolveResult
from solvers.sandbox_worker import read_message, write_message

log = logging.getLogger(__name__)

Isolation = Literal["bwrap", "rlimit-only"]
IsolationRequest = Literal["auto", "bwrap", "rlimit-only"]
ISOLATION_ENV = "OPTITRACE_SANDBOX_ISOLATION"
DEFAULT_SOLVER = "solvers.highs:solve_model"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_WORKDIR = "/tmp/program"  # inside bwrap: the program's cwd, $HOME and $TMPDIR
REPLY_GRACE_SECONDS = 5.0  # the worker needs a moment past the deadline to kill and report
ACK_SECONDS = 10.0  # the worker acknowledges a request at once; this only matters on a stalled box
CHILD_UID_BASE = 400_000  # far above any uid a distribution hands out
MAX_WORKERS = 64
EXTRA_PROCESSES = 64  # what a program may start: HiGHS threads, a subprocess or two
THREAD_LIMIT_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_WORKER_BOOT = "import sys; sys.path.insert(0, {root!r}); from solvers.sandbox_worker import main; main()"


class SandboxStatus(StrEnum):
    OK = "ok"
    SYNTAX_ERROR = "syntax_error"
    RUNTIME_ERROR = "runtime_error"
    CONTRACT_ERROR = "contract_error"  # no build_model, wrong signature, wrong return type
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    KILLED = "killed"  # by a signal we did not send on purpose (e.g. a crash in native code)
    OUTPUT_LIMIT = "output_limit"
    SANDBOX_ERROR = "sandbox_error"  # the harness failed, not the program


class ModelSummary(BaseModel):
    variables: int
    constraints: int  # active
    objectives: int  # active
    components: dict[str, str] = Field(description="component name -> kind (Var, Constraint, ...); first 200")
    components_total: int


class SandboxResult(BaseModel):
    status: SandboxStatus
    error: str = Field("", description="what went wrong, with the program's traceback lines")
    stdout: str = Field("", description="what the program printed (stdout and stderr), truncated")
    stdout_bytes: int = 0
    solve: SolveResult | None = None
    model: ModelSummary | None = None
    seconds: float
    isolation: Isolation

    @property
    def ok(self) -> bool:
        return self.status == SandboxStatus.OK


class WorkerInfo(BaseModel):
    pid: int | None  # host pid of the worker (of bwrap when isolated)
    child_uid: int | None  # uid the programs run as, None when unchanged
    isolation: Isolation


class SandboxUnavailableError(RuntimeError):
    """Isolation was demanded (isolation="bwrap") but bwrap is missing or failed its self-test."""


class _StartFailure(RuntimeError):
    pass


def _minimal_env(workdir: str) -> dict[str, str]:
    env = {"PATH": MINIMAL_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    env.update(dict.fromkeys(THREAD_LIMIT_ENV, "1"))  # no BLAS thread pools in a process that forks
    return env


def _is_under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _needed_paths() -> list[str]:
    """What the worker must see: the interpreter, its libraries, this project."""
    candidates = [
        str(Path(sys.executable).resolve().parent),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        *site.getsitepackages(),
        str(PROJECT_ROOT),
    ]
    resolved = sorted({os.path.realpath(p) for p in candidates if os.path.isdir(p)})
    # drop paths inside another kept path: binding the outer one is enough
    return [p for p in resolved if not any(q != p and _is_under(p, q) for q in resolved)]


def _masked_dirs() -> list[str]:
    home = os.path.realpath(os.path.expanduser("~"))
    dirs = ["/tmp", "/var/tmp", "/root", "/home", "/run"]
    if home != "/" and not any(_is_under(home, d) for d in dirs):
        dirs.append(home)
    return [d for d in dirs if os.path.isdir(d)]


def bwrap_command(bwrap: str, root: bool) -> list[str]:
    """The bwrap invocation around a worker (exposed for inspection and the docs)."""
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    masked = _masked_dirs()
    for directory in masked:
        if directory in ("/tmp", "/var/tmp"):
            cmd += ["--perms", "1777"]
        cmd += ["--tmpfs", directory]
    made: set[str] = set()
    for path in _needed_paths():
        mask = next((d for d in masked if _is_under(path, d)), None)
        if mask is None:
            continue
        # bwrap would create the missing parents 0700, out of reach of the unprivileged child uid
        for parent in reversed(Path(path).parents):
            if _is_under(str(parent), mask) and str(parent) != mask and str(parent) not in made:
                cmd += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        cmd += ["--ro-bind", path, path]
    if root:
        # No user namespace: the worker stays real root with just enough capability to drop each
        # child to an unprivileged uid and to kill what that child leaves behind.
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        cmd += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_KILL",
        ]
    else:
        cmd += ["--unshare-all"]  # includes the user namespace an unprivileged bwrap needs
    cmd += ["--die-with-parent", "--new-session", "--clearenv"]
    for name, value in _minimal_env(SANDBOX_WORKDIR).items():
        cmd += ["--setenv", name, value]
    cmd += ["--chdir", "/tmp", "--"]
    return cmd


def _hidden_probes(per_dir: int = 2) -> list[str]:
    """A few host paths the bwrap worker must NOT see (its self-test checks they are absent)."""
    needed = _needed_paths()
    probes: list[str] = []
    for directory in _masked_dirs():
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        chosen = [
            os.path.join(directory, e)
            for e in entries
            if not any(_is_under(n, os.path.join(directory, e)) for n in needed)
        ]
        probes += chosen[:per_dir]
    return probes


def _world_traversable(path: str) -> bool:
    """Whether an unprivileged uid can reach and read `path` (every ancestor has o+x)."""
    current = Path(path)
    for directory in [current, *current.parents]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


def _count_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{entry}").st_uid == uid
    return count


def _host_namespaces() -> dict[str, int]:
    return {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "pid")}


class _Worker:
    """One pool slot: a worker process, restarted when it dies or hangs."""

    def __init__(
        self,
        slot: int,
        isolation: Isolation,
        bwrap: str | None,
        solver: str,
        spawner: ThreadPoolExecutor,
        start_timeout: float,
    ) -> None:
        self.isolation = isolation
        self._bwrap = bwrap
        self._solver = solver
        self._spawner = spawner
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._root = os.geteuid() == 0
        self._host_workdir: str | None = None
        self.child_uid = self._choose_uid(slot)
        self._nproc: int | None = None

    def _choose_uid(self, slot: int) -> int | None:
        if not self._root:
            return None
        if self.isolation == "rlimit-only" and not all(_world_traversable(p) for p in _needed_paths()):
            # the interpreter lives where an unprivileged uid cannot read it (e.g. /root/.pyenv)
            return None
        # unique per (parent pid, slot) so that sandboxes never share a uid's process count
        return CHILD_UID_BASE + (os.getpid() * MAX_WORKERS + slot) % 1_000_000

    # -- life cycle ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process and send its configuration; `wait_ready` completes the start."""
        boot = [sys.executable, "-I", "-B", "-c", _WORKER_BOOT.format(root=str(PROJECT_ROOT))]
        if self.isolation == "bwrap":
            assert self._bwrap is not None
            cmd, workdir = bwrap_command(self._bwrap, self._root) + boot, SANDBOX_WORKDIR
            scratch = ["/tmp", "/var/tmp"]
            cwd = "/"
        else:
            if self._host_workdir is None:
                self._host_workdir = tempfile.mkdtemp(prefix="optitrace-sandbox-")
            cmd, workdir, scratch, cwd = boot, self._host_workdir, [self._host_workdir], self._host_workdir
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  lives as long as the worker; closed in kill()
        # Popen runs on the spawner thread: --die-with-parent and PR_SET_PDEATHSIG fire when the
        # *thread* that forked the worker exits, so it must be one that lives as long as we do.
        try:
            self._process = self._spawner.submit(
                subprocess.Popen,
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=_minimal_env(workdir),
                cwd=cwd,
                start_new_session=True,
            ).result()
        except OSError as error:
            self.kill()
            raise _StartFailure(f"cannot start the {self.isolation} worker: {error}") from error
        if self.child_uid is None:
            self._nproc = _count_processes(os.getuid()) + EXTRA_PROCESSES if not self._root else None
        else:
            self._nproc = EXTRA_PROCESSES
        config = {
            "isolation": self.isolation,
            "solver": self._solver,
            "child_uid": self.child_uid,
            "workdir": workdir,
            "scratch_dirs": scratch,
            "own_pid_namespace": self.isolation == "bwrap",
            "die_with_parent": True,
            "host_namespaces": _host_namespaces(),
            # PWD is bwrap's own (--chdir sets it); every other variable of ours must be gone
            "hidden_env": sorted(set(os.environ) - set(_minimal_env(workdir)) - {"PWD"}),
            "hidden_paths": _hidden_probes() if self.isolation == "bwrap" else [],
        }
        assert self._process.stdin is not None
        write_message(self._process.stdin.fileno(), config)

    def wait_ready(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            ready = read_message(self._process.stdout.fileno(), time.monotonic() + self._start_timeout)
        except (TimeoutError, ValueError) as error:
            ready = None
            reason = str(error)
        else:
            reason = "it exited during start-up"
        if ready is None or not ready.get("ready"):
            problems = "; ".join(ready["problems"]) if ready else reason
            tail = self.log_tail()
            self.kill()
            raise _StartFailure(
                f"{self.isolation} worker failed to start: {problems}" + (f"\n{tail}" if tail else "")
            )
        if not ready.get("solver_available"):
            log.warning(
                "sandbox: solver entry point %s is missing; every run will be a sandbox_error", self._solver
            )

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            self._log.seek(0, os.SEEK_END)
            end = self._log.tell()
            self._log.seek(max(end - size, 0))
            return self._log.read().decode("utf-8", errors="replace").strip()
        return ""

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)  # bwrap and everything under it
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    stream.close()  # type: ignore[union-attr]
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # EOF: the worker returns from its loop
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=2)
        self.kill()
        if self._host_workdir is not None:
            shutil.rmtree(self._host_workdir, ignore_errors=True)
            self._host_workdir = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- one program --------------------------------------------------------------------------

    def _submit(self, request: dict[str, Any]) -> bool:
        """Send the request; True once the worker acknowledged it, False if it was dead."""
        if not self.alive():
            return False
        assert self._process is not None and self._process.stdin is not None
        assert self._process.stdout is not None
        try:
            write_message(self._process.stdin.fileno(), request)
            ack = read_message(self._process.stdout.fileno(), time.monotonic() + ACK_SECONDS)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False
        return ack is not None and ack.get("accepted") is True

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        request = {**request, "nproc": self._nproc}
        if not self._submit(request):
            # dead (or wedged) before it saw this program: restart and resend, transparently
            self.kill()
            self.start()
            request["nproc"] = self._nproc
            if not self._submit(request):
                tail = self.log_tail()
                self.kill()
                return {
                    "status": "sandbox_error",
                    "error": "a freshly started sandbox worker did not accept "
                    "the program" + (f"\n{tail}" if tail else ""),
                }
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + timeout + REPLY_GRACE_SECONDS
        try:
            reply = read_message(self._process.stdout.fileno(), deadline)
        except TimeoutError:
            self.kill()
            return {
                "status": "timeout",
                "error": f"the program ran past the {timeout:g} s limit and the "
                "worker did not report in time; it was killed and will be restarted",
            }
        if reply is None:
            code = self._process.wait()
            tail = self.log_tail()
            self.kill()
            return {
                "status": "sandbox_error",
                "error": f"the sandbox worker died while running the program "
                f"(exit status {code}); it will be restarted" + (f"\n{tail}" if tail else ""),
            }
        return reply


class Sandbox:
    """A pool of sandbox workers; see the module docstring for the contract and the isolation."""

    def __init__(
        self,
        workers: int = 1,
        *,
        isolation: IsolationRequest | None = None,
        solver: str = DEFAULT_SOLVER,
        bwrap_path: str | None = None,
        stdout_chars: int = 20_000,
        output_limit_bytes: int = 1_000_000,
        start_timeout: float = 60.0,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}")
        requested = isolation or os.environ.get(ISOLATION_ENV, "auto")
        if requested not in ("auto", "bwrap", "rlimit-only"):
            raise ValueError(f"isolation must be auto, bwrap or rlimit-only, not {requested!r}")
        self.requested_isolation: IsolationRequest = requested  # type: ignore[assignment]
        self.isolation: Isolation | None = None
        self._workers_wanted = workers
        self._solver = solver
        self._bwrap_path = bwrap_path
        self._stdout_bytes = stdout_chars
        self._output_limit = output_limit_bytes
        self._start_timeout = start_timeout
        self._slots: list[_Worker] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._spawner: ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the sandbox is closed")
            if self._slots:
                return
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
            problem = ""
            if self.requested_isolation != "rlimit-only":
                bwrap = self._bwrap_path or shutil.which("bwrap")
                if bwrap is None or not os.access(bwrap, os.X_OK):
                    problem = "bwrap is not installed"
                else:
                    try:
                        self._start_slots("bwrap", bwrap)
                        return
                    except _StartFailure as error:
                        problem = str(error)
                if self.requested_isolation == "bwrap":
                    self._spawner.shutdown()
                    raise SandboxUnavailableError(problem)
                log.warning(
                    "SANDBOX DEGRADED: %s. Generated code will run with resource limits only -- no "
                    "namespaces, so it can read the file system and reach the network.",
                    problem,
                )
            self._start_slots("rlimit-only", None)
            if any(slot.child_uid is None for slot in self._slots) and os.geteuid() == 0:
                log.warning(
                    "SANDBOX DEGRADED: programs run as root (the interpreter is not readable by an "
                    "unprivileged uid), so the process limit is not enforced and they can kill the worker."
                )

    def _start_slots(self, isolation: Isolation, bwrap: str | None) -> None:
        assert self._spawner is not None
        slots = [
            _Worker(i, isolation, bwrap, self._solver, self._spawner, self._start_timeout)
            for i in range(self._workers_wanted)
        ]
        try:
            for slot in slots:
                slot.launch()  # all launch first: the imports then overlap
            for slot in slots:
                slot.wait_ready()
        except BaseException:
            for slot in slots:
                slot.close()
            raise
        self.isolation = isolation
        self._slots = slots
        for slot in slots:
            self._idle.put(slot)
        self._finalizer = weakref.finalize(self, _close_slots, list(slots), self._spawner)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()

    def worker_info(self) -> list[WorkerInfo]:
        return [WorkerInfo(pid=s.pid, child_uid=s.child_uid, isolation=s.isolation) for s in self._slots]

    # -- running ------------------------------------------------------------------------------

    def run(
        self,
        source: str,
        *,
        data: dict[str, Any] | None = None,
        options: SolveOptions | None = None,
        timeout: float = 30,
        memory_mb: int = 1024,
        cpu_seconds: int = 20,
    ) -> SandboxResult:
        """Run one program (see the module docstring for the contract); blocks for a free worker."""
        if not self._slots:
            self.start()
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        if data is not None:
            data = json.loads(json.dumps(data))  # fails here, clearly, if it is not JSON-able
        options = options or SolveOptions()
        if options.time_limit is None:
            # let HiGHS stop with its incumbent before the wall clock kills the child
            options = options.model_copy(update={"time_limit": max(0.1, 0.8 * timeout)})
        request = {
            "source": source,
            "data": data,
            "options": options.model_dump(mode="json"),
            "timeout": float(timeout),
            "memory_mb": int(memory_mb),
            "cpu_seconds": max(1, int(cpu_seconds)),
            "file_mb": 64,
            "nofile": 64,
            "stdout_bytes": self._stdout_bytes,
            "output_limit_bytes": self._output_limit,
        }
        started = time.perf_counter()
        slot = self._idle.get()
        try:
            reply = slot.run(request, timeout)
        except _StartFailure as error:
            reply = {"status": "sandbox_error", "error": f"could not restart the sandbox worker: {error}"}
        finally:
            self._idle.put(slot)
        return SandboxResult(
            status=reply["status"],
            error=reply.get("error") or "",
            stdout=reply.get("stdout", ""),
            stdout_bytes=reply.get("stdout_bytes", 0),
            solve=reply.get("solve"),
            model=reply.get("model"),
            seconds=time.perf_counter() - started,
            isolation=slot.isolation,
        )


def _close_slots(slots: list[_Worker], spawner: ThreadPoolExecutor) -> None:
    for slot in slots:
        slot.close()
    spawner.shutdown(wait=False)
