"""A small curated dataset, published in the object store in the curator's format, for trainer tests.

The pairs are rendered by the local universe (outreach image and DSS2 survey cutout of the same sky,
the survey grid derived from the outreach WCS as the cutouts service derives it) and written with the
same keys, JSON lines and files the curator's dataset builder publishes (services/curator/dataset.py:
manifest.jsonl, tiles.jsonl, dataset.json, versions.json), using its own helpers for the tile index and
the JSON lines. Building it through crawler -> cutouts -> curator takes minutes; the curator's own
tests cover that path.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from services.curator import dataset
from services.curator.dataset import jsonl, tiles_line
from services.cutouts.geometry import FootprintSpec, Limits, outreach_wcs, survey_grid
from services.cutouts.store import fits_bytes
from services.runtime.objectstore import ObjectStore
from services.universe.render import render_outreach, render_survey
from services.universe.sky import Sky

DSS2 = "CDS/P/DSS2/color"
# (ra, dec, style, split): galaxies and clusters of the local universe.
FIELDS = (
    (357.64, 82.97, "webb", "train"),
    (309.37, 69.63, "hubble", "train"),
    (6.65, -12.73, "hubble", "train"),
    (250.42, 36.46, "hubble", "validation"),
    (62.28, 38.49, "webb", "test"),
)


def _header(wcs: Any, width: int, height: int) -> dict[str, Any]:
    header = {k: v for k, v in wcs.to_header().items() if isinstance(v, int | float | str)}
    return {**header, "NAXIS1": width, "NAXIS2": height}


def publish(store: ObjectStore, name: str, survey_px: int = 48, survey_arcsec: float = 0.8, tile_px: int = 16) -> str:
    """Render and publish NAME@v1; returns the version."""
    lines, tiles = [], []
    sky = Sky()
    for i, (ra, dec, style, split) in enumerate(FIELDS):
        side = survey_px * 4
        fov = side * survey_arcsec / 4 / 60
        o_wcs, shape = outreach_wcs(FootprintSpec(ra, dec, fov, fov, 0.0, side, side))
        s_wcs, (w, h) = survey_grid(o_wcs, shape, survey_arcsec, Limits())
        image = render_outreach(sky, o_wcs, (side, side), style)
        cube = render_survey(sky, s_wcs, (h, w), DSS2)
        jpeg = io.BytesIO()
        Image.fromarray(image[::-1]).save(jpeg, format="JPEG", quality=92)
        image_id = f"test{i}"
        o_info = store.put_bytes("archive", f"esahubble/{image_id}/large.jpg", jpeg.getvalue(), "image/jpeg")
        c_info = store.put_bytes("cutouts", f"dss2-color/esahubble/{image_id}.fits", fits_bytes(cube, s_wcs, DSS2, {}))
        line = {
            "pair": f"esahubble/{image_id}@dss2-color",
            "source": "esahubble",
            "image_id": image_id,
            "survey": "dss2-color",
            "split": split,
            "category": "Galaxy",
            "title": f"Test field {i}",
            "credit": "ESA/Hubble (test render of the local universe)",
            "survey_credit": "DSS2 (test render)",
            "outreach": {
                "bucket": "archive",
                "key": o_info.key,
                "sha256": o_info.sha256,
                "width": side,
                "height": side,
                "wcs": _header(o_wcs, side, side),
            },
            "outreach_mask": None,
            "survey_cutout": {
                "bucket": "cutouts",
                "key": c_info.key,
                "sha256": c_info.sha256,
                "wcs": _header(s_wcs, w, h),
                "corrected": False,
            },
            "survey_mask": None,
        }
        lines.append(line)
        tiles.append(tiles_line(line, None, tile_px, tile_px // 2))
    version = "v1"
    files = {}
    for file_name, data in (("manifest.jsonl", jsonl(lines)), ("tiles.jsonl", jsonl(tiles))):
        info = store.put_bytes(dataset.BUCKET, f"{name}/{version}/{file_name}", data, "application/jsonl")
        files[file_name] = info.ref()
    document = {
        "name": name,
        "version": version,
        "digest": "test-" + name,
        "files": files,
        "pairs": len(lines),
        "counts": {s: sum(1 for line in lines if line["split"] == s) for s in ("train", "validation", "test")},
        "created": "2026-11-21T00:00:00Z",
    }
    store.put_json(dataset.BUCKET, f"{name}/{version}/dataset.json", document)
    store.put_json(dataset.BUCKET, f"{name}/versions.json", {"versions": [{"version": version, "digest": "x"}]})
    return version


def pixels(store: ObjectStore, name: str) -> dict[str, Any]:
    """The published manifest, for assertions."""
    data = store.get_bytes(dataset.BUCKET, f"{name}/v1/manifest.jsonl")
    return {json.loads(line)["pair"]: json.loads(line) for line in data.decode().splitlines()}
