"""Process liveness, which the job framework and the stack launcher rely on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from services.runtime.processes import _zombie, pid_alive


def test_running_and_exited_processes() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)


def test_an_exited_process_not_yet_reaped_is_recognised_as_a_zombie() -> None:
    """Where init reaps orphans slowly, a stopped service lingers as a zombie that
    `kill(pid, 0)` still finds; it must count as dead (or `make down` waits for nothing)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not _zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _zombie(child.pid)  # exited, and nobody has waited for it yet
    assert not _zombie(os.getpid())
    child.wait()
