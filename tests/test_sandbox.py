"""The sandbox: valid programs solve, broken ones explain themselves, hostile ones are contained.

Every hostile program in tests/hostile_programs/ runs against a real bwrap worker; each test then
checks the host (no files created, no connection received, no process left) and that the same
worker still solves a valid program.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from solvers.result import SolveStatus
from solvers.sandbox import (
    PROJECT_ROOT,
    Sandbox,
    SandboxResult,
    SandboxStatus,
    SandboxUnavailableError,
)

HOSTILE = Path(__file__).parent / "hostile_programs"
BAKERY = (PROJECT_ROOT / "examples" / "bakery_model.py").read_text()
SECRET_ENV = "OPTITRACE_TEST_SANDBOX_SECRET"
SECRET_VALUE = "env-secret-" + secrets.token_hex(8)
# small limits keep the hostile runs cheap on a shared 2-core machine
HOSTILE_LIMITS = {"timeout": 3.0, "memory_mb": 512, "cpu_seconds": 1}


def hostile(name: str) -> str:
    return (HOSTILE / f"{name}.py").read_text()


def assert_still_serves(sandbox: Sandbox) -> None:
    result = sandbox.run(BAKERY, timeout=20)
    assert result.status == SandboxStatus.OK, result.error
    assert result.solve is not None and result.solve.objective == pytest.approx(120)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def secret_env() -> Iterator[None]:
    """A secret in the parent's environment while the workers start (and restart)."""
    os.environ[SECRET_ENV] = SECRET_VALUE
    yield
    del os.environ[SECRET_ENV]


def bwrap_works() -> bool:
    """Whether this machine can run bwrap at all (a container without namespaces cannot)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--proc", "/proc", "true"]
    if os.geteuid() != 0:
        probe.insert(1, "--unshare-user")
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sandbox(secret_env: None) -> Iterator[Sandbox]:
    if not bwrap_works():
        pytest.skip("bwrap is missing or cannot create namespaces on this machine")
    # from here on a failed self-test is a real failure, not a reason to skip
    box = Sandbox(workers=2, isolation="bwrap")
    box.start()
    yield box
    box.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def fallback(secret_env: None) -> Iterator[tuple[Sandbox, list[str]]]:
    """A sandbox whose bwrap does not exist: it must warn and fall back to rlimit-only."""
    records = _Records()
    logger = logging.getLogger("solvers.sandbox")
    logger.addHandler(records)
    try:
        box = Sandbox(isolation="auto", bwrap_path="/nonexistent/bwrap")
        box.start()
        yield box, records.messages
        box.close()
    finally:
        logger.removeHandler(records)


# ---------------------------------------------------------------------------------------------
# Valid programs and the contract


def test_bakery_is_solved_to_optimality(sandbox: Sandbox) -> None:
    result = sandbox.run(BAKERY)
    assert result.status == SandboxStatus.OK, result.error
    assert result.isolation == "bwrap"
    assert result.solve is not None and result.solve.status == SolveStatus.OPTIMAL
    assert result.solve.objective == pytest.approx(120)
    assert result.solve.values["bread"] == pytest.approx(40)
    assert result.solve.values["cake"] == pytest.approx(0)
    assert result.model is not None
    assert (result.model.variables, result.model.constraints, result.model.objectives) == (2, 1, 1)
    assert result.model.components == {
        "bread": "Var",
        "cake": "Var",
        "oven_hours": "Constraint",
        "profit": "Objective",
    }


def test_data_reaches_build_model(sandbox: Sandbox) -> None:
    # with bread capped, cake takes the remaining oven hours: 10 bread + 15 cake = 30 + 75
    result = sandbox.run(BAKERY, data={"oven_hours": 40, "max_bread": 10})
    assert result.status == SandboxStatus.OK, result.error
    assert result.solve is not None and result.solve.objective == pytest.approx(105)


def test_printed_output_is_returned(sandbox: Sandbox) -> None:
    result = sandbox.run("print('building the bakery')\n" + BAKERY)
    assert result.status == SandboxStatus.OK, result.error
    assert result.stdout.strip() == "building the bakery"


def test_syntax_error_names_the_line(sandbox: Sandbox) -> None:
    source = "import pyomo.environ as pyo\n\ndef build_model(:\n    return pyo.ConcreteModel()\n"
    result = sandbox.run(source)
    assert result.status == SandboxStatus.SYNTAX_ERROR
    assert 'File "program.py", line 3' in result.error
    assert "def build_model(:" in result.error
    assert result.solve is None


def test_runtime_error_traceback_points_into_the_program(sandbox: Sandbox) -> None:
    source = (
        "import pyomo.environ as pyo\n"
        "\n"
        "def capacity(data):\n"
        "    return data['ovens'] / data['hours']\n"
        "\n"
        "def build_model(data):\n"
        "    model = pyo.ConcreteModel()\n"
        "    model.x = pyo.Var(bounds=(0, capacity(data)))\n"
        "    return model\n"
    )
    result = sandbox.run(source, data={"ovens": 3, "hours": 0})
    assert result.status == SandboxStatus.RUNTIME_ERROR
    assert 'File "program.py", line 8, in build_model' in result.error
    assert 'File "program.py", line 4, in capacity' in result.error
    assert "return data['ovens'] / data['hours']" in result.error
    assert "ZeroDivisionError: division by zero" in result.error
    assert "sandbox_worker.py" not in result.error  # the harness's own frames are left out


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("x = 1\n", None, "defines no build_model"),
        ("build_model = 3\n", None, "not a function"),
        ("def build_model():\n    return 42\n", None, "returned int, expected a pyomo ConcreteModel"),
        (
            "import pyomo.environ as pyo\ndef build_model():\n    return pyo.AbstractModel()\n",
            None,
            "returned AbstractModel",
        ),
        ("def build_model(data):\n    return None\n", None, "no data was given"),
        ("def build_model():\n    return None\n", {"a": 1}, "cannot take it"),
    ],
)
def test_contract_errors(sandbox: Sandbox, source: str, data: dict | None, expected: str) -> None:
    result = sandbox.run(source, data=data)
    assert result.status == SandboxStatus.CONTRACT_ERROR
    assert expected in result.error


def test_exit_is_a_runtime_error(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\nos._exit(3)\n")
    assert result.status == SandboxStatus.RUNTIME_ERROR
    assert "status 3" in result.error


def test_concurrent_runs_from_threads(sandbox: Sandbox) -> None:
    hours = [40, 50, 60, 44, 46, 70]
    with ThreadPoolExecutor(len(hours)) as pool:
        results = list(pool.map(lambda h: sandbox.run(BAKERY, data={"oven_hours": h}), hours))
    for h, result in zip(hours, results, strict=True):
        assert result.status == SandboxStatus.OK, result.error
        assert result.solve is not None and result.solve.objective == pytest.approx(3 * h)


def test_worker_killed_between_runs_is_restarted(sandbox: Sandbox) -> None:
    victims = [info.pid for info in sandbox.worker_info()]
    for pid in victims:
        # bwrap's inner processes run in their own session, so kill the whole tree and wait
        tree = [pid, *descendants(pid)]
        for member in tree:
            os.kill(member, 9)
        while any(alive(member) for member in tree[1:]):
            time.sleep(0.01)
    for _ in victims:  # each slot restarts on its next use
        assert_still_serves(sandbox)
    assert all(info.pid not in victims for info in sandbox.worker_info())


# ---------------------------------------------------------------------------------------------
# The hostile corpus under bwrap


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        targets = [["1.1.1.1", 80], ["127.0.0.1", port]]
        result = sandbox.run(hostile("network_access"), data={"targets": targets}, **HOSTILE_LIMITS)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's listener
    assert result.status == SandboxStatus.OK, result.error
    assert "CONNECTED" not in result.stdout
    assert f"BLOCKED 127.0.0.1:{port}" in result.stdout and "BLOCKED 1.1.1.1:80" in result.stdout
    assert_still_serves(sandbox)


def test_secret_files_are_invisible(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("file-secret-" + secrets.token_hex(8))
    home_files = [p for p in (Path.home() / ".bashrc", Path.home() / ".profile") if p.is_file()]
    paths = [str(secret), "/etc/shadow", *map(str, home_files)]
    result = sandbox.run(hostile("read_secrets"), data={"paths": paths}, **HOSTILE_LIMITS)
    assert result.status == SandboxStatus.OK, result.error
    for path in paths:
        assert f"DENIED {path}" in result.stdout
    assert "READ" not in result.stdout
    assert secret.read_text() not in result.stdout
    assert_still_serves(sandbox)


def test_writes_outside_scratch_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    tag = secrets.token_hex(6)
    targets = [
        PROJECT_ROOT / f"pwned-{tag}",
        Path(f"/usr/pwned-{tag}"),
        Path(f"/etc/pwned-{tag}"),
        tmp_path / f"pwned-{tag}",
    ]
    try:
        result = sandbox.run(
            hostile("write_outside_tmp"), data={"paths": list(map(str, targets))}, **HOSTILE_LIMITS
        )
        assert [t for t in targets if t.exists()] == []
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
    assert result.status == SandboxStatus.OK, result.error
    assert "WROTE" not in result.stdout
    assert_still_serves(sandbox)


def test_shell_commands_cannot_touch_the_host(sandbox: Sandbox, tmp_path: Path) -> None:
    tag = secrets.token_hex(6)
    targets = [PROJECT_ROOT / f"touched-{tag}", tmp_path / f"touched-{tag}"]
    try:
        result = sandbox.run(
            hostile("shell_escape"), data={"paths": list(map(str, targets))}, **HOSTILE_LIMITS
        )
        assert [t for t in targets if t.exists()] == []
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
    assert result.status == SandboxStatus.OK, result.error
    assert "Read-only file system" in result.stdout or "No such file" in result.stdout
    assert_still_serves(sandbox)


def test_environment_secrets_do_not_leak(sandbox: Sandbox) -> None:
    result = sandbox.run(hostile("env_secrets"), **HOSTILE_LIMITS)
    assert result.status == SandboxStatus.OK, result.error
    assert "OWN {" in result.stdout  # it did dump its environment...
    assert SECRET_VALUE not in result.stdout and SECRET_ENV not in result.stdout  # ...without ours
    assert "DENIED /proc/1/environ" in result.stdout
    assert_still_serves(sandbox)


def test_fork_bomb_is_contained_and_reaped(sandbox: Sandbox) -> None:
    result = sandbox.run(hostile("fork_bomb"), **HOSTILE_LIMITS)
    assert result.status in (SandboxStatus.CPU_LIMIT, SandboxStatus.TIMEOUT), result.error
    for info in sandbox.worker_info():
        assert info.child_uid is not None
        assert processes_of(info.child_uid) == []
    assert_still_serves(sandbox)


def test_memory_bomb_hits_the_memory_limit(sandbox: Sandbox) -> None:
    result = sandbox.run(hostile("memory_bomb"), **HOSTILE_LIMITS)
    assert result.status == SandboxStatus.MEMORY_LIMIT
    assert 'File "program.py", line 7, in build_model' in result.error
    assert_still_serves(sandbox)


def test_busy_loop_hits_the_cpu_limit(sandbox: Sandbox) -> None:
    # a generous wall clock: on a loaded machine 1 s of CPU can take several seconds to use up
    result = sandbox.run(hostile("busy_loop"), timeout=15, memory_mb=512, cpu_seconds=1)
    assert result.status == SandboxStatus.CPU_LIMIT
    assert "1 s of CPU" in result.error
    assert_still_serves(sandbox)


def test_sleeping_forever_hits_the_wall_clock(sandbox: Sandbox) -> None:
    result = sandbox.run(hostile("sleep_forever"), timeout=1.0, memory_mb=512, cpu_seconds=1)
    assert result.status == SandboxStatus.TIMEOUT
    assert 1.0 <= result.seconds < 4.0
    assert_still_serves(sandbox)


def test_huge_output_is_cut_off(sandbox: Sandbox) -> None:
    result = sandbox.run(hostile("huge_output"), **HOSTILE_LIMITS)
    assert result.status == SandboxStatus.OUTPUT_LIMIT
    assert len(result.stdout) < 25_000
    assert "bytes of output omitted" in result.stdout
    assert_still_serves(sandbox)


def test_killing_the_parent_is_not_permitted(sandbox: Sandbox) -> None:
    pids = [info.pid for info in sandbox.worker_info()]
    result = sandbox.run(hostile("kill_parent"), **HOSTILE_LIMITS)
    assert result.status == SandboxStatus.RUNTIME_ERROR
    assert "PermissionError" in result.error and "line 10, in build_model" in result.error
    assert [info.pid for info in sandbox.worker_info()] == pids  # no worker had to be restarted
    assert_still_serves(sandbox)


# ---------------------------------------------------------------------------------------------
# The rlimit-only fallback


def test_fallback_warns_and_flags_every_result(fallback: tuple[Sandbox, list[str]]) -> None:
    box, warnings = fallback
    assert box.isolation == "rlimit-only"
    assert any("SANDBOX DEGRADED" in message and "bwrap" in message for message in warnings)
    result = box.run(BAKERY)
    assert result.status == SandboxStatus.OK, result.error
    assert result.isolation == "rlimit-only"
    assert result.solve is not None and result.solve.objective == pytest.approx(120)


def test_fallback_still_enforces_limits(fallback: tuple[Sandbox, list[str]]) -> None:
    box, _ = fallback
    assert box.run(hostile("memory_bomb"), **HOSTILE_LIMITS).status == SandboxStatus.MEMORY_LIMIT
    assert box.run(hostile("busy_loop"), timeout=15, cpu_seconds=1).status == SandboxStatus.CPU_LIMIT
    assert box.run(hostile("sleep_forever"), timeout=1.0).status == SandboxStatus.TIMEOUT
    assert box.run(hostile("huge_output"), **HOSTILE_LIMITS).status == SandboxStatus.OUTPUT_LIMIT
    env = box.run(hostile("env_secrets"), **HOSTILE_LIMITS)
    assert env.status == SandboxStatus.OK and SECRET_VALUE not in env.stdout
    assert_still_serves(box)


def test_fallback_survives_a_killed_worker(fallback: tuple[Sandbox, list[str]]) -> None:
    box, _ = fallback
    result: SandboxResult = box.run(hostile("kill_parent"), **HOSTILE_LIMITS)
    # without a uid of its own the child may kill the worker; then the next run restarts it
    assert result.status in (SandboxStatus.SANDBOX_ERROR, SandboxStatus.RUNTIME_ERROR), result.error
    assert_still_serves(box)


def test_isolation_can_be_forced_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTITRACE_SANDBOX_ISOLATION", "rlimit-only")
    assert Sandbox().requested_isolation == "rlimit-only"
    with pytest.raises(SandboxUnavailableError, match="bwrap is not installed"):
        Sandbox(isolation="bwrap", bwrap_path="/nonexistent/bwrap").start()


def test_run_rejects_data_that_is_not_json(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError):
        sandbox.run(BAKERY, data={"when": threading.Event()})


# ---------------------------------------------------------------------------------------------
# The command line


def test_run_code_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["run-code", str(PROJECT_ROOT / "examples" / "bakery_model.py"), "--json"])
    assert done.exit_code == 0, done.output
    result = SandboxResult.model_validate_json(done.stdout)
    assert result.solve is not None and result.solve.objective == pytest.approx(120)

    broken = tmp_path / "broken.py"
    broken.write_text("def build_model():\n    return 42\n")
    done = runner.invoke(app, ["run-code", str(broken), "--timeout", "5"])
    assert done.exit_code == 1
    assert "contract_error" in done.output
