"""Crawler metrics (served on the service's /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "prettyspace_crawler_requests_total",
    "HTTP requests made by the crawler, by source, what was fetched and the status (0: no answer).",
    ["source", "kind", "status"],
)
BYTES = Counter(
    "prettyspace_crawler_bytes_total",
    "Response body bytes received, by source and what was fetched.",
    ["source", "kind"],
)
PAGES = Counter(
    "prettyspace_crawler_pages_total",
    "Pages fetched (listing, detail, json, feed), including 304 answers.",
    ["source", "kind"],
)
IMAGES = Counter(
    "prettyspace_crawler_images_total",
    "Image files downloaded (200 with a body) and stored, by size.",
    ["source", "size"],
)
ERRORS = Counter(
    "prettyspace_crawler_errors_total",
    "Errors recorded during crawls, by kind (http_404, http_5xx, timeout, robots, decode, parse...).",
    ["source", "kind"],
)
ITEMS = Counter(
    "prettyspace_crawler_items_total",
    "Items processed, by outcome (new, changed, unchanged, withdrawn, skipped, error).",
    ["source", "outcome"],
)
DURATION = Histogram(
    "prettyspace_crawler_crawl_duration_seconds",
    "Wall time of one source's crawl within a job attempt.",
    ["source", "mode"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200, 21600),
)
