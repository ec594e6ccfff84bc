"""Cutouts in the ``cutouts`` bucket, found again by their footprint key.

A cutout is named after what asked for it first: ``{survey}/{source}/{image_id}.fits`` (+ ``.png``)
for an archive observation (DESIGN.md), ``{survey}/footprints/{key}.fits`` for a free footprint.
Whatever its name, ``{survey}/keys/{key}.json`` records it under the canonical hash of survey +
grid, so the same footprint is never fetched upstream twice, by any replica, after any restart.
An unavailable cutout (SDSS outside its footprint...) is recorded there too, with its reason:
asking again gives the same answer without asking upstream.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from services.runtime.objectstore import ObjectNotFound, ObjectStore

BUCKET = "cutouts"
DISCLAIMER = "Survey pixels (not an outreach image)"


@dataclass
class Record:
    """What ``{survey}/keys/{key}.json`` holds."""

    survey: str
    key: str
    available: bool
    reason: str
    wcs_header: dict[str, Any]
    fits: dict[str, Any] | None  # {"bucket", "key", "sha256", "size"}
    png: dict[str, Any] | None
    request: dict[str, Any]  # what was asked: target, scale, hips, upstream URL
    created: str
    credit: str = ""  # the survey's credit line, which travels with its pixels

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def record_key(survey: str, key: str) -> str:
    return f"{survey}/keys/{key}.json"


def pending_key(survey: str, key: str) -> str:
    """The marker of a fetch in progress (by which process, since when)."""
    return f"{survey}/keys/{key}.pending"


def object_stem(survey: str, key: str, source: str = "", image_id: str = "") -> str:
    return f"{survey}/{source}/{image_id}" if source and image_id else f"{survey}/footprints/{key}"


def lookup(store: ObjectStore, survey: str, key: str) -> Record | None:
    try:  # one request, not exists() then get: this is every cutout's first step
        return Record(**store.get_json(BUCKET, record_key(survey, key)))
    except ObjectNotFound:
        return None


def fits_bytes(cube: np.ndarray, wcs: WCS, survey_hips: str, request: dict[str, Any], credit: str = "") -> bytes:
    """(3, H, W) float32, NaN where the survey has no data, with the grid's WCS."""
    header = wcs.to_header()
    header["HIPS"] = (survey_hips, "HiPS the pixels come from (via hips2fits)")
    header["BUNIT"] = ("", "8-bit colour HiPS values, 0..255")
    header["ORIGIN"] = "Prettier Space Survey cutouts"
    header["COMMENT"] = DISCLAIMER
    if credit:
        header["COMMENT"] = f"Credit: {credit}"
    header["HISTORY"] = json.dumps(request, sort_keys=True)[:2000]
    out = io.BytesIO()
    fits.PrimaryHDU(cube.astype(np.float32), header=header).writeto(out)
    return out.getvalue()


def png_bytes(cube: np.ndarray) -> bytes:
    """RGBA, top row first (as images are shown), transparent where the survey has no data."""
    blank = np.all(~np.isfinite(cube), axis=0)
    rgb = np.nan_to_num(cube, nan=0.0).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    alpha = np.where(blank, 0, 255).astype(np.uint8)[..., None]
    out = io.BytesIO()
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)[::-1], "RGBA").save(out, format="PNG")
    return out.getvalue()


def save(
    store: ObjectStore,
    survey: str,
    hips: str,
    key: str,
    wcs: WCS,
    cube: np.ndarray | None,
    reason: str,
    request: dict[str, Any],
    created: str,
    source: str = "",
    image_id: str = "",
    credit: str = "",
) -> Record:
    """Store the pixels (when available) then the record: the record is the commit."""
    header = {k: v for k, v in wcs.to_header().items()}
    header["NAXIS1"], header["NAXIS2"] = int(wcs.pixel_shape[0]), int(wcs.pixel_shape[1])
    fits_ref = png_ref = None
    if cube is not None and not reason:
        stem = object_stem(survey, key, source, image_id)
        # The grid and what was asked travel with each object (S3 metadata is ASCII, ~2 KB at most).
        summary = {k: request[k] for k in ("survey", "hips", "upstream", "scale_arcsec", "grid") if k in request}
        target = request.get("target", {})
        summary["target"] = target if "image_id" in target else "footprint"
        meta = {
            "footprint-key": key,
            "survey": survey,
            "wcs": json.dumps(header, separators=(",", ":"), default=str),
            "request": json.dumps(summary, separators=(",", ":"), default=str),
        }
        fits_ref = store.put_bytes(
            BUCKET, f"{stem}.fits", fits_bytes(cube, wcs, hips, request, credit), "application/fits", meta
        ).ref()
        png_ref = store.put_bytes(BUCKET, f"{stem}.png", png_bytes(cube), "image/png", meta).ref()
    record = Record(survey, key, not reason, reason, header, fits_ref, png_ref, request, created, credit)
    store.put_json(BUCKET, record_key(survey, key), record.to_json())
    return record
