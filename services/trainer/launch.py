"""Where a training run's process runs: a local subprocess (laptop, CI, the demo) or a Kubernetes
Job on a GPU node (services/trainer/k8s_job.py). Both run the same entry point,
``python -m services.trainer.run --run-id ID``, which resumes from the run's last checkpoint, so
starting a run twice, or again after a crash, continues it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    """state: "running", "succeeded" or "failed"; message: why, for a person."""

    state: str
    message: str = ""


class Launch(Protocol):
    def poll(self) -> Outcome: ...

    def stop(self, cancel: bool) -> None:
        """cancel: the run is abandoned (Kubernetes deletes its Job); otherwise this process is
        going away and the run is resumed later (a Kubernetes Job keeps running meanwhile)."""


PARENT_ENV = "PSS_TRAIN_PARENT_PID"


def run_command(run_id: str) -> list[str]:
    return [sys.executable, "-m", "services.trainer.run", "--run-id", run_id]


class LocalLaunch:
    """The run as a child process; its output goes to ``log_dir/RUN.log``."""

    def __init__(self, run_id: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{run_id}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in poll()/stop()
        self.process = subprocess.Popen(
            run_command(run_id),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # The run asks for SIGTERM when this process dies (run.die_with_parent): a killed service
            # never leaves a run training that another service process then starts again.
            env={**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())},
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,  # a Ctrl-C of the service's terminal is the service's to handle
        )

    def _tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(line.rstrip() for line in deque(f, lines))
        except OSError:
            return ""

    def poll(self) -> Outcome:
        code = self.process.poll()
        if code is None:
            return Outcome("running")
        self._log.close()
        if code == 0:
            return Outcome("succeeded")
        return Outcome("failed", f"the training process exited with status {code}; last lines:\n{self._tail()}")

    def stop(self, cancel: bool) -> None:
        """SIGTERM: the run saves a checkpoint and exits; SIGKILL after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
