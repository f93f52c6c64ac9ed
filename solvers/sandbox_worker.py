"""The sandbox worker: a long-lived, pre-imported process that forks one child per program.

Started by `solvers.sandbox.Sandbox` (inside `bwrap`, or bare in the rlimit-only fallback) as
`python -I -B -c "...main()"`. It speaks length-prefixed JSON on its stdin/stdout: first its
configuration in and a ready report out, then one request in and one reply out, until stdin closes.

Per request it forks a child that puts itself in a new session, applies resource limits, drops to
an unprivileged per-worker uid when the worker runs as root, redirects stdout/stderr into a
bounded capture pipe, execs the program, calls `build_model`, and solves with the configured
solver entry point (`solvers.highs:solve_model`). The worker itself never solves anything: HiGHS
threads do not survive a fork, so the process that forks must not have started any.

The worker enforces the wall-clock deadline and the output cap, kills everything the program left
behind (a fork bomb's descendants, daemons), wipes the scratch directory, and reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import importlib
import inspect
import json
import linecache
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

PROGRAM_FILENAME = "program.py"  # what tracebacks call the generated program
HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
RESULT_FD = 3  # the child's private channel for its result (stdout/stderr are the program's)
MAX_RESULT_BYTES = 256 * 1024 * 1024
COMPONENT_NAMES_SHOWN = 200
HARNESS_FAILURE_EXIT = 117  # the child's harness code (not the program) failed
REAP_SECONDS = 3.0
# Imported once by the worker so that each forked child starts warm. scipy.sparse is what Pyomo's
# standard-form compiler pulls in lazily on the first solve: without it here, every child paid
# ~1.2 s (about 600 modules) for a 3-variable LP.
WARM_IMPORTS = ("numpy", "highspy", "pyomo.environ", "scipy.sparse", "solvers.result")


# ---------------------------------------------------------------------------------------------
# Framing, shared with the parent (solvers.sandbox)


def write_message(fd: int, message: dict[str, Any]) -> None:
    payload = json.dumps(message).encode()
    data = HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    """`size` bytes from `fd`; None on EOF; TimeoutError past `deadline` (monotonic)."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no complete message before the deadline")
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None) -> dict[str, Any] | None:
    """The next message, or None when the other side closed the pipe."""
    header = _read_exact(fd, HEADER.size, deadline)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES} byte cap")
    payload = _read_exact(fd, size, deadline)
    if payload is None:
        return None
    return json.loads(payload)


# ---------------------------------------------------------------------------------------------
# The child: runs one program. Everything here executes after fork, in the child only.


class _ContractError(Exception):
    """The program broke the contract (no build_model, wrong return type, wrong signature)."""


def _program_traceback(error: BaseException) -> str:
    """The traceback restricted to frames in the program (plus the frame that raised, if not)."""
    summary = traceback.TracebackException.from_exception(error, capture_locals=False)
    frames = [frame for frame in summary.stack if frame.filename == PROGRAM_FILENAME]
    if summary.stack and summary.stack[-1].filename != PROGRAM_FILENAME:
        frames.append(summary.stack[-1])  # where it blew up inside a library, for context
    lines = ["Traceback (most recent call last; frames outside program.py omitted):\n"]
    lines += traceback.StackSummary.from_list(frames).format()
    lines += summary.format_exception_only()
    return "".join(lines).rstrip()


def _call_build_model(build_model: Callable[..., Any], data: dict[str, Any] | None) -> Any:
    try:
        signature = inspect.signature(build_model)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            bound_args = signature.bind(data) if data is not None else signature.bind()
        except TypeError:
            if data is None:
                raise _ContractError(
                    f"build_model{signature} needs arguments but no data was given; "
                    "define build_model() or pass data"
                ) from None
            raise _ContractError(
                f"data was given but build_model{signature} cannot take it; define build_model(data)"
            ) from None
        return build_model(*bound_args.args, **bound_args.kwargs)
    return build_model(data) if data is not None else build_model()


def _model_summary(model: Any, pyo: Any) -> dict[str, Any]:
    components: dict[str, str] = {}
    total = 0
    for component in model.component_objects(descend_into=True):
        total += 1
        if len(components) < COMPONENT_NAMES_SHOWN:
            components[component.name] = component.ctype.__name__
    return {
        "variables": sum(1 for _ in model.component_data_objects(pyo.Var, descend_into=True)),
        "constraints": sum(
            1 for _ in model.component_data_objects(pyo.Constraint, active=True, descend_into=True)
        ),
        "objectives": sum(
            1 for _ in model.component_data_objects(pyo.Objective, active=True, descend_into=True)
        ),
        "components": components,
        "components_total": total,
    }


def _memory_hint(request: dict[str, Any]) -> str:
    return (
        f" (limit {request['memory_mb']} MB of address space, of which the pre-imported libraries "
        f"already map about {request.get('baseline_mb', 0)} MB)"
    )


def _execute_program(request: dict[str, Any], solve: Callable[..., Any] | None, solver_name: str) -> dict:
    """Compile, exec, build, solve. Returns the child's result dict; never raises."""
    import pyomo.environ as pyo

    from solvers.result import SolveOptions, SolveResult

    source: str = request["source"]
    linecache.cache[PROGRAM_FILENAME] = (len(source), None, source.splitlines(True), PROGRAM_FILENAME)
    try:
        code = compile(source, PROGRAM_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes in the source
        return {"status": "syntax_error", "error": "".join(traceback.format_exception_only(error)).rstrip()}

    namespace: dict[str, Any] = {
        "__name__": "program",
        "__file__": PROGRAM_FILENAME,
        "__builtins__": __builtins__,
    }
    stage = "running the program's top level"
    try:
        exec(code, namespace)
        stage = "calling build_model"
        build_model = namespace.get("build_model")
        if build_model is None:
            raise _ContractError("the program defines no build_model() function")
        if not callable(build_model):
            raise _ContractError(f"build_model is a {type(build_model).__name__}, not a function")
        model = _call_build_model(build_model, request.get("data"))
        if not isinstance(model, pyo.ConcreteModel):
            kind = type(model).__name__
            raise _ContractError(
                f"build_model() returned {kind}, expected a pyomo ConcreteModel "
                "(build the model and return it; the harness solves it)"
            )
        summary = _model_summary(model, pyo)
    except _ContractError as error:
        return {"status": "contract_error", "error": str(error)}
    except MemoryError as error:
        return {
            "status": "memory_limit",
            "error": f"out of memory while {stage}{_memory_hint(request)}:\n{_program_traceback(error)}",
        }
    except BaseException as error:  # SystemExit, KeyboardInterrupt included: the program's fault
        return {"status": "runtime_error", "error": f"error while {stage}:\n{_program_traceback(error)}"}

    if solve is None:
        return {
            "status": "sandbox_error",
            "error": f"solver entry point {solver_name} is not available",
            "model": summary,
        }
    try:
        result = solve(model, SolveOptions.model_validate(request["options"]))
    except MemoryError as error:
        return {
            "status": "memory_limit",
            "error": f"out of memory while solving{_memory_hint(request)}:\n{_program_traceback(error)}",
            "model": summary,
        }
    except BaseException as error:
        return {
            "status": "runtime_error",
            "error": f"solving the model failed:\n{_program_traceback(error)}",
            "model": summary,
        }
    if not isinstance(result, SolveResult):
        return {
            "status": "sandbox_error",
            "error": f"{solver_name} returned {type(result).__name__}",
            "model": summary,
        }
    return {"status": "ok", "error": "", "solve": result.model_dump(mode="json"), "model": summary}


def _set_limits(request: dict[str, Any]) -> None:
    memory = request["memory_mb"] * 1024 * 1024
    cpu = request["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # soft limit -> SIGXCPU; the hard limit one second later is the kernel's SIGKILL backstop
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_mb"] * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (request["nofile"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if request.get("nproc") is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (request["nproc"],) * 2)


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_main(
    request: dict[str, Any],
    config: dict[str, Any],
    capture_w: int,
    result_w: int,
    workdir: str,
    solve: Callable[..., Any] | None,
) -> None:
    os.setsid()  # own process group: killpg reaches what it forks
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(capture_w, 1)
    os.dup2(capture_w, 2)
    os.dup2(result_w, RESULT_FD)
    os.closerange(RESULT_FD + 1, 1 << 16)  # the parent channel must not be reachable from the program
    _set_limits(request)
    if config.get("child_uid") is not None:
        _drop_privileges(config["child_uid"])
    _die_with_parent()  # after the uid change, which clears the setting
    os.chdir(workdir)
    # line buffering keeps partial output when the program is killed for time
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)  # noqa: SIM115
    result = _execute_program(request, solve, config["solver"])
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    payload = json.dumps(result).encode()
    view = memoryview(payload)
    while view:
        view = view[os.write(RESULT_FD, view) :]
    os.close(RESULT_FD)


# ---------------------------------------------------------------------------------------------
# The worker side of one run


class _BoundedCapture:
    """Keeps the head and the tail of a stream and counts the rest."""

    def __init__(self, keep_bytes: int) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.half = max(keep_bytes // 2, 1)
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(len(self.tail) - self.half, 0)]

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        if self.total <= len(self.head) + len(self.tail):
            return head + self.tail.decode("utf-8", errors="replace")
        skipped = self.total - len(self.head) - len(self.tail)
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n... [{skipped} bytes of output omitted, {self.total} in total] ...\n{tail}"


def _kill_leftovers(child_pid: int, config: dict[str, Any]) -> bool:
    """SIGKILL everything the program started. True when nothing is left."""
    deadline = time.monotonic() + REAP_SECONDS
    with contextlib.suppress(OSError):
        os.killpg(child_pid, signal.SIGKILL)
    if config.get("own_pid_namespace"):
        # Alone in a pid namespace with bwrap's init (pid 1): everything else is the program's.
        me = os.getpid()
        while time.monotonic() < deadline:
            others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
            if not others:
                return True
            for pid in others:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _reap_zombies()
            time.sleep(0.002)
        return False
    if config.get("child_uid") is not None:
        # A dedicated uid: a helper with that uid can kill(-1) all of them, whatever their group.
        helper = os.fork()
        if helper == 0:
            code = 1
            try:
                _drop_privileges(config["child_uid"])
                for _ in range(1000):
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except ProcessLookupError:
                        code = 0
                        break
                    time.sleep(0.001)
            finally:
                os._exit(code)
        _, status = os.waitpid(helper, 0)
        return os.waitstatus_to_exitcode(status) == 0
    return True


def _reap_zombies() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _remove_entries(directory: str, keep: str) -> None:
    """Delete everything in `directory` except `keep` (a path); entries of `keep` go too."""
    for entry in os.scandir(directory):
        if entry.path == keep:
            _remove_entries(keep, keep="")
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                # a program may leave directories it made unreadable; the owner can undo that
                for root, dirs, _ in os.walk(entry.path):
                    for name in dirs:
                        with contextlib.suppress(OSError):
                            os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _scratch_is_dirty(config: dict[str, Any]) -> bool:
    workdir = config["workdir"]
    for directory in config["scratch_dirs"]:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.path != workdir:
                    return True
    with os.scandir(workdir) as entries:
        return any(True for _ in entries)


def _wipe_scratch(config: dict[str, Any]) -> None:
    """Empty the scratch directories so no file survives into the next program.

    With a dedicated child uid the deletion runs under that uid: the files are its own (so the
    worker needs no file capabilities) and nothing it could plant, e.g. a symlink, is followed
    with the worker's privileges.
    """
    if not _scratch_is_dirty(config):
        return
    uid = config.get("child_uid")
    helper = os.fork() if uid is not None else 0
    if helper == 0:
        try:
            if uid is not None:
                _drop_privileges(uid)
            for directory in config["scratch_dirs"]:
                with contextlib.suppress(OSError):
                    _remove_entries(directory, keep=config["workdir"])
        finally:
            if uid is not None:
                os._exit(0)
    else:
        os.waitpid(helper, 0)


def _wait_for_exit(pid: int, pidfd: int | None, fds: list[int], timeout: float) -> list[int]:
    """select() on the pipes and the child's pidfd (or poll when no pidfd exists)."""
    if pidfd is not None:
        return select.select([*fds, pidfd], [], [], timeout)[0]
    ready = select.select(fds, [], [], min(timeout, 0.01))[0]
    return ready


def run_request(request: dict[str, Any], config: dict[str, Any], solve: Callable[..., Any] | None) -> dict:
    workdir = config["workdir"]
    request = {**request, "baseline_mb": config.get("baseline_mb", 0)}
    capture_r, capture_w = os.pipe()
    result_r, result_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(capture_r)
            os.close(result_r)
            _child_main(request, config, capture_w, result_w, workdir, solve)
            os._exit(0)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
            os._exit(HARNESS_FAILURE_EXIT)
    os.close(capture_w)
    os.close(result_w)
    for fd in (capture_r, result_r):
        os.set_blocking(fd, False)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None

    output = _BoundedCapture(request["stdout_bytes"])
    result_bytes = bytearray()
    open_fds = [capture_r, result_r]
    deadline = started + request["timeout"]
    killed_for: str | None = None
    exit_status: int | None = None
    usage: Any = None

    def drain(fd: int) -> None:
        nonlocal killed_for
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                open_fds.remove(fd)
                return
            if fd == capture_r:
                output.feed(chunk)
                if output.total > request["output_limit_bytes"] and killed_for is None:
                    killed_for = "output_limit"
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                    return
            else:
                result_bytes.extend(chunk)
                if len(result_bytes) > MAX_RESULT_BYTES and killed_for is None:
                    killed_for = "result_too_large"
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                    return

    while exit_status is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 and killed_for is None:
            killed_for = "timeout"
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for fd in _wait_for_exit(pid, pidfd, list(open_fds), max(remaining, 0.01)):
            if fd in open_fds:
                drain(fd)
        waited_pid, status, usage = os.wait4(pid, os.WNOHANG)
        if waited_pid == pid:
            exit_status = status
    if pidfd is not None:
        os.close(pidfd)
    child_seconds = time.monotonic() - started

    clean = _kill_leftovers(pid, config)
    _reap_zombies()
    for fd in list(open_fds):
        drain(fd)  # after the kill no writer is left, so this sees EOF or an empty pipe
    for fd in (capture_r, result_r):
        os.close(fd)
    _wipe_scratch(config)

    reply = _classify(exit_status, usage, killed_for, bytes(result_bytes), request)
    reply["stdout"] = output.text()
    reply["stdout_bytes"] = output.total
    reply["child_seconds"] = child_seconds
    if not clean:
        reply["error"] = (
            reply.get("error") or ""
        ) + "\n(warning: some processes it started could not be killed)"
    return reply


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _classify(
    exit_status: int, usage: Any, killed_for: str | None, result_bytes: bytes, request: dict[str, Any]
) -> dict[str, Any]:
    cpu_used = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    if killed_for == "timeout":
        return {
            "status": "timeout",
            "error": f"the program ran past the {request['timeout']:g} s "
            "wall-clock limit and was killed (an endless loop, a sleep, or a model too big to solve?)",
        }
    if killed_for == "output_limit":
        return {
            "status": "output_limit",
            "error": f"the program wrote more than "
            f"{request['output_limit_bytes']} bytes to stdout/stderr and was killed; do not print results",
        }
    if killed_for == "result_too_large":
        return {"status": "sandbox_error", "error": f"the result exceeded {MAX_RESULT_BYTES} bytes"}
    if result_bytes:
        try:
            reply = json.loads(result_bytes)
            if not isinstance(reply, dict) or "status" not in reply:
                raise ValueError("not a result object")
            return reply
        except ValueError:
            return {"status": "runtime_error", "error": "the program wrote into the harness's result channel"}
    code = os.waitstatus_to_exitcode(exit_status)
    if code == HARNESS_FAILURE_EXIT:
        return {"status": "sandbox_error", "error": "the sandbox failed inside the child (see the output)"}
    if code < 0:
        number = -code
        if number == signal.SIGXCPU or (
            number == signal.SIGKILL and cpu_used >= request["cpu_seconds"] - 0.05
        ):
            return {
                "status": "cpu_limit",
                "error": f"the program used its {request['cpu_seconds']} s of CPU "
                "time and was killed (an endless loop, or a model too big to solve?)",
            }
        hint = ""
        if number in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            hint = f" (likely a failed allocation under the {request['memory_mb']} MB memory limit)"
        return {"status": "killed", "error": f"the program was killed by {_signal_name(number)}{hint}"}
    return {
        "status": "runtime_error",
        "error": f"the program exited with status {code} before build_model "
        "returned (do not call exit/os._exit)",
    }


# ---------------------------------------------------------------------------------------------
# Start-up: self-test, then serve


def _self_test(config: dict[str, Any]) -> list[str]:
    """Problems with the isolation this worker was promised (empty list = all good)."""
    problems = [
        f"environment variable {name} leaked in" for name in config["hidden_env"] if name in os.environ
    ]
    if config["isolation"] != "bwrap":
        return problems
    for kind in ("net", "pid"):
        if os.stat(f"/proc/self/ns/{kind}").st_ino == config["host_namespaces"][kind]:
            problems.append(f"not in a private {kind} namespace")
    try:
        fd = os.open("/.optitrace-sandbox-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            problems.append(f"unexpected error probing the root file system: {error}")
    else:
        os.close(fd)
        os.unlink("/.optitrace-sandbox-probe")
        problems.append("the root file system is writable")
    problems += [f"{path} is visible" for path in config["hidden_paths"] if os.path.lexists(path)]
    return problems


def _probe_uid_drop(uid: int) -> bool:
    """Whether a child can switch to `uid` and still read every import directory (lazy imports)."""
    pid = os.fork()
    if pid == 0:
        try:
            _drop_privileges(uid)
            readable = all(os.access(p, os.R_OK | os.X_OK) for p in sys.path if os.path.isdir(p))
            os._exit(0 if os.getuid() == uid and readable else 1)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _address_space_mb() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


def _warm_up() -> None:
    """Build and compile a tiny LP -- never solve it -- so Pyomo's lazily filled dispatch tables
    and caches exist before the fork instead of being rebuilt in every child (measured: a few ms
    per child on a 3-variable LP). No HiGHS object is created, so no solver thread can start."""
    with contextlib.suppress(Exception):
        import pyomo.environ as pyo
        from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

        model = pyo.ConcreteModel()
        model.x = pyo.Var(range(3), domain=pyo.NonNegativeReals)
        model.y = pyo.Var(domain=pyo.Binary)
        model.cap = pyo.Constraint(expr=sum(model.x[i] for i in range(3)) + model.y <= 4)
        model.link = pyo.Constraint(range(3), rule=lambda m, i: (0, m.x[i] - 2 * m.y, 5))
        model.obj = pyo.Objective(expr=model.x[0] + 2 * model.x[1] - model.y, sense=pyo.maximize)
        LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)


def _load_solver(entry: str) -> Callable[..., Any] | None:
    module_name, _, attribute = entry.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute, None)


def main() -> None:
    # The channel moves off fds 0/1 so that nothing a library prints can corrupt the protocol.
    channel_in, channel_out = os.dup(0), os.dup(1)
    # The configuration comes over the channel, not argv: /proc/PID/cmdline is readable by the
    # programs, and it names the parent's environment variables.
    config = read_message(channel_in)
    if config is None:
        return
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    if config.get("die_with_parent"):
        _die_with_parent()

    for module in WARM_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    _warm_up()
    solve = _load_solver(config["solver"])
    config["baseline_mb"] = _address_space_mb()
    # Park everything imported so far outside the collector: a collection in a child would
    # otherwise write to every object header and copy most of the worker's pages (copy-on-write).
    gc.collect()
    gc.freeze()
    problems = _self_test(config)
    if config.get("child_uid") is not None and not _probe_uid_drop(config["child_uid"]):
        problems.append(f"cannot switch to uid {config['child_uid']} and still read the Python libraries")
    os.makedirs(config["workdir"], exist_ok=True)
    # sticky and world-writable: the child uid can write, the worker can still list it
    os.chmod(config["workdir"], 0o1777)
    write_message(
        channel_out,
        {
            "ready": not problems,
            "problems": problems,
            "pid": os.getpid(),
            "solver_available": solve is not None,
        },
    )
    if problems:
        return
    while True:
        request = read_message(channel_in)
        if request is None:
            return  # the parent closed the channel
        # The acknowledgement tells the parent that a later EOF means "the program killed me",
        # not "I was already dead": only in the second case is resending the request safe.
        write_message(channel_out, {"accepted": True})
        try:
            reply = run_request(request, config, solve)
        except Exception as error:  # a worker bug: report it rather than die silently
            reply = {
                "status": "sandbox_error",
                "error": f"sandbox worker failed: {error!r}\n" + traceback.format_exc(),
            }
        write_message(channel_out, reply)


if __name__ == "__main__":
    main()
