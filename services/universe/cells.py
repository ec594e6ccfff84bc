"""HEALPix sky cells: the unit of deterministic generation.

Every synthetic source belongs to exactly one cell of one layer and is generated from
a random stream seeded by (sky seed, layer, cell index) alone, so any query anywhere
sees the same sources, and a cone query is just "the cells overlapping the cone,
filtered by exact separation" with no seams at cell borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from astropy_healpix.core import healpix_to_lonlat

# Positions inside a cell: pick one of 4**SUBLEVELS equal-area nested sub-cells, then a
# uniform offset inside it; the sub-cell distortion is far below any pixel we render.
SUBLEVELS = 10


@dataclass(frozen=True)
class Layer:
    """One generation layer: what kind of sources it holds and how fine its cells are."""

    code: int  # part of every cell's random seed, so layers never share a stream
    tag: str  # prefix of the ids of the sources it generates
    nside: int

    @cached_property
    def healpix(self) -> HEALPix:
        return HEALPix(nside=self.nside, order="nested")

    @cached_property
    def cell_area_deg2(self) -> float:
        return float(self.healpix.pixel_area.to_value(u.deg**2))

    def cells_in_cone(self, ra_deg: float, dec_deg: float, radius_deg: float) -> np.ndarray:
        """Every cell that overlaps the cone (partially included)."""
        radius = min(float(radius_deg), 180.0)
        if radius >= 90.0 or self.nside <= 2:
            return np.arange(self.healpix.npix, dtype=np.int64)
        cells = self.healpix.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, radius=radius * u.deg)
        return np.sort(np.asarray(cells, dtype=np.int64))

    def rng(self, seed: int, cell: int) -> np.random.Generator:
        return np.random.default_rng([int(seed) & 0xFFFFFFFF, self.code, self.nside, int(cell)])

    def centres(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of the cell centres."""
        lon, lat = healpix_to_lonlat(cells, self.nside, order="nested")
        return lon.to_value(u.deg), lat.to_value(u.deg)

    def uniform_positions(self, rng: np.random.Generator, cell: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n positions uniform in area inside the cell, (ra, dec) in degrees."""
        factor = 4**SUBLEVELS
        sub = np.int64(cell) * factor + rng.integers(0, factor, n, dtype=np.int64)
        lon, lat = healpix_to_lonlat(sub, self.nside * 2**SUBLEVELS, dx=rng.random(n), dy=rng.random(n), order="nested")
        return lon.to_value(u.deg), lat.to_value(u.deg)


def angular_separation_deg(ra1: np.ndarray, dec1: np.ndarray, ra2: float, dec2: float) -> np.ndarray:
    """Great-circle distance (Vincenty formula: exact at all separations)."""
    l1, b1, l2, b2 = np.radians(ra1), np.radians(dec1), np.radians(ra2), np.radians(dec2)
    dl = l1 - l2
    num = np.hypot(np.cos(b1) * np.sin(dl), np.cos(b2) * np.sin(b1) - np.sin(b2) * np.cos(b1) * np.cos(dl))
    den = np.sin(b2) * np.sin(b1) + np.cos(b2) * np.cos(b1) * np.cos(dl)
    return np.degrees(np.arctan2(num, den))


def _icrs_to_galactic_matrix() -> np.ndarray:
    """The ICRS -> Galactic rotation, taken once from astropy, so that the density model
    does not pay for a SkyCoord transformation per cell."""
    from astropy.coordinates import ICRS, Galactic, SkyCoord

    axes = SkyCoord(
        x=[1.0, 0.0, 0.0], y=[0.0, 1.0, 0.0], z=[0.0, 0.0, 1.0], frame=ICRS, representation_type="cartesian"
    )
    gal = axes.transform_to(Galactic()).cartesian
    return np.stack([gal.x.value, gal.y.value, gal.z.value])  # column j = image of ICRS axis j


_ICRS_TO_GAL = _icrs_to_galactic_matrix()


def to_galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(l, b) in degrees."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    g = np.tensordot(_ICRS_TO_GAL, xyz, axes=1)
    lon = np.degrees(np.arctan2(g[1], g[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(g[2], -1.0, 1.0)))
    return lon, lat


def from_galactic(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees from Galactic (l, b)."""
    lon, lat = np.radians(l_deg), np.radians(b_deg)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    e = np.tensordot(_ICRS_TO_GAL.T, xyz, axes=1)
    ra = np.degrees(np.arctan2(e[1], e[0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(e[2], -1.0, 1.0)))
    return ra, dec


def offsets_to_radec(
    ra0: float | np.ndarray, dec0: float | np.ndarray, east_arcsec: np.ndarray, north_arcsec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: tangent-plane offsets (arcsec) around (ra0, dec0) to (ra, dec)."""
    xi, eta = np.radians(east_arcsec / 3600.0), np.radians(north_arcsec / 3600.0)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    denom = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def radec_to_offsets(
    ra: np.ndarray, dec: np.ndarray, ra0: float | np.ndarray, dec0: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection: (ra, dec) to tangent-plane offsets (east, north) in arcsec around (ra0, dec0)."""
    a, d, a0, d0 = np.radians(ra), np.radians(dec), np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0
