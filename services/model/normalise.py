"""THE input normalisation of the generator, shared by the trainer and serving.

A survey cutout (3, h, w) display 0..255 (NaN blank) becomes the generator's input with
statistics of the *whole* cutout (serving tiles a field: per-tile statistics would make seams),
INPUT_CHANNELS = 6 planes:

    x_c     = (d_c - sky_c) / scale_c   (c = 0, 1, 2: the normalised field)
    x_{3+c} = d_c                        (the display values themselves)
    d = cube / 255,   blank -> 0 in every plane and marked invalid

The normalised planes make the structure look alike whatever the survey's sky and stretch; the
display planes keep what the normalisation strips - how bright the field is in absolute terms,
its sky level and colour - which is what sets the brightness of the outreach rendering (a tone
curve on the display values alone beat a generator fed only the normalised planes by 3-8 dB of
source PSNR, almost all of it the level: level-matched, that generator was the better one).

- sky_c: the background, a sigma-clipped median of the valid pixels (clipping the bright side
  only, so that stars and galaxies, which only add light, cannot move it);
- noise_c: the background's robust sigma (1.4826 x MAD of the clipped pixels), informational
  and a floor for the scale;
- scale_c: the 99.5th percentile above the sky, floored at 10 noise_c and 2/255 (a blank or
  flat cutout cannot blow up). The outreach stretch picks its white the same way (99.7th
  percentile), so "1" in the input roughly lines up with white in the target; a few bright
  stars are < 0.5 % of a cutout's pixels and cannot move it, a field full of them does.

Per channel: survey colour balance differs between plates and surveys and is not trusted;
relative colours within the field survive. Values are clipped to [CLIP_LOW, CLIP_HIGH].
The statistics are recorded with every render (`to_dict`) so a render can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import torch

VERSION = "pss-norm-2"
INPUT_CHANNELS = 6  # normalised R, G, B then display R, G, B
DISPLAY_PLANES = slice(3, 6)  # where the display values are among them
PERCENTILE = 99.5
MIN_SCALE = 2.0 / 255.0
NOISE_FLOOR_FACTOR = 10.0
CLIP_LOW, CLIP_HIGH = -4.0, 16.0  # a dark speck or a saturated star on a faint field stays bounded
MIN_PIXELS = 16


@dataclass(frozen=True)
class NormStats:
    """Per-channel statistics in display units 0..1 (channels R, G, B)."""

    sky: tuple[float, float, float]
    scale: tuple[float, float, float]
    noise: tuple[float, float, float]
    valid_fraction: float
    version: str = VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sky": list(self.sky),
            "scale": list(self.scale),
            "noise": list(self.noise),
            "valid_fraction": self.valid_fraction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        version = d.get("version", VERSION)
        if version != VERSION:
            raise ValueError(f"normalisation {version!r} is not {VERSION!r}: the model was trained with another")

        def three(key: str) -> tuple[float, float, float]:
            a, b, c = (float(v) for v in d[key])
            return a, b, c

        return cls(three("sky"), three("scale"), three("noise"), float(d["valid_fraction"]), version)


def _channel_stats(v: np.ndarray) -> tuple[float, float, float]:
    """Valid finite values of one channel -> (sky, scale, noise)."""
    if v.size < MIN_PIXELS:
        return 0.0, 1.0, 0.0
    keep = v
    sky, sigma = float(np.median(v)), 0.0
    for _ in range(5):
        sky = float(np.median(keep))
        sigma = 1.4826 * float(np.median(np.abs(keep - sky)))
        if sigma <= 0.0:
            break
        new = v[(v < sky + 3.0 * sigma) & (v > sky - 5.0 * sigma)]
        if new.size < MIN_PIXELS or new.size == keep.size:
            break
        keep = new
    bright = float(np.percentile(v, PERCENTILE)) - sky
    scale = max(bright, NOISE_FLOOR_FACTOR * sigma, MIN_SCALE)
    return sky, scale, sigma


def stats(cube01: np.ndarray, valid: np.ndarray | None = None) -> NormStats:
    """Statistics of a whole cutout (3, h, w) display 0..1, NaN = blank; `valid` (h, w) bool
    narrows the pixels used (e.g. the curator's mask)."""
    cube = np.asarray(cube01, dtype=np.float32)
    if cube.ndim != 3 or cube.shape[0] != 3:
        raise ValueError(f"expected a (3, h, w) cube, got {cube.shape}")
    ok = np.isfinite(cube).all(axis=0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    per = [_channel_stats(cube[c][ok]) for c in range(3)]
    sky, scale, noise = zip(*per, strict=True)
    return NormStats(
        (sky[0], sky[1], sky[2]),
        (scale[0], scale[1], scale[2]),
        (noise[0], noise[1], noise[2]),
        float(ok.mean()) if ok.size else 0.0,
    )


@overload
def apply(x01: np.ndarray, s: NormStats) -> np.ndarray: ...
@overload
def apply(x01: torch.Tensor, s: NormStats) -> torch.Tensor: ...
def apply(x01: np.ndarray | torch.Tensor, s: NormStats) -> np.ndarray | torch.Tensor:
    """Display 0..1 [..., 3, h, w] (numpy or torch) -> normalised float32; NaN -> 0 (the sky)."""
    if isinstance(x01, torch.Tensor):
        sky = torch.tensor(s.sky, dtype=torch.float32, device=x01.device)[:, None, None]
        scale = torch.tensor(s.scale, dtype=torch.float32, device=x01.device)[:, None, None]
        out = ((x01.float() - sky) / scale).clamp(CLIP_LOW, CLIP_HIGH)
        return torch.nan_to_num(out, nan=0.0)
    sky_n = np.asarray(s.sky, dtype=np.float32)[:, None, None]
    scale_n = np.asarray(s.scale, dtype=np.float32)[:, None, None]
    with np.errstate(invalid="ignore"):
        out_n = np.clip((np.asarray(x01, dtype=np.float32) - sky_n) / scale_n, CLIP_LOW, CLIP_HIGH)
    return np.nan_to_num(out_n, nan=0.0).astype(np.float32)


@overload
def invert(x: np.ndarray, s: NormStats) -> np.ndarray: ...
@overload
def invert(x: torch.Tensor, s: NormStats) -> torch.Tensor: ...
def invert(x: np.ndarray | torch.Tensor, s: NormStats) -> np.ndarray | torch.Tensor:
    """Normalised -> display 0..1 (exact except where `apply` clipped)."""
    if isinstance(x, torch.Tensor):
        sky = torch.tensor(s.sky, dtype=x.dtype, device=x.device)[:, None, None]
        scale = torch.tensor(s.scale, dtype=x.dtype, device=x.device)[:, None, None]
        return x * scale + sky
    return (x * np.asarray(s.scale, np.float32)[:, None, None] + np.asarray(s.sky, np.float32)[:, None, None]).astype(
        np.float32
    )


def survey_to_input(
    cube_0_255: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, NormStats]:
    """A stored survey cutout (3, h, w) 0..255, NaN blank -> (the generator's input float32
    (INPUT_CHANNELS, h, w): normalised then display planes, valid (h, w) bool, NormStats). Invalid
    pixels are 0 in every plane. `valid` (optional) narrows the valid pixels further."""
    cube01 = np.asarray(cube_0_255, dtype=np.float32) / np.float32(255.0)
    ok = np.isfinite(cube01).all(axis=0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    s = stats(cube01, ok)
    x = np.concatenate([apply(cube01, s), np.clip(np.nan_to_num(cube01, nan=0.0), 0.0, 1.0)])
    x[:, ~ok] = 0.0
    return x, ok, s
