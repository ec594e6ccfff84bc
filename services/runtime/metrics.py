"""Prometheus metrics shared by every service, and the /metrics HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

# The conventional names of go-grpc-prometheus, so existing dashboards work.
GRPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC (to the last message for streams).",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOBS_FINISHED = Counter(
    "prettyspace_jobs_finished_total",
    "Jobs that reached a terminal state, by kind and state.",
    ["kind", "state"],
)
JOBS_RESUMED = Counter(
    "prettyspace_jobs_resumed_total",
    "Jobs picked up again after their previous owner stopped or died.",
    ["kind"],
)


def start_metrics_server(host: str, port: int) -> None:
    """Serve /metrics on host:port (0 disables it). Raises OSError when the port is taken."""
    if port:
        start_http_server(port, addr=host)
