"""A pixel grid on the sky (an astropy WCS and an image shape) and the geometry the
renderers need from it: where sources land, how pixels map to arcseconds locally, which
cone covers the grid, and a stable hash of the footprint for seeding noise."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from services.universe.cells import (
    angular_separation_deg,
    from_galactic,
    offsets_to_radec,
    radec_to_offsets,
    to_galactic,
)


@dataclass
class Grid:
    wcs: WCS
    shape: tuple[int, int]  # (H, W)
    ra: float = field(init=False)  # centre of the grid
    dec: float = field(init=False)
    radius_deg: float = field(init=False)  # centre-to-farthest-edge distance
    jacobian: np.ndarray = field(init=False)  # (2, 2): (dx, dy) px -> (east, north) arcsec, at the centre
    pixel_arcsec: float = field(init=False)  # sqrt of the pixel area at the centre

    def __post_init__(self) -> None:
        self.wcs = self.wcs.celestial
        if self.wcs.naxis != 2:
            raise ValueError("the WCS must have two celestial axes")
        # hips2fits grids can be Galactic (coordsys=galactic); anything else goes through astropy.
        lng = self.wcs.wcs.ctype[0][:4]
        self._frame = {"RA--": "icrs", "GLON": "galactic"}.get(lng, "other")
        h, w = self.shape
        ra, dec = self.pixel_to_radec(np.array((w - 1) / 2.0), np.array((h - 1) / 2.0))
        self.ra, self.dec = float(ra) % 360.0, float(dec)
        # Edges sampled densely enough that the farthest point is found for any projection.
        t = np.linspace(0.0, 1.0, 17)
        xs = np.concatenate([t * (w - 1), np.full_like(t, w - 1), t * (w - 1), np.zeros_like(t)])
        ys = np.concatenate([np.zeros_like(t), t * (h - 1), np.full_like(t, h - 1), t * (h - 1)])
        era, edec = self.pixel_to_radec(xs - 0.5 * np.sign(xs - (w - 1) / 2), ys - 0.5 * np.sign(ys - (h - 1) / 2))
        self.radius_deg = float(np.nanmax(angular_separation_deg(era, edec, self.ra, self.dec)))
        self.jacobian = self.local_jacobians(np.array([self.ra]), np.array([self.dec]))[0]
        self.pixel_arcsec = float(np.sqrt(abs(np.linalg.det(self.jacobian))))

    def to_pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates (x, y) of sky positions (pixel centres are integers)."""
        if np.size(ra) == 0:
            return np.zeros(0), np.zeros(0)
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        if self._frame == "galactic":
            ra, dec = to_galactic(ra, dec)
        elif self._frame == "other":
            world = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
            x, y = self.wcs.world_to_pixel(world)
            return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        x, y = self.wcs.world_to_pixel_values(ra, dec)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def pixel_to_radec(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) in degrees of 0-based pixel coordinates (NaN off the projection)."""
        if self._frame == "other":
            world = self.wcs.pixel_to_world(x, y).icrs
            return np.asarray(world.ra.deg, dtype=float), np.asarray(world.dec.deg, dtype=float)
        lon, lat = self.wcs.pixel_to_world_values(x, y)
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        if self._frame == "galactic":
            return from_galactic(lon, lat)
        return lon, lat

    def local_jacobians(self, ra: np.ndarray, dec: np.ndarray, step_arcsec: float = 0.5) -> np.ndarray:
        """(N, 2, 2) matrices taking pixel offsets (dx, dy) to (east, north) arcsec at each
        position, by finite differences through the WCS (exact for any projection/rotation,
        fine near the poles, where RA steps would not be)."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        s = step_arcsec
        zero, step = np.zeros_like(ra), np.full_like(ra, s)
        ra_e, dec_e = offsets_to_radec(ra, dec, step, zero)
        ra_n, dec_n = offsets_to_radec(ra, dec, zero, step)
        x0, y0 = self.to_pixels(ra, dec)
        xe, ye = self.to_pixels(ra_e, dec_e)
        xn, yn = self.to_pixels(ra_n, dec_n)
        inv = np.empty((ra.size, 2, 2))  # (east, north) arcsec -> pixels
        inv[:, 0, 0], inv[:, 1, 0] = (xe - x0) / s, (ye - y0) / s
        inv[:, 0, 1], inv[:, 1, 1] = (xn - x0) / s, (yn - y0) / s
        return np.linalg.inv(inv)

    def sky_offsets(self, ra0: float, dec0: float, x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """(east, north) arcsec of every pixel centre in [y0:y1, x0:x1] relative to (ra0, dec0),
        exact through the WCS (for big extended objects, where one Jacobian would not do)."""
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ra, dec = self.pixel_to_radec(xx.astype(float), yy.astype(float))
        return radec_to_offsets(ra, dec, ra0, dec0)

    def footprint_seed(self, salt: str) -> int:
        """A seed from the rounded footprint (centre, pixel matrix, shape) and a salt."""
        w = self.wcs.wcs
        matrix = self.wcs.pixel_scale_matrix
        key = "|".join(
            [
                salt,
                f"{self.shape[0]}x{self.shape[1]}",
                ",".join(f"{v:.7f}" for v in w.crval),
                ",".join(f"{v:.3f}" for v in w.crpix),
                ",".join(f"{v:.10f}" for v in matrix.ravel()),
                ",".join(w.ctype),
            ]
        )
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")

    def overlap_box(self, x: float, y: float, radius_px: float) -> tuple[int, int, int, int] | None:
        """Pixel box [x0, x1) x [y0, y1) of a disc clipped to the grid, or None if outside."""
        h, w = self.shape
        x0, x1 = max(0, int(np.floor(x - radius_px))), min(w, int(np.ceil(x + radius_px)) + 1)
        y0, y1 = max(0, int(np.floor(y - radius_px))), min(h, int(np.ceil(y + radius_px)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, x1, y0, y1


def blockwise_map(grid: Grid, fn, step: int = 16) -> np.ndarray:
    """fn(ra, dec) -> integer/bool labels (plate numbers, footprint flags) for every pixel,
    evaluated exactly only in the step x step blocks whose corners disagree: labels that
    change on scales of degrees cost a fraction of a per-pixel evaluation."""
    h, w = grid.shape
    ys = np.minimum(np.arange(0, h + step, step), h - 1)
    xs = np.minimum(np.arange(0, w + step, step), w - 1)
    cy, cx = np.meshgrid(ys.astype(float), xs.astype(float), indexing="ij")
    corners = fn(*grid.pixel_to_radec(cx, cy))
    uniform = (
        (corners[:-1, :-1] == corners[1:, :-1])
        & (corners[:-1, :-1] == corners[:-1, 1:])
        & (corners[:-1, :-1] == corners[1:, 1:])
    )
    out = np.repeat(np.repeat(corners[:-1, :-1], step, axis=0), step, axis=1)[:h, :w].copy()
    for by, bx in zip(*np.nonzero(~uniform), strict=True):
        y0, x0 = by * step, bx * step
        y1, x1 = min(y0 + step, h), min(x0 + step, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = fn(*grid.pixel_to_radec(xx.astype(float), yy.astype(float)))
    return out
