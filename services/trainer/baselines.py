"""Classical baselines a trained generator must beat (issue #7), on numpy arrays.

Input: a survey cutout as display values in [0, 1] — (3, h, w), the stored 0..255 cube / 255,
NaN (blank) allowed and filled; output: (3, scale·h, scale·w) on the survey grid refined xscale
(same WCS: pixel centres at (i + 0.5) / scale - 0.5 input px), values in [0, 1].

- `bicubic`: Keys cubic convolution (a = -0.75, torch's), the plain upsampler;
- `ToneCurve`: a per-channel monotone curve fitted on the training split from bicubic to target
  values (isotonic regression on binned means), applied after bicubic: fixes the survey's stretch
  and colour balance, the largest part of the survey → outreach gap;
- `richardson_lucy_then_upsample`: Richardson-Lucy deconvolution with the survey's Gaussian PSF on
  the display values, then bicubic (optionally the tone curve after it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import isotonic_regression
from skimage.restoration import richardson_lucy


def _filled(input01: np.ndarray) -> np.ndarray:
    """float32 copy with NaN (blank) set to the channel's median of valid pixels (0 if none)."""
    x = np.array(input01, dtype=np.float32, copy=True)
    for c in range(x.shape[0]):
        bad = ~np.isfinite(x[c])
        if bad.any():
            x[c][bad] = float(np.median(x[c][~bad])) if (~bad).any() else 0.0
    return x


def bicubic(input01: np.ndarray, scale: int = 4) -> np.ndarray:
    """(3, h, w) in [0, 1] → (3, scale·h, scale·w) bicubic (align_corners=False: pixel areas line
    up with the refined grid), clipped to [0, 1]."""
    x = torch.from_numpy(_filled(input01))[None]
    with torch.no_grad():
        y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return y[0].clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class ToneCurve:
    """Per-channel monotone non-decreasing map, a look-up table on ``grid`` (input values, shared by
    the channels) → ``values[c]``; linear interpolation between the knots."""

    grid: np.ndarray  # (K,) increasing input values in [0, 1]
    values: np.ndarray  # (3, K) output values in [0, 1]

    @classmethod
    def fit(
        cls,
        pairs: Iterable[tuple[np.ndarray, np.ndarray]],
        masks: Iterable[np.ndarray | None] | None = None,
        bins: int = 256,
        max_pixels: int = 200_000,
        seed: int = 0,
    ) -> ToneCurve:
        """Fit on (bicubic output, target) pairs of the training split, both (3, H, W) in [0, 1],
        optional (H, W) valid masks: per channel, the mean target in each of ``bins`` equal bins of
        the bicubic value, then weighted isotonic regression (non-decreasing) over the bins; empty
        bins are interpolated. Subsamples to ``max_pixels`` per image (deterministic)."""
        rng = np.random.default_rng(seed)
        sums = np.zeros((3, bins))
        counts = np.zeros((3, bins))
        mask_iter = iter(masks) if masks is not None else None
        for x, t in pairs:
            m = next(mask_iter) if mask_iter is not None else None
            x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
            ok = np.ones(t.shape[-2:], bool) if m is None else np.asarray(m, bool)
            ok = ok & np.isfinite(x).all(axis=0) & np.isfinite(t).all(axis=0)
            idx = np.flatnonzero(ok)
            if idx.size > max_pixels:
                idx = rng.choice(idx, max_pixels, replace=False)
            for c in range(3):
                xc, tc = x[c].ravel()[idx], t[c].ravel()[idx]
                b = np.clip((xc * bins).astype(int), 0, bins - 1)
                sums[c] += np.bincount(b, weights=tc, minlength=bins)
                counts[c] += np.bincount(b, minlength=bins)
        grid = (np.arange(bins) + 0.5) / bins
        values = np.zeros((3, bins))
        for c in range(3):
            seen = counts[c] > 0
            if not seen.any():
                values[c] = grid  # no data: identity
                continue
            fit = isotonic_regression(sums[c][seen] / counts[c][seen], weights=counts[c][seen], increasing=True).x
            values[c] = np.interp(grid, grid[seen], fit)
        return cls(grid=grid, values=np.clip(values, 0.0, 1.0))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Apply to a (3, H, W) image in [0, 1]."""
        x = np.asarray(image, np.float64)
        return np.stack([np.interp(x[c], self.grid, self.values[c]) for c in range(3)]).astype(np.float32)

    def to_dict(self) -> dict[str, list]:
        return {"grid": self.grid.tolist(), "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence]) -> ToneCurve:
        return cls(grid=np.asarray(d["grid"], float), values=np.asarray(d["values"], float))


def gaussian_psf(fwhm_px: float, radius: int | None = None) -> np.ndarray:
    """Normalised 2-D Gaussian kernel of the given FWHM (px), radius ≈ 2 FWHM (odd size)."""
    sigma = max(float(fwhm_px), 1e-3) / 2.3548200450309493
    r = int(radius if radius is not None else max(2, np.ceil(2.0 * fwhm_px)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return k / k.sum()


def richardson_lucy_then_upsample(
    input01: np.ndarray,
    psf_fwhm_px: float,
    scale: int = 4,
    iterations: int = 10,
    tone_curve: ToneCurve | None = None,
) -> np.ndarray:
    """Richardson-Lucy deconvolution (skimage, ``iterations``) of each channel with a Gaussian PSF
    of ``psf_fwhm_px`` input px, on the display values (the survey stretch is not undone: this is the
    classical recipe), then `bicubic` xscale, then ``tone_curve`` if given. (3, h, w) → (3, sH, sW)."""
    x = _filled(input01).astype(np.float64)
    psf = gaussian_psf(psf_fwhm_px)
    pad = psf.shape[0]
    out = np.empty_like(x)
    for c in range(3):
        # reflect-pad so the deconvolution does not ring at the cutout's edges; RL needs positive data
        p = np.pad(np.clip(x[c], 0.0, None) + 1e-4, pad, mode="reflect")
        d = richardson_lucy(p, psf, num_iter=iterations, clip=False)
        out[c] = d[pad:-pad, pad:-pad] - 1e-4
    up = bicubic(np.clip(out, 0.0, 1.0), scale)
    return tone_curve(up) if tone_curve is not None else up


def run_baselines(
    inputs01: Sequence[np.ndarray],
    scale: int = 4,
    tone_curve: ToneCurve | None = None,
    psf_fwhm_px: Sequence[float] | float | None = None,
    rl_iterations: int = 10,
    rl_tone_curve: ToneCurve | None = None,
) -> dict[str, list[np.ndarray]]:
    """Every baseline on every input: "bicubic", "tone-curve" (when ``tone_curve``, fitted on bicubic
    outputs, is given), "richardson-lucy" (when PSF FWHMs are given; followed by ``rl_tone_curve``,
    fitted on Richardson-Lucy outputs of the training split, when given)."""
    out: dict[str, list[np.ndarray]] = {"bicubic": [bicubic(x, scale) for x in inputs01]}
    if tone_curve is not None:
        out["tone-curve"] = [tone_curve(b) for b in out["bicubic"]]
    if psf_fwhm_px is not None:
        fwhms = [float(psf_fwhm_px)] * len(inputs01) if np.isscalar(psf_fwhm_px) else list(psf_fwhm_px)
        out["richardson-lucy"] = [
            richardson_lucy_then_upsample(x, f, scale, rl_iterations, rl_tone_curve)
            for x, f in zip(inputs01, fwhms, strict=True)
        ]
    return out
