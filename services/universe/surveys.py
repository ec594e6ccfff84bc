"""The survey view: what a colour HiPS of DSS2 or SDSS9 shows, on any grid.

DSS2 (photographic): blue (IIIa-J) and red (IIIa-F) Schmidt plates, green interpolated;
2-3" seeing varying by plate, light scattered into halos, emulsion grain, a saturating
characteristic curve (bright stars become flat bloated discs), plate-to-plate sky and
sensitivity differences, ~10 % of plates with one usable colour, scratches and dust.
SDSS9 (CCD, drift scan): g, r, i -> B, G, R; 1.3" seeing, Gaussian sky noise, asinh
colour stretch, saturated stars bleeding along the scan, blank (NaN) outside the footprint.
Noise is seeded from the footprint, so the same request gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from services.universe.cells import offsets_to_radec
from services.universe.footprints import dss_plate, in_sdss
from services.universe.grid import Grid, blockwise_map
from services.universe.points import PSF
from services.universe.scene import (
    add_unresolved_starlight,
    point_sigma,
    render_scene,
    scene_catalog,
    visible_mag_limit,
)
from services.universe.sky import Sky

DSS2, SDSS9 = "CDS/P/DSS2/color", "CDS/P/SDSS9/color"


@dataclass(frozen=True)
class SurveyLook:
    psf: PSF
    mag_limit: float  # sources fainter than this (in every band) are not drawn
    sky_mu: tuple[float, float, float]  # sky surface brightness in the channels, mag/arcsec^2


DSS2_LOOK = SurveyLook(PSF(2.6, beta=2.6, halo_frac=0.08, halo_arcsec=5.0), 22.0, (22.3, 21.6, 20.8))
SDSS9_LOOK = SurveyLook(PSF(1.3, beta=3.2, halo_frac=0.02, halo_arcsec=4.0), 23.8, (22.1, 21.1, 20.3))


GRAIN = 0.07  # emulsion grain, relative to the sky, per ~1" of plate
G_STAR_BLUE_TO_RED = (0.55 * 10 ** (-0.4 * 0.65) + 0.45) / 10 ** (0.4 * 0.35)  # blue/red plate flux of a G star


def _plate_rng(seed: int, plate: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, 77, int(plate)])


@dataclass(frozen=True)
class Plate:
    """What differs from one DSS plate to the next (deterministic per plate)."""

    number: int
    fwhm: float
    sky_gain: tuple[float, float]  # blue, red sky level factors
    sensitivity: tuple[float, float]
    one_colour: str  # "", "red" or "blue": the colour that survives

    @classmethod
    @lru_cache(maxsize=4096)
    def of(cls, seed: int, number: int) -> Plate:
        rng = _plate_rng(seed, number)
        fwhm = float(rng.uniform(2.0, 3.2))
        # The HiPS was built from plates matched to each other: only small residual
        # differences in sky level and sensitivity remain, visible as faint seams.
        sky = (float(rng.uniform(0.93, 1.07)), float(rng.uniform(0.93, 1.07)))
        sens = (float(rng.uniform(0.92, 1.08)), float(rng.uniform(0.92, 1.08)))
        one = rng.random()
        colour = "red" if one < 0.07 else "blue" if one < 0.10 else ""
        return cls(number, fwhm, sky, sens, colour)


def dss_one_colour(seed: int, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """True where the DSS2 colour survey has one usable colour (grey pixels)."""
    plates = dss_plate(ra_deg, dec_deg)
    out = np.zeros(plates.shape, dtype=bool)
    for p in np.unique(plates):
        out[plates == p] = Plate.of(seed, int(p)).one_colour != ""
    return out


def render_dss2(sky: Sky, grid: Grid) -> np.ndarray:
    plates = blockwise_map(grid, dss_plate)
    centre_plate = Plate.of(sky.seed, int(dss_plate(np.array([grid.ra]), np.array([grid.dec]))[0]))
    look = DSS2_LOOK
    psf = PSF(centre_plate.fwhm, look.psf.beta, look.psf.halo_frac, look.psf.halo_arcsec)
    area = grid.pixel_arcsec**2
    sky_red = 10 ** (-0.4 * (look.sky_mu[2] - 25.0))
    threshold = 0.01 * sky_red  # flux/arcsec^2 below which wings are not drawn
    pixel_sigma = GRAIN * sky_red * area
    mag_limit = visible_mag_limit(look.mag_limit, grid, psf, pixel_sigma)
    cols = scene_catalog(sky, grid, mag_limit, margin_deg=0.05)
    planes, _stars = render_scene(grid, cols, psf, threshold, 200.0 * point_sigma(grid, psf, pixel_sigma))
    add_unresolved_starlight(planes, grid, mag_limit)
    blue = 0.55 * planes[0] + 0.45 * planes[1]  # IIIa-J spans B and part of V
    red = planes[2]  # IIIa-F + RG610: R

    rng = np.random.default_rng(grid.footprint_seed(DSS2))
    out = np.empty((3, *grid.shape), dtype=np.float32)
    numbers, index = np.unique(plates, return_inverse=True)
    index = index.reshape(grid.shape)
    on = [Plate.of(sky.seed, int(p)) for p in numbers]
    dens = {}
    for k, (name, light) in enumerate((("blue", blue), ("red", red))):
        # Each plate's density scale is set by its own sky; the colour balance makes a
        # G star (b-g 0.65, g-r 0.35) come out white, as the HiPS's does on average.
        sky_pix = 10 ** (-0.4 * (look.sky_mu[2] - 25.0)) * area * (G_STAR_BLUE_TO_RED if name == "blue" else 1.0)
        gain = np.array([p.sky_gain[k] for p in on], dtype=np.float32)[index]
        sens = np.array([p.sensitivity[k] for p in on], dtype=np.float32)[index]
        exposure = (light * sens + sky_pix * gain) / sky_pix
        # Emulsion grain: multiplicative, correlated over ~1 grain cluster (in arcsec).
        grain = gaussian_filter(rng.standard_normal(grid.shape, dtype=np.float32), max(0.6 / grid.pixel_arcsec, 0.3))
        grain *= GRAIN / max(float(grain.std()), 1e-6) * np.sqrt(min(1.0, grid.pixel_arcsec))
        exposure = exposure * (1.0 + grain) + rng.standard_normal(grid.shape, dtype=np.float32) * 0.02 * np.sqrt(
            np.maximum(exposure, 0)
        )
        dens[name] = _characteristic_curve(np.maximum(exposure, 1e-3))
    for i, plate in enumerate(on):
        if plate.one_colour:
            mask = index == i
            keep, lost = ("red", "blue") if plate.one_colour == "red" else ("blue", "red")
            dens[lost] = np.where(mask, dens[keep], dens[lost])
    out[0], out[2] = dens["red"], dens["blue"]
    out[1] = 0.5 * (dens["red"] + dens["blue"])
    _plate_defects(out, grid, sky.seed, plates, numbers)
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _characteristic_curve(exposure: np.ndarray) -> np.ndarray:
    """Photographic response in display units: toe at the sky, shoulder (saturation) ~300x sky."""
    t = np.log10(exposure)
    return (255.0 / (1.0 + np.exp(-(t - 0.81) / 0.468))).astype(np.float32)


def _plate_defects(out: np.ndarray, grid: Grid, seed: int, plates: np.ndarray, numbers: np.ndarray) -> None:
    """Scratches and dust specks, fixed on each plate (in sky coordinates). Not on coarse
    grids: the HiPS's low orders average them away."""
    if grid.pixel_arcsec > 4.0:
        return
    h, w = grid.shape
    for p in numbers:
        rng = _plate_rng(seed, int(p) + 10_000_000)
        zone, index = divmod(int(p), 1000)
        dec_c = -87.5 + 5.0 * zone
        per_zone = max(1, round(360.0 * np.cos(np.radians(dec_c)) / 5.0))
        ra_c = (index + 0.5) * 360.0 / per_zone
        n_specks, n_scratches = rng.poisson(400), rng.poisson(40)
        # Specks: positions within +-3.5 deg of the plate centre (tangent plane, arcsec).
        se, sn = rng.uniform(-12600, 12600, (2, n_specks))
        s_ra, s_dec = offsets_to_radec(ra_c, dec_c, se, sn)
        s_r = rng.uniform(1.5, 8.0, n_specks)
        s_dark = rng.random(n_specks) < 0.5
        a_e, a_n = rng.uniform(-12600, 12600, (2, n_scratches))
        length = rng.uniform(300.0, 3600.0, n_scratches)
        angle = rng.uniform(0.0, np.pi, n_scratches)
        b_e, b_n = a_e + length * np.cos(angle), a_n + length * np.sin(angle)
        a_ra, a_dec = offsets_to_radec(ra_c, dec_c, a_e, a_n)
        b_ra, b_dec = offsets_to_radec(ra_c, dec_c, b_e, b_n)
        sx, sy = grid.to_pixels(s_ra, s_dec)
        for x, y, r, dark in zip(sx, sy, s_r / grid.pixel_arcsec, s_dark, strict=True):
            if not (-r - 2 < x < w + r + 2 and -r - 2 < y < h + r + 2) or r < 0.3:
                continue
            x0, x1, y0, y1 = (
                max(0, int(x - r - 2)),
                min(w, int(x + r + 3)),
                max(0, int(y - r - 2)),
                min(h, int(y + r + 3)),
            )
            d = np.hypot(np.arange(x0, x1)[None, :] - x, np.arange(y0, y1)[:, None] - y)
            blob = np.clip(r + 0.5 - d, 0.0, 1.0) * (plates[y0:y1, x0:x1] == p)
            target = 12.0 if dark else 250.0
            out[:, y0:y1, x0:x1] += blob * (target - out[:, y0:y1, x0:x1])
        ax, ay = grid.to_pixels(a_ra, a_dec)
        bx, by = grid.to_pixels(b_ra, b_dec)
        for x0f, y0f, x1f, y1f in zip(ax, ay, bx, by, strict=True):
            if not np.all(np.isfinite([x0f, y0f, x1f, y1f])):
                continue
            if max(x0f, x1f) < 0 or min(x0f, x1f) >= w or max(y0f, y1f) < 0 or min(y0f, y1f) >= h:
                continue
            # Distance of the pixels near the segment to it; a scratch is ~1.5" wide, bright.
            width = max(0.75 / grid.pixel_arcsec, 0.5)
            bx0, bx1 = max(0, int(min(x0f, x1f) - width - 2)), min(w, int(max(x0f, x1f) + width + 3))
            by0, by1 = max(0, int(min(y0f, y1f) - width - 2)), min(h, int(max(y0f, y1f) + width + 3))
            sx, sy = np.arange(bx0, bx1)[None, :], np.arange(by0, by1)[:, None]
            vx, vy = x1f - x0f, y1f - y0f
            norm2 = max(vx * vx + vy * vy, 1e-9)
            t = np.clip(((sx - x0f) * vx + (sy - y0f) * vy) / norm2, 0.0, 1.0)
            d = np.hypot(sx - (x0f + t * vx), sy - (y0f + t * vy))
            line = np.clip(width + 0.5 - d, 0.0, 1.0) * 0.6 * (plates[by0:by1, bx0:bx1] == p)
            out[:, by0:by1, bx0:bx1] += line * (235.0 - out[:, by0:by1, bx0:bx1])


def render_sdss9(sky: Sky, grid: Grid) -> np.ndarray:
    inside = blockwise_map(grid, in_sdss)
    out = np.full((3, *grid.shape), np.nan, dtype=np.float32)
    if not inside.any():
        return out
    look = SDSS9_LOOK
    rng_field = np.random.default_rng([sky.seed & 0xFFFFFFFF, 91, int(np.floor((grid.dec + 90) / 2.5))])
    psf = PSF(float(rng_field.uniform(1.05, 1.6)), look.psf.beta, look.psf.halo_frac, look.psf.halo_arcsec)
    pix = grid.pixel_arcsec
    sigma_ref = np.array([0.55, 0.6, 0.9])  # noise per 0.396" pixel, flux units, channels g r i
    sigma = sigma_ref * (pix / 0.396)
    threshold = 0.2 * float(sigma_ref[1]) / 0.396**2
    mag_limit = visible_mag_limit(look.mag_limit, grid, psf, float(sigma[1]))
    cols = scene_catalog(sky, grid, mag_limit, margin_deg=0.03)
    planes, stars = render_scene(grid, cols, psf, threshold, 200.0 * point_sigma(grid, psf, float(sigma[1])))
    add_unresolved_starlight(planes, grid, mag_limit)
    rng = np.random.default_rng(grid.footprint_seed(SDSS9))
    _bleed_trails(planes, grid, stars, pix)
    scale = np.array([1.0, 1.0, 1.0])
    soft = 1.8 * sigma
    white = 900.0 * (pix / 0.396) ** 2
    for c in range(3):
        noisy = planes[c] + sigma[c] * rng.standard_normal(grid.shape, dtype=np.float32)
        # Black point just under the sky, as the HiPS has it: a near-black, noisy background.
        disp = np.arcsinh(np.maximum(noisy + 0.3 * sigma[c], 0.0) * scale[c] / soft[c]) / np.arcsinh(white / soft[c])
        # HiPS colour planes R, G, B come from i, r, g = catalogue r, g, b.
        out[2 - c] = np.where(inside, np.clip(255.0 * disp, 0.0, 255.0), np.nan)
    return out


def _bleed_trails(planes: np.ndarray, grid: Grid, stars: dict[str, np.ndarray], pix: float) -> None:
    """Saturated CCD stars (r < 14) spill charge along the columns of the drift scan,
    here the local north-south direction."""
    bright = np.flatnonzero(stars["mag_g"] < 14.0)
    if bright.size == 0:
        return
    h, w = grid.shape
    jac = grid.jacobian
    north = np.linalg.inv(jac) @ np.array([0.0, 1.0])  # pixels per arcsec northward
    north /= np.hypot(*north)
    for i in bright:
        length = 3.0 * 10 ** (0.25 * (14.0 - float(stars["mag_g"][i]))) / pix  # pixels
        s = np.arange(-length, length + 1.0)
        px = np.rint(stars["x"][i] + s * north[0]).astype(int)
        py = np.rint(stars["y"][i] + s * north[1]).astype(int)
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        level = 4000.0 * (pix / 0.396) ** 2
        for c in range(3):
            planes[c, py[ok], px[ok]] += level
