"""Configuration is validated once, and a service that cannot start says why in
one line (no traceback) and exits at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.localstack.ports import free_port
from deploy.localstack.stack import REPO_ROOT, Stack, StackError
from services.client.addresses import address_from_env, local_ports
from services.runtime.config import ConfigError, Setting, load_config

BASE = {"PSS_S3_ENDPOINT": "127.0.0.1:9000", "PSS_S3_ACCESS_KEY": "k", "PSS_S3_SECRET_KEY": "s"}


def test_defaults_and_types() -> None:
    cfg = load_config(environ=BASE)
    assert cfg["GRPC_PORT"] == 50051 and cfg["S3_SECURE"] is False and cfg["SHUTDOWN_GRACE_S"] == 20.0
    cfg = load_config(environ={**BASE, "PSS_S3_SECURE": "yes", "PSS_GRPC_PORT": "7000"})
    assert cfg["S3_SECURE"] is True and cfg["GRPC_PORT"] == 7000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PSS_S3_ENDPOINT": None}, "PSS_S3_ENDPOINT is not set (object store host:port"),
        ({"PSS_GRPC_PORT": "70000"}, "PSS_GRPC_PORT='70000' is invalid: expected a TCP port"),
        ({"PSS_S3_ENDPOINT": "minio"}, "PSS_S3_ENDPOINT='minio' is invalid: expected host:port"),
        ({"PSS_S3_SECURE": "maybe"}, "PSS_S3_SECURE='maybe' is invalid: expected true/false"),
        ({"PSS_LOG_LEVEL": "loud"}, "PSS_LOG_LEVEL='loud' is invalid: expected one of debug"),
        ({"PSS_SHUTDOWN_GRACE_S": "-1"}, "expected a number >= 0"),
        ({"PSS_JOB_WORKERS": "0"}, "expected an integer > 0"),
    ],
)
def test_wrong_or_missing_setting_names_variable_and_expectation(env: dict, message: str) -> None:
    environ = {**BASE, **env}
    environ = {k: v for k, v in environ.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert message in str(info.value)


def test_secret_values_never_appear_in_errors_or_descriptions() -> None:
    extra = (Setting("TOKEN", "positive_int", None, secret=True),)
    with pytest.raises(ConfigError) as info:
        load_config(extra, environ={**BASE, "PSS_TOKEN": "hunter2"})
    assert "hunter2" not in str(info.value) and "PSS_TOKEN=***" in str(info.value)
    described = load_config(environ=BASE).describe()
    assert described["PSS_S3_SECRET_KEY"] == "***"


def run_service(env: dict[str, str], timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PSS_")}
    full.update(env)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "services", "crawler"],
        env=full,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - started


def assert_one_clear_line(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("prettyspace-crawler: ")
    assert "Traceback" not in lines[0]
    for needle in needles:
        assert needle in lines[0]


def test_service_with_bad_setting_exits_2_with_one_line() -> None:
    done, _ = run_service({**BASE, "PSS_GRPC_PORT": "http"})
    assert_one_clear_line(done, 2, "configuration error", "PSS_GRPC_PORT='http'")


def test_service_with_unreachable_store_exits_quickly_with_one_line() -> None:
    done, took = run_service({**BASE, "PSS_S3_ENDPOINT": f"127.0.0.1:{free_port()}", "PSS_GRPC_PORT": str(free_port())})
    assert_one_clear_line(done, 1, "cannot start", "unreachable (connection refused)")
    assert took < 15


def test_service_with_wrong_credentials_says_which_settings(stack: Stack) -> None:
    env = {**stack.env(), "PSS_S3_SECRET_KEY": "wrong", "PSS_GRPC_PORT": str(free_port())}
    done, _ = run_service(env)
    assert_one_clear_line(done, 1, "refused access", "PSS_S3_ACCESS_KEY / PSS_S3_SECRET_KEY")


@pytest.mark.parametrize("which", ["GRPC_PORT", "METRICS_PORT"])
def test_service_on_a_port_in_use_exits_with_one_line(stack: Stack, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"PSS_GRPC_PORT": str(free_port()), "PSS_METRICS_PORT": str(free_port())}
        ports[f"PSS_{which}"] = str(port)
        done, _ = run_service({**stack.env(), **ports})
    assert_one_clear_line(done, 1, "cannot start", f"PSS_{which}", str(port))


def test_unknown_service_name_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services", "telescope"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "unknown service 'telescope'" in done.stderr


def test_local_port_layout_moves_with_its_base() -> None:
    ports = local_ports({"PSS_LOCAL_PORT_BASE": "18000"})
    assert ports["s3"] == 18006 and ports["triton"]["grpc"] == 18021
    assert ports["services"]["crawler"] == (18030, 18031) and ports["services"]["gateway"] == (18038, 18039)
    assert address_from_env("cutouts", {"PSS_LOCAL_PORT_BASE": "18000"}) == "127.0.0.1:18032"
    assert address_from_env("cutouts", {"PSS_CUTOUTS_ADDR": "cutouts:50051"}) == "cutouts:50051"
    with pytest.raises(ValueError, match="PSS_LOCAL_PORT_BASE='80'"):
        local_ports({"PSS_LOCAL_PORT_BASE": "80"})


def test_stack_start_with_a_port_in_use_names_the_component(tmp_path: Path) -> None:
    stack = Stack.ephemeral(tmp_path / "st", services=("crawler",), with_triton=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stack.layout.services["crawler"][0]))
        busy.listen()
        with pytest.raises(StackError) as info:
            stack.start(timeout_s=60)
    message = str(info.value)
    assert "crawler exited during start-up" in message
    assert "cannot listen for gRPC" in message and "PSS_GRPC_PORT" in message
    assert stack.pids == {}  # what had started was stopped again


def test_bootstrap_buckets_is_idempotent_and_fails_clearly(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSS_")}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "services", "bootstrap-buckets"],
            env={**env, **stack.env()},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "buckets ready: archive, crawl-state, cutouts, curation, datasets, models, renders, jobs" in done.stdout
        assert "(created: none)" in done.stdout  # the stack made them already
    done = subprocess.run(
        [sys.executable, "-m", "services", "bootstrap-buckets"],
        env={**env, **stack.env(), "PSS_S3_ENDPOINT": f"127.0.0.1:{free_port()}"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("bootstrap-buckets: object store at") and "Traceback" not in done.stderr
