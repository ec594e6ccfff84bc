"""Synthetic survey inputs from target (outreach) tiles, randomised over wide ranges.

The real cutouts the model will see differ from any one simulation in seeing, noise, sky level,
plate colour response, stretch and pixel scale, so training draws all of them (`TRAIN`), and a
deliberately disjoint family (`HELDOUT`: worse seeing, higher noise, a power-law stretch no
training sample has) measures how the model copes outside what it was trained on.

Chain (the same `observe` model the consistency loss uses, so synthetic pairs are consistent
by construction up to the unknown PSF wings, stretch and noise model - as real ones):
target display -> linear (observe.SOFTENING) -> survey PSF (Moffat, FWHM and beta drawn) ->
area average onto the survey grid (the x`scale` factor) -> colour response (3x3 mix, gains,
sometimes one usable colour) -> sky level + gradient -> survey stretch (asinh / photographic /
power) with noise added before (CCD) or after (plate grain) it, correlated over ~1 px as
hips2fits resampling makes it -> clip to [0, 1], 8-bit quantisation.

The pixel scale enters through the PSF FWHM in survey pixels and the noise correlation: the
x`scale` factor between tiles is fixed by the dataset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from services.model import observe


@dataclass(frozen=True)
class Family:
    """Ranges of the degradation parameters (uniform, or log-uniform where marked)."""

    name: str
    fwhm_px: tuple[float, float]  # survey PSF FWHM, survey pixels
    beta: tuple[float, float]  # Moffat wings (the consistency model assumes observe.PSF_BETA)
    noise: tuple[float, float]  # background sigma, display units (log-uniform)
    linear_noise: float  # probability that noise is added before the stretch (CCD) rather than after (grain)
    correlation_px: tuple[float, float]  # Gaussian sigma of the noise correlation, survey pixels
    sky: tuple[float, float]  # sky level, display units
    sky_gradient: tuple[float, float]  # sky change across the tile, display units
    stretches: dict[str, float]  # kind -> probability: "asinh", "photographic", "power"
    softening: tuple[float, float]  # asinh softening relative to white (log-uniform)
    plate_width: tuple[float, float]  # photographic curve width, decades of exposure
    sky_fraction: tuple[float, float]  # photographic: sky flux relative to white (log-uniform)
    gamma: tuple[float, float]  # power stretch exponent
    white: tuple[float, float]  # linear flux shown white, relative to the target's white (log-uniform)
    colour_mix: tuple[float, float]  # weight of a random colour-mixing matrix
    channel_gain: tuple[float, float]  # per-channel sensitivity (log-uniform)
    one_colour: float  # probability of a single-colour plate (all channels from one band)


TRAIN = Family(
    name="train",
    fwhm_px=(0.9, 3.0),
    beta=(2.5, 5.0),
    noise=(0.003, 0.04),
    linear_noise=0.5,
    correlation_px=(0.0, 0.8),
    sky=(0.0, 0.3),
    sky_gradient=(0.0, 0.03),
    stretches={"asinh": 0.6, "photographic": 0.4},
    softening=(0.003, 0.5),
    plate_width=(0.35, 0.6),
    # How faint the target is against the ground's sky (photographic: sky flux / target white) and
    # how bright the survey shows the target's white (white: its flux relative to the survey's
    # white): calibrated on the demo dataset's real training pairs, whose structured windows' survey
    # cutouts are dark and flat - median 0.16, 99th percentile 0.27, mean 0.43 x the target's (a
    # nebula an outreach image shows bright is barely above a ground-based sky). These ranges give
    # median 0.20, 99th percentile 0.30, mean 0.54 x the target's (10-90 %: 0.21-1.21), around the
    # real ones; the earlier 0.003-0.03 and 0.3-1.5 gave 0.47, 0.85 and 1.30 x, far brighter.
    sky_fraction=(0.02, 0.6),
    gamma=(0.3, 0.6),
    white=(1.5, 60.0),
    colour_mix=(0.0, 0.5),
    channel_gain=(0.6, 1.6),
    one_colour=0.08,
)

# Disjoint from TRAIN where it matters; every other range as in training.
HELDOUT = replace(
    TRAIN,
    name="heldout",
    fwhm_px=(3.3, 4.5),  # worse seeing than any training sample
    beta=(2.2, 4.0),
    noise=(0.045, 0.08),  # noisier than any training sample
    sky=(0.03, 0.3),
    stretches={"power": 1.0},  # a stretch kind never seen in training
)

FAMILIES: dict[str, Family] = {f.name: f for f in (TRAIN, HELDOUT)}
QUANTUM = 1.0 / 255.0


@dataclass(frozen=True)
class Degraded:
    display: np.ndarray  # (3, h, w) float32 in [0, 1], multiples of 1/255, NaN where not valid
    noise_sigma: np.ndarray  # (3,) float32 background noise, display units (incl. quantisation)
    noise_map: np.ndarray  # (3, h, w) float32 the noise of each pixel, display units (exact)
    psf_fwhm: float  # survey pixels (the nominal value a survey would state)
    valid: np.ndarray  # (h, w) bool
    params: dict[str, Any]  # every drawn parameter, for reports and exact replays

    @property
    def cube_0_255(self) -> np.ndarray:
        """As services/cutouts stores a survey cutout: (3, h, w) float32 0..255, NaN blank."""
        return (self.display * 255.0).astype(np.float32)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def sample_params(family: Family, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one degradation (plain floats and lists: JSON-serialisable)."""
    kinds = list(family.stretches)
    probs = np.array([family.stretches[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
    rows = rng.dirichlet(np.ones(3), size=3)
    mix = _uniform(rng, family.colour_mix)
    matrix = (1.0 - mix) * np.eye(3) + mix * rows
    if rng.random() < family.one_colour:
        matrix = np.repeat(np.eye(3)[[int(rng.integers(3))]], 3, axis=0)  # one band in every channel
    gains = [_log_uniform(rng, family.channel_gain) for _ in range(3)]
    return {
        "family": family.name,
        "fwhm_px": _uniform(rng, family.fwhm_px),
        "beta": _uniform(rng, family.beta),
        "noise": _log_uniform(rng, family.noise),
        "linear_noise": bool(rng.random() < family.linear_noise),
        "correlation_px": _uniform(rng, family.correlation_px),
        "sky": _uniform(rng, family.sky),
        "sky_gradient": _uniform(rng, family.sky_gradient),
        "gradient_angle": float(rng.uniform(0.0, 2.0 * math.pi)),
        "stretch": kind,
        "softening": _log_uniform(rng, family.softening),
        "plate_width": _uniform(rng, family.plate_width),
        "sky_fraction": _log_uniform(rng, family.sky_fraction),
        "gamma": _uniform(rng, family.gamma),
        "white": _log_uniform(rng, family.white),
        "colour_matrix": (matrix * np.array(gains)[:, None]).tolist(),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def _sky_flux(p: dict[str, Any]) -> float:
    """The total linear flux (in the stretch's own units) that the stretch shows at `p["sky"]`."""
    kind, sky_d = p["stretch"], p["sky"]
    if kind == "asinh":
        return float(observe.linearise(torch.tensor(sky_d), p["softening"]))
    if kind == "photographic":
        return p["sky_fraction"]
    if kind == "power":
        q = min(max(sky_d, 0.01), 0.9) ** (1.0 / p["gamma"])
        return q / (1.0 - q)
    raise ValueError(f"unknown stretch {kind!r}")


def _survey_stretch(total: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """Total linear flux (sky included, `_sky_flux` units) -> survey display [0, 1]; each stretch
    shows `_sky_flux(p)` at the display level p["sky"] and clips at black."""
    kind = p["stretch"]
    if kind == "asinh":
        return observe.stretch(total, p["softening"])
    if kind == "photographic":
        # Density ~ logistic in log exposure (the DSS characteristic curve): toe at the sky,
        # shoulder (saturation) where the exposure is ~1/sky_fraction times the sky's.
        width, sky_f = p["plate_width"] * math.log(10.0), p["sky_fraction"]
        t0 = width * math.log(1.0 / min(max(p["sky"], 0.02), 0.6) - 1.0)
        return torch.sigmoid((torch.log((total / sky_f).clamp_min(1e-3)) - t0) / width)
    if kind == "power":
        f0 = _sky_flux(p)
        return (total.clamp_min(0.0) / (1.0 + f0)) ** p["gamma"]
    raise ValueError(f"unknown stretch {kind!r}")


def _slope(total: torch.Tensor, p: dict[str, Any], delta: float) -> torch.Tensor:
    """d display / d flux by central differences."""
    return (_survey_stretch(total + delta, p) - _survey_stretch(total - delta, p)) / (2.0 * delta)


def _correlated_noise(shape: tuple[int, ...], sigma_px: float, gen: torch.Generator) -> torch.Tensor:
    """Unit-variance Gaussian noise smoothed over sigma_px (the resampling of hips2fits)."""
    white = torch.randn(shape, generator=gen)
    if sigma_px < 0.05:
        return white
    r = math.ceil(3.0 * sigma_px)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / torch.sqrt((k**2).sum())  # unit variance after the 2-D separable filter
    c = shape[0]
    out = F.conv2d(F.pad(white[None], (r, r, 0, 0), mode="circular"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode="circular"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out[0]


def apply(target: np.ndarray, scale: int, params: dict[str, Any], mask: np.ndarray | None = None) -> Degraded:
    """Degrade one target tile (3, H, W) display [0, 1] with drawn `params` (deterministic)."""
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
    _, _, h_hr, w_hr = t.shape
    if h_hr % scale or w_hr % scale:
        raise ValueError(f"target size {(h_hr, w_hr)} is not a multiple of {scale}")
    h, w = h_hr // scale, w_hr // scale
    fwhm = torch.tensor([params["fwhm_px"]])
    flux = observe.reobserve(t, fwhm, scale, beta=params["beta"])[0]  # [3, h, w] linear, target white = 1
    flux = torch.einsum("ck,khw->chw", torch.tensor(params["colour_matrix"], dtype=torch.float32), flux)

    # Sky (with a gradient: plate vignetting, scattered light) is added as flux, before the stretch.
    sky_flux = _sky_flux(params)
    slope_sky = float(_slope(torch.tensor([sky_flux]), params, 1e-3 * max(sky_flux, 1e-3))[0].clamp_min(1e-3))
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    a = params["gradient_angle"]
    ramp = math.cos(a) * xx + math.sin(a) * yy
    total = flux / params["white"] + sky_flux + params["sky_gradient"] / slope_sky * ramp

    gen = torch.Generator().manual_seed(params["noise_seed"])
    noise = _correlated_noise((3, h, w), params["correlation_px"], gen)
    sigma = params["noise"]
    if params["linear_noise"]:
        # CCD: noise in flux before the stretch, scaled so that the background shows `sigma`;
        # brighter pixels show less of it in display units (the stretch flattens).
        sigma_flux = sigma / slope_sky
        display = _survey_stretch(total + sigma_flux * noise, params)
        noise_map = sigma_flux * _slope(total, params, 0.1 * sigma_flux)
    else:
        display = _survey_stretch(total, params) + sigma * noise
        noise_map = torch.full_like(display, sigma)
    display = torch.round(display.clamp(0.0, 1.0) / QUANTUM) * QUANTUM
    noise_map = torch.sqrt(noise_map**2 + QUANTUM**2 / 12.0)

    valid = np.ones((h, w), dtype=bool)
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        bad = (F.avg_pool2d(m, scale) < 0.999).float()  # a survey pixel needs every fine pixel valid
        # ... and no light blurred in from the missing region (the target is black there).
        r = math.ceil(observe.EDGE_FWHM * params["fwhm_px"])
        valid = (F.max_pool2d(bad, 2 * r + 1, stride=1, padding=r)[0, 0] < 0.5).numpy()
    out = display.numpy().astype(np.float32)
    out[:, ~valid] = np.nan
    total = math.sqrt(sigma**2 + QUANTUM**2 / 12.0)
    return Degraded(
        out,
        np.full(3, total, dtype=np.float32),
        noise_map.numpy().astype(np.float32),
        float(params["fwhm_px"]),
        valid,
        params,
    )


def degrade(
    target: np.ndarray,
    scale: int,
    family: Family,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
) -> Degraded:
    """A survey-like observation of `target` (3, H, W) display [0, 1] on a grid `scale` times
    coarser, drawn from `family`; `mask` (H, W) 1 = valid target pixel (the result is valid where
    no missing target pixel contributes, within EDGE_FWHM x FWHM). Reproducible from rng."""
    return apply(target, scale, sample_params(family, rng), mask)


def family_summary(family: Family) -> dict[str, Any]:
    """The ranges as a dict (for reports)."""
    return asdict(family)
