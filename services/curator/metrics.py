"""Curator metrics (served on the service's /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PAIRS = Counter(
    "prettyspace_curator_pairs_total",
    "Pairs evaluated, by survey, verdict (usable, rejected) and primary reason code "
    "(accepted, missing-data, grey, survey-unavailable, survey-colour, too-small, low-resolution, misalignment, ...).",
    ["survey", "verdict", "reason"],
)
OBSERVATION_SECONDS = Histogram(
    "prettyspace_curator_observation_seconds",
    "Time to evaluate one observation (all its survey pairs), in a worker.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
THROUGHPUT = Gauge("prettyspace_curator_pairs_per_second", "Pairs evaluated per second by the last evaluation job.")
DATASETS = Counter(
    "prettyspace_curator_dataset_builds_total", "Dataset builds, by outcome (new, unchanged).", ["outcome"]
)
