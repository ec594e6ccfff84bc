"""The one column set every generator fills, so sources of all kinds concatenate into a
single ground-truth table. Columns a kind does not use keep their neutral default."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

# name -> (dtype, default). The first eight are the contract; the rest describe shapes and
# Gaia astrometry so the renderers and the Gaia stand-in need nothing else.
COLUMNS: dict[str, tuple[str, object]] = {
    "id": ("U28", ""),
    "kind": ("U7", ""),
    "ra": ("f8", 0.0),
    "dec": ("f8", 0.0),
    "mag_b": ("f4", 99.0),
    "mag_g": ("f4", 99.0),
    "mag_r": ("f4", 99.0),
    "size_arcsec": ("f4", 0.0),
    "origin": ("U10", "synthetic"),
    "subtype": ("U11", ""),  # galaxy morphology, cluster or nebula type, real image name
    "parent": ("U24", ""),  # cluster id for member stars
    # Gaia-like star columns
    "source_id": ("i8", -1),
    "phot_g_mean_mag": ("f4", np.nan),
    "phot_bp_mean_mag": ("f4", np.nan),
    "phot_rp_mean_mag": ("f4", np.nan),
    "pmra": ("f8", np.nan),
    "pmdec": ("f8", np.nan),
    "parallax": ("f8", np.nan),
    # galaxy structure (size_arcsec is the total half-light radius)
    "redshift": ("f4", 0.0),
    "pa_deg": ("f4", 0.0),  # major axis, east of north
    "bulge_frac": ("f4", 0.0),  # of the g-band flux
    "bulge_hlr": ("f4", 0.0),  # arcsec
    "bulge_q": ("f4", 1.0),
    "disk_hlr": ("f4", 0.0),  # arcsec
    "disk_q": ("f4", 1.0),
    "bulge_bv": ("f4", 0.0),  # colours (b-g, g-r) of the bulge and the disk, observed frame
    "bulge_vr": ("f4", 0.0),
    "disk_bv": ("f4", 0.0),
    "disk_vr": ("f4", 0.0),
    "arms": ("i2", 0),  # spiral arms (0: none)
    "pitch_deg": ("f4", 0.0),
    "arm_strength": ("f4", 0.0),
    "arm_phase": ("f4", 0.0),
    "knot_frac": ("f4", 0.0),  # share of the disk light in star-forming knots
    "core_arcsec": ("f4", 0.0),  # cluster core radius, nebula filament scale
    "diffuse_frac": ("f4", 0.0),  # share of the light drawn as a smooth profile (unresolved stars, gas)
    "oiii_frac": ("f4", 0.0),  # nebulae: share of [O III] (teal) against H-alpha (red)
    "seed": ("i8", 0),  # per-source random stream for internal structure (knots, filaments)
}


def empty(n: int) -> dict[str, np.ndarray]:
    return {name: np.full(n, default, dtype=dtype) for name, (dtype, default) in COLUMNS.items()}


def concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return empty(0)
    return {name: np.concatenate([p[name] for p in parts]).astype(COLUMNS[name][0], copy=False) for name in COLUMNS}


def select(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in cols.items()}


def to_table(cols: dict[str, np.ndarray]) -> Table:
    table = Table({k: cols[k] for k in COLUMNS})
    for name in ("ra", "dec", "pa_deg"):
        table[name].unit = "deg"
    for name in ("size_arcsec", "bulge_hlr", "disk_hlr", "core_arcsec"):
        table[name].unit = "arcsec"
    return table


def gaia_to_bgr(g: np.ndarray, bp_rp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three view bands (roughly Johnson B, V, Cousins R) from Gaia G and BP-RP,
    after the published Gaia EDR3 colour transformations, simplified."""
    c = np.clip(bp_rp, -0.5, 5.0)
    v = g + 0.02 + 0.17 * c + 0.17 * c**2 * 0.3
    b = v + np.clip(-0.05 + 0.85 * c - 0.08 * c**2, -0.3, 2.0)
    r = v - np.clip(0.02 + 0.42 * c, -0.1, 2.5)
    return b.astype("f4"), v.astype("f4"), r.astype("f4")
