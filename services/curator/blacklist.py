"""The curator's blacklist: observations never used as training pairs, each with a reason.

It lives in one object, ``curation/blacklist.json``::

    {"entries": {"esahubble/heic0207g": {"source": "esahubble", "image_id": "heic0207g",
                                        "reason": "...", "added_at": "2025-01-01T00:00:00+00:00",
                                        "origin": "seed" | "api"}}}

The first ``load`` that finds no such object seeds it from the shipped list
(``data/seed-blacklist.json``, see ``data/README.md``); after that the object is the
blacklist, so seed entries removed through the API stay removed.

Concurrency: every edit is a read-modify-write of that one object. Edits within one
process are serialised by a lock; edits from two replicas at the same moment are
last-writer-wins (the later PUT replaces the whole document, and the other edit is lost).
The same holds for two replicas seeding an empty store at once (both write the same seed).
Edits are rare and made by people, so this is accepted rather than guarded with
conditional writes.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.crawler.sites import SOURCES
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.objectstore import ObjectNotFound, ObjectStore

BUCKET = "curation"
KEY = "blacklist.json"
SEED_PATH = Path(__file__).resolve().parent / "data" / "seed-blacklist.json"
SEED_REASON = "seed list of an earlier project: wrong coordinates or black borders found by hand"
SEED_PREFIXES = {"heic": "esahubble", "potw": "esahubble", "opo": "esahubble", "weic": "esawebb", "potm": "esawebb"}
# Seed ids no prefix above covers (see data/README.md for why each goes where it goes).
SEED_SOURCE_OVERRIDES = {"ann1121a": "esahubble", "ann1311a": "esahubble", "VV191b": "esawebb"}
MAX_REASON_CHARS = 500
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_write_lock = threading.Lock()


def entry_key(source: str, image_id: str) -> str:
    return f"{source}/{image_id}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def validate_source(source: str, field: str = "source") -> str:
    if source not in SOURCES:
        raise InvalidArgument(field, f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    return source


def validate_image_id(image_id: str, field: str = "image_id") -> str:
    if not ID_RE.match(image_id):
        shown = image_id if len(image_id) <= 80 else image_id[:80] + "…"
        raise InvalidArgument(field, f"{shown!r} is not an image id: expected 1 to 64 of A-Z a-z 0-9 _ -")
    return image_id


def validate_reason(reason: str, field: str = "reason") -> str:
    text = reason.strip()
    if not text:
        raise InvalidArgument(field, "is required: say why this observation is blacklisted")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidArgument(field, f"is {len(text)} characters long; at most {MAX_REASON_CHARS} are allowed")
    return text


def seed_source(image_id: str) -> str:
    """The source of a seed id, from its prefix (or the few overrides)."""
    if image_id in SEED_SOURCE_OVERRIDES:
        return SEED_SOURCE_OVERRIDES[image_id]
    for prefix, source in SEED_PREFIXES.items():
        if image_id.startswith(prefix):
            return source
    raise ValueError(f"seed id {image_id!r} has no known prefix ({', '.join(SEED_PREFIXES)}) and no override")


def seed_ids(path: Path = SEED_PATH) -> list[str]:
    ids = json.loads(path.read_text())
    if not isinstance(ids, list) or not all(isinstance(i, str) and ID_RE.match(i) for i in ids):
        raise ValueError(f"{path}: expected a JSON list of image ids")
    return ids


def seed_document(path: Path = SEED_PATH) -> dict[str, Any]:
    added_at = _now()
    entries: dict[str, dict[str, str]] = {}
    for image_id in seed_ids(path):
        source = seed_source(image_id)
        entries[entry_key(source, image_id)] = {
            "source": source,
            "image_id": image_id,
            "reason": SEED_REASON,
            "added_at": added_at,
            "origin": "seed",
        }
    return {"entries": entries}


def _read(store: ObjectStore) -> dict[str, Any] | None:
    try:
        document = store.get_json(BUCKET, KEY)
    except ObjectNotFound:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("entries"), dict):
        raise ValueError(f"{BUCKET}/{KEY} is not a blacklist document (expected an object with 'entries')")
    return document


def load(store: ObjectStore) -> dict[str, Any]:
    """The blacklist document, seeded from the shipped list the first time."""
    document = _read(store)
    if document is not None:
        return document
    with _write_lock:
        document = _read(store)  # another thread of this process may have seeded it meanwhile
        if document is None:
            document = seed_document()
            store.put_json(BUCKET, KEY, document)
    return document


def _current(store: ObjectStore) -> dict[str, Any]:
    """The stored document, or the seed when there is none yet (the caller holds the lock and writes)."""
    document = _read(store)
    return seed_document() if document is None else document


def set_entry(store: ObjectStore, source: str, image_id: str, reason: str) -> dict[str, Any]:
    """Add an entry or replace the one of that observation; returns the new document."""
    validate_source(source)
    validate_image_id(image_id)
    text = validate_reason(reason)
    with _write_lock:
        document = _current(store)
        document["entries"][entry_key(source, image_id)] = {
            "source": source,
            "image_id": image_id,
            "reason": text,
            "added_at": _now(),
            "origin": "api",
        }
        store.put_json(BUCKET, KEY, document)
    return document


def remove_entry(store: ObjectStore, source: str, image_id: str) -> dict[str, Any]:
    """Remove the entry of an observation (NotFound when it has none); returns the new document."""
    validate_source(source)
    validate_image_id(image_id)
    with _write_lock:
        document = _current(store)
        key = entry_key(source, image_id)
        if key not in document["entries"]:
            raise NotFound(f"{key} is not on the blacklist")
        del document["entries"][key]
        store.put_json(BUCKET, KEY, document)
    return document


def is_blacklisted(blacklist: dict[str, Any], source: str, image_id: str) -> bool:
    """Whether a loaded blacklist document holds the observation."""
    return entry_key(source, image_id) in blacklist["entries"]


def reason_for(blacklist: dict[str, Any], source: str, image_id: str) -> str:
    """Why a loaded blacklist document holds the observation ("" when it does not)."""
    return blacklist["entries"].get(entry_key(source, image_id), {}).get("reason", "")


def entries(blacklist: dict[str, Any]) -> list[dict[str, str]]:
    """The entries in a stable order (by source, then image id)."""
    return [blacklist["entries"][key] for key in sorted(blacklist["entries"])]
