"""Synthetic galaxies: counts, sizes, redshifts, morphologies and colours.

Layers by magnitude share one set of scaling relations: bright galaxies (r < 17) in
cells of ~1.8 deg, those down to r = 22.5 in cells of ~0.23 deg (what ground-based surveys
see), and the faint ones in cells of ~1.7' down to r = 29 (what only the Hubble/Webb-like
view reaches), each generated only when asked for.
Counts follow the observed shape (Euclidean at the bright end, ~10^(0.36 m) when faint),
thinned in the Zone of Avoidance. Fainter galaxies are smaller, farther and redder.
"""

from __future__ import annotations

import numpy as np

from services.universe import catalog
from services.universe.cells import Layer, to_galactic

M_BRIGHTEST, M_SPLIT, M_FAINTEST = 8.0, 22.5, 29.0
# (layer, r from, r to): bright galaxies in big cells, faint ones in small cells.
GALAXY_LAYERS: tuple[tuple[Layer, float, float], ...] = (
    (Layer(code=21, tag="g", nside=32), M_BRIGHTEST, 17.0),  # cells of ~1.8 deg
    (Layer(code=2, tag="g", nside=256), 17.0, M_SPLIT),  # ~0.23 deg
    (Layer(code=3, tag="d", nside=2048), M_SPLIT, M_FAINTEST),  # ~1.7'
)

_GRID = np.linspace(M_BRIGHTEST, M_FAINTEST, 2001)


def counts_per_deg2_per_mag(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    return np.where(
        m < 16.0,
        12.6 * 10 ** (0.6 * (m - 16.0)),
        np.where(m < 20.0, 12.6 * 10 ** (0.45 * (m - 16.0)), 795.0 * 10 ** (0.36 * (m - 20.0))),
    )


_CUMULATIVE = np.concatenate(
    [[0.0], np.cumsum(np.diff(_GRID) * counts_per_deg2_per_mag(_GRID[:-1] + 0.5 * np.diff(_GRID)))]
)


def _cumulative(m: float) -> float:
    return float(np.interp(m, _GRID, _CUMULATIVE))


def zone_of_avoidance(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Fraction of galaxies seen through the Milky Way's dust at this position."""
    _, lat = to_galactic(ra_deg, dec_deg)
    return 1.0 - 0.95 * np.exp(-((np.abs(lat) / 10.0) ** 2))


def expected_count(layer: Layer, lo: float, hi: float, ra_c: float, dec_c: float) -> float:
    per_deg2 = _cumulative(hi) - _cumulative(lo)
    return per_deg2 * layer.cell_area_deg2 * float(zone_of_avoidance(np.array([ra_c]), np.array([dec_c]))[0])


def sample_mags(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    c_lo, c_hi = _cumulative(lo), _cumulative(hi)
    return np.interp(c_lo + rng.random(n) * (c_hi - c_lo), _CUMULATIVE, _GRID)


def fill_structure(cols: dict[str, np.ndarray], rng: np.random.Generator, mag_r: np.ndarray) -> None:
    """Morphology, size, shape, redshift and colours for galaxies of total r magnitude mag_r."""
    n = mag_r.size
    faint = np.clip((mag_r - 12.0) / 15.0, 0.0, 1.0)
    z = 10 ** (-1.6 + 0.15 * (mag_r - 14.0) + rng.normal(0.0, 0.15, n))
    z = np.clip(z, 0.002, 8.0)
    early = rng.random(n) < 0.38 - 0.25 * faint
    bulge_frac = np.where(early, rng.uniform(0.55, 1.0, n), rng.beta(1.3, 4.0, n))

    hlr = 10 ** (1.5 - 0.17 * (mag_r - 12.0) + rng.normal(0.0, 0.18, n))
    hlr = np.clip(hlr, 0.08, 90.0)
    disk_hlr = hlr * rng.uniform(1.0, 1.25, n)
    bulge_hlr = np.where(early, hlr * rng.uniform(0.8, 1.1, n), disk_hlr * rng.uniform(0.15, 0.45, n))
    cos_i = rng.random(n)
    disk_q = np.sqrt(cos_i**2 * (1 - 0.12**2) + 0.12**2)
    bulge_q = np.where(early, rng.uniform(0.45, 1.0, n), np.maximum(disk_q, rng.uniform(0.6, 1.0, n)))

    # Spiral structure for discs: 2 arms most often, pitch 10-30 deg; stronger in late types.
    spiral = (~early) & (rng.random(n) < 0.8)
    arms = np.where(spiral, rng.choice(np.array([2, 2, 2, 3, 4]), n), 0)
    pitch = rng.uniform(10.0, 30.0, n)
    strength = np.where(spiral, rng.uniform(0.35, 0.85, n) * (1.0 - bulge_frac), 0.0)
    # Distant galaxies are clumpier (more of their light in star-forming knots).
    knot_frac = np.where(early, 0.0, rng.uniform(0.05, 0.3, n) * (1.0 - bulge_frac) * (1.0 + np.clip(z, 0.0, 2.0)))

    # Observed-frame colours (b-g, g-r): red bulges, blue discs, all reddened with z
    # (k-correction) until the 4000 A break leaves the bands; beyond z ~ 1.3 the bands see
    # the rest-frame ultraviolet of star-forming galaxies, which is blue again.
    shift = np.clip(z / (z + 0.45) * (1.0 - np.clip((z - 1.3) / 1.5, 0.0, 1.2)), -0.25, None)
    bulge_bv = 0.95 + rng.normal(0.0, 0.05, n) + 0.9 * shift
    bulge_vr = 0.55 + rng.normal(0.0, 0.04, n) + 0.5 * shift
    disk_bv = 0.45 + rng.normal(0.0, 0.1, n) + 0.7 * shift
    disk_vr = 0.35 + rng.normal(0.0, 0.06, n) + 0.4 * shift

    cols["kind"][:] = "galaxy"
    cols["subtype"] = np.where(early, np.where(bulge_frac > 0.8, "elliptical", "lenticular"), "spiral")
    cols["subtype"][(~early) & (~spiral)] = "disk"
    cols["redshift"] = z
    cols["pa_deg"] = rng.uniform(0.0, 180.0, n)
    cols["bulge_frac"], cols["bulge_hlr"], cols["bulge_q"] = bulge_frac, bulge_hlr, bulge_q
    cols["disk_hlr"], cols["disk_q"], cols["size_arcsec"] = disk_hlr, disk_q, hlr
    cols["arms"], cols["pitch_deg"], cols["arm_strength"] = arms, pitch, strength
    cols["arm_phase"] = rng.uniform(0.0, 360.0, n)
    cols["knot_frac"] = knot_frac
    cols["bulge_bv"], cols["bulge_vr"], cols["disk_bv"], cols["disk_vr"] = bulge_bv, bulge_vr, disk_bv, disk_vr
    cols["seed"] = rng.integers(0, 2**62, n)
    set_total_mags(cols, mag_r)


def set_total_mags(cols: dict[str, np.ndarray], mag_r: np.ndarray) -> None:
    """mag_b/g/r of bulge + disk, given the total r magnitude and the component colours."""
    fb = cols["bulge_frac"]  # share of g-band light
    f_g = 1.0
    # flux per band relative to the g band, for each component
    bulge_r, bulge_b = 10 ** (0.4 * cols["bulge_vr"]), 10 ** (-0.4 * cols["bulge_bv"])
    disk_r, disk_b = 10 ** (0.4 * cols["disk_vr"]), 10 ** (-0.4 * cols["disk_bv"])
    flux_r_rel = fb * bulge_r + (1 - fb) * disk_r
    flux_b_rel = fb * bulge_b + (1 - fb) * disk_b
    mag_g = mag_r + 2.5 * np.log10(flux_r_rel / f_g)
    cols["mag_r"] = mag_r
    cols["mag_g"] = mag_g
    cols["mag_b"] = mag_g - 2.5 * np.log10(flux_b_rel)


def cell_galaxies(
    layer: Layer, lo: float, hi: float, seed: int, cell: int, ra_c: float, dec_c: float
) -> dict[str, np.ndarray]:
    rng = layer.rng(seed, cell)
    n = int(rng.poisson(expected_count(layer, lo, hi, ra_c, dec_c)))
    cols = catalog.empty(n)
    if n == 0:
        return cols
    cols["ra"], cols["dec"] = layer.uniform_positions(rng, cell, n)
    fill_structure(cols, rng, sample_mags(rng, n, lo, hi))
    cols["id"] = np.char.add(f"{layer.tag}{layer.nside}-{cell}-", np.arange(n).astype("U7"))
    return cols
