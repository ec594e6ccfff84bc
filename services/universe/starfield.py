"""Synthetic field stars: Gaia-like rows generated per HEALPix cell.

The model is deliberately simple but has the shape of the real sky: a density that rises
steeply toward the Galactic plane and the bulge, counts growing as 10^(0.32 G) to the
Gaia limit, a BP-RP distribution of turn-off dwarfs, red dwarfs and giants reddened
toward the plane, and parallaxes/proper motions consistent with rough distances.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy_healpix.core import lonlat_to_healpix

from services.universe import catalog
from services.universe.cells import Layer, to_galactic

G_BRIGHT, G_FAINT = 3.0, 21.0
# Magnitude slices in cells of decreasing size, so that a coarse grid (a wide hips2fits
# field) only generates the bright stars it can show: (layer, G from, G to).
STAR_LAYERS: tuple[tuple[Layer, float, float], ...] = (
    (Layer(code=11, tag="s", nside=16), G_BRIGHT, 11.0),  # cells of ~3.7 deg
    (Layer(code=12, tag="s", nside=32), 11.0, 14.0),  # ~1.8 deg
    (Layer(code=13, tag="s", nside=64), 14.0, 16.0),  # ~0.9 deg
    (Layer(code=14, tag="s", nside=128), 16.0, 18.5),  # ~0.46 deg
    (Layer(code=1, tag="s", nside=256), 18.5, G_FAINT),  # ~0.23 deg
)
COUNT_SLOPE = 0.32  # dN/dG ∝ 10^(0.32 G)
HEALPIX12 = 4096  # Gaia source_id = level-12 nested HEALPix index * 2^35 + a running number


def density_per_deg2(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Stars brighter than G = 21 per square degree: ~2,500 at the Galactic poles, a few
    10^5 in the plane, more toward the bulge."""
    lon, lat = to_galactic(ra_deg, dec_deg)
    lon_c = (lon + 180.0) % 360.0 - 180.0
    absb = np.abs(lat)
    bulge = 1.0 + 2.5 * np.exp(-((lon_c / 25.0) ** 2) - (absb / 10.0) ** 2)
    thin = 1.5e5 * np.exp(-absb / 3.0) * bulge
    thick = 2.5e4 * np.exp(-absb / 12.0) * (1.0 + 0.5 * np.cos(np.radians(lon)))
    return 2.5e3 + thin + thick


def unresolved_flux_per_deg2(ra_deg: np.ndarray, dec_deg: np.ndarray, g_from: float) -> np.ndarray:
    """(3, ...) summed flux (b, g, r; flux 1 = magnitude 25) per square degree of the
    catalogue stars fainter than g_from: the glow a coarse grid shows instead of them."""
    g_from = min(max(g_from, G_BRIGHT), G_FAINT)
    k = COUNT_SLOPE - 0.4  # dN/dG * flux(G) ∝ 10^(k G)
    number = (10 ** (COUNT_SLOPE * G_FAINT) - 10 ** (COUNT_SLOPE * G_BRIGHT)) / COUNT_SLOPE
    light = 10**10 * (10 ** (k * G_FAINT) - 10 ** (k * g_from)) / k / number
    flux_g = density_per_deg2(ra_deg, dec_deg) * light
    # A typical faint star: BP-RP ~ 1.1 (b - g ~ 0.85, g - r ~ 0.55 in the view bands).
    return np.stack([flux_g * 10 ** (-0.4 * 0.85), flux_g, flux_g * 10 ** (0.4 * 0.55)])


def reddening(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """E(BP-RP) reached by the most distant stars of a sight line."""
    _, lat = to_galactic(ra_deg, dec_deg)
    return 0.05 + 1.8 * np.exp(-np.abs(lat) / 4.0)


def power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Inverse-CDF sample of dN/dm ∝ 10^(slope m) on [lo, hi]."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def _count_fraction(lo: float, hi: float) -> float:
    def cumulative(m: float) -> float:
        return 10 ** (COUNT_SLOPE * m)

    return (cumulative(hi) - cumulative(lo)) / (cumulative(G_FAINT) - cumulative(G_BRIGHT))


def cell_stars(
    layer: Layer, g_lo: float, g_hi: float, seed: int, cell: int, ra_c: float, dec_c: float
) -> dict[str, np.ndarray]:
    """The field stars of one cell of a layer, G in [g_lo, g_hi) (density and reddening
    taken at the cell centre)."""
    rng = layer.rng(seed, cell)
    density = float(density_per_deg2(np.array([ra_c]), np.array([dec_c]))[0])
    expected = density * _count_fraction(g_lo, g_hi) * layer.cell_area_deg2
    n = int(rng.poisson(expected))
    cols = catalog.empty(n)
    if n == 0:
        return cols
    ra, dec = layer.uniform_positions(rng, cell, n)
    g = power_law_mags(rng, n, g_lo, g_hi, COUNT_SLOPE)
    depth = (g - G_BRIGHT) / (G_FAINT - G_BRIGHT)  # fainter stars are on average farther

    # Populations: turn-off/main-sequence dwarfs, red (M) dwarfs (more of them at faint
    # magnitudes), red giants; then interstellar reddening growing with distance.
    pop = rng.random(n)
    red_dwarf = pop < 0.08 + 0.25 * depth
    giant = (~red_dwarf) & (pop > 0.9)
    intrinsic = np.where(
        red_dwarf,
        rng.normal(2.3, 0.45, n),
        np.where(giant, rng.normal(1.35, 0.2, n), rng.normal(0.82, 0.22, n)),
    )
    e_bprp = float(reddening(np.array([ra_c]), np.array([dec_c]))[0]) * depth * rng.uniform(0.5, 1.2, n)
    bp_rp = np.clip(intrinsic + e_bprp, -0.3, 4.5)
    g_rp = 0.62 * bp_rp - 0.06 * bp_rp**2
    rp = g - g_rp
    bp = rp + bp_rp

    # Distances from rough absolute magnitudes, extinction A_G ~ 2 E(BP-RP).
    abs_g = np.where(red_dwarf, 10.0 + 1.5 * (intrinsic - 2.3), np.where(giant, 0.8, 4.4))
    abs_g = abs_g + rng.normal(0.0, 0.6, n)
    dist_pc = 10 ** ((g - abs_g - 2.0 * e_bprp + 5.0) / 5.0)
    plx_err = 0.02 * 10 ** (0.2 * np.clip(g - 15.0, 0.0, None))
    parallax = 1000.0 / dist_pc + rng.normal(0.0, 1.0, n) * plx_err
    v_tan = np.abs(rng.normal(35.0, 25.0, n))  # km/s
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    pm = v_tan * (1000.0 / dist_pc) / 4.74  # mas/yr
    pmra = pm * np.cos(angle) + rng.normal(0.0, 1.0, n) * plx_err
    pmdec = pm * np.sin(angle) + rng.normal(0.0, 1.0, n) * plx_err
    # Like Gaia, the faintest sources often have a 2-parameter solution only.
    two_param = (g > 20.3) & (rng.random(n) < 0.5 * (g - 20.3))
    for arr in (parallax, pmra, pmdec):
        arr[two_param] = np.nan

    hpx12 = lonlat_to_healpix(ra * u.deg, dec * u.deg, HEALPIX12, order="nested").astype(np.int64)
    # A level-12 pixel lies in exactly one cell per layer: (layer, running number) is unique in it.
    cols["source_id"] = hpx12 * 2**35 + np.int64(layer.code) * 2**29 + np.arange(n, dtype=np.int64) + 1
    cols["id"] = np.char.add(f"{layer.tag}{layer.nside}-{cell}-", np.arange(n).astype("U7"))
    cols["kind"][:] = "star"
    cols["ra"], cols["dec"] = ra, dec
    cols["phot_g_mean_mag"], cols["phot_bp_mean_mag"], cols["phot_rp_mean_mag"] = g, bp, rp
    cols["pmra"], cols["pmdec"], cols["parallax"] = pmra, pmdec, parallax
    cols["mag_b"], cols["mag_g"], cols["mag_r"] = catalog.gaia_to_bgr(g, bp_rp)
    return cols
