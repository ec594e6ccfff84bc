"""Classifier two-sample test (issue #7 realism): can a small CNN tell generated tiles from real
target tiles? Held-out accuracy ≈ 0.5 means it cannot (realistic); ≈ 1 means obviously fake.

Tiles are cut on a grid from each image (fully valid ones only); images are split into train
and test *by index* (generated[i] and real[i] — the same field — land on the same side, so the
classifier cannot recognise a field it saw as real), classes are balanced within each side. A
tiny CNN (three 3x3 convolutions, global mean and log-std pooling: it sees noise texture,
periodic artefacts and colour; inputs standardised per channel) trains for a fixed number of
steps with random flips and 90° rotations; the result is the test accuracy with an exact
(Clopper-Pearson) binomial interval and the one-sided binomial p-value against chance. CPU,
seconds; deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn


@dataclass(frozen=True)
class TwoSampleResult:
    accuracy: float  # held-out accuracy of the classifier
    ci_low: float  # Clopper-Pearson interval of the accuracy at ``confidence``
    ci_high: float
    p_value: float  # one-sided binomial test of accuracy > 0.5
    n_test: int  # held-out tiles (balanced)
    n_train: int
    confidence: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def grid_tiles(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None, tile: int
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``tile``² crops of every (3, H, W) image whose pixels are all valid (and
    finite): (N, 3, tile, tile) float32 and the index of the image each came from."""
    out, owner = [], []
    for i, img in enumerate(images):
        a = np.asarray(img, np.float32)
        ok = np.isfinite(a).all(axis=0)
        if masks is not None and masks[i] is not None:
            ok &= np.asarray(masks[i], bool)
        h, w = a.shape[-2:]
        for y in range(0, h - tile + 1, tile):
            for x in range(0, w - tile + 1, tile):
                if ok[y : y + tile, x : x + tile].all():
                    out.append(a[:, y : y + tile, x : x + tile])
                    owner.append(i)
    if not out:
        return np.zeros((0, 3, tile, tile), np.float32), np.zeros(0, int)
    return np.stack(out), np.asarray(owner)


class TileClassifier(nn.Module):
    """~14 k parameters: 3x3 convs 3→16→32→32 (two 2x average pools), global mean and standard
    deviation (log) of the last features, a linear logit."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.AvgPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # x standardised per channel with the training tiles' statistics
        # log of the spread: texture amplitudes (noise, fine detail) differ by factors, not offsets
        spread = torch.log(f.std(dim=(2, 3)) + 1e-3)
        return self.head(torch.cat([f.mean(dim=(2, 3)), spread], dim=1))[:, 0]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flip and 90° rotation, one per batch (orientation carries no class information)."""
    k = int(torch.randint(0, 4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if int(torch.randint(0, 2, (1,), generator=g)) else x


def _split(n_gen: int, n_real: int, owner_gen: np.ndarray, owner_real: np.ndarray, rng, test_fraction: float):
    """Boolean test selectors for the generated and real tiles: by image index when there are ≥ 4
    images, else by tile (too few images to hold some out)."""
    n_images = int(max(owner_gen.max(initial=-1), owner_real.max(initial=-1))) + 1
    if n_images >= 4:
        order = rng.permutation(n_images)
        held = set(order[: max(1, round(test_fraction * n_images))].tolist())
        return np.isin(owner_gen, list(held)), np.isin(owner_real, list(held))
    tg = np.zeros(n_gen, bool)
    tr = np.zeros(n_real, bool)
    tg[rng.permutation(n_gen)[: round(test_fraction * n_gen)]] = True
    tr[rng.permutation(n_real)[: round(test_fraction * n_real)]] = True
    return tg, tr


def _balanced(a: np.ndarray, b: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]


def classifier_two_sample_test(
    generated: Sequence[np.ndarray],
    real: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    tile: int = 32,
    seed: int = 0,
    steps: int = 300,
    batch: int = 64,
    lr: float = 2e-3,
    test_fraction: float = 0.5,
    max_tiles_per_image: int = 64,
    confidence: float = 0.95,
) -> TwoSampleResult:
    """Train `TileClassifier` to tell tiles of ``generated`` (label 1) from tiles of ``real``
    (label 0), both lists of (3, H, W) display images in [0, 1] (``masks``: (H, W) valid, shared by
    generated[i] and real[i]); return its held-out accuracy. Raises ValueError with too few tiles
    (fewer than 8 per class on either side)."""
    rng = np.random.default_rng(seed)
    xg, og = grid_tiles(generated, masks if masks is not None and len(masks) == len(generated) else None, tile)
    xr, orl = grid_tiles(real, masks if masks is not None and len(masks) == len(real) else None, tile)
    keep_g = _cap(og, max_tiles_per_image, rng)
    keep_r = _cap(orl, max_tiles_per_image, rng)
    xg, og, xr, orl = xg[keep_g], og[keep_g], xr[keep_r], orl[keep_r]
    test_g, test_r = _split(len(xg), len(xr), og, orl, rng, test_fraction)
    trg, trr = _balanced(xg[~test_g], xr[~test_r], rng)
    teg, ter = _balanced(xg[test_g], xr[test_r], rng)
    if min(len(trg), len(teg)) < 8:
        raise ValueError(f"too few tiles for a two-sample test: train {len(trg)}, test {len(teg)} per class")
    x_train = np.concatenate([trg, trr])
    # standardise per channel (training tiles, both classes): faint noise must reach the convolutions
    mu = x_train.mean(axis=(0, 2, 3), keepdims=True)
    sd = np.maximum(x_train.std(axis=(0, 2, 3), keepdims=True), 1e-6)
    x_train = torch.from_numpy((x_train - mu) / sd)
    y_train = torch.cat([torch.ones(len(trg)), torch.zeros(len(trr))])
    x_test = torch.from_numpy((np.concatenate([teg, ter]) - mu) / sd)
    y_test = torch.cat([torch.ones(len(teg)), torch.zeros(len(ter))])

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = TileClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (min(batch, len(x_train)),), generator=g)
        loss = loss_fn(model(_augment(x_train[idx], g)), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i : i + 256]) for i in range(0, len(x_test), 256)]) > 0
    correct = int((pred.float() == y_test).sum())
    n = len(y_test)
    test = stats.binomtest(correct, n, 0.5, alternative="greater")
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=confidence, method="exact")
    return TwoSampleResult(
        accuracy=correct / n,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        p_value=float(test.pvalue),
        n_test=n,
        n_train=len(x_train),
        confidence=confidence,
    )


def _cap(owner: np.ndarray, cap: int, rng) -> np.ndarray:
    """Indices keeping at most ``cap`` tiles per image (random, deterministic), in order."""
    keep = []
    for i in np.unique(owner):
        idx = np.flatnonzero(owner == i)
        keep.extend(idx if len(idx) <= cap else np.sort(rng.choice(idx, cap, replace=False)))
    return np.asarray(sorted(keep), dtype=int)


def realistic(result: TwoSampleResult, max_accuracy: float = 0.65) -> bool:
    """Issue #7's target: the classifier's held-out accuracy at most ``max_accuracy``."""
    return bool(math.isfinite(result.accuracy) and result.accuracy <= max_accuracy)
