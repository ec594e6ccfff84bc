"""Where each survey has data, and how DSS plates tile the sky.

SDSS9: the northern Galactic cap (the Legacy "ellipse", RA ~110-265 deg) plus southern
stripes and the southern cap extension around RA 0, edged along SDSS survey stripes
(great circles 2.5 deg apart in survey latitude eta), ~35 % of the sky like DR9.
DSS2: whole sky, on Schmidt plates in 5 deg declination zones.
"""

from __future__ import annotations

import numpy as np

from services.universe.cells import to_galactic

SDSS_NODE_RA, SDSS_ETA_POLE_DEC = 95.0, 32.5


def sdss_survey_coords(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDSS survey coordinates (lambda, eta) in degrees (Stoughton et al. 2002)."""
    ra, dec = np.radians(np.asarray(ra_deg, dtype=float) - SDSS_NODE_RA), np.radians(np.asarray(dec_deg, dtype=float))
    x, y, z = np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)
    lam = -np.degrees(np.arcsin(np.clip(x, -1.0, 1.0)))
    eta = np.degrees(np.arctan2(z, y)) - SDSS_ETA_POLE_DEC
    eta = (eta + 180.0) % 360.0 - 180.0
    return lam, eta


def in_sdss(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.asarray(ra_deg, dtype=float) % 360.0, np.asarray(dec_deg, dtype=float)
    lam, eta = sdss_survey_coords(ra, dec)
    _, b = to_galactic(ra, dec)
    stripe = np.floor((eta + 58.75) / 2.5)  # stripe number, as SDSS counts them
    # Each northern stripe spans its own lambda range: a ragged, stripe-by-stripe edge.
    half = 62.0 + 8.0 * np.cos(np.radians((stripe - 23.0) * 5.2)) + 4.0 * np.sin(stripe * 1.7)
    north = (stripe >= 6) & (stripe <= 44) & (np.abs(lam) < half) & (b > 8.0)
    # Southern sky: stripe 82 along the celestial equator and the DR8 southern cap, in
    # stripes of constant declination (what the southern scans look like on the sky).
    stripe82 = (np.abs(dec) < 1.25) & ((ra > 310.0) | (ra < 60.0))
    band = np.floor((dec + 1.25) / 2.5)
    cap_half = 52.0 - 1.5 * band + 4.0 * np.sin(band * 2.3)  # RA half-width of each southern stripe
    cap = (b < -20.0) & (band >= 1) & (band <= 15) & (np.abs((ra + 180.0) % 360.0 - 180.0 - 2.0) < cap_half)
    return north | stripe82 | cap


def sdss_sky_fraction(samples: int = 200_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, samples)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, samples)))
    return float(in_sdss(ra, dec).mean())


def dss_plate(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Plate number (int64) of each position: 5-degree declination zones, each cut in RA
    into ~5-degree plates."""
    ra, dec = np.asarray(ra_deg, dtype=float) % 360.0, np.asarray(dec_deg, dtype=float)
    zone = np.clip(np.floor((dec + 90.0) / 5.0), 0, 35).astype(np.int64)
    centre = -87.5 + 5.0 * zone
    per_zone = np.maximum(1, np.rint(360.0 * np.cos(np.radians(centre)) / 5.0)).astype(np.int64)
    index = np.floor(ra / 360.0 * per_zone).astype(np.int64) % per_zone
    return zone * 1000 + index
