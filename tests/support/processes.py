"""Start a service process (a product service or the runtime harness) against a
test stack's object store, on free ports, and stop or kill it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.localstack.ports import free_port
from deploy.localstack.stack import REPO_ROOT, Stack
from services.client.channel import open_channel
from services.client.clients import ServiceClient


@dataclass
class ServiceProcess:
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    grpc_port: int
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, wait: bool = True, timeout_s: float = 30.0) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_serving(timeout_s)
        return self

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        client = ServiceClient(self.address, retries=False)
        deadline = time.monotonic() + timeout_s
        try:
            while client.health(timeout_s=1.0) != "SERVING":
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service not serving after {timeout_s} s:\n{self.log()}")
                time.sleep(0.1)
        finally:
            client.close()

    def channel(self):
        return open_channel(self.address)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_process(
    stack: Stack,
    module_args: list[str],
    log_dir: Path,
    name: str,
    grpc_port: int | None = None,
    **settings: str,
) -> ServiceProcess:
    """``python -m <module_args>`` with the stack's PSS_* settings and its own ports."""
    grpc_port = grpc_port or free_port()
    metrics_port = free_port()
    env = stack.process_env(
        grpc_port,
        metrics_port,
        PSS_JOB_LEASE_S="3",
        PSS_JOB_SCAN_S="0.5",
        PSS_SHUTDOWN_GRACE_S="5",
        **{f"PSS_{k.upper()}": v for k, v in settings.items()},
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    return ServiceProcess([sys.executable, "-m", *module_args], env, log_dir / f"{name}.log", grpc_port, metrics_port)
