"""What `make demo` shows of the embedded sky until the gateway renders (#8): for a few
fields of the replica archive, the DSS2 survey view (fetched through the hips2fits
replica with astroquery, as the cutout service will) beside the Hubble-like image the
archive replica serves for the same WCS. Both come from the same local sky."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from astroquery.hips2fits import hips2fitsClass
from PIL import Image, ImageDraw

from deploy.localstack.stack import Stack

KINDS = ("galaxy", "nebula", "cluster")


def _get(url: str, timeout_s: float = 120.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def pick_fields(truth: dict, count: int) -> list[dict]:
    """Clean observations (no edge case, full AVM), one kind after another."""
    clean = [o for o in truth["observations"].values() if not o["edge_cases"] and o.get("avm_quality") == "Full"]
    picked: list[dict] = []
    for i in range(count * len(KINDS)):
        kind = KINDS[i % len(KINDS)]
        candidates = [o for o in clean if o["kind"] == kind and o not in picked]
        if candidates:
            picked.append(candidates[0])
        if len(picked) == count:
            break
    return picked


def side_by_side(survey: np.ndarray, outreach: Image.Image, title: str) -> Image.Image:
    left = Image.fromarray(np.asarray(survey, dtype=np.uint8)[..., :3]).resize(outreach.size)
    caption = 28
    canvas = Image.new("RGB", (outreach.width * 2 + 10, outreach.height + caption), (20, 20, 20))
    canvas.paste(left, (0, caption))
    canvas.paste(outreach, (outreach.width + 10, caption))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 8), f"DSS2 survey view (hips2fits replica) - {title}", fill=(230, 230, 230))
    draw.text(
        (outreach.width + 16, 8), "Hubble-like view (archive replica) - local sky, synthetic", fill=(230, 230, 230)
    )
    return canvas


def preview_embedded_sky(stack: Stack, out_dir: Path, count: int = 3) -> list[Path]:
    env = stack.env()
    truth = json.loads(_get(env["PSS_ESAHUBBLE_URL"] + "/_replica/truth"))
    hips2fits = hips2fitsClass()
    hips2fits.server = env["PSS_HIPS2FITS_URL"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for obs in pick_fields(truth, count):
        screen = obs["served"]["screen"]
        header = dict(screen["wcs"])
        width, height = header.pop("NAXIS1"), header.pop("NAXIS2")
        wcs = WCS(header)
        wcs.pixel_shape = (width, height)
        survey = hips2fits.query_with_wcs(hips="CDS/P/DSS2/color", wcs=wcs, format="jpg")
        outreach = Image.open(io.BytesIO(_get(screen["url"]))).convert("RGB")
        path = out_dir / f"{obs['id']}-dss2-vs-hubble.png"
        side_by_side(survey, outreach, f"{obs['id']}: {obs['title']}").save(path)
        written.append(path)
    return written
