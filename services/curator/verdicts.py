"""Verdicts and masks in the ``curation`` bucket.

``verdicts/{source}/{image_id}.json`` (DESIGN.md) holds one observation's verdict: the
image-level checks and one entry per survey pair. Masks are PNGs of the *valid* pixels
(white = valid), top row first like every image we store, written only where some pixel is
invalid: ``masks/{source}/{image_id}/outreach.png`` on the outreach grid and
``masks/{source}/{image_id}/{survey}.png`` on the (corrected) survey cutout's grid.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from services.api import crawler_pb2, curator_pb2
from services.crawler.catalog import ENUM_BY_SOURCE
from services.runtime.objectstore import ObjectNotFound, ObjectStore
from services.runtime.refs import ref_to_proto

BUCKET = "curation"
SCHEMA = 1


def verdict_key(source: str, image_id: str) -> str:
    return f"verdicts/{source}/{image_id}.json"


def mask_key(source: str, image_id: str, side: str) -> str:
    """side: "outreach" or a survey slug."""
    return f"masks/{source}/{image_id}/{side}.png"


def mask_png(valid: np.ndarray) -> bytes:
    """(H, W) bool in FITS orientation (row 0 at the bottom) -> 1-bit PNG, top row first."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(valid[::-1]).astype(np.uint8) * 255, "L").convert("1").save(
        out, format="PNG", optimize=True
    )
    return out.getvalue()


def mask_from_png(data: bytes) -> np.ndarray:
    """The inverse of mask_png: (H, W) bool, True = valid, FITS orientation."""
    with Image.open(io.BytesIO(data)) as img:
        return (np.asarray(img.convert("L")) > 127)[::-1]


def save_mask(store: ObjectStore, source: str, image_id: str, side: str, valid: np.ndarray) -> dict[str, Any]:
    return store.put_bytes(BUCKET, mask_key(source, image_id, side), mask_png(valid), "image/png").ref()


def load(store: ObjectStore, source: str, image_id: str) -> dict[str, Any] | None:
    try:
        return store.get_json(BUCKET, verdict_key(source, image_id))
    except ObjectNotFound:
        return None


def pair_to_proto(document: dict[str, Any], survey: str, blacklisted: str = "") -> curator_pb2.Verdict:
    """One survey's pair of a stored verdict; a blacklist entry (read now, not when evaluated) rejects it."""
    pair = document["pairs"][survey]
    reasons = list(pair["reasons"]) + list(pair.get("flags", []))
    usable = pair["usable"]
    if blacklisted:
        usable = False
        reasons.insert(0, f"blacklisted: {blacklisted}")
    found = pair.get("alignment") or {}
    alignment = None
    if found:
        alignment = curator_pb2.Alignment(
            dx_px=found.get("dx") or 0.0,
            dy_px=found.get("dy") or 0.0,
            rotation_deg=found.get("rotation_deg") or 0.0,
            scale=found.get("scale") or 0.0,
            matched_sources=found.get("n_matched") or 0,
            method=found.get("method", ""),
            corrected=bool(pair.get("corrected_cutout")),
        )
    return curator_pb2.Verdict(
        pair=curator_pb2.PairKey(
            observation=crawler_pb2.ObservationKey(
                source=ENUM_BY_SOURCE[document["source"]], image_id=document["image_id"]
            ),
            survey=survey,
        ),
        usable=usable,
        reasons=reasons,
        scores={k: float(v) for k, v in pair.get("scores", {}).items() if v is not None},
        mask=ref_to_proto(pair.get("survey_mask")),
        alignment=alignment,
        outreach_mask=ref_to_proto(document["outreach"].get("mask")),
        cutout=ref_to_proto(pair.get("cutout")),
        evaluated=pair.get("evaluated", ""),
    )
