"""The two views of the sky model, on any grid (astropy WCS + shape).

- `render_survey`: what a colour HiPS (CDS/P/DSS2/color, CDS/P/SDSS9/color) holds there,
  as hips2fits would cut it out: (3, H, W) float32 display units, NaN where no data;
- `render_outreach`: a Hubble- or Webb-like outreach picture, (H, W, 3) uint8.

Both are in FITS orientation (row 0 at the bottom), deterministic for a given footprint.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from services.universe import footprints, outreach, surveys
from services.universe.grid import Grid
from services.universe.outreach import OutreachDefects
from services.universe.sky import Sky

SURVEYS: tuple[str, ...] = (surveys.DSS2, surveys.SDSS9)
OUTREACH_STYLES: tuple[str, ...] = tuple(outreach.TELESCOPES)

__all__ = ["OUTREACH_STYLES", "SURVEYS", "OutreachDefects", "in_survey_footprint", "render_outreach", "render_survey"]


def tan_wcs(ra: float, dec: float, scale_arcsec: float, shape: tuple[int, int], rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS centred on (ra, dec) for an image of ``shape`` (height, width): square pixels
    of ``scale_arcsec``, north rotated ``rotation_deg`` (left positive) - a view to render."""
    h, w = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(w + 1) / 2.0, (h + 1) / 2.0]
    s, t = scale_arcsec / 3600.0, np.radians(rotation_deg)
    wcs.wcs.cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
    return wcs


def _grid(wcs: WCS, shape: tuple[int, int]) -> Grid:
    h, w = (int(v) for v in shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"empty shape {shape}")
    return Grid(wcs, (h, w))


def render_survey(sky: Sky, wcs: WCS, shape: tuple[int, int], hips: str) -> np.ndarray:
    """(3, H, W) float32, planes R, G, B in display units 0..255 (as a colour HiPS holds them),
    FITS orientation: array[:, y, x] is the pixel whose 0-based pixel coordinates are (x, y) in
    `wcs` (y = 0 is the bottom row). NaN where the survey has no data (SDSS outside its
    footprint). Deterministic: the same (wcs, shape, hips) gives the same array."""
    if hips == surveys.DSS2:
        return surveys.render_dss2(sky, _grid(wcs, shape))
    if hips == surveys.SDSS9:
        return surveys.render_sdss9(sky, _grid(wcs, shape))
    raise ValueError(f"unknown HiPS {hips!r}: this sky renders {', '.join(SURVEYS)}")


def in_survey_footprint(hips: str, ra_deg, dec_deg) -> np.ndarray:
    """Whether the survey has data at these positions (bool, vectorised)."""
    ra, dec = np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float)
    if hips == surveys.DSS2:
        return np.ones(np.broadcast(ra, dec).shape, dtype=bool)
    if hips == surveys.SDSS9:
        return footprints.in_sdss(ra, dec)
    raise ValueError(f"unknown HiPS {hips!r}: this sky renders {', '.join(SURVEYS)}")


def render_outreach(
    sky: Sky, wcs: WCS, shape: tuple[int, int], style: str, defects: OutreachDefects | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB, FITS orientation too (y = 0 bottom row; writers flip to top-down
    for JPEG/PNG). style "hubble" or "webb". Deterministic."""
    return outreach.render(sky, _grid(wcs, shape), style, defects)
