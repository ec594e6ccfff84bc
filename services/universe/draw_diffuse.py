"""Extended light that is not a galaxy: the unresolved glow of star clusters, emission
and planetary nebulae, and the real images, all in linear flux in the bands (b, g, r).

Nebulae are procedural: coherent value noise defined in the nebula's own sky frame
(arcsec), so every footprint that crosses a nebula sees the same gas, with finer octaves
on finer grids. H-alpha (r band, red) traces filaments over the whole envelope, [O III]
(g and b, teal) the ionised core; dust lanes darken both.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from astropy.wcs import FITSFixedWarning
from reproject import reproject_interp
from scipy.ndimage import distance_transform_edt, gaussian_filter

from services.universe.draw_galaxies import band_fluxes
from services.universe.grid import Grid
from services.universe.noise import fbm
from services.universe.realdata import RealImage, real_images

# --- shared helpers ---------------------------------------------------------------


def _box_offsets(grid: Grid, ra: float, dec: float, radius_arcsec: float):
    """Pixel box of the object on the grid and exact (east, north) arcsec of its pixels."""
    x, y = grid.to_pixels(np.array([ra]), np.array([dec]))
    if not (np.isfinite(x[0]) and np.isfinite(y[0])):
        return None
    box = grid.overlap_box(float(x[0]), float(y[0]), radius_arcsec / grid.pixel_arcsec + 2)
    if box is None:
        return None
    east, north = grid.sky_offsets(ra, dec, *box)
    return box, east, north


def _frame(east: np.ndarray, north: np.ndarray, pa_deg: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    pa = np.radians(pa_deg)
    a = east * np.sin(pa) + north * np.cos(pa)
    c = (east * np.cos(pa) - north * np.sin(pa)) / q
    return a, c


# --- clusters ---------------------------------------------------------------------


def draw_cluster_glow(planes: np.ndarray, grid: Grid, cols: dict[str, np.ndarray], i: int, blur_px: float) -> None:
    """The unresolved stars of a cluster: a Plummer profile with the cluster's core radius."""
    frac = float(cols["diffuse_frac"][i])
    if frac <= 0:
        return
    core = float(cols["core_arcsec"][i])
    found = _box_offsets(
        grid, float(cols["ra"][i]), float(cols["dec"][i]), min(float(cols["size_arcsec"][i]), 40 * core)
    )
    if found is None:
        return
    (x0, x1, y0, y1), east, north = found
    area = grid.pixel_arcsec**2
    sigma = core**2 / (np.pi * (core**2 + east**2 + north**2) ** 2) * area
    flux = band_fluxes({k: cols[k][i : i + 1] for k in ("mag_b", "mag_g", "mag_r")})[:, 0] * frac
    for b in range(3):
        layer = flux[b] * sigma
        planes[b, y0:y1, x0:x1] += gaussian_filter(layer, blur_px) if blur_px > 0.35 else layer


# --- nebulae ----------------------------------------------------------------------


def _nebula_maps(
    a: np.ndarray, c: np.ndarray, size: float, detail: float, seed: int, planetary: bool, finest: float
) -> tuple[np.ndarray, np.ndarray]:
    """(H-alpha, [O III]) surface brightness, unnormalised, in the nebula frame (arcsec)."""
    r = np.hypot(a, c)
    if planetary:
        # A bright, knotty shell (H-alpha, [O III] inside it), a fainter outer halo.
        rr = r / size * (1.0 + 0.1 * fbm(a, c, seed, size * 0.5, finest, 4))
        shell = np.exp(-(((rr - 0.7) / (detail / size)) ** 2))
        strands = (1.0 - np.abs(fbm(a, c, seed + 5, detail * 1.5, finest, 10))) ** 6
        clumps = np.exp(1.2 * fbm(a, c, seed + 6, detail, finest, 10))
        inner = np.exp(-((rr / 0.55) ** 2)) * clumps
        halo = 0.04 * np.exp(-((r / (1.4 * size)) ** 2))
        return shell * (0.35 + 1.3 * strands) * clumps + halo, 0.8 * inner + 0.3 * shell
    # Emission nebula: a warped envelope of clumpy gas, bright filaments (ridges of
    # fractal noise) at every scale down to the pixel, and dark dust lanes.
    big = fbm(a, c, seed, size * 0.8, finest, 3)
    warp = 1.0 + 0.35 * big
    envelope = np.exp(-2.0 * (r / size * warp) ** 2)
    cloud = np.clip(0.55 + 0.8 * fbm(a, c, seed + 1, size * 0.35, finest, 11), 0.0, None)
    ridges = (1.0 - np.abs(fbm(a + 13.0 * size, c, seed + 2, detail * 3.0, finest, 12))) ** 8
    dust = np.clip(fbm(a, c, seed + 3, size * 0.25, finest, 10) - 0.15, 0.0, None)
    absorb = np.exp(-4.0 * dust)
    ha = envelope * (0.5 * cloud + 1.6 * ridges * cloud) * absorb
    core = np.exp(-((r / (0.45 * size * warp)) ** 2))
    oiii = core * (0.8 * cloud + 0.6 * ridges) * absorb
    return ha, oiii


@lru_cache(maxsize=512)
def _nebula_norm(size: float, detail: float, seed: int, planetary: bool) -> tuple[float, float]:
    """Integrals of the two maps over the sky (arcsec^2) on a coarse grid, so fluxes match
    the catalogue whatever part of the nebula a footprint shows."""
    s = np.linspace(-2.2 * size, 2.2 * size, 160)
    a, c = np.meshgrid(s, s)
    ha, oiii = _nebula_maps(a, c, size, detail, seed, planetary, finest=size / 40)
    cell = (s[1] - s[0]) ** 2
    return float(ha.sum() * cell) + 1e-12, float(oiii.sum() * cell) + 1e-12


def draw_nebula(planes: np.ndarray, grid: Grid, cols: dict[str, np.ndarray], i: int, blur_px: float) -> None:
    size = float(cols["size_arcsec"][i])
    found = _box_offsets(grid, float(cols["ra"][i]), float(cols["dec"][i]), 2.2 * size)
    if found is None:
        return
    (x0, x1, y0, y1), east, north = found
    q = float(cols["disk_q"][i])
    a, c = _frame(east, north, float(cols["pa_deg"][i]), q)
    planetary = str(cols["subtype"][i]) == "planetary"
    detail, seed = float(cols["core_arcsec"][i]), int(cols["seed"][i]) % (2**61)
    ha, oiii = _nebula_maps(a, c, size, detail, seed, planetary, finest=1.5 * grid.pixel_arcsec)
    n_ha, n_oiii = _nebula_norm(round(size, 3), round(detail, 3), seed, planetary)
    area = grid.pixel_arcsec**2 / q
    o = float(cols["oiii_frac"][i])
    total_r = 10 ** (-0.4 * (float(cols["mag_r"][i]) - 25.0)) / max(1.0 - o, 1e-3)  # line flux scale
    ha_flux, oiii_flux = total_r * (1 - o) * ha / n_ha * area, total_r * o * oiii / n_oiii * area
    # Bands: H-alpha in r (H-beta adds a little b), [O III] 4959/5007 in g and some b.
    layers = (0.12 * ha_flux + 0.75 * oiii_flux, 1.0 * oiii_flux + 0.05 * ha_flux, ha_flux)
    for b, layer in enumerate(layers):
        planes[b, y0:y1, x0:x1] += gaussian_filter(layer, blur_px) if blur_px > 0.35 else layer


# --- real images --------------------------------------------------------------------


def draw_real_image(planes: np.ndarray, grid: Grid, image: RealImage, blur_px: float, feather: float = 0.08) -> None:
    """Reproject a real image onto the grid (where they overlap), background-subtracted,
    feathered into the synthetic sky at its edges."""
    x, y = grid.to_pixels(np.array([image.ra]), np.array([image.dec]))
    if not (np.isfinite(x[0]) and np.isfinite(y[0])):
        return
    box = grid.overlap_box(float(x[0]), float(y[0]), image.radius_deg * 3600.0 / grid.pixel_arcsec + 2)
    if box is None:
        return
    x0, x1, y0, y1 = box
    sub = grid.wcs[y0:y1, x0:x1]
    data = _feathered(image, feather)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        out = [
            reproject_interp((data[b], image.wcs), sub, shape_out=(y1 - y0, x1 - x0), return_footprint=False)
            for b in range(3)
        ]
    area = grid.pixel_arcsec**2
    for b in range(3):
        layer = np.nan_to_num(out[b]) * image.flux_scale * area
        planes[b, y0:y1, x0:x1] += gaussian_filter(layer, blur_px) if blur_px > 0.35 else layer


@lru_cache(maxsize=8)
def _ramp(name: str, feather: float) -> np.ndarray:
    """0 at the image edge rising smoothly to 1 over `feather` of its size."""
    image = next(img for img in real_images() if img.name == name)
    h, w = image.data.shape[1:]
    inside = np.ones((h + 2, w + 2), dtype=bool)
    inside[0, :] = inside[-1, :] = inside[:, 0] = inside[:, -1] = False
    ramp = np.clip(distance_transform_edt(inside)[1:-1, 1:-1] / (feather * min(h, w)), 0.0, 1.0)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)


@lru_cache(maxsize=8)
def _feathered_cached(name: str, feather: float) -> np.ndarray:
    image = next(img for img in real_images() if img.name == name)
    return (image.data * _ramp(name, feather)).astype(np.float32)


def composite_display_images(rgb: np.ndarray, grid: Grid, feather: float = 0.08) -> None:
    """Lay real outreach pictures (the Hubble XDF) over a stretched (3, H, W) 0..1 image,
    reprojected and feathered at their edges: shown as published, not re-stretched."""
    for image in real_images():
        if image.display is None or not _near(grid, image):
            continue
        x, y = grid.to_pixels(np.array([image.ra]), np.array([image.dec]))
        box = grid.overlap_box(float(x[0]), float(y[0]), image.radius_deg * 3600.0 / grid.pixel_arcsec + 2)
        if box is None:
            continue
        x0, x1, y0, y1 = box
        sub = grid.wcs[y0:y1, x0:x1]
        layers = [*image.display, _ramp(image.name, feather)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            out = [
                np.nan_to_num(
                    reproject_interp((layer, image.wcs), sub, shape_out=(y1 - y0, x1 - x0), return_footprint=False)
                )
                for layer in layers
            ]
        weight = out[3]
        for c in range(3):
            rgb[c, y0:y1, x0:x1] = (1.0 - weight) * rgb[c, y0:y1, x0:x1] + weight * out[c]


def _feathered(image: RealImage, feather: float) -> np.ndarray:
    return _feathered_cached(image.name, feather)


def draw_diffuse(
    planes: np.ndarray, grid: Grid, cols: dict[str, np.ndarray], blur_px: float, display_images: bool = False
) -> None:
    """Every cluster glow, nebula and real image of the catalogue onto the grid. With
    display_images, real images that are outreach pictures themselves are left out (the
    outreach view composites them after its stretch, see `composite_display_images`)."""
    for i in np.flatnonzero(cols["kind"] == "cluster"):
        draw_cluster_glow(planes, grid, cols, int(i), blur_px)
    for i in np.flatnonzero(cols["kind"] == "nebula"):
        draw_nebula(planes, grid, cols, int(i), blur_px)
    names = set(cols["subtype"][cols["kind"] == "image"].tolist())
    for image in real_images():
        if display_images and image.display is not None:
            continue
        if image.name in names or _near(grid, image):
            draw_real_image(planes, grid, image, blur_px)


def _near(grid: Grid, image: RealImage) -> bool:
    from services.universe.cells import angular_separation_deg

    sep = float(angular_separation_deg(np.array([image.ra]), np.array([image.dec]), grid.ra, grid.dec)[0])
    return sep < grid.radius_deg + image.radius_deg
