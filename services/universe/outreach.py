"""The outreach view: Hubble-like and Webb-like colour images, as the ESA archives
publish them: sharp PSF with diffraction spikes (4 for Hubble's secondary-mirror
spider, 6 + 2 faint for Webb's hexagonal segments and strut), deep (galaxies to r ~ 29),
an asinh stretch with a black sky, and a palette per telescope (Webb warmer and redder,
as its near-infrared filters are mapped). Missing data (borders, chip gaps) is black.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from services.universe.draw_diffuse import composite_display_images
from services.universe.grid import Grid
from services.universe.points import PSF, PixelKernel
from services.universe.scene import point_sigma, render_scene, scene_catalog, visible_mag_limit
from services.universe.sky import Sky


@dataclass(frozen=True)
class OutreachDefects:
    """Missing-data regions drawn black, as real outreach images have them."""

    border_px: int = 0  # black frame of this width (irregular edges allowed)
    chip_gap: bool = False  # a WFC3/ACS-like dark gap across the image
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # (x0, y0, x1, y1) black rectangles


@dataclass(frozen=True)
class Telescope:
    psf: PSF
    spike_angles_deg: tuple[float, ...]  # relative to the image x axis
    spike_weights: tuple[float, ...]
    noise: float  # sky noise, flux per arcsec (1 sigma per pixel = noise x pixel size: 5 sigma ~ r 29)
    palette: tuple[tuple[float, float, float], ...]  # display R, G, B from bands b, g, r
    tint: tuple[float, float, float]  # faint colour cast of the sky
    white_reference: tuple[float, float]  # (b-g, g-r) of what is shown neutral: bluer makes the image warmer


HUBBLE = Telescope(
    PSF(0.085, beta=2.4, halo_frac=0.03, halo_arcsec=0.4),
    (45.0, 135.0),
    (1.0, 1.0),
    0.015,
    ((0.0, 0.25, 1.0), (0.25, 0.85, 0.1), (1.05, 0.2, 0.0)),
    (0.0, 0.0, 0.0),
    (0.55, 0.35),  # roughly a G star: disks look blue, bulges yellow
)
WEBB = Telescope(
    PSF(0.07, beta=2.2, halo_frac=0.05, halo_arcsec=0.3),
    (90.0, 30.0, 150.0, 0.0),
    (1.0, 1.0, 1.0, 0.25),
    0.012,
    ((0.0, 0.3, 1.25), (0.1, 0.8, 0.4), (0.75, 0.25, 0.0)),
    (0.012, 0.006, 0.0),
    (0.3, 0.2),  # the near-infrared palette makes most things warm
)
TELESCOPES = {"hubble": HUBBLE, "webb": WEBB}
MAG_LIMIT = 29.0


def _spike_kernel(telescope: Telescope, grid: Grid) -> PixelKernel:
    """Diffraction spikes per unit star flux, fixed in the detector (pixel) frame: each
    spike a thin line ~1.5 % of the light, falling as 1/(1+s/s0)^2 along its length, with
    faint interference ripples."""
    fwhm_px = telescope.psf.effective_fwhm(grid.pixel_arcsec) / grid.pixel_arcsec
    width = max(0.45 * fwhm_px, 0.5)
    s0 = max(2.0 * fwhm_px, 1.5)
    norm = 0.015 / (2 * s0 * np.sqrt(2 * np.pi) * width)

    def kernel(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        out = np.zeros(dx.shape)
        for angle, weight in zip(telescope.spike_angles_deg, telescope.spike_weights, strict=True):
            t = np.radians(angle)
            along = dx * np.cos(t) + dy * np.sin(t)
            across = -dx * np.sin(t) + dy * np.cos(t)
            near = np.abs(across) < 5 * width
            profile = np.exp(-0.5 * (across[near] / width) ** 2) / (1.0 + np.abs(along[near]) / s0) ** 2
            profile *= 0.8 + 0.2 * np.cos(along[near] * 1.3 / max(fwhm_px, 1.0)) ** 2
            out[near] += weight * norm * profile
        return out

    return kernel


def render(sky: Sky, grid: Grid, style: str, defects: OutreachDefects | None) -> np.ndarray:
    if style not in TELESCOPES:
        raise ValueError(f"unknown outreach style {style!r}: expected one of {sorted(TELESCOPES)}")
    tel = TELESCOPES[style]
    pix = grid.pixel_arcsec
    noise = tel.noise * pix  # per pixel: sky-limited, sigma grows as sqrt(area)
    threshold = 0.1 * tel.noise / pix  # surface brightness (flux/arcsec^2) worth drawing
    mag_limit = visible_mag_limit(MAG_LIMIT, grid, tel.psf, noise)
    cols = scene_catalog(sky, grid, mag_limit, margin_deg=min(0.02, 0.2 * grid.radius_deg + 0.002))
    planes, _stars = render_scene(
        grid,
        cols,
        tel.psf,
        threshold,
        200.0 * point_sigma(grid, tel.psf, noise),
        spikes=_spike_kernel(tel, grid),
        display_images=True,
    )
    rng = np.random.default_rng(grid.footprint_seed("outreach/" + style))
    noisy = planes + noise * gaussian_filter(rng.standard_normal(planes.shape, dtype=np.float32), (0, 0.6, 0.6)) * 1.6
    rgb = outreach_stretch(np.tensordot(_balanced(tel), noisy, axes=1), noise)
    composite_display_images(rgb, grid)
    rgb = rgb + np.array(tel.tint)[:, None, None]
    rgb = np.clip(255.0 * rgb, 0.0, 255.0)
    image = np.moveaxis(rgb, 0, -1)
    if defects is not None:
        _apply_defects(image, defects, grid.footprint_seed("defects"))
    return np.rint(image).astype(np.uint8)


def _balanced(tel: Telescope) -> np.ndarray:
    """The palette scaled so that the telescope's white reference comes out grey."""
    bv, vr = tel.white_reference
    ref = np.array([10 ** (-0.4 * bv), 1.0, 10 ** (0.4 * vr)])
    palette = np.array(tel.palette)
    out = palette @ ref
    return palette * (out.mean() / out)[:, None]


def outreach_stretch(mixed: np.ndarray, noise: float, saturation: float = 1.2) -> np.ndarray:
    """Colour-preserving asinh stretch (Lupton et al. 2004) as outreach processing does it,
    adapted to the content like a person would: the sky black with its noise just visible,
    the median pixel (sky, or the disk of a galaxy filling the frame) at ~20 % grey, the
    brightest 0.3 % white (bright star cores saturate, as they do in the real pictures). Returns (3, H, W) in 0..1."""
    lum = mixed.mean(axis=0)
    floor = 2.5 * noise
    median = float(np.median(lum))
    white = max(float(np.percentile(lum, 99.7)), 60.0 * floor)
    soft = floor
    if median > 2.0 * floor:
        # The soft scale that puts the median at 0.2 (the stretch falls as soft grows).
        lo, hi = floor, max(white, floor * 2)
        for _ in range(40):
            mid = np.sqrt(lo * hi)
            level = np.arcsinh(median / mid) / np.arcsinh(white / mid)
            lo, hi = (mid, hi) if level > 0.2 else (lo, mid)
        soft = float(np.sqrt(lo * hi))
    # Black point half a sigma above the sky: the sky goes black, its noise peaks stay.
    shifted = np.maximum(lum - 0.5 * noise, 1e-12)
    norm = np.arcsinh(white / soft)
    scale = np.arcsinh(shifted / soft) / norm / shifted
    channels = np.maximum(mixed - 0.5 * noise, 0.0)
    # Half colour-preserving, half per-channel: bright cores go whiter, as in the
    # curves-and-levels processing of real outreach images, faint colour stays.
    rgb = 0.5 * channels * scale + 0.5 * np.arcsinh(channels / soft) / norm
    grey = rgb.mean(axis=0, keepdims=True)
    # Colour where there is signal; noise-dominated pixels are shown nearly grey.
    snr = lum / max(noise, 1e-12)
    rgb = grey + (0.3 + (saturation - 0.3) * np.clip((snr - 2.0) / 8.0, 0.0, 1.0)) * (rgb - grey)
    # Keep hue where a channel would clip: scale the pixel down instead.
    peak = np.maximum(rgb.max(axis=0, keepdims=True), 1.0)
    return np.clip(rgb / peak, 0.0, 1.0)


def _apply_defects(image: np.ndarray, defects: OutreachDefects, seed: int) -> None:
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), dtype=bool)
    if defects.border_px > 0:
        # Irregular frame: the mosaic edge wanders by up to ~40 % of the border width.
        b = defects.border_px
        edge = [
            b * (1.0 + 0.4 * gaussian_filter(rng.standard_normal(n), max(n / 20, 1.0), mode="wrap") * 4)
            for n in (w, w, h, h)
        ]
        yy, xx = np.mgrid[0:h, 0:w]
        mask |= yy < edge[0][None, :]
        mask |= yy >= h - edge[1][None, :]
        mask |= xx < edge[2][:, None]
        mask |= xx >= w - edge[3][:, None]
    if defects.chip_gap:
        # A slightly tilted gap ~1.2 % of the height, near the middle, edge to edge.
        yy, xx = np.mgrid[0:h, 0:w]
        y_mid = h * rng.uniform(0.4, 0.6)
        tilt = rng.uniform(-0.03, 0.03)
        gap = max(3.0, 0.012 * h)
        mask |= np.abs(yy - (y_mid + tilt * (xx - w / 2))) < gap / 2
    for x0, y0, x1, y1 in defects.boxes:
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    image[mask] = 0.0
