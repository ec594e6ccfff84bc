"""The surveys cutouts are cut from: a HiPS id, the slug the API and the bucket use, and the
pixel scale at which hips2fits serves the survey's full resolution."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEFAULT_SURVEYS = "CDS/P/DSS2/color,CDS/P/SDSS9/color"


def hips_pixel_arcsec(order: int, tile_width: int = 512) -> float:
    """The pixel size of a HiPS at ``order`` (HEALPix nside = 2**order * tile width)."""
    nside = 2**order * tile_width
    return math.degrees(math.sqrt(4 * math.pi / (12 * nside * nside))) * 3600.0


# The deepest order of each HiPS (its properties' hips_order), hence its native scale:
# DSS2 colour order 9 -> 0.805"/px, SDSS9 colour order 10 -> 0.403"/px.
KNOWN_SCALES_ARCSEC = {
    "CDS/P/DSS2/color": hips_pixel_arcsec(9),
    "CDS/P/SDSS9/color": hips_pixel_arcsec(10),
}


# The credit line each survey's pixels travel with (Credit.md has the full acknowledgements).
CREDITS = {
    "CDS/P/DSS2/color": "Digitized Sky Survey - STScI/NASA, Colored & Healpixed by CDS; cutout by CDS hips2fits",
    "CDS/P/SDSS9/color": "Sloan Digital Sky Survey DR9 (SDSS-III), HiPS by CDS; cutout by CDS hips2fits",
}


@dataclass(frozen=True)
class Survey:
    slug: str  # "dss2-color": API, CLI and object-key name
    hips: str  # "CDS/P/DSS2/color": what hips2fits is asked for
    native_scale_arcsec: float  # pixel scale of the survey's deepest HiPS order

    @property
    def credit(self) -> str:
        return CREDITS.get(self.hips, f"{self.hips} (HiPS); cutout by CDS hips2fits")


def slug(hips: str) -> str:
    """ "CDS/P/DSS2/color" -> "dss2-color": the HiPS id without its authority and product
    type, lower-cased, anything else than letters and digits turned into '-'."""
    parts = [p for p in hips.strip().split("/") if p]
    if len(parts) >= 3 and parts[1].upper() == "P":  # IVOA HiPS ids: authority/P/name...
        parts = parts[2:]
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not text:
        raise ValueError(f"cannot make a survey slug from HiPS id {hips!r}")
    return text


def parse_surveys(setting: str) -> dict[str, Survey]:
    """Surveys by slug from a comma-separated list of HiPS ids; a HiPS whose native scale
    is not known here takes it as ``HIPS_ID=scale_arcsec``, which may also override a known one."""
    out: dict[str, Survey] = {}
    for item in (s.strip() for s in setting.split(",")):
        if not item:
            continue
        hips, _, scale_text = (p.strip() for p in item.partition("="))
        if scale_text:
            try:
                scale = float(scale_text)
            except ValueError:
                raise ValueError(f"survey {hips!r}: scale {scale_text!r} is not a number (arcsec/px)") from None
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"survey {hips!r}: scale must be > 0 arcsec/px, got {scale_text}")
        elif hips in KNOWN_SCALES_ARCSEC:
            scale = KNOWN_SCALES_ARCSEC[hips]
        else:
            raise ValueError(
                f"survey {hips!r}: native pixel scale unknown; give it as {hips}=<arcsec per pixel> "
                f"(known: {', '.join(KNOWN_SCALES_ARCSEC)})"
            )
        survey = Survey(slug(hips), hips, scale)
        if survey.slug in out:
            raise ValueError(f"surveys {out[survey.slug].hips!r} and {hips!r} share the slug {survey.slug!r}")
        out[survey.slug] = survey
    if not out:
        raise ValueError("no survey configured")
    return out
