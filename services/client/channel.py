"""gRPC channels with the project's defaults: bounded retries on UNAVAILABLE with
exponential backoff, keepalive, large messages.

Unary calls are retried by an interceptor with a deterministic backoff (0.25 s,
0.5 s, 1 s, 2 s, ±20 %), always within the call's deadline, so a service that is
starting or restarting is waited for a few seconds, not failed at once. gRPC's own
retry policy (whose backoff is random down to zero) is kept for server-streaming
calls, which it retries only until their first message arrives.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.api import common_pb2, crawler_pb2, curator_pb2, cutouts_pb2, gateway_pb2, trainer_pb2

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRY_ATTEMPTS = 5
RETRY_INITIAL_S = 0.25
RETRY_MAX_S = 2.0


def _streaming_methods() -> list[dict[str, str]]:
    names = []
    for module in (common_pb2, crawler_pb2, cutouts_pb2, curator_pb2, trainer_pb2, gateway_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names += [{"service": service.full_name, "method": m.name} for m in service.methods if m.server_streaming]
    return names


STREAM_RETRY_CONFIG = {
    "methodConfig": [
        {
            "name": _streaming_methods(),
            "retryPolicy": {
                "maxAttempts": RETRY_ATTEMPTS,
                "initialBackoff": f"{RETRY_INITIAL_S}s",
                "maxBackoff": f"{RETRY_MAX_S}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class RetryUnavailable(grpc.UnaryUnaryClientInterceptor):
    """Retry unary calls that fail with UNAVAILABLE, within the call's deadline."""

    def __init__(self, attempts: int = RETRY_ATTEMPTS, initial_s: float = RETRY_INITIAL_S) -> None:
        self.attempts = attempts
        self.initial_s = initial_s

    def intercept_unary_unary(
        self, continuation: Callable[[grpc.ClientCallDetails, Any], Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        deadline = time.monotonic() + details.timeout if details.timeout else None
        backoff = self.initial_s
        for attempt in range(1, self.attempts + 1):
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            call = continuation(
                _CallDetails(
                    details.method,
                    timeout,
                    details.metadata,
                    details.credentials,
                    details.wait_for_ready,
                    getattr(details, "compression", None),
                ),
                request,
            )
            if call.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.attempts:
                return call
            pause = backoff * random.uniform(0.8, 1.2)
            if deadline is not None and time.monotonic() + pause >= deadline:
                return call
            time.sleep(pause)
            backoff = min(backoff * 2, RETRY_MAX_S)
        raise AssertionError("unreachable")


def open_channel(address: str, *, retries: bool = True) -> grpc.Channel:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.enable_retries", 1 if retries else 0),
    ]
    if retries:
        options.append(("grpc.service_config", json.dumps(STREAM_RETRY_CONFIG)))
    channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, RetryUnavailable()) if retries else channel
