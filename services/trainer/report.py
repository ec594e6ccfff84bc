"""The evaluation report of issue #7: every metric for every method on the test split, the
issue's targets as pass/fail fields, and the comparison grid PNG.

`evaluate` takes the outputs already computed (generator at its fidelity settings, baselines from
`baselines.run_baselines`), the targets and masks, and optionally what the consistency and spread
measures need (re-observed outputs, survey inputs and noise, several samples per field). Pooled
numbers weigh pixels (PSNR from the total squared error, SSIM over all masked pixels), power
(high-frequency ratio and checkerboard sums over all tiles) and sources (star counts) across the
images. The returned dict is JSON-serialisable: non-finite numbers become null.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.trainer import metrics
from services.trainer.two_sample import classifier_two_sample_test

FAITHFUL = "generator-faithful"
VIVID = "generator-vivid"
BASELINES: tuple[str, ...] = ("bicubic", "tone-curve", "richardson-lucy")


@dataclass(frozen=True)
class Targets:
    """Issue #7's targets on the held-out split."""

    faithful_gain_db: float = 3.0  # faithful source PSNR over the stronger classical baseline, at least
    hf_ratio: tuple[float, float] = (0.8, 1.25)  # vivid high-frequency power ratio within
    two_sample_max: float = 0.65  # vivid classifier accuracy at most
    vivid_psnr_loss_db: float = 2.0  # vivid loses at most this much source PSNR to faithful
    chi2: tuple[float, float] = (0.8, 1.5)  # both settings' reduced χ² within
    morphology_alpha: float = 0.05  # KS per statistic, Bonferroni over the five


def _json(x: object) -> object:
    """Plain JSON types: numpy scalars/arrays converted, NaN/inf → None, tuples → lists."""
    if isinstance(x, Mapping):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def _check(value: float | None, lo: float | None = None, hi: float | None = None) -> bool | None:
    """Pass/fail of value within [lo, hi]; None when not evaluated."""
    if value is None or not math.isfinite(value):
        return None
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def sample_spread(samples: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W) standard deviation across samples of one field (mean over channels): where the
    generator invents detail."""
    return np.asarray(samples, np.float64).std(axis=0).mean(axis=0)


def evaluate(
    methods: Mapping[str, Sequence[np.ndarray]],
    targets: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None,
    inputs: Sequence[np.ndarray] | None = None,
    *,
    reobserved: Mapping[str, Sequence[np.ndarray]] | None = None,
    input_masks: Sequence[np.ndarray | None] | None = None,
    noise_sigma: Sequence[np.ndarray | float] | None = None,
    samples: Mapping[str, Sequence[Sequence[np.ndarray]]] | None = None,
    segmaps: Sequence[np.ndarray] | None = None,
    faithful: str = FAITHFUL,
    vivid: str = VIVID,
    baselines: Sequence[str] = BASELINES,
    scale: int = 4,
    two_sample_methods: Sequence[str] | None = None,
    two_sample_steps: int = 300,
    morphology_methods: Sequence[str] | None = None,
    targets_spec: Targets = Targets(),
    seed: int = 0,
) -> dict:
    """Every metric per method, and issue #7's targets as pass/fail (null when not evaluated).

    methods: name → outputs, (3, H, W) in [0, 1], one per target (same order); targets: (3, H, W)
    in [0, 1]; masks: (H, W) valid (None = all). Consistency needs ``inputs`` (survey, (3, h, w) in
    [0, 1]), ``noise_sigma`` (per image, per channel in the same units) and ``reobserved``: name →
    outputs taken back to the survey grid by the model's observation operator. ``samples``: name →
    per image, several samples (the spread). ``segmaps``: the galaxies for morphology (default
    `metrics.galaxy_segmap` of each target). Two-sample tests and morphology run for every method
    unless restricted."""
    n = len(targets)
    for name, outs in methods.items():
        if len(outs) != n:
            raise ValueError(f"method {name!r}: {len(outs)} outputs for {n} targets")
    masks = list(masks) if masks is not None else [None] * n
    valid = [metrics.as_mask(m, np.shape(t)) for m, t in zip(masks, targets, strict=True)]
    sources = [metrics.source_mask(t, v) for t, v in zip(targets, valid, strict=True)]
    skies = [v & ~s for v, s in zip(valid, sources, strict=True)]  # valid pixels away from the sources
    segs = (
        list(segmaps)
        if segmaps is not None
        else [metrics.galaxy_segmap(t, v) for t, v in zip(targets, valid, strict=True)]
    )
    morph_names = list(methods) if morphology_methods is None else [m for m in morphology_methods if m in methods]
    tgt_morph = (
        [metrics.morphology(t, s, v) for t, s, v in zip(targets, segs, valid, strict=True)] if morph_names else []
    )
    tgt_cb = [metrics.checkerboard_sums(t, scale, v) for t, v in zip(targets, valid, strict=True)]
    tgt_hf = [
        metrics.band_power([t], s, v, band=(0.5 / scale, 0.5))[0]
        for t, s, v in zip(targets, sources, valid, strict=True)
    ]
    ts_names = list(methods) if two_sample_methods is None else [m for m in two_sample_methods if m in methods]

    report: dict = {
        "n_images": n,
        "scale": scale,
        "source_fraction": float(np.mean([s.sum() / max(v.sum(), 1) for s, v in zip(sources, valid, strict=True)])),
        "n_galaxies": int(sum(len(np.unique(s[s > 0])) for s in segs)),
        "tests": {
            "psnr": "10 log10(1 / MSE) over valid pixels (all) or source pixels (sep 3-sigma detections of the target, "
            "dilated 2 px), MSE pooled over the images; level_matched: after a per-channel gain and offset "
            "fitted to the target over the valid pixels of each image (a diagnostic: structure, not level)",
            "ssim": "skimage SSIM map (7 px window), mean over the same pixels, pooled",
            "hf_power_ratio": f"Hann-windowed power, k in [{0.5 / scale:g}, 0.5] cycles/px (above the survey's "
            "Nyquist), over 32-px tiles on source regions, output / target, pooled",
            "morphology": "statmorph Gini, M20, C, A, S of the target's galaxies on both; two-sample KS per "
            f"statistic, close when every p >= {targets_spec.morphology_alpha}/5 (Bonferroni)",
            "two_sample": "CNN classifier on 32-px tiles, generated vs target, split by field, balanced; held-out "
            "accuracy with a Clopper-Pearson 95% interval",
            "chi2": "mean of ((reobserved - survey) / sigma)^2 over valid input pixels and channels",
            "checkerboard": f"power at (i/{scale}, j/{scale}) cycles/px above its local level, output minus "
            f"target, in local-level units, pooled; flagged above {metrics.CHECKERBOARD_TOLERANCE}",
            "stars": "sep detections at 5 sigma of the target's noise in both, matched one-to-one within 1 px",
            "sky_residual_rms": "RMS of the luminance residual, output minus target, each about its median, on valid "
            "pixels outside the target's sources, pooled: structure invented on (or missing from) empty sky",
        },
        "methods": {},
    }
    for name, outs in methods.items():
        r: dict = {}
        se_all = se_src = se_matched = 0.0
        n_all = n_src = 0
        ssim_all_sum = ssim_src_sum = 0.0
        cb_po = cb_bo = cb_pt = cb_bt = 0.0
        hf_out = 0.0
        stars = {"n_output": 0, "n_target": 0, "matched_output": 0, "matched_target": 0}
        cb_flags = 0
        sky_se, sky_n = 0.0, 0
        for i, (o, t) in enumerate(zip(outs, targets, strict=True)):
            v, s = valid[i], sources[i]
            e, k = metrics.squared_error(o, t, v)
            se_all, n_all = se_all + e, n_all + k
            e, k = metrics.squared_error(o, t, s)
            se_src, n_src = se_src + e, n_src + k
            se_matched += metrics.squared_error(metrics.level_matched(o, t, v), t, s)[0]
            smap = metrics.ssim_map(o, t)
            ssim_all_sum += float(smap[v].sum())
            ssim_src_sum += float(smap[s].sum())
            po, bo = metrics.checkerboard_sums(o, scale, v)
            cb_flags += bool(metrics.checkerboard_from_sums((po, bo), tgt_cb[i])["flagged"])
            cb_po, cb_bo = cb_po + po, cb_bo + bo
            cb_pt, cb_bt = cb_pt + tgt_cb[i][0], cb_bt + tgt_cb[i][1]
            hf_out += metrics.band_power([o], s, v, band=(0.5 / scale, 0.5))[0]
            e, k = metrics.sky_residual_sums(o, t, skies[i])
            sky_se, sky_n = sky_se + e, sky_n + k
            for key, val in metrics.star_counts(o, t, v).items():
                stars[key] += val
        px_all = sum(int(v.sum()) for v in valid)
        px_src = sum(int(s.sum()) for s in sources)
        r["fidelity"] = {
            "psnr_all": metrics.psnr_from_squared_error(se_all, n_all),
            "psnr_sources": metrics.psnr_from_squared_error(se_src, n_src),
            "psnr_sources_level_matched": metrics.psnr_from_squared_error(se_matched, n_src),
            "ssim_all": ssim_all_sum / px_all if px_all else math.nan,
            "ssim_sources": ssim_src_sum / px_src if px_src else math.nan,
        }
        hf_tgt = float(sum(tgt_hf))
        checker = metrics.checkerboard_from_sums((cb_po, cb_bo), (cb_pt, cb_bt))
        checker["images_flagged"] = cb_flags
        r["realism"] = {"hf_power_ratio": hf_out / hf_tgt if hf_tgt > 0 else math.nan}
        if name in morph_names:
            out_morph = [metrics.morphology(o, s, v) for o, s, v in zip(outs, segs, valid, strict=True)]
            flat_o = [row for rows in out_morph for row in rows]
            flat_t = [row for rows in tgt_morph for row in rows]
            r["realism"]["morphology"] = metrics.compare_morphology(flat_o, flat_t, targets_spec.morphology_alpha)
        if name in ts_names:
            try:
                res = classifier_two_sample_test(outs, targets, masks, seed=seed, steps=two_sample_steps)
                r["realism"]["two_sample"] = res.to_dict()
            except ValueError as exc:
                r["realism"]["two_sample"] = {"error": str(exc)}
        r["artefacts"] = {
            "checkerboard": checker,
            "sky_residual_rms": math.sqrt(sky_se / sky_n) if sky_n else math.nan,
        }
        r["stars"] = metrics.precision_recall(stars)
        if reobserved is not None and name in reobserved and inputs is not None and noise_sigma is not None:
            z2 = 0.0
            count = 0
            for i, (ro, x) in enumerate(zip(reobserved[name], inputs, strict=True)):
                m = input_masks[i] if input_masks is not None else None
                m = metrics.as_mask(m, np.shape(x)) & np.isfinite(np.asarray(x)).all(axis=0)
                chi = metrics.reduced_chi2(ro, x, noise_sigma[i], m)
                k = int(m.sum()) * np.shape(x)[0]
                if math.isfinite(chi):
                    z2, count = z2 + chi * k, count + k
            r["consistency"] = {"chi2": z2 / count if count else math.nan}
        if samples is not None and name in samples:
            on = off = 0.0
            n_on = n_off = 0
            for i, group in enumerate(samples[name]):
                sp = sample_spread(group)
                s, sky = sources[i], skies[i]
                on, n_on = on + float(sp[s].sum()), n_on + int(s.sum())
                off, n_off = off + float(sp[sky].sum()), n_off + int(sky.sum())
            r["spread"] = {
                "sources": on / n_on if n_on else math.nan,
                "background": off / n_off if n_off else math.nan,
            }
        report["methods"][name] = r
    report["targets"] = _targets(report["methods"], faithful, vivid, baselines, targets_spec)
    verdicts = [t["pass"] for t in report["targets"].values()]
    report["all_pass"] = None if any(v is None for v in verdicts) else all(verdicts)
    report["targets_spec"] = asdict(targets_spec)
    report["headline"] = headline(report)
    return _json(report)


HEADLINE: dict[str, tuple[str, ...]] = {
    "psnr_sources": ("fidelity", "psnr_sources"),
    "psnr_all": ("fidelity", "psnr_all"),
    "psnr_sources_level_matched": ("fidelity", "psnr_sources_level_matched"),
    "ssim_sources": ("fidelity", "ssim_sources"),
    "hf_power_ratio": ("realism", "hf_power_ratio"),
    "two_sample_accuracy": ("realism", "two_sample", "accuracy"),
    "morphology_min_p": ("realism", "morphology", "min_p"),
    "chi2": ("consistency", "chi2"),
    "checkerboard_excess": ("artefacts", "checkerboard", "excess"),
    "sky_residual_rms": ("artefacts", "sky_residual_rms"),
    "star_precision": ("stars", "precision"),
    "star_recall": ("stars", "recall"),
}


def with_consistency(
    report: dict,
    chi2: Mapping[str, float],
    faithful: str = FAITHFUL,
    vivid: str = VIVID,
    spec: Targets = Targets(),
    target_chi2: float | None = None,
) -> dict:
    """The report with each method's consistency chi^2 set from ``chi2`` (computed by the model's own
    observation operator and calibration fit) and the targets, verdict and headline recomputed.
    ``target_chi2``: the same chi^2 of the true target, the reference (about 1 where the inputs were
    made by the observation model; on real survey cutouts, what the model's mismatch with the real
    survey costs even the truth)."""
    for name, value in chi2.items():
        if name in report["methods"]:
            report["methods"][name]["consistency"] = {"chi2": value}
    report["tests"]["chi2"] = (
        "reduced chi^2 of the survey input against the output re-observed (linearised, blurred by the survey "
        "PSF, area-resampled) after the best colour calibration (services.model.observe.consistency_chi2)"
    )
    if target_chi2 is not None:
        report["target_chi2"] = target_chi2
        report["tests"]["target_chi2"] = "the same chi^2 of the true target re-observed: the reference"
    report["targets"] = _targets(report["methods"], faithful, vivid, BASELINES, spec)
    verdicts = [t["pass"] for t in report["targets"].values()]
    report["all_pass"] = None if any(v is None for v in verdicts) else all(verdicts)
    report["headline"] = headline(report)
    return _json(report)


def headline(report: Mapping) -> dict[str, float]:
    """Flat "method.metric" → float of the main numbers (finite ones only), plus "targets_passed"
    and "targets_evaluated": what a run's status shows."""
    out: dict[str, float] = {}
    for name in report["methods"]:
        for key, path in HEADLINE.items():
            v = _get(report["methods"], name, *path)
            if v is not None and math.isfinite(v):
                out[f"{name}.{key}"] = v
    reference = report.get("target_chi2")
    if isinstance(reference, (int, float)) and math.isfinite(reference):
        out["target.chi2"] = float(reference)
    verdicts = [t["pass"] for t in report.get("targets", {}).values() if t["pass"] is not None]
    out["targets_passed"] = float(sum(verdicts))
    out["targets_evaluated"] = float(len(verdicts))
    return out


def _get(methods: Mapping, name: str, *path: str) -> float | None:
    cur = methods.get(name)
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def _targets(methods: Mapping, faithful: str, vivid: str, baselines: Sequence[str], spec: Targets) -> dict:
    psnr = {m: _get(methods, m, "fidelity", "psnr_sources") for m in methods}
    classical = [(psnr[b], b) for b in baselines if psnr.get(b) is not None and math.isfinite(psnr[b])]
    best_val, best_name = max(classical) if classical else (None, None)
    pf, pv = psnr.get(faithful), psnr.get(vivid)
    gain = pf - best_val if pf is not None and best_val is not None else None
    loss = pf - pv if pf is not None and pv is not None else None
    hf = _get(methods, vivid, "realism", "hf_power_ratio")
    acc = _get(methods, vivid, "realism", "two_sample", "accuracy")
    morph = (methods.get(vivid) or {}).get("realism", {}).get("morphology")
    out = {
        "faithful_beats_classical": {
            "value": gain,
            "against": best_name,
            "min": spec.faithful_gain_db,
            "pass": _check(gain, spec.faithful_gain_db),
        },
        "vivid_hf_power_ratio": {"value": hf, "range": spec.hf_ratio, "pass": _check(hf, *spec.hf_ratio)},
        "vivid_morphology_close": {
            "test": morph["test"] if morph else None,
            "min_p": morph["min_p"] if morph else None,
            "n": morph["n"] if morph else None,
            "pass": (bool(morph["close"]) if morph["n"] >= 2 else None) if morph else None,
        },
        "vivid_two_sample": {"value": acc, "max": spec.two_sample_max, "pass": _check(acc, None, spec.two_sample_max)},
        "vivid_source_psnr_loss": {
            "value": loss,
            "max": spec.vivid_psnr_loss_db,
            "pass": _check(loss, None, spec.vivid_psnr_loss_db),
        },
    }
    for label, name in (("faithful", faithful), ("vivid", vivid)):
        chi2 = _get(methods, name, "consistency", "chi2")
        out[f"{label}_chi2"] = {"value": chi2, "range": spec.chi2, "pass": _check(chi2, *spec.chi2)}
        cb = (methods.get(name) or {}).get("artefacts", {}).get("checkerboard")
        out[f"{label}_no_checkerboard"] = {
            "value": cb["excess"] if cb else None,
            "max": metrics.CHECKERBOARD_TOLERANCE,
            "pass": (not cb["flagged"]) if cb else None,
        }
    return out


# --------------------------------------------------------------------------- comparison grid


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow built without FreeType: the bitmap font
        return ImageFont.load_default()


def _to_rgb(img: np.ndarray | None, cell: int) -> Image.Image:
    """A cell: (3, H, W) in [0, 1] as colour, (H, W) as a grey map scaled to its 99th percentile,
    None as a grey blank; FITS orientation flipped to top-down; resized to ``cell`` (nearest when
    enlarging, so survey pixels stay visible)."""
    if img is None:
        return Image.new("RGB", (cell, cell), (64, 64, 64))
    a = np.asarray(img, np.float64)
    if a.ndim == 2:
        top = np.nanpercentile(a, 99) if np.isfinite(a).any() else 1.0
        a = np.repeat((a / (top if top > 0 else 1.0))[None], 3, axis=0)
    a = np.nan_to_num(a, nan=0.0)
    rgb = (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)[::-1]
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    h, w = rgb.shape[:2]
    size = (cell, max(1, round(cell * h / w))) if w >= h else (max(1, round(cell * w / h)), cell)
    return im.resize(size, Image.NEAREST if size[0] >= w else Image.BOX)


def comparison_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    columns: Sequence[str],
    labels: Sequence[str] | None = None,
    cell: int = 192,
    title: str | None = None,
) -> bytes:
    """PNG bytes: one row per field, one column per image kind (e.g. survey | bicubic | tone curve |
    Richardson-Lucy | generator faithful | generator vivid | sample spread | target), headed by
    ``columns``, rows labelled by ``labels``. Cells: (3, H, W) [0, 1] colour or (H, W) maps (grey,
    scaled), FITS orientation, any size (shown in ``cell`` px squares). Deterministic bytes."""
    if any(len(r) != len(columns) for r in rows):
        raise ValueError("every row needs one image per column")
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 0 if not labels else int(max(probe.textlength(s, font=font) for s in labels)) + 12
    pad, head = 4, 20
    top = head + (20 if title else 0)
    width = label_w + len(columns) * (cell + pad) + pad
    height = top + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 3), title, fill=(0, 0, 0), font=font)
    for j, name in enumerate(columns):
        x0 = label_w + pad + j * (cell + pad)
        tw = probe.textlength(name, font=font)
        draw.text((x0 + max(0, (cell - tw) / 2), top - head + 3), name, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        y0 = top + pad + i * (cell + pad)
        if labels:
            draw.text((4, y0 + cell / 2 - 6), labels[i], fill=(0, 0, 0), font=font)
        for j, img in enumerate(row):
            tile = _to_rgb(img, cell)
            x0 = label_w + pad + j * (cell + pad)
            canvas.paste(tile, (x0 + (cell - tile.width) // 2, y0 + (cell - tile.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def standard_grid(
    inputs: Sequence[np.ndarray],
    methods: Mapping[str, Sequence[np.ndarray]],
    targets: Sequence[np.ndarray],
    samples: Sequence[Sequence[np.ndarray]] | None = None,
    order: Sequence[str] = (*BASELINES, FAITHFUL, VIVID),
    labels: Sequence[str] | None = None,
    max_rows: int = 6,
    cell: int = 192,
    title: str | None = None,
) -> bytes:
    """The report's grid: survey | the methods in ``order`` that exist | sample spread (std across
    ``samples`` of each field, when given) | target, for the first ``max_rows`` fields."""
    names = [m for m in order if m in methods]
    columns = ["survey", *names, *(["sample spread"] if samples is not None else []), "target"]
    rows = []
    for i in range(min(max_rows, len(targets))):
        row = [inputs[i], *[methods[m][i] for m in names]]
        if samples is not None:
            row.append(sample_spread(samples[i]))
        rows.append([*row, targets[i]])
    return comparison_grid(rows, columns, list(labels[: len(rows)]) if labels else None, cell, title)
