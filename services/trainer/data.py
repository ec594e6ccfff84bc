"""Training batches from prepared pairs: a reproducible stream of crops, real or synthetic.

Every draw is a pure function of (seed, epoch, index): which crop, which of the eight flips/90°
rotations, whether its input is the real survey cutout or a synthetic observation of the target
(services.model.degrade), and the degradation drawn. A run that is killed and resumed from a
checkpoint of (epoch, index) therefore sees exactly the batches it would have seen.

Inputs are normalised exactly as serving normalises them (services.model.normalise, statistics over
the whole field, never per crop): a real crop uses its whole cutout's statistics; a synthetic one is
degraded on a window of ``window_px`` survey pixels around the crop and normalised with that window's
statistics (a small field of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from services.model import degrade, normalise, observe
from services.trainer.pairs import Pair

# Typical seeing FWHM of each survey (arcsec): what the consistency term blurs a real pair's output
# with. DSS2: photographic plates, 2-3"; SDSS: median 1.4" in r.
SEEING_ARCSEC = {"dss2-color": 2.6, "sdss9-color": 1.4}
DEFAULT_SEEING_ARCSEC = 2.0


@dataclass(frozen=True)
class Position:
    """Where a stream stands: the next draw is item ``index`` of epoch ``epoch``'s permutation."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, int] | None) -> Position:
        return cls(int(d.get("epoch", 0)), int(d.get("index", 0))) if d else cls()


@dataclass
class PairInput:
    """A real pair's whole-field input, normalised once."""

    x: np.ndarray  # (3, h, w) normalised
    valid: np.ndarray  # (h, w)
    stats: normalise.NormStats
    noise_sigma: np.ndarray  # (3,) display units, observe.estimate_noise over the whole cutout
    psf_fwhm_px: float


@dataclass
class Stream:
    """The crops of one split, in a reproducible order. ``items``: (pair index, x0, y0)."""

    pairs: Sequence[Pair]
    scale: int
    tile_px: int
    seed: int
    synthetic_fraction: float = 0.5
    family: degrade.Family = degrade.TRAIN
    window_px: int = 64
    items: np.ndarray = field(init=False)
    _inputs: dict[int, PairInput] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        rows = [(i, x, y) for i, p in enumerate(self.pairs) for x, y in self._crops(p)]
        if not rows:
            raise ValueError(f"no training crops of {self.tile_px} px in {len(self.pairs)} pairs")
        self.items = np.asarray(rows, dtype=np.int64)

    def _crops(self, p: Pair) -> list[tuple[int, int]]:
        """The dataset's crops, re-gridded when the run asks for another crop size."""
        h, w = p.survey.shape[1:]
        t = self.tile_px
        if p.tile_px == t and p.corners:
            return list(p.corners)
        return [
            (x, y)
            for y in range(0, h - t + 1, max(1, t // 2))
            for x in range(0, w - t + 1, max(1, t // 2))
            if p.input_valid[y : y + t, x : x + t].mean() >= 0.9
        ]

    def __len__(self) -> int:
        return len(self.items)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def _input(self, i: int) -> PairInput:
        if i not in self._inputs:
            self._inputs[i] = pair_input(self.pairs[i])
        return self._inputs[i]

    def draw(self, epoch: int, index: int, order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One sample (numpy, channels first) of draw ``index`` in ``epoch``."""
        order = self.order(epoch) if order is None else order
        pi, x0, y0 = (int(v) for v in self.items[order[index % len(order)]])
        rng = np.random.default_rng([self.seed, epoch, index, 7])
        p, t, s = self.pairs[pi], self.tile_px, self.scale
        target = p.target[:, s * y0 : s * (y0 + t), s * x0 : s * (x0 + t)]
        mask = p.target_valid[s * y0 : s * (y0 + t), s * x0 : s * (x0 + t)]
        synthetic = rng.random() < self.synthetic_fraction
        if synthetic:
            x, display, input_valid, noise_map, fwhm = self._synthetic(p, x0, y0, rng)
        else:
            real = self._input(pi)
            x = real.x[:, y0 : y0 + t, x0 : x0 + t]
            display = p.survey[:, y0 : y0 + t, x0 : x0 + t]
            input_valid = real.valid[y0 : y0 + t, x0 : x0 + t]
            noise_map = np.broadcast_to(real.noise_sigma[:, None, None], display.shape)
            fwhm = real.psf_fwhm_px
        k, flip = int(rng.integers(4)), bool(rng.integers(2))

        def orient(a: np.ndarray) -> np.ndarray:
            a = np.rot90(a, k, axes=(-2, -1))
            return np.ascontiguousarray(a[..., ::-1] if flip else a)

        return {
            "input": orient(x).astype(np.float32),
            "input_mask": orient(input_valid[None]).astype(np.float32),
            "target": orient(target).astype(np.float32),
            "mask": orient(mask[None]).astype(np.float32),
            "noise_sigma": noise_map.reshape(3, -1).mean(axis=1).astype(np.float32),
            "noise_map": orient(noise_map).astype(np.float32),
            "psf_fwhm": np.float32(fwhm),
            "synthetic": np.bool_(synthetic),
        }

    def _synthetic(
        self, p: Pair, x0: int, y0: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Degrade a window around the crop; normalise with the window's statistics. Returns the
        normalised crop, its display values, validity, exact per-pixel noise and PSF FWHM."""
        h, w = p.survey.shape[1:]
        t, s = self.tile_px, self.scale
        side_x, side_y = min(max(self.window_px, t), w), min(max(self.window_px, t), h)
        wx = int(np.clip(x0 - rng.integers(0, side_x - t + 1), 0, w - side_x))
        wy = int(np.clip(y0 - rng.integers(0, side_y - t + 1), 0, h - side_y))
        window = p.target[:, s * wy : s * (wy + side_y), s * wx : s * (wx + side_x)]
        wmask = p.target_valid[s * wy : s * (wy + side_y), s * wx : s * (wx + side_x)]
        d = degrade.degrade(window, s, self.family, rng, wmask)
        x, valid, _ = normalise.survey_to_input(d.cube_0_255, d.valid)
        cx, cy = x0 - wx, y0 - wy
        crop = np.s_[cy : cy + t, cx : cx + t]
        whole = (slice(None), *crop)
        return x[whole], d.display[whole], valid[crop], d.noise_map[whole], d.psf_fwhm

    def batch(self, position: Position, size: int) -> tuple[dict[str, torch.Tensor], Position]:
        """``size`` draws from ``position`` on, collated; and the position after them."""
        samples, epoch, index = [], position.epoch, position.index
        order = self.order(epoch)
        for _ in range(size):
            if index >= len(order):
                epoch, index = epoch + 1, 0
                order = self.order(epoch)
            samples.append(self.draw(epoch, index, order))
            index += 1
        return collate(samples), Position(epoch, index)


def pair_input(p: Pair) -> PairInput:
    """A real pair's whole cutout as the model sees it (what serving does before tiling)."""
    x, valid, stats = normalise.survey_to_input(p.survey * 255.0, p.input_valid)
    fwhm = SEEING_ARCSEC.get(p.survey_slug, DEFAULT_SEEING_ARCSEC) / p.pixel_arcsec
    return PairInput(x, valid, stats, real_noise(p), fwhm)


def real_noise(p: Pair) -> np.ndarray:
    """(3,) background noise of a real cutout, display units (block-wise plane fits: a galaxy
    filling the field does not inflate it)."""
    display = torch.from_numpy(np.nan_to_num(p.survey, nan=0.0))[None]
    mask = torch.from_numpy(p.input_valid.astype(np.float32))[None, None]
    return observe.estimate_noise(display, mask)[0].numpy().astype(np.float32)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
