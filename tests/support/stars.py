"""Star centroids against a WCS: the geometric proof used by the hips2fits stand-in's tests and
the cutout service's (a catalogue star must land where the WCS says, to a fraction of a pixel)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS

from services.universe.sky import Sky


def centroid_offsets(image: np.ndarray, wcs: WCS, ra: np.ndarray, dec: np.ndarray, box: int = 4) -> np.ndarray:
    """(N, 2) flux-weighted centroid minus the WCS position of each star, in pixels."""
    xs, ys = wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    out = []
    for x, y in zip(np.atleast_1d(xs), np.atleast_1d(ys), strict=True):
        cx, cy = round(float(x)), round(float(y))
        window = image[cy - box : cy + box + 1, cx - box : cx + box + 1]
        ring = image[cy - box - 3 : cy + box + 4, cx - box - 3 : cx + box + 4].copy()
        ring[3:-3, 3:-3] = np.nan
        weight = np.clip(window - np.nanmedian(ring), 0.0, None)
        yy, xx = np.mgrid[cy - box : cy + box + 1, cx - box : cx + box + 1]
        out.append((np.sum(weight * xx) / weight.sum() - x, np.sum(weight * yy) / weight.sum() - y))
    return np.array(out)


def isolated_bright_stars(sky: Sky, wcs: WCS, shape: tuple[int, int], ra: float, dec: float, radius: float) -> Table:
    """Stars brighter than G 18, away from the edges, with nothing within 8 px that is
    extended or less than 3 mag fainter (anything that would pull a centroid)."""
    stars = sky.stars(ra, dec, radius)
    sources = sky.sources(ra, dec, radius, mag_limit=21.5)
    scale = float(wcs.proj_plane_pixel_scales()[0].to_value(u.arcsec))
    star_c = SkyCoord(stars["ra"], stars["dec"], unit="deg")
    source_c = SkyCoord(sources["ra"], sources["dec"], unit="deg")
    brightest = np.minimum(np.minimum(sources["mag_b"], sources["mag_g"]), sources["mag_r"])
    x, y = wcs.world_to_pixel(star_c)
    h, w = shape
    keep = []
    for i in np.flatnonzero((x > 12) & (x < w - 13) & (y > 12) & (y < h - 13) & (stars["phot_g_mean_mag"] < 18)):
        near = star_c[i].separation(source_c).arcsec / scale
        near = (near > 0.01) & (near < 8)
        if not np.any(near & ((brightest < stars["phot_g_mean_mag"][i] + 3) | (sources["size_arcsec"] > 0))):
            keep.append(i)
    return stars[keep]
