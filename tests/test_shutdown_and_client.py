"""Graceful shutdown (SIGTERM drains in-flight calls) and the client's retries."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from deploy.localstack.ports import free_port
from deploy.localstack.stack import Stack
from services.client import client_for
from services.client.clients import ServiceClient
from tests.support import harness_service
from tests.support.processes import service_process


def test_sigterm_finishes_in_flight_calls_and_refuses_new_ones(stack: Stack, log_dir: Path) -> None:
    service = service_process(stack, ["tests.support.harness_service"], log_dir, "drain").start()
    channel = service.channel()
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(harness_service.call, channel, "Sleep", 2000)
        time.sleep(0.5)
        service.signal(signal.SIGTERM)
        time.sleep(0.3)
        # A new call after SIGTERM is refused (the server no longer accepts).
        with pytest.raises(grpc.RpcError) as info:
            harness_service.call(service.channel(), "Sleep", 1, timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # The call that was running completes normally.
        assert in_flight.result(timeout=10).id == "slept"
    assert service.proc is not None
    assert service.proc.wait(10) == 0
    log = service.log()
    assert log.index('"draining"') < log.index('"stopped"')


def test_sigterm_of_a_product_service_exits_cleanly(stack: Stack, log_dir: Path) -> None:
    service = service_process(stack, ["services", "curator"], log_dir, "curator").start()
    started = time.monotonic()
    assert service.stop() == 0
    assert time.monotonic() - started < 5
    assert '"stopped"' in service.log()


def test_client_retries_while_a_service_is_starting(stack: Stack, log_dir: Path) -> None:
    """Calls made before the service listens succeed once it does (bounded retries
    with backoff on UNAVAILABLE), instead of failing at the first refusal."""
    port = free_port()
    service = service_process(stack, ["services", "trainer"], log_dir, "trainer", grpc_port=port)
    client = client_for("trainer", f"127.0.0.1:{port}", timeout_s=20)
    starter = threading.Timer(0.3, lambda: service.start(wait=False))
    starter.start()
    try:
        assert client.jobs.list() == []  # issued before the port was open
    finally:
        starter.join()
        service.stop()
        client.close()


def test_client_gives_up_with_unavailable_when_nothing_listens() -> None:
    client = ServiceClient(f"127.0.0.1:{free_port()}", timeout_s=30)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        client.jobs.list()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Bounded: 5 attempts with backoffs of about 0.25+0.5+1+2 s, far inside the deadline.
    assert 2.5 < time.monotonic() - started < 8
    assert client.health(timeout_s=1) == "UNREACHABLE"
    client.close()
