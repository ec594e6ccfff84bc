"""The noiseless sky on a grid: every source drawn in linear flux in the three catalogue
bands (b, g, r); the views add their instrument on top (surveys.py, outreach.py)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from services.universe import catalog, starfield
from services.universe.draw_diffuse import draw_diffuse
from services.universe.draw_galaxies import band_fluxes, draw_galaxies
from services.universe.grid import Grid
from services.universe.points import PSF, PixelKernel, paint_points
from services.universe.sky import Sky

POINT_KINDS = ("star",)


def scene_catalog(sky: Sky, grid: Grid, mag_limit: float, margin_deg: float) -> dict[str, np.ndarray]:
    """The sources that can touch the grid: the cone around it, widened by the reach of
    bright halos and big galaxies (margin)."""
    return sky.catalog(grid.ra, grid.dec, grid.radius_deg + margin_deg, mag_limit=mag_limit)


def point_sigma(grid: Grid, psf: PSF, pixel_sigma: float) -> float:
    """1-sigma noise (flux) of a point source measured over its PSF on this grid."""
    sigma_px = psf.effective_fwhm(grid.pixel_arcsec) / grid.pixel_arcsec / 2.355
    return float(pixel_sigma * np.sqrt(max(1.0, 4.0 * np.pi * sigma_px**2)))


def visible_mag_limit(view_limit: float, grid: Grid, psf: PSF, pixel_sigma: float) -> float:
    """Sources fainter than ~2 sigma on this grid cannot be seen one by one, nor stars
    fainter than where they crowd several to a pixel: on coarse grids those are drawn as
    a glow instead (see `add_unresolved_starlight`), which saves generating and drawing
    most of the catalogue of a wide field."""
    detect = 25.0 - 2.5 * np.log10(2.0 * point_sigma(grid, psf, pixel_sigma))
    return min(view_limit, detect, _crowding_limit(grid))


def _crowding_limit(grid: Grid, per_pixel: float = 0.3) -> float:
    """The magnitude down to which stars average `per_pixel` per pixel (densest of the
    grid's centre and a few edge points)."""
    h, w = grid.shape
    xs, ys = np.array([(w - 1) / 2, 0, w - 1, 0, w - 1]), np.array([(h - 1) / 2, 0, 0, h - 1, h - 1])
    ra, dec = grid.pixel_to_radec(xs, ys)
    ok = np.isfinite(ra) & np.isfinite(dec)
    density = float(starfield.density_per_deg2(ra[ok], dec[ok]).max()) if ok.any() else 1e4
    wanted = per_pixel / ((grid.pixel_arcsec / 3600.0) ** 2 * density)  # share of all stars to G = 21
    if wanted >= 1.0:
        return starfield.G_FAINT
    k = starfield.COUNT_SLOPE
    lo, hi = 10 ** (k * starfield.G_BRIGHT), 10 ** (k * starfield.G_FAINT)
    return float(np.log10(lo + wanted * (hi - lo)) / k)


def add_unresolved_starlight(planes: np.ndarray, grid: Grid, mag_limit: float, step: int = 16) -> None:
    """The summed light of the catalogue stars fainter than mag_limit (not drawn one by
    one on this grid), as a smooth surface brightness sampled every `step` pixels."""
    if mag_limit >= starfield.G_FAINT:
        return
    h, w = grid.shape
    ys, xs = np.arange(0, h + step, step, dtype=float), np.arange(0, w + step, step, dtype=float)
    yy, xx = np.meshgrid(np.minimum(ys, h - 1), np.minimum(xs, w - 1), indexing="ij")
    ra, dec = grid.pixel_to_radec(xx, yy)
    ok = np.isfinite(ra) & np.isfinite(dec)
    coarse = np.zeros((3, *xx.shape))
    if ok.any():
        coarse[:, ok] = starfield.unresolved_flux_per_deg2(ra[ok], dec[ok], mag_limit)
    pixel_deg2 = (grid.pixel_arcsec / 3600.0) ** 2
    yi, xi = np.arange(h) / step, np.arange(w) / step
    for b in range(3):
        planes[b] += (map_coordinates(coarse[b], np.meshgrid(yi, xi, indexing="ij"), order=1) * pixel_deg2).astype(
            planes.dtype
        )


def render_scene(
    grid: Grid,
    cols: dict[str, np.ndarray],
    psf: PSF,
    threshold: float,
    structure_flux: float,
    spikes: PixelKernel | None = None,
    display_images: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(3, H, W) float32 linear flux (b, g, r), flux 1 = magnitude 25; and the stars drawn
    with their pixel positions (for spikes and saturation effects)."""
    planes = np.zeros((3, *grid.shape), dtype=np.float32)
    blur_px = psf.effective_fwhm(grid.pixel_arcsec) / grid.pixel_arcsec / 2.355
    draw_diffuse(planes, grid, cols, blur_px, display_images)
    gal = catalog.select(cols, cols["kind"] == "galaxy")
    draw_galaxies(planes, grid, gal, psf, threshold, structure_flux)
    stars = catalog.select(cols, np.isin(cols["kind"], POINT_KINDS))
    x, y = grid.to_pixels(stars["ra"], stars["dec"])
    ok = np.isfinite(x) & np.isfinite(y)
    stars = catalog.select(stars, ok)
    x, y = x[ok], y[ok]
    fluxes = band_fluxes(stars)
    paint_points(planes, grid, x, y, fluxes, psf, threshold, spikes=spikes)
    stars["x"], stars["y"] = x, y
    return planes, stars
