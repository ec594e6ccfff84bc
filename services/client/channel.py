"""gRPC channels with the project's defaults: bounded retries on UNAVAILABLE with
exponential backoff (gRPC's own retry machinery), keepalive, large messages."""

from __future__ import annotations

import json

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Applies to every method ("name": [{}]). Server-streaming calls are retried only
# until their first response arrives, which is what gRPC guarantees to be safe.
RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def open_channel(address: str, *, retries: bool = True) -> grpc.Channel:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.enable_retries", 1 if retries else 0),
    ]
    if retries:
        options.append(("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)))
    return grpc.insecure_channel(address, options=options)
