"""Rare, showy objects: star clusters, nebulae and big nearby galaxies.

Generated per coarse HEALPix cell (~3.7 deg), so a whole-sky listing is cheap (the archive
replica picks its "interesting fields" from it). Open clusters and emission nebulae hug the
Galactic plane, globular clusters the halo and bulge, big galaxies avoid the plane. Cluster
member stars are generated from the cluster's own seed, so they are the same whichever
cone finds them.
"""

from __future__ import annotations

import numpy as np

from services.universe import catalog
from services.universe.cells import Layer, offsets_to_radec, to_galactic
from services.universe.galaxies import fill_structure
from services.universe.starfield import power_law_mags

LANDMARKS = Layer(code=4, tag="L", nside=16)
MAX_RADIUS_DEG = 0.75  # no landmark (or member star) lies farther than this from its centre


def _probabilities(ra_c: float, dec_c: float) -> dict[str, float]:
    lon, lat = (float(v[0]) for v in to_galactic(np.array([ra_c]), np.array([dec_c])))
    absb = abs(lat)
    lon_c = (lon + 180.0) % 360.0 - 180.0
    plane = np.exp(-((absb / 8.0) ** 2))
    return {
        "open": 1.2 * plane,
        "globular": 0.04 + 0.6 * np.exp(-((lon_c / 30.0) ** 2) - (absb / 20.0) ** 2),
        "emission": 0.9 * plane,
        "planetary": 0.06 + 0.2 * plane,
        "showcase": 0.3 * (1.0 - np.exp(-((absb / 12.0) ** 2))),
    }


def cell_landmarks(seed: int, cell: int, ra_c: float, dec_c: float) -> dict[str, np.ndarray]:
    rng = LANDMARKS.rng(seed, cell)
    parts = []
    for kind, p in _probabilities(ra_c, dec_c).items():
        n = int(rng.poisson(p))
        if n == 0:
            continue
        cols = catalog.empty(n)
        cols["ra"], cols["dec"] = LANDMARKS.uniform_positions(rng, cell, n)
        cols["seed"] = rng.integers(0, 2**62, n)
        if kind == "showcase":
            fill_structure(cols, rng, rng.uniform(8.5, 12.0, n))
            cols["size_arcsec"] = rng.uniform(15.0, 60.0, n)
            cols["disk_hlr"] = cols["size_arcsec"] * rng.uniform(1.0, 1.2, n)
            big_bulge = cols["subtype"] != "spiral"
            cols["bulge_hlr"] = np.where(big_bulge, cols["size_arcsec"], cols["disk_hlr"] * rng.uniform(0.15, 0.35, n))
        elif kind in ("open", "globular"):
            _fill_cluster(cols, rng, kind)
        else:
            _fill_nebula(cols, rng, kind)
        parts.append(cols)
    cols = catalog.concat(parts)
    cols["id"] = np.char.add(f"{LANDMARKS.tag}{LANDMARKS.nside}-{cell}-", np.arange(len(cols["ra"])).astype("U4"))
    return cols


def _fill_cluster(cols: dict[str, np.ndarray], rng: np.random.Generator, kind: str) -> None:
    n = cols["ra"].size
    cols["kind"][:] = "cluster"
    cols["subtype"][:] = kind
    if kind == "open":
        cols["size_arcsec"] = rng.uniform(180.0, 1200.0, n)  # radius
        cols["core_arcsec"] = cols["size_arcsec"] * rng.uniform(0.2, 0.4, n)
        cols["diffuse_frac"][:] = 0.1
        dist_kpc = rng.uniform(0.4, 4.0, n)
    else:
        cols["size_arcsec"] = rng.uniform(300.0, 900.0, n)  # tidal radius
        cols["core_arcsec"] = rng.uniform(8.0, 50.0, n)
        cols["diffuse_frac"] = rng.uniform(0.3, 0.5, n)  # light of stars below the survey limit
        dist_kpc = rng.uniform(4.0, 35.0, n)
    cols["redshift"] = dist_kpc  # kpc for clusters (documented in sources())
    # Integrated light, set from the members in cluster_members().
    for i in range(n):
        members = cluster_members({k: v[i : i + 1] for k, v in cols.items()} | {"id": np.array(["x"])})
        flux = {band: np.sum(10 ** (-0.4 * members[f"mag_{band}"])) for band in "bgr"}
        for band in "bgr":
            total = flux[band] / max(1e-9, 1.0 - float(cols["diffuse_frac"][i]))
            cols[f"mag_{band}"][i] = -2.5 * np.log10(max(total, 1e-12))


def cluster_members(cluster: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Member stars (G <= 21) of one cluster row, Gaia-like, kind "star"."""
    rng = np.random.default_rng(int(cluster["seed"][0]))
    globular = str(cluster["subtype"][0]) == "globular"
    dist_pc = float(cluster["redshift"][0]) * 1000.0
    dm = 5.0 * np.log10(dist_pc) - 5.0
    ext = rng.uniform(0.1, 1.2) if not globular else rng.uniform(0.05, 0.6)  # E(BP-RP)
    if globular:
        n = int(rng.integers(20_000, 80_000))  # down to M_G = 9; only the G <= 21 ones are kept
        # Giant branch, horizontal branch, turn-off and main sequence, old metal-poor.
        abs_g = power_law_mags(rng, n, -2.5, 9.0, 0.33)  # luminosity function, red-giant tip at -2.5
        c = np.where(abs_g < 3.5, 0.9 + 0.14 * (3.5 - abs_g), 0.75 + 0.22 * (abs_g - 4.0))
        hb = (rng.random(n) < 0.12) & (abs_g < 3.0)
        abs_g = np.where(hb, rng.normal(0.6, 0.1, n), abs_g)
        c = np.where(hb, rng.uniform(0.0, 1.0, n), c)
    else:
        n = int(rng.integers(60, 400))
        abs_g = -2.0 + 11.0 * rng.random(n) ** 0.6  # young: some bright blue stars, most faint
        c = np.where(abs_g < 5.0, 0.15 * (abs_g + 1.0), 0.9 + 0.3 * (abs_g - 5.0))
    c = np.clip(c + rng.normal(0.0, 0.04, n) + ext, -0.3, 4.5)
    g = abs_g + dm + 2.0 * ext + rng.normal(0.0, 0.05, n)
    keep = g <= 21.0
    g, c = g[keep], c[keep]
    n = g.size
    # Plummer-like radial profile, truncated at the cluster radius; uniform angles.
    a = float(cluster["core_arcsec"][0])
    r_max = float(cluster["size_arcsec"][0])
    u = rng.uniform(1e-3, 1.0, n)
    r = np.minimum(a / np.sqrt(u ** (-2.0 / 3.0) - 1.0), r_max)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    ra, dec = offsets_to_radec(float(cluster["ra"][0]), float(cluster["dec"][0]), r * np.sin(theta), r * np.cos(theta))
    cols = catalog.empty(n)
    cols["ra"], cols["dec"] = ra, dec
    cols["kind"][:] = "star"
    cols["parent"][:] = str(cluster["id"][0])
    cols["id"] = np.char.add(f"{cluster['id'][0]}-m", np.arange(n).astype("U5"))
    g_rp = 0.62 * c - 0.06 * c**2
    cols["phot_g_mean_mag"], cols["phot_rp_mean_mag"] = g, g - g_rp
    cols["phot_bp_mean_mag"] = g - g_rp + c
    plx = 1000.0 / dist_pc
    pm_ra, pm_dec = rng.normal(0.0, 5.0, 2)
    err = 0.02 * 10 ** (0.2 * np.clip(g - 15.0, 0.0, None))
    cols["parallax"] = plx + rng.normal(0.0, 1.0, n) * err
    cols["pmra"] = pm_ra + rng.normal(0.0, 1.0, n) * err
    cols["pmdec"] = pm_dec + rng.normal(0.0, 1.0, n) * err
    cols["mag_b"], cols["mag_g"], cols["mag_r"] = catalog.gaia_to_bgr(g, c)
    # Gaia-like ids in the 2^35 block of the cluster's own sequence space.
    cols["source_id"] = (int(cluster["seed"][0]) % (2**27)) * 2**35 + 2**34 + np.arange(n, dtype=np.int64)
    return cols


def _fill_nebula(cols: dict[str, np.ndarray], rng: np.random.Generator, kind: str) -> None:
    n = cols["ra"].size
    cols["kind"][:] = "nebula"
    cols["diffuse_frac"][:] = 1.0
    if kind == "emission":
        cols["subtype"][:] = "emission"
        cols["size_arcsec"] = 10 ** rng.uniform(np.log10(240.0), np.log10(2400.0), n)
        cols["core_arcsec"] = cols["size_arcsec"] * rng.uniform(0.05, 0.15, n)  # filament scale
        cols["oiii_frac"] = rng.uniform(0.1, 0.45, n)
        mu = rng.uniform(20.5, 23.0, n)  # mean surface brightness, mag/arcsec^2 (r)
    else:
        cols["subtype"][:] = "planetary"
        cols["size_arcsec"] = 10 ** rng.uniform(np.log10(8.0), np.log10(90.0), n)
        cols["core_arcsec"] = cols["size_arcsec"] * rng.uniform(0.06, 0.14, n)  # shell thickness
        cols["oiii_frac"] = rng.uniform(0.4, 0.8, n)
        mu = rng.uniform(18.5, 21.0, n)
    cols["pa_deg"] = rng.uniform(0.0, 180.0, n)
    cols["disk_q"] = rng.uniform(0.6, 1.0, n)
    area = np.pi * cols["size_arcsec"] ** 2 * 0.5
    mag_r = mu - 2.5 * np.log10(area)
    # H-alpha is in r; [O III] 5007 falls in g; H-beta adds a little blue.
    o = cols["oiii_frac"]
    cols["mag_r"] = mag_r - 2.5 * np.log10(1.0 - o + 1e-3)
    cols["mag_g"] = mag_r - 2.5 * np.log10(o + 0.05)
    cols["mag_b"] = mag_r - 2.5 * np.log10(0.6 * o + 0.12)
