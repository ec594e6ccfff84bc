"""Training pairs from a curated dataset: survey cutout in, outreach image on the refined survey grid out.

A manifest line (services/curator/dataset.py) names a survey cutout, the grid its pixels lie on (the
cutout's WCS, already corrected by the curator where it had to be), the outreach image with its WCS and
both validity masks. The generator maps the cutout to the same sky ``scale`` times finer, so the target
is the outreach image reprojected onto that grid — the survey WCS with pixels ``scale`` times smaller —
after a Gaussian pre-blur that stops a much sharper outreach image from aliasing. Everything here is
plain numpy in FITS orientation (row 0 at the bottom), the pipeline's convention.

Prepared pairs are cached on local disk keyed by the content digests the manifest records, so a resumed
run never fetches or reprojects a pair twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from services.curator import dataset as datasets
from services.curator.evaluation import decode_image
from services.curator.verdicts import mask_from_png
from services.cutouts.geometry import header_wcs, pixel_map, rescaled_wcs
from services.runtime.objectstore import ObjectStore

PREPARE_VERSION = "1"  # bump when the target construction changes: cached pairs are rebuilt


@dataclass(frozen=True)
class Pair:
    """One prepared pair. survey: (3, h, w) display values 0..1 with NaN blank; input_valid (h, w);
    target (3, scale*h, scale*w) display values 0..1; target_valid likewise; corners: lower-left
    (x0, y0) of the dataset's training crops on the survey grid."""

    name: str
    split: str
    survey_slug: str
    survey: np.ndarray
    input_valid: np.ndarray
    target: np.ndarray
    target_valid: np.ndarray
    corners: tuple[tuple[int, int], ...]
    tile_px: int
    pixel_arcsec: float  # of the survey grid


@dataclass(frozen=True)
class DatasetFiles:
    """A dataset version as read from the object store."""

    name: str
    version: str
    document: dict[str, Any]
    manifest: list[dict[str, Any]]
    tiles: dict[str, dict[str, Any]]  # pair name -> tiles line


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def load_dataset(store: ObjectStore, name: str, version: str = "") -> DatasetFiles:
    """NAME@VERSION (latest when empty); NotFound / InvalidArgument from the curator's resolver."""
    document = datasets.resolve(store, name, version)
    files = document["files"]
    manifest = _jsonl(store.get_bytes(files["manifest.jsonl"]["bucket"], files["manifest.jsonl"]["key"]))
    tiles = {t["pair"]: t for t in _jsonl(store.get_bytes(files["tiles.jsonl"]["bucket"], files["tiles.jsonl"]["key"]))}
    return DatasetFiles(document["name"], document["version"], document, manifest, tiles)


def _scale_deg(wcs: WCS) -> float:
    return float(math.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))))


def reproject_target(
    image: np.ndarray, image_wcs: WCS, valid: np.ndarray | None, grid: WCS, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Outreach (H, W, 3) uint8 -> ((3, h, w) float32 0..1, (h, w) valid) on ``grid`` of ``shape`` (h, w).

    A Gaussian of sigma 0.5 * sqrt(ratio^2 - 1) input pixels first, ratio = target / outreach pixel
    size, so detail finer than the target grid does not alias into it. The pixel map is computed once
    on a coarse grid and splined (geometry.pixel_map): exact WCS transforms of every pixel of a
    3000 x 2400 target took minutes."""
    ratio = _scale_deg(grid) / _scale_deg(image_wcs)
    fx, fy = pixel_map(image_wcs, grid, shape)
    height, width = image.shape[:2]
    inside = (fx >= -0.5) & (fx <= width - 0.5) & (fy >= -0.5) & (fy <= height - 0.5)
    coords = np.stack([fy, fx])
    out = np.empty((3, *shape), dtype=np.float32)
    for c in range(3):
        plane = image[..., c].astype(np.float32) / 255.0
        if ratio > 1.0:
            plane = ndimage.gaussian_filter(plane, 0.5 * math.sqrt(ratio * ratio - 1.0), mode="nearest")
        out[c] = ndimage.map_coordinates(plane, coords, order=1, mode="nearest")
    footprint = inside
    if valid is not None and not valid.all():
        # Any invalid outreach pixel within reach of the bilinear kernel makes the target pixel invalid.
        near = ndimage.map_coordinates(valid.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
        footprint &= near > 0.999
    return np.clip(out, 0.0, 1.0), footprint


def _pixel_arcsec(line: dict[str, Any]) -> float:
    grid, _ = header_wcs(line["survey_cutout"]["wcs"], 0, 0)
    return _scale_deg(grid) * 3600.0


def _cache_key(line: dict[str, Any], scale: int) -> str:
    parts = [
        PREPARE_VERSION,
        str(scale),
        line["pair"],
        line["outreach"].get("sha256", "") or line["outreach"]["key"],
        line["survey_cutout"].get("sha256", "") or line["survey_cutout"]["key"],
        json.dumps(line["survey_cutout"]["wcs"], sort_keys=True),
        json.dumps(line.get("outreach_mask"), sort_keys=True),
        json.dumps(line.get("survey_mask"), sort_keys=True),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _mask(store: ObjectStore, ref: dict[str, Any] | None) -> np.ndarray | None:
    if not ref:
        return None
    return mask_from_png(store.get_bytes(ref["bucket"], ref["key"]))


def prepare(store: ObjectStore, line: dict[str, Any], tiles: dict[str, Any] | None, scale: int) -> Pair:
    """Fetch and build one pair (no cache)."""
    cut = line["survey_cutout"]
    with fits.open(io.BytesIO(store.get_bytes(cut["bucket"], cut["key"]))) as hdul:
        cube = np.asarray(hdul[0].data, dtype=np.float32) / 255.0
    grid, _ = header_wcs(cut["wcs"], cube.shape[2], cube.shape[1])
    input_valid = np.isfinite(cube).all(axis=0)
    survey_mask = _mask(store, line.get("survey_mask"))
    if survey_mask is not None and survey_mask.shape == input_valid.shape:
        input_valid &= survey_mask
    o = line["outreach"]
    image = decode_image(store.get_bytes(o["bucket"], o["key"]))
    o_wcs, _ = header_wcs(o["wcs"], image.shape[1], image.shape[0])
    o_valid = _mask(store, line.get("outreach_mask"))
    if o_valid is not None and o_valid.shape != image.shape[:2]:
        o_valid = None
    h, w = cube.shape[1:]
    target_grid = rescaled_wcs(grid, 1.0 / scale)
    target, target_valid = reproject_target(image, o_wcs, o_valid, target_grid, (h * scale, w * scale))
    # A target pixel counts only where its survey pixel is valid too (masks apply to both sides).
    target_valid &= np.kron(input_valid, np.ones((scale, scale), dtype=bool))
    return _pair(line, tiles, cube, input_valid, target, target_valid)


def _pair(
    line: dict[str, Any],
    tiles: dict[str, Any] | None,
    survey: np.ndarray,
    input_valid: np.ndarray,
    target: np.ndarray,
    target_valid: np.ndarray,
) -> Pair:
    """A Pair of these arrays, with what the manifest and tile lines say of it."""
    t = tiles or {}
    return Pair(
        name=line["pair"],
        split=line["split"],
        survey_slug=line["survey"],
        survey=survey,
        input_valid=input_valid,
        target=target,
        target_valid=target_valid,
        corners=tuple((int(x), int(y)) for x, y in t.get("corners", [])),
        tile_px=int(t.get("tile_px", 0)),
        pixel_arcsec=_pixel_arcsec(line),
    )


def prepare_cached(
    store: ObjectStore, line: dict[str, Any], tiles: dict[str, Any] | None, scale: int, cache_dir: Path | None
) -> Pair:
    """prepare() through an .npz cache on local disk (written atomically)."""
    if cache_dir is None:
        return prepare(store, line, tiles, scale)
    path = cache_dir / f"{_cache_key(line, scale)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return _pair(line, tiles, z["survey"], z["input_valid"], z["target"], z["target_valid"])
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a torn cache file: rebuild it
    pair = prepare(store, line, tiles, scale)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, survey=pair.survey, input_valid=pair.input_valid, target=pair.target, target_valid=pair.target_valid)
    tmp.replace(path)
    return pair
