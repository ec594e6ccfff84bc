"""The sky model: one deterministic universe over the whole sphere.

What is real: 50 Gaia DR3 stars near RA 280, Dec -60 and three images (Hubble XDF, M13,
M1 on a POSS-I plate) from package test data, at their true positions (`realdata`).
Everything else is synthetic, generated per HEALPix cell from (seed, layer, cell):

| layers | cells | content |
| --- | --- | --- |
| `starfield.STAR_LAYERS` | nside 16 ... 256 (3.7 ... 0.23 deg) | field stars, G 3-11-14-16-18.5-21, Gaia-like |
| `galaxies.GALAXY_LAYERS` | nside 32 / 256 / 2048 (1.8 deg / 0.23 deg / 1.7') | galaxies r 8-17 / 17-22.5 / 22.5-29 |
| `landmarks.LANDMARKS` | nside 16 (~3.7 deg) | clusters (+ member stars), nebulae, big galaxies |

Bright sources live in big cells and faint ones in small cells, so a query only pays for
the magnitudes it asks for (a wide, coarse hips2fits field generates only bright stars).

Magnitudes: mag_b, mag_g, mag_r are roughly Johnson B, V and Cousins R, on a scale where
the renderers' flux unit is magnitude 25.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.table import Table

from services.universe import catalog, galaxies, landmarks, realdata, starfield
from services.universe.cells import Layer, angular_separation_deg

DEFAULT_SEED: int = 20261121

# The Gaia columns every star carries, real or synthetic.
STAR_COLUMNS = realdata.GAIA_COLUMNS


# What each layer generates: layer -> (generator, magnitude from, to).
_GENERATORS = {
    **{layer: (starfield.cell_stars, lo, hi) for layer, lo, hi in starfield.STAR_LAYERS},
    **{layer: (galaxies.cell_galaxies, lo, hi) for layer, lo, hi in galaxies.GALAXY_LAYERS},
}


CACHE_ROWS = 2_000_000  # cached cell rows (~300 bytes each), oldest use evicted first
_cache: OrderedDict[tuple[Layer, int, int], dict[str, np.ndarray]] = OrderedDict()
_cache_rows = 0
_cache_lock = threading.Lock()


def _cell(layer: Layer, seed: int, cell: int) -> dict[str, np.ndarray]:
    """All sources of one cell, cached by rows (renders of neighbouring footprints share
    cells; a Milky Way cell can hold 10^4 stars, a high-latitude one a few)."""
    global _cache_rows
    key = (layer, seed, cell)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    cols = _generate_cell(layer, seed, cell)
    rows = len(cols["ra"])
    with _cache_lock:
        if key not in _cache:
            _cache[key] = cols
            _cache_rows += rows
        while _cache_rows > CACHE_ROWS and len(_cache) > 1:
            _, old = _cache.popitem(last=False)
            _cache_rows -= len(old["ra"])
    return cols


def clear_cache() -> None:
    """Forget every generated cell (benchmarks measure cold renders with it)."""
    global _cache_rows
    with _cache_lock:
        _cache.clear()
        _cache_rows = 0
    _members.cache_clear()


def _generate_cell(layer: Layer, seed: int, cell: int) -> dict[str, np.ndarray]:
    ra_c, dec_c = (float(v[0]) for v in layer.centres(np.array([cell])))
    if layer is landmarks.LANDMARKS:
        cols = landmarks.cell_landmarks(seed, cell, ra_c, dec_c)
    else:
        generate, lo, hi = _GENERATORS[layer]
        cols = generate(layer, lo, hi, seed, cell, ra_c, dec_c)
    for arr in cols.values():
        arr.flags.writeable = False
    return cols


@lru_cache(maxsize=2048)
def _members(seed: int, cluster_id: str) -> dict[str, np.ndarray]:
    """Member stars of a cluster, found by its id (so its cell is generated once)."""
    cell = int(cluster_id.split("-")[1])
    cols = _cell(landmarks.LANDMARKS, seed, cell)
    i = int(np.flatnonzero(cols["id"] == cluster_id)[0])
    return landmarks.cluster_members({k: v[i : i + 1] for k, v in cols.items()})


def _gather(
    layer: Layer, seed: int, ra: float, dec: float, radius: float, pad: float = 0.0, mag_limit: float | None = None
) -> list[dict]:
    """The sources of the cells overlapping the cone (widened by pad), each cell's cut to
    the widened cone and the magnitude limit before anything is concatenated."""
    out = []
    for cell in layer.cells_in_cone(ra, dec, radius + pad):
        cols = _cell(layer, seed, int(cell))
        keep = angular_separation_deg(cols["ra"], cols["dec"], ra, dec) <= radius + pad
        if mag_limit is not None:
            keep &= np.minimum(np.minimum(cols["mag_b"], cols["mag_g"]), cols["mag_r"]) <= mag_limit
        out.append(cols if keep.all() else catalog.select(cols, keep))
    return out


@dataclass(frozen=True)
class Sky:
    seed: int = DEFAULT_SEED

    def catalog(
        self, ra_deg: float, dec_deg: float, radius_deg: float, mag_limit: float | None = None
    ) -> dict[str, np.ndarray]:
        """The sources within the cone as a dict of columns (see `catalog.COLUMNS`).

        mag_limit (on min(mag_b, mag_g, mag_r)) drops fainter point sources and galaxies
        and skips the deep galaxy layer when it cannot contribute; extended clusters,
        nebulae and real images always come back."""
        ra, dec, radius = float(ra_deg) % 360.0, float(dec_deg), float(radius_deg)
        parts: list[dict[str, np.ndarray]] = []
        # Only the magnitude slices that can pass the limit (a star's r is at most ~0.4 mag
        # brighter than its G; a galaxy's r is its brightest band).
        for layer, lo, _hi in starfield.STAR_LAYERS:
            if mag_limit is None or lo < mag_limit + 0.5:
                parts += _gather(layer, self.seed, ra, dec, radius, mag_limit=mag_limit)
        for layer, lo, _hi in galaxies.GALAXY_LAYERS:
            if mag_limit is None or lo < mag_limit + 0.3:
                parts += _gather(layer, self.seed, ra, dec, radius, mag_limit=mag_limit)
        marks = catalog.concat(_gather(landmarks.LANDMARKS, self.seed, ra, dec, radius, landmarks.MAX_RADIUS_DEG))
        parts.append(marks)
        for cluster_id in marks["id"][marks["kind"] == "cluster"]:
            members = _members(self.seed, str(cluster_id))
            keep = angular_separation_deg(members["ra"], members["dec"], ra, dec) <= radius
            if keep.any():
                parts.append(catalog.select(members, keep))
        cols = catalog.concat(parts)

        # Real data wins where it exists: no synthetic star inside the real Gaia patch,
        # no synthetic source on the pixels of a real image.
        g_ra, g_dec, g_r = realdata.gaia_patch()
        synthetic = cols["origin"] == "synthetic"
        in_patch = (
            synthetic & (cols["kind"] == "star") & (angular_separation_deg(cols["ra"], cols["dec"], g_ra, g_dec) < g_r)
        )
        covered = synthetic & realdata.inside_real_images(cols["ra"], cols["dec"])
        cols = catalog.select(cols, ~(in_patch | covered))
        cols = catalog.concat([cols, realdata.gaia_rows(), realdata.real_image_rows()])

        keep = angular_separation_deg(cols["ra"], cols["dec"], ra, dec) <= radius
        if mag_limit is not None:
            brightest = np.minimum(np.minimum(cols["mag_b"], cols["mag_g"]), cols["mag_r"])
            extended = np.isin(cols["kind"], ("cluster", "nebula", "image"))
            keep &= extended | (brightest <= mag_limit)
        cols = catalog.select(cols, keep)
        order = np.argsort(cols["id"], kind="stable")
        return catalog.select(cols, order)

    def sources(self, ra_deg: float, dec_deg: float, radius_deg: float, mag_limit: float | None = None) -> Table:
        """Every source whose centre lies within radius_deg of (ra, dec): ground truth.

        Columns: id (unique, stable), kind ("star", "galaxy", "cluster", "nebula", "image"),
        ra, dec (deg, ICRS), mag_b, mag_g, mag_r, size_arcsec (0 for stars; half-light radius
        for galaxies, radius for clusters, nebulae and real images), origin ("synthetic",
        "gaia-dr3", "real-image"), subtype, parent (cluster of a member star), Gaia columns
        for stars, and the structure the renderers draw (see `catalog.COLUMNS`; for
        clusters `redshift` holds the distance in kpc). Sorted by id.

        Without mag_limit the faint galaxy layer (to r = 29, ~1e6 per deg^2) is
        included: keep the radius small (a few arcmin) or pass mag_limit."""
        return catalog.to_table(self.catalog(ra_deg, dec_deg, radius_deg, mag_limit))

    def stars(self, ra_deg: float, dec_deg: float, radius_deg: float) -> Table:
        """Stars only, as Gaia DR3 rows: source_id (int64, unique), ra, dec, phot_g_mean_mag,
        phot_bp_mean_mag, phot_rp_mean_mag, pmra, pmdec, parallax, ref_epoch (2016.0),
        origin ("gaia-dr3" for the real rows shipped with astroquery, else "synthetic").
        Sorted by source_id."""
        cols = self.catalog(ra_deg, dec_deg, radius_deg, mag_limit=22.5)
        cols = catalog.select(cols, cols["kind"] == "star")
        cols = catalog.select(cols, np.argsort(cols["source_id"], kind="stable"))
        table = Table({name: cols[name] for name in STAR_COLUMNS})
        table["ref_epoch"] = np.full(len(table), 2016.0)
        table["origin"] = cols["origin"].astype("U9")
        for name, unit in (("ra", "deg"), ("dec", "deg"), ("pmra", "mas / yr"), ("pmdec", "mas / yr")):
            table[name].unit = unit
        table["parallax"].unit = "mas"
        for name in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"):
            table[name].unit = "mag"
        return table

    def landmarks(self, ra_deg: float = 0.0, dec_deg: float = 0.0, radius_deg: float = 180.0) -> Table:
        """The showy objects only (clusters, nebulae, galaxies bigger than 15", real images):
        cheap even over the whole sky, for choosing interesting fields. Same columns as sources()."""
        ra, dec, radius = float(ra_deg) % 360.0, float(dec_deg), float(radius_deg)
        marks = catalog.concat([*_gather(landmarks.LANDMARKS, self.seed, ra, dec, radius), realdata.real_image_rows()])
        marks = catalog.select(marks, angular_separation_deg(marks["ra"], marks["dec"], ra, dec) <= radius)
        return catalog.to_table(catalog.select(marks, np.argsort(marks["id"], kind="stable")))
