"""Cutout metrics (served on the service's /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPSTREAM = Counter(
    "prettyspace_cutouts_upstream_requests_total",
    "Requests to hips2fits, by outcome (ok, retry, error).",
    ["outcome"],
)
UPSTREAM_BYTES = Counter("prettyspace_cutouts_upstream_bytes_total", "Bytes received from hips2fits.")
UPSTREAM_SECONDS = Histogram(
    "prettyspace_cutouts_upstream_request_seconds",
    "Time of one hips2fits request.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CACHE = Counter(
    "prettyspace_cutouts_cache_total", "Cutout lookups, by survey and result (hit, miss).", ["survey", "result"]
)
LATENCY = Histogram(
    "prettyspace_cutouts_fetch_seconds",
    "Time to fetch one cutout upstream (all its tiles), by survey.",
    ["survey"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UNAVAILABLE = Counter(
    "prettyspace_cutouts_unavailable_total",
    "Cutouts found unavailable (no data there), by survey and reason.",
    ["survey", "reason"],
)


def on_upstream(outcome: str, seconds: float, size: int) -> None:
    """The upstream client's callback."""
    UPSTREAM.labels(outcome).inc()
    if outcome == "ok":
        UPSTREAM_SECONDS.observe(seconds)
        UPSTREAM_BYTES.inc(size)
