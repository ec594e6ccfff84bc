"""Point sources drawn many at a time: one small stamp per star, all stamps of a size
class computed in one numpy expression and added with bincount.

The PSF is a Moffat core (plus an optional wide halo) in arcseconds, evaluated at pixel
centres through the grid's local Jacobian (any rotation or pixel scale) and widened by
the pixel size so that even a PSF much smaller than a pixel keeps its flux. Each stamp is
normalised to the star's flux, and being symmetric about the true position its centroid
is the catalogue position.

Bright stars, whose wings (and diffraction spikes) reach far, get a core stamp of a
fixed radius, and everything outside it comes from one FFT convolution of all of them
at once (fluxes deposited with cloud-in-cell weights, which keep each star's centroid)
with the PSF's outer part: the cost no longer grows with the number of bright stars.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from services.universe.grid import Grid

STAMP_RADII = (3, 5, 8, 12, 18, 27, 40, 60, 90, 135, 200, 300)
MAX_ENTRIES = 3_000_000  # stamp pixels per chunk, bounds the temporary memory
CORE_FWHM = 4.0  # radius (in FWHM) of the core stamps of bright stars; beyond it, the FFT
WORKERS = 2  # FFT threads
MAX_WING_PX = 512  # the outer PSF kernel's half-size cap (halos fainter than this reach are dropped)

# Pixel offsets (dx, dy) -> added light per unit flux, fixed in the pixel frame (spikes).
PixelKernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PSF:
    fwhm_arcsec: float
    beta: float = 3.0
    halo_frac: float = 0.0  # share of the flux in a broad power-law halo (scattered light)
    halo_arcsec: float = 0.0  # halo core radius

    def effective_fwhm(self, pixel_arcsec: float) -> float:
        return float(np.hypot(self.fwhm_arcsec, 0.9 * pixel_arcsec))

    def profile(self, r2: np.ndarray, fwhm: float | np.ndarray) -> np.ndarray:
        """Unnormalised surface brightness at squared radius r2 (arcsec^2)."""
        alpha2 = (np.asarray(fwhm) / (2.0 * np.sqrt(2 ** (1.0 / self.beta) - 1.0))) ** 2
        core = (1.0 + r2 / alpha2) ** (-self.beta) * ((self.beta - 1.0) / (np.pi * alpha2))
        if self.halo_frac <= 0.0:
            return core
        h2 = self.halo_arcsec**2
        halo = (1.0 + r2 / h2) ** (-1.5) * (0.5 / (np.pi * h2))
        return (1.0 - self.halo_frac) * core + self.halo_frac * halo

    def radius_arcsec(self, flux: np.ndarray, threshold: float, fwhm: float) -> np.ndarray:
        """Radius beyond which a source of this flux stays below `threshold` per arcsec^2."""
        alpha = fwhm / (2.0 * np.sqrt(2 ** (1.0 / self.beta) - 1.0))
        peak = flux * (self.beta - 1.0) / (np.pi * alpha**2)
        r = alpha * np.sqrt(np.maximum(peak / threshold, 1.0) ** (1.0 / self.beta) - 1.0)
        if self.halo_frac > 0.0:
            h = self.halo_arcsec
            hpeak = flux * self.halo_frac * 0.5 / (np.pi * h**2)
            r = np.maximum(r, h * np.sqrt(np.maximum(hpeak / threshold, 1.0) ** (2.0 / 3.0) - 1.0))
        return np.maximum(r, 1.5 * fwhm)


def paint_points(
    planes: np.ndarray,
    grid: Grid,
    x: np.ndarray,
    y: np.ndarray,
    fluxes: np.ndarray,
    psf: PSF,
    threshold: float,
    extra_fwhm: np.ndarray | None = None,
    spikes: PixelKernel | None = None,
) -> None:
    """Add point sources to planes (B, H, W) in place.

    fluxes: (B, N) total flux per band; threshold: surface brightness (flux/arcsec^2)
    below which the wings are not drawn; extra_fwhm: per-source broadening in arcsec
    (then no wings, no spikes); spikes: extra light around bright stars, in pixels."""
    n = x.size
    if n == 0:
        return
    pix = grid.pixel_arcsec
    fwhm = np.full(n, psf.effective_fwhm(pix))
    if extra_fwhm is not None:
        fwhm = np.hypot(fwhm, extra_fwhm)
    reach_px = psf.radius_arcsec(fluxes.max(axis=0), threshold, fwhm) / pix
    jac = grid.jacobian
    core_px = float(np.ceil(CORE_FWHM * fwhm[0] / pix))
    bright = (reach_px > core_px) if extra_fwhm is None else np.zeros(n, dtype=bool)
    if spikes is not None and extra_fwhm is None:
        bright |= fluxes.max(axis=0) > threshold * pix * pix * 50.0  # spikes visible
    area = abs(float(np.linalg.det(jac)))

    def profile(chunk: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        east = jac[0, 0] * dx + jac[0, 1] * dy
        north = jac[1, 0] * dx + jac[1, 1] * dy
        return psf.profile(east**2 + north**2, fwhm[chunk, None, None])

    def core_only(chunk: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        # Analytic normalisation (the rest of the light is in the wings), tapered over two
        # pixels at the core radius; the wings take the complement. The taper is linear,
        # which the wings' cloud-in-cell deposit reproduces exactly: no seam.
        return profile(chunk, dx, dy) * area * core_taper(np.sqrt(dx * dx + dy * dy), core_px)

    faint = ~bright
    paint_stamps(planes, grid, x[faint], y[faint], fluxes[:, faint], reach_px[faint], _subset(profile, faint))
    if bright.any():
        b_idx = np.flatnonzero(bright)
        core_radii = np.full(b_idx.size, core_px + 1.5)
        core = _subset(core_only, bright)
        paint_stamps(planes, grid, x[b_idx], y[b_idx], fluxes[:, b_idx], core_radii, core, normalise=False)
        reach = int(np.ceil(min(max(reach_px[b_idx].max(), core_px + 2), MAX_WING_PX, 1.2 * max(grid.shape))))
        _paint_wings(planes, grid, x[b_idx], y[b_idx], fluxes[:, b_idx], psf, float(fwhm[0]), core_px, reach, spikes)


def core_taper(r_px: np.ndarray, core_px: float) -> np.ndarray:
    """1 inside core_px - 1, 0 beyond core_px + 1, linear between."""
    return np.clip((core_px + 1.0 - r_px) / 2.0, 0.0, 1.0)


def _subset(profile, mask: np.ndarray):
    """A profile callback over a subset of the sources (indices are into the subset)."""
    index = np.flatnonzero(mask)
    return lambda chunk, dx, dy: profile(index[chunk], dx, dy)


def _paint_wings(
    planes: np.ndarray,
    grid: Grid,
    x: np.ndarray,
    y: np.ndarray,
    fluxes: np.ndarray,
    psf: PSF,
    fwhm: float,
    core_px: float,
    reach: int,
    spikes: PixelKernel | None,
) -> None:
    """Everything outside the core discs of bright stars, by one FFT convolution."""
    h, w = grid.shape
    pad = reach
    # Cloud-in-cell deposit on the padded grid (stars just outside still shine in).
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    src = np.zeros((planes.shape[0], h + 2 * pad, w + 2 * pad), dtype=np.float32)
    for ox, oy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        px, py = x0 + ox + pad, y0 + oy + pad
        ok = (px >= 0) & (px < w + 2 * pad) & (py >= 0) & (py < h + 2 * pad)
        for b in range(planes.shape[0]):
            np.add.at(src[b], (py[ok], px[ok]), fluxes[b, ok] * wgt[ok])
    off = np.arange(-reach, reach + 1, dtype=float)
    dx, dy = np.meshgrid(off, off)
    jac = grid.jacobian
    east = jac[0, 0] * dx + jac[0, 1] * dy
    north = jac[1, 0] * dx + jac[1, 1] * dy
    kernel = psf.profile(east**2 + north**2, fwhm) * abs(float(np.linalg.det(jac)))
    kernel *= 1.0 - core_taper(np.sqrt(dx * dx + dy * dy), core_px)
    if spikes is not None:
        kernel += spikes(dx, dy)
    # One kernel transform for all bands, single precision, both cores.
    shape = [sp_fft.next_fast_len(n, real=True) for n in (src.shape[1] + 2 * reach, src.shape[2] + 2 * reach)]
    k_hat = sp_fft.rfft2(kernel.astype(np.float32), s=shape, workers=WORKERS)
    for b in range(planes.shape[0]):
        if not src[b].any():
            continue
        full = sp_fft.irfft2(sp_fft.rfft2(src[b], s=shape, workers=WORKERS) * k_hat, s=shape, workers=WORKERS)
        # Linear convolution: output pixel p holds the kernel centred at p - reach.
        planes[b] += full[pad + reach : pad + reach + h, pad + reach : pad + reach + w].astype(planes.dtype)


def paint_ellipses(
    planes: np.ndarray,
    grid: Grid,
    x: np.ndarray,
    y: np.ndarray,
    fluxes: np.ndarray,
    hlr_arcsec: np.ndarray,
    q: np.ndarray,
    pa_deg: np.ndarray,
    sersic_n: np.ndarray,
    psf: PSF,
) -> None:
    """Small, faint galaxies many at a time: an elliptical Sérsic-like profile whose
    half-light ellipse is the galaxy's widened in quadrature by the PSF (the convolution
    to second order), evaluated on each pixel through the grid's Jacobian."""
    n = x.size
    if n == 0:
        return
    s = 0.5 * psf.effective_fwhm(grid.pixel_arcsec)  # half-light radius of the PSF core
    major = np.sqrt(hlr_arcsec**2 / q + s**2)
    minor = np.sqrt(hlr_arcsec**2 * q + s**2)
    pa = np.radians(pa_deg)
    b_n = 2.0 * sersic_n - 1.0 / 3.0
    radius_px = (3.0 + sersic_n) * major / grid.pixel_arcsec + 1.5
    jac = grid.jacobian

    def profile(chunk: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        east = jac[0, 0] * dx + jac[0, 1] * dy
        north = jac[1, 0] * dx + jac[1, 1] * dy
        sin, cos = np.sin(pa[chunk])[:, None, None], np.cos(pa[chunk])[:, None, None]
        a = (east * sin + north * cos) / major[chunk, None, None]
        c = (east * cos - north * sin) / minor[chunk, None, None]
        m = np.sqrt(a * a + c * c)
        return np.exp(-b_n[chunk, None, None] * (m ** (1.0 / sersic_n[chunk, None, None]) - 1.0))

    paint_stamps(planes, grid, x, y, fluxes, radius_px, profile)


def paint_stamps(
    planes: np.ndarray,
    grid: Grid,
    x: np.ndarray,
    y: np.ndarray,
    fluxes: np.ndarray,
    radius_px: np.ndarray,
    profile,
    normalise: bool = True,
) -> None:
    """The shared machinery: sources grouped by stamp size, each group's stamps evaluated
    in one expression `profile(indices, dx, dy)` (pixel offsets from the true position,
    (N, S, S)), normalised to the source's flux (unless the profile is normalised
    already), added with bincount."""
    h, w = grid.shape
    radii = np.array(STAMP_RADII)
    klass = np.minimum(np.searchsorted(radii, radius_px), radii.size - 1)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    visible = (ix + radii[klass] >= 0) & (ix - radii[klass] < w) & (iy + radii[klass] >= 0) & (iy - radii[klass] < h)
    out = planes.reshape(planes.shape[0], -1)
    for k, r in enumerate(STAMP_RADII):
        members = np.flatnonzero((klass == k) & visible)
        if members.size == 0:
            continue
        side = 2 * r + 1
        off = np.arange(-r, r + 1)
        for chunk in np.array_split(members, max(1, members.size * side * side // MAX_ENTRIES + 1)):
            px = ix[chunk, None, None] + off[None, None, :]  # (N, 1, S)
            py = iy[chunk, None, None] + off[None, :, None]  # (N, S, 1)
            prof = profile(chunk, px - x[chunk, None, None], py - y[chunk, None, None])
            if normalise:
                prof /= prof.sum(axis=(1, 2), keepdims=True)
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            flat = (py * w + px)[inside]  # broadcast to (N, S, S) by the mask
            weights_base = prof[inside]
            lo = int(flat.min()) if flat.size else 0
            for b in range(planes.shape[0]):
                f = np.broadcast_to(fluxes[b, chunk, None, None], prof.shape)[inside]
                # bincount over the touched range only, not the whole image
                added = np.bincount(flat - lo, weights=weights_base * f)
                out[b, lo : lo + added.size] += added.astype(out.dtype)
