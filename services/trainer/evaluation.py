"""A run's final evaluation on the dataset's test split, against the classical baselines in the same run.

Windows of ``window_px`` survey pixels are cut from each test pair (those with the most structure)
and fed three ways: the *real* survey cutout (normalised with the whole cutout's statistics, as
serving does), a *synthetic* observation of the target from the training degradation family, and
one from the *held-out* family (seeing, noise and a stretch never seen in training). For each,
every method — bicubic, the tone curve after bicubic, Richardson-Lucy then upsampling (both curves
fitted on the training split under the same inputs, so the classical baselines adapt to each family
while the generator does not), the generator at fidelity 1 (faithful) and 0 (vivid), and vivid
samples for the spread — is scored by services/trainer/report.py. Consistency is the reduced chi^2 of
the survey input against the output re-observed by the model's own observation operator
(services.model.observe, with its colour calibration fit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.model import degrade, normalise, observe
from services.model.generator import NOISE_CHANNELS, Generator
from services.trainer import baselines, report
from services.trainer.config import TrainConfig
from services.trainer.data import PairInput, pair_input
from services.trainer.pairs import Pair

FAMILIES = ("real", "synthetic", "heldout")
SAMPLES = 4
MIN_VALID = 0.95


@dataclass
class Window:
    """One evaluation field: survey input (display 0..1 and normalised), target, masks, noise, PSF."""

    pair: str
    input01: np.ndarray  # (3, h, w), NaN-free where valid
    x: np.ndarray  # normalised
    input_valid: np.ndarray
    target: np.ndarray  # (3, s*h, s*w)
    target_valid: np.ndarray
    noise_sigma: np.ndarray  # (3,) or per pixel (3, h, w), display units
    psf_fwhm: float  # survey px


def window_corners(p: Pair, side: int, count: int, scale: int) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping windows with the most structure in the target (std of luminance)."""
    h, w = p.survey.shape[1:]
    side_y, side_x = min(side, h), min(side, w)
    scored = []
    for y in range(0, h - side_y + 1, side_y):
        for x in range(0, w - side_x + 1, side_x):
            if p.input_valid[y : y + side_y, x : x + side_x].mean() < MIN_VALID:
                continue
            t = p.target[:, scale * y : scale * (y + side_y), scale * x : scale * (x + side_x)]
            scored.append((float(t.mean(axis=0).std()), y, x))
    scored.sort(reverse=True)
    return [(x, y) for _, y, x in scored[:count]]


def _real_window(p: Pair, whole: PairInput, x0: int, y0: int, side_x: int, side_y: int, scale: int) -> Window:
    """A window of the real cutout, normalised with the whole cutout's statistics (``whole``)."""
    sl = np.s_[y0 : y0 + side_y, x0 : x0 + side_x]
    tl = np.s_[scale * y0 : scale * (y0 + side_y), scale * x0 : scale * (x0 + side_x)]
    return Window(
        p.name,
        np.nan_to_num(p.survey[(slice(None), *sl)], nan=0.0),
        whole.x[(slice(None), *sl)],
        whole.valid[sl],
        p.target[(slice(None), *tl)],
        p.target_valid[tl],
        whole.noise_sigma,
        whole.psf_fwhm_px,
    )


def _synthetic_window(real: Window, family: degrade.Family, scale: int, seed: int) -> Window:
    d = degrade.degrade(real.target, scale, family, np.random.default_rng(seed), real.target_valid)
    x, valid, _ = normalise.survey_to_input(d.cube_0_255, d.valid)
    return Window(
        real.pair,
        np.nan_to_num(d.display, nan=0.0),
        x,
        valid,
        real.target,
        real.target_valid,
        d.noise_map,
        d.psf_fwhm,
    )


def windows(split: Sequence[Pair], config: TrainConfig, side: int, per_pair: int, seed: int) -> dict[str, list[Window]]:
    """The evaluation fields of ``split`` under every input family."""
    out: dict[str, list[Window]] = {f: [] for f in FAMILIES}
    for i, p in enumerate(split):
        h, w = p.survey.shape[1:]
        whole = pair_input(p)
        for j, (x0, y0) in enumerate(window_corners(p, side, per_pair, config.scale)):
            real = _real_window(p, whole, x0, y0, min(side, w), min(side, h), config.scale)
            out["real"].append(real)
            out["synthetic"].append(_synthetic_window(real, degrade.TRAIN, config.scale, seed + 1000 * i + j))
            out["heldout"].append(_synthetic_window(real, degrade.HELDOUT, config.scale, seed + 1000 * i + j + 500))
    return out


@torch.no_grad()
def generate(generator: Generator, w: Window, fidelity: float, seed: int, device: torch.device) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(w.x))[None].to(device)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, NOISE_CHANNELS, *w.x.shape[1:], generator=gen).to(device)
    out = generator(x, noise, torch.full((1, 1), float(fidelity), device=device))
    return out[0].float().cpu().numpy()


@torch.no_grad()
def chi2(outputs: Sequence[np.ndarray], fields: Sequence[Window], scale: int) -> float:
    """Pooled reduced chi^2 of the inputs against the re-observed outputs (observe.consistency_chi2)."""
    values, weights = [], []
    for o, w in zip(outputs, fields, strict=True):
        out = torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32))[None]
        reobserved = observe.reobserve(out, torch.tensor([w.psf_fwhm], dtype=torch.float32), scale)
        value = observe.consistency_chi2(
            reobserved,
            torch.from_numpy(np.ascontiguousarray(w.input01, dtype=np.float32))[None],
            torch.from_numpy(np.asarray(w.noise_sigma, dtype=np.float32))[None],
            torch.from_numpy(w.input_valid.astype(np.float32))[None, None],
        )
        v = float(value[0])
        if math.isfinite(v):
            values.append(v)
            weights.append(float(w.input_valid.sum()))
    return float(np.average(values, weights=weights)) if values else math.nan


def _fit_curves(train: Sequence[Window], scale: int) -> tuple[baselines.ToneCurve, baselines.ToneCurve]:
    bic = [(baselines.bicubic(w.input01, scale), w.target) for w in train]
    rl = [(baselines.richardson_lucy_then_upsample(w.input01, w.psf_fwhm, scale), w.target) for w in train]
    masks = [w.target_valid for w in train]
    return baselines.ToneCurve.fit(bic, masks), baselines.ToneCurve.fit(rl, masks)


def evaluate_family(
    generator: Generator,
    fields: Sequence[Window],
    train_fields: Sequence[Window],
    scale: int,
    device: torch.device,
    seed: int,
    two_sample_steps: int,
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]], list[list[np.ndarray]]]:
    tone, rl_tone = _fit_curves(train_fields, scale)
    inputs = [w.input01 for w in fields]
    methods = baselines.run_baselines(inputs, scale, tone, [w.psf_fwhm for w in fields], rl_tone_curve=rl_tone)
    methods[report.FAITHFUL] = [generate(generator, w, 1.0, seed + i, device) for i, w in enumerate(fields)]
    methods[report.VIVID] = [generate(generator, w, 0.0, seed + i, device) for i, w in enumerate(fields)]
    samples = [
        [generate(generator, w, 0.0, seed + 7919 * (k + 1) + i, device) for k in range(SAMPLES)]
        for i, w in enumerate(fields)
    ]
    result = report.evaluate(
        methods,
        [w.target for w in fields],
        [w.target_valid for w in fields],
        inputs,
        input_masks=[w.input_valid for w in fields],
        samples={report.VIVID: samples},
        scale=scale,
        # The realism tests the targets name (vivid; faithful beside it): statmorph and the classifier
        # are most of the evaluation's time.
        two_sample_methods=[report.FAITHFUL, report.VIVID],
        two_sample_steps=two_sample_steps,
        morphology_methods=[report.VIVID],
        seed=seed,
    )
    consistency = {name: chi2(outs, fields, scale) for name, outs in methods.items()}
    # The reference: how consistent the true target itself is with these inputs.
    target_chi2 = chi2([w.target for w in fields], fields, scale)
    return report.with_consistency(result, consistency, target_chi2=target_chi2), methods, samples


def evaluate_run(
    generator: Generator,
    by_split: dict[str, list[Pair]],
    config: TrainConfig,
    device: torch.device,
) -> tuple[dict[str, Any], bytes | None]:
    """(report, comparison grid PNG) of ``generator`` on the test split (validation when empty)."""
    started = time.monotonic()
    generator = generator.eval()
    split_name = "test" if by_split.get("test") else "validation"
    test = by_split.get(split_name) or []
    if config.eval_pairs:
        test = test[: config.eval_pairs]
    if not test:
        return {"error": "the dataset has neither test nor validation pairs", "headline": {}}, None
    window_px, per_pair, two_sample_steps = (
        config.eval_window_px,
        config.eval_windows_per_pair,
        config.eval_two_sample_steps,
    )
    fields = windows(test, config, window_px, per_pair, config.seed + 17)
    train_fields = windows(by_split["train"], config, window_px, 2, config.seed + 29)
    families: dict[str, Any] = {}
    grid = None
    for family in FAMILIES:
        result, methods, samples = evaluate_family(
            generator, fields[family], train_fields[family], config.scale, device, config.seed, two_sample_steps
        )
        families[family] = result
        if family == "real":
            grid = report.standard_grid(
                [w.input01 for w in fields[family]],
                methods,
                [w.target for w in fields[family]],
                samples,
                title="AI rendering, not an observation - survey | baselines | generator | spread | target",
            )
    headline = {f"{f}.{k}": v for f, r in families.items() for k, v in r["headline"].items()}
    return {
        "split": split_name,
        "pairs": [p.name for p in test],
        "windows": len(fields["real"]),
        "window_px": window_px,
        "families": families,
        "heldout_family": degrade.family_summary(degrade.HELDOUT),
        "train_family": degrade.family_summary(degrade.TRAIN),
        "headline": headline,
        "seconds": time.monotonic() - started,
    }, grid
