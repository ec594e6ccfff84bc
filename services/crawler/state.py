"""What the crawler remembers between runs, in the ``crawl-state`` bucket.

``{source}/state.json`` is written once, when a crawl of that source finishes: the
ids seen and their status, the content hash of each item's metadata, a digest of
each item's entry in the site's d2d feed, and the validators of the listing and
feed pages. A crawl in progress never touches it, so a crawl that is killed and
resumed still compares against the previous run, and reports each item's outcome
(new, changed, unchanged) the same way on every attempt.

``{source}/runs/{job_id}.json`` keeps each run's report: counters and every error
with its URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.runtime.objectstore import ObjectStore

BUCKET = "crawl-state"
ARCHIVE = "archive"
SCHEMA = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def meta_key(source: str, image_id: str) -> str:
    return f"{source}/{image_id}/meta.json"


def image_key(source: str, image_id: str, size: str) -> str:
    return f"{source}/{image_id}/{size}.jpg"


@dataclass
class CrawlState:
    source: str
    # id -> {"status": active|withdrawn|skipped|error, "content_hash", "feed_digest", "skip_reason",
    #        "error", "first_seen", "last_seen", "withdrawn_at"}
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    # page number (str) -> {"etag", "last_modified", "ids": [...]}; plus "page_count", "total"
    listing: dict[str, Any] = field(default_factory=dict)
    feed: dict[str, Any] = field(default_factory=dict)  # {"pages": {url: validators+ids}, "watermark"}
    runs: list[dict[str, Any]] = field(default_factory=list)  # the last few runs, newest last

    @classmethod
    def load(cls, store: ObjectStore, source: str) -> CrawlState:
        key = f"{source}/state.json"
        if not store.exists(BUCKET, key):
            return cls(source)
        doc = store.get_json(BUCKET, key)
        return cls(source, doc.get("items", {}), doc.get("listing", {}), doc.get("feed", {}), doc.get("runs", []))

    def save(self, store: ObjectStore) -> None:
        doc = {
            "schema": SCHEMA,
            "source": self.source,
            "saved_at": now_iso(),
            "items": self.items,
            "listing": self.listing,
            "feed": self.feed,
            "runs": self.runs[-20:],
        }
        store.put_json(BUCKET, f"{self.source}/state.json", doc)

    def active_ids(self) -> set[str]:
        return {k for k, v in self.items.items() if v.get("status") == "active"}
