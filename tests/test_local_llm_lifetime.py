"""An on-demand server started from a worker thread dies with the process that started it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from agent.local_llm.server import spawn_tied_to_process

    def start():
        child = spawn_tied_to_process([sys.executable, "-c", "import time; time.sleep(300)"])
        print(child.pid, flush=True)

    worker = threading.Thread(target=start)  # like eval/train: not the main thread
    worker.start()
    worker.join()                            # the thread that asked is gone; the child must not care
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead for our purpose
        return stat.read().split()[2] != "Z"


def test_child_spawned_from_a_worker_thread_dies_when_the_process_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert _alive(child_pid), "the child should outlive the thread that spawned it"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child_pid), "the child outlived its killed parent"
    finally:
        parent.kill()
