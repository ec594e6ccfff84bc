"""Evaluation metrics of the generator (issue #7), pure functions on numpy arrays.

Conventions (the #7 ones): an image is (3, H, W) float display values in [0, 1] (output or
target at the x4 grid), a mask is (H, W) bool with True = valid. Every function is deterministic.

- fidelity: `psnr`, `ssim` on any pixel subset; `source_mask` gives the source pixels (the
  black sky flatters any denoiser, so the headline numbers are on sources only);
- realism: `high_frequency_power_ratio` (azimuthally averaged power above the input's Nyquist,
  in tiles over sources), `morphology` + `compare_morphology` (statmorph, KS per statistic);
- consistency: `reduced_chi2`; artefacts: `checkerboard_excess`; `star_precision_recall`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage as ndi
from scipy import stats
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

NOISE_FLOOR = 1.0 / 255.0  # lowest pixel noise assumed: one display level (noise-free renders)
CHECKERBOARD_TOLERANCE = 1.0  # checkerboard_excess above this: flagged (see there)
NOISE_LAG = 3  # px between the pixels whose differences measure the noise (see pixel_noise)
MORPHOLOGY_STATS: tuple[str, ...] = ("gini", "m20", "concentration", "asymmetry", "smoothness")
MAX_ELONGATION = 10.0  # sources more elongated than this (axis ratio) are not measured (`morphology`): streaks


# --------------------------------------------------------------------------- helpers


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) float64 mean of the channels of a (3, H, W) image (a 2-D array passes through)."""
    a = np.asarray(image, dtype=np.float64)
    return a.mean(axis=0) if a.ndim == 3 else a


def as_mask(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool from a mask or None (all valid) for an image of ``shape`` (..., H, W)."""
    return np.ones(shape[-2:], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)


def pixel_noise(image: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Robust per-pixel noise of the luminance: MAD of differences between pixels 3 apart along rows
    / √2 (blind to smooth background and to sources, which fill few pairs; 3 px apart so that
    the noise of resampled or smoothed renders, correlated over ~2 px, counts in full), never
    below one display level."""
    lum = luminance(image)
    ok = as_mask(valid, lum.shape)
    lag = NOISE_LAG if lum.shape[1] > 4 * NOISE_LAG else 1
    pair = ok[:, lag:] & ok[:, :-lag]
    d = (lum[:, lag:] - lum[:, :-lag])[pair]
    if d.size < 16:
        return NOISE_FLOOR
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(1.4826 * mad / math.sqrt(2.0), NOISE_FLOOR)


def background_subtracted(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Luminance minus sep's background (mesh ~1/4 of the image, at least 32 px), 0 on invalid pixels."""
    lum = luminance(image)
    ok = as_mask(valid, lum.shape)
    box = max(32, min(lum.shape) // 4)
    data = np.ascontiguousarray(np.where(ok, lum, 0.0))
    bkg = sep.Background(data, mask=np.ascontiguousarray(~ok), bw=box, bh=box, fw=3, fh=3)
    return np.ascontiguousarray(np.where(ok, lum - bkg.back(), 0.0))


@dataclass(frozen=True)
class Detection:
    """sep's catalogue of one image: positions (x, y) in pixels, half-light radii, fluxes, and the
    segmentation map (0 = sky, i + 1 = object i), the per-pixel noise the threshold used."""

    x: np.ndarray
    y: np.ndarray
    r50: np.ndarray
    flux: np.ndarray
    segmap: np.ndarray
    noise: float


def detect(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    nsigma: float = 3.0,
    minarea: int = 5,
    noise: float | None = None,
    deblend_cont: float = 0.005,
) -> Detection:
    """sep detection on the luminance (`background_subtracted`): threshold nsigma x the per-pixel noise
    (the image's own `pixel_noise` unless ``noise`` is given), on sep's 3x3-filtered image."""
    ok = as_mask(valid, np.shape(image))
    sub = background_subtracted(image, ok)
    bad = np.ascontiguousarray(~ok)
    sigma = max(float(noise if noise is not None else pixel_noise(image, ok)), NOISE_FLOOR)
    if sep.get_extract_pixstack() < 2 * sub.size:  # sep's global buffer only grows: large images
        sep.set_extract_pixstack(2 * sub.size)
    objs, seg = sep.extract(
        sub,
        nsigma,
        err=sigma,
        mask=bad,
        minarea=minarea,
        filter_type="conv",  # threshold in unfiltered noise units: conservative for correlated noise
        deblend_cont=deblend_cont,
        segmentation_map=True,
    )
    if len(objs):
        r50, _ = sep.flux_radius(sub, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, normflux=objs["flux"], subpix=5)
    else:
        r50 = np.zeros(0)
    return Detection(objs["x"].copy(), objs["y"].copy(), np.asarray(r50, float), objs["flux"].copy(), seg, sigma)


def source_mask(
    target: np.ndarray, valid: np.ndarray | None = None, nsigma: float = 3.0, dilate_px: int = 2
) -> np.ndarray:
    """(H, W) bool: pixels of detected sources in the target (sep segmentation at nsigma x the
    pixel noise, dilated by ``dilate_px`` to take in the wings), restricted to valid pixels."""
    ok = as_mask(valid, np.shape(target))
    seg = detect(target, ok, nsigma=nsigma).segmap > 0
    if dilate_px > 0:
        seg = ndi.binary_dilation(seg, iterations=dilate_px)
    return seg & ok


def galaxy_segmap(
    target: np.ndarray,
    valid: np.ndarray | None = None,
    nsigma: float = 2.0,
    min_area: int = 60,
    min_r50_px: float = 2.5,
    max_sources: int = 12,
) -> np.ndarray:
    """(H, W) int labels of the extended sources of the target (galaxies, knots of nebulae):
    detections of at least ``min_area`` px whose half-light radius is ≥ ``min_r50_px`` (stars are
    compact), not touching invalid pixels or the edge; the ``max_sources`` largest, relabelled 1..n."""
    ok = as_mask(valid, np.shape(target))
    det = detect(target, ok, nsigma=nsigma, minarea=min_area)
    seg = det.segmap
    touching = set(np.unique(seg[ndi.binary_dilation(~ok, iterations=2)]).tolist())
    touching |= set(np.unique(np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]])).tolist())
    area = np.bincount(seg.ravel(), minlength=len(det.x) + 1)
    keep = [
        i + 1
        for i in range(len(det.x))
        if area[i + 1] >= min_area and det.r50[i] >= min_r50_px and (i + 1) not in touching
    ]
    keep = sorted(keep, key=lambda lab: -area[lab])[:max_sources]
    out = np.zeros_like(seg, dtype=np.int32)
    for new, lab in enumerate(sorted(keep), start=1):
        out[seg == lab] = new
    return out


# --------------------------------------------------------------------------- fidelity


def psnr(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) over the masked pixels, all channels; inf when identical,
    NaN when the mask is empty."""
    se, n = squared_error(output, target, mask)
    return psnr_from_squared_error(se, n, data_range)


def squared_error(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """(sum of squared differences, number of values) over the masked pixels and all channels:
    to pool PSNR over many images."""
    o, t = np.asarray(output, np.float64), np.asarray(target, np.float64)
    m = as_mask(mask, t.shape)
    d = (o - t)[:, m] if t.ndim == 3 else (o - t)[m]
    return float(np.sum(d * d)), int(d.size)


def sky_residual_sums(output: np.ndarray, target: np.ndarray, sky: np.ndarray) -> tuple[float, int]:
    """(sum of squared residuals, number of pixels) of the luminance on ``sky`` pixels (valid, away
    from the target's sources), each image taken about its own sky median: structure the output
    puts on empty sky that the target does not have (noise lifted into blobs), or the reverse, and
    not the sky's level. Pooled over images: RMS = sqrt(sum / n)."""
    m = np.asarray(sky, bool)
    if not m.any():
        return 0.0, 0
    o, t = luminance(output)[m], luminance(target)[m]
    d = (o - np.median(o)) - (t - np.median(t))
    return float(np.sum(d * d)), int(d.size)


def level_matched(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``output`` with a per-channel gain and offset fitted to ``target`` by least squares over the
    masked pixels. Outreach images are stretched arbitrarily: PSNR after this matching tells apart
    an output whose structure is wrong from one whose overall level and contrast are (a diagnostic
    beside the raw PSNR, which the targets use)."""
    o, t = np.asarray(output, np.float64), np.asarray(target, np.float64)
    m = as_mask(mask, t.shape)
    out = np.empty_like(o)
    for c in range(o.shape[0]):
        x, y = o[c][m], t[c][m]
        var = float(np.var(x)) if x.size else 0.0
        gain = float(np.mean((x - x.mean()) * (y - y.mean()))) / var if var > 0 else 0.0
        offset = float(y.mean() - gain * x.mean()) if x.size else 0.0
        out[c] = gain * o[c] + offset
    return out


def psnr_from_squared_error(se: float, n: int, data_range: float = 1.0) -> float:
    """PSNR (dB) from a (pooled) sum of squared errors over n values."""
    if n == 0:
        return math.nan
    mse = se / n
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim_map(output: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """(H, W) SSIM map (skimage, 7-px uniform window, averaged over channels)."""
    o = np.nan_to_num(np.asarray(output, np.float64))
    t = np.nan_to_num(np.asarray(target, np.float64))  # NaN on invalid pixels must not spread
    win = min(7, *[s - (1 - s % 2) for s in t.shape[-2:]])
    _, full = structural_similarity(o, t, data_range=data_range, channel_axis=0, full=True, win_size=win)
    return full.mean(axis=0) if full.ndim == 3 else full


def ssim(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Mean SSIM over the masked pixels (the map is computed on the whole image, then averaged
    on the mask); NaN when the mask is empty."""
    m = as_mask(mask, np.shape(target))
    if not m.any():
        return math.nan
    return float(ssim_map(output, target, data_range)[m].mean())


# --------------------------------------------------------------------------- power spectra


def _hann2d(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w))


def _power2d(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Hann-windowed 2-D power spectrum, summed over channels (colour detail counts), invalid
    pixels filled with the valid mean; normalised by the window energy."""
    a = np.asarray(image, np.float64)
    a = a[None] if a.ndim == 2 else a
    ok = as_mask(valid, a.shape)
    win = _hann2d(*a.shape[-2:])
    total = np.zeros(a.shape[-2:])
    for plane in a:
        mean = plane[ok].mean() if ok.any() else 0.0
        x = (np.where(ok, plane, mean) - mean) * win
        total += np.abs(np.fft.fft2(x)) ** 2
    return total / np.sum(win**2)


def _radius(h: int, w: int) -> np.ndarray:
    return np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])


def radial_power_spectrum(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power (Hann window, summed over channels) against spatial frequency in
    cycles/px, in rings of width 1/min(H, W) from 0 to 0.5 (Nyquist). Returns (k, power)."""
    p = _power2d(image, valid)
    h, w = p.shape
    k = _radius(h, w)
    dk = 1.0 / min(h, w)
    edges = np.arange(0.0, 0.5 + dk / 2, dk)
    idx = np.digitize(k.ravel(), edges) - 1
    keep = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[keep], weights=p.ravel()[keep], minlength=len(edges) - 1)
    counts = np.bincount(idx[keep], minlength=len(edges) - 1)
    return 0.5 * (edges[1:] + edges[:-1]), sums / np.maximum(counts, 1)


def source_tiles(region: np.ndarray, valid: np.ndarray | None = None, tile: int = 32, min_cover: float = 0.1):
    """Top-left corners (y, x) of ``tile``-px squares on a half-tile stride that hold at least
    ``min_cover`` source pixels and are ≥ 95 % valid; the whole image's tiles when none does."""
    region = np.asarray(region, dtype=bool)
    h, w = region.shape
    tile = min(tile, h, w)
    ok = as_mask(valid, region.shape)
    ys = sorted({*range(0, h - tile + 1, max(1, tile // 2)), h - tile})
    xs = sorted({*range(0, w - tile + 1, max(1, tile // 2)), w - tile})
    good, fallback = [], []
    for y in ys:
        for x in xs:
            if ok[y : y + tile, x : x + tile].mean() < 0.95:
                continue
            fallback.append((y, x))
            if region[y : y + tile, x : x + tile].mean() >= min_cover:
                good.append((y, x))
    return (good or fallback), tile


def band_power(
    images: Sequence[np.ndarray],
    region: np.ndarray | None,
    valid: np.ndarray | None = None,
    tile: int = 32,
    band: tuple[float, float] = (0.125, 0.5),
) -> list[float]:
    """For each image (same shape), the windowed power summed over the tiles over ``region`` (see
    `source_tiles`) and over frequencies in ``band`` (cycles/px): the numerator and denominator of
    `high_frequency_power_ratio`, to pool over many images."""
    shape = np.shape(images[0])[-2:]
    ok = as_mask(valid, shape)
    corners, t = source_tiles(np.ones(shape, bool) if region is None else region, ok, tile)
    k = _radius(t, t)
    sel = (k >= band[0]) & (k <= band[1])
    out = []
    for img in images:
        a = np.asarray(img, np.float64)
        tiles = (_power2d(a[..., y : y + t, x : x + t], ok[y : y + t, x : x + t]) for y, x in corners)
        out.append(float(sum(p[sel].sum() for p in tiles)))
    return out


def high_frequency_power_ratio(
    output: np.ndarray,
    target: np.ndarray,
    region: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    tile: int = 32,
    band: tuple[float, float] = (0.125, 0.5),
) -> float:
    """Power of output / power of target in the high band, azimuthally over k in ``band`` cycles per
    output px (default: above the survey's Nyquist at x4, i.e. all detail the survey could not
    record), summed over Hann-windowed tiles over the source ``region``. 1 = as much fine
    structure as the target; < 1 smooth; > 1 sharper or noisier than the target."""
    po, pt = band_power([output, target], region, valid, tile, band)
    return po / pt if pt > 0 else math.nan


# --------------------------------------------------------------------------- artefacts


def checkerboard_sums(image: np.ndarray, scale: int = 4, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(peak, base) for one image: the Hann-windowed power at every frequency (i/scale, j/scale)
    cycles/px but 0 — where a xscale upsampler's period-``scale`` (or period-2, at 0.5) patterns
    put their power — summed over each 3x3-bin lobe; and the level expected there without a
    periodic pattern, the median of an annulus 3..6 bins around each peak / ln 2 (the mean, for
    noise-like power) x 9 bins. Sums over the peaks, to pool over images."""
    p = _power2d(image, valid)
    h, w = p.shape
    yy, xx = np.mgrid[-6:7, -6:7]
    cheb = np.maximum(np.abs(yy), np.abs(xx))
    lobe, ring = cheb <= 1, (cheb >= 3) & (cheb <= 6)
    peak = base = 0.0
    for i in range(scale):
        for j in range(scale):
            if i == 0 and j == 0:
                continue
            cy, cx = round(i * h / scale), round(j * w / scale)
            patch = p[np.ix_((cy + np.arange(-6, 7)) % h, (cx + np.arange(-6, 7)) % w)]
            peak += float(patch[lobe].sum())
            base += float(np.median(patch[ring])) / math.log(2.0) * int(lobe.sum())
    return peak, base


def checkerboard_from_sums(
    out_sums: tuple[float, float], tgt_sums: tuple[float, float], tolerance: float = CHECKERBOARD_TOLERANCE
) -> dict[str, float | bool]:
    """`checkerboard_excess` from (possibly pooled) `checkerboard_sums` of output and target."""
    (po, bo), (pt, bt) = out_sums, tgt_sums
    level = max(bo, bt)  # a pattern shows when it stands out of the noisier of the two spectra
    excess = ((po - bo) - (pt - bt)) / level if level > 0 else 0.0
    return {
        "excess": excess,
        "output_peak_ratio": po / bo if bo > 0 else math.inf,
        "target_peak_ratio": pt / bt if bt > 0 else math.inf,
        "flagged": bool(excess > tolerance),
    }


def checkerboard_excess(
    output: np.ndarray,
    target: np.ndarray,
    scale: int = 4,
    valid: np.ndarray | None = None,
    tolerance: float = CHECKERBOARD_TOLERANCE,
) -> dict[str, float | bool]:
    """Periodic (checkerboard) power of a xscale upsampler in the output beyond the target's: at
    the frequencies (i/scale, j/scale) cycles/px (multiples of 2·Nyquist/scale; a 2-px pattern is
    at 0.5), the output's power above its local level minus the target's power above its own, in
    units of the higher of the two local levels (`checkerboard_sums`). ``excess`` 0 = no more
    periodic power than the target; ``flagged`` above ``tolerance`` (periodic power as high as the
    local spectrum level, summed over the peaks; bicubic x4 reaches ~0.5 on smooth bright galaxies,
    a ±0.003 stride-2 pattern 1.2-2.9). Also each image's peak / local-level ratio."""
    return checkerboard_from_sums(
        checkerboard_sums(output, scale, valid), checkerboard_sums(target, scale, valid), tolerance
    )


# --------------------------------------------------------------------------- morphology


@functools.cache
def _lite_morphology() -> type:
    """statmorph.SourceMorphology evaluating only our five statistics (and what they need): no
    Sérsic fit, no MID, ~10x faster. Imported lazily (statmorph takes ~1.5 s to import)."""
    import statmorph

    class Lite(statmorph.SourceMorphology):
        def _calculate_morphology(self) -> None:
            # statmorph searches the Petrosian ellipse out to the stamp's diagonal x the elongation,
            # with exact overlaps: for a 28:1 streak on a 256-px field that is ellipses of ~4800 px
            # and half an hour for one source. No galaxy is that thin; the source is left out.
            if self.elongation_asymmetry > MAX_ELONGATION:
                raise ValueError(f"elongation {self.elongation_asymmetry:.0f} > {MAX_ELONGATION}: not a galaxy")
            for name in MORPHOLOGY_STATS:
                _ = self[name]

    return Lite


def morphology(
    image: np.ndarray, segmap: np.ndarray, valid: np.ndarray | None = None, sigma: float | None = None
) -> list[dict[str, float]]:
    """statmorph's non-parametric morphology (Gini, M20, concentration, asymmetry, smoothness) of
    each labelled source of ``segmap`` (the *target's* galaxies: apply the same map to output and
    target) on the luminance of ``image``, background removed (sep), weight map a constant
    ``sigma`` (`pixel_noise` when not given). One dict per label with ``label`` and statmorph's
    ``flag`` (0 good, 1 suspect, 2 bad, 4 failed); statistics NaN where it failed."""
    from photutils.segmentation import SegmentationImage

    ok = as_mask(valid, np.shape(image))
    sub = background_subtracted(image, ok)
    s = max(float(sigma) if sigma is not None else pixel_noise(image, ok), NOISE_FLOOR)
    seg = SegmentationImage(np.asarray(segmap, np.int32)) if np.any(segmap) else None
    out: list[dict[str, float]] = []
    for lab in [] if seg is None else seg.labels:
        row: dict[str, float] = {"label": float(lab), "flag": 4.0, **{n: math.nan for n in MORPHOLOGY_STATS}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m = _lite_morphology()(sub, seg, int(lab), mask=~ok, weightmap=np.full_like(sub, s))
                row["flag"] = float(m.flag)
                if m.flag < 4:
                    row.update({n: float(m[n]) for n in MORPHOLOGY_STATS})
            except Exception:  # statmorph gives up on this source (degenerate stamp)
                pass
        out.append(row)
    return out


def compare_morphology(
    out_rows: Sequence[Mapping[str, float]],
    tgt_rows: Sequence[Mapping[str, float]],
    alpha: float = 0.05,
    max_flag: int = 2,
) -> dict[str, object]:
    """Two-sample Kolmogorov-Smirnov test per statistic (output galaxies vs target galaxies,
    scipy.stats.ks_2samp, two-sided), with a Bonferroni correction over the statistics: the
    distributions are ``close`` when every p ≥ alpha / n_statistics. Rows are paired (same
    segmentation) and kept only where both fits are finite with flag ≤ ``max_flag``. Also the median
    paired difference per statistic. Few galaxies make the test weak: see ``n``."""
    pairs = [
        (o, t)
        for o, t in zip(out_rows, tgt_rows, strict=True)
        if o.get("flag", 0) <= max_flag
        and t.get("flag", 0) <= max_flag
        and all(np.isfinite(o.get(s, math.nan)) and np.isfinite(t.get(s, math.nan)) for s in MORPHOLOGY_STATS)
    ]
    result: dict[str, object] = {"test": "two-sample KS per statistic, Bonferroni over 5", "n": len(pairs)}
    per: dict[str, dict[str, float]] = {}
    for name in MORPHOLOGY_STATS:
        o = np.array([p[0][name] for p in pairs])
        t = np.array([p[1][name] for p in pairs])
        if len(pairs) >= 2:
            r = stats.ks_2samp(o, t)
            per[name] = {
                "ks": float(r.statistic),
                "p": float(r.pvalue),
                "median_output": float(np.median(o)),
                "median_target": float(np.median(t)),
                "median_paired_difference": float(np.median(o - t)),
            }
        else:
            per[name] = {"ks": math.nan, "p": math.nan}
    result["statistics"] = per
    ps = [v["p"] for v in per.values()]
    threshold = alpha / len(MORPHOLOGY_STATS)
    result["p_threshold"] = threshold
    result["min_p"] = float(min(ps)) if len(pairs) >= 2 else math.nan
    result["close"] = bool(len(pairs) >= 2 and min(ps) >= threshold)
    return result


# --------------------------------------------------------------------------- consistency


def reduced_chi2(
    reobserved: np.ndarray, observed: np.ndarray, sigma: float | np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Mean of ((reobserved - observed) / sigma)² over the masked pixels and all channels: ≈ 1 when
    the output, observed again, agrees with the survey within its noise; ≫ 1 contradicts it,
    ≪ 1 fits the noise. ``sigma`` per channel (3,), a scalar, or an array broadcastable to the
    image. The reobservation itself (linear flux, PSF, resampling) is the model's side."""
    r, o = np.asarray(reobserved, np.float64), np.asarray(observed, np.float64)
    s = np.asarray(sigma, np.float64)
    if r.ndim == 3 and s.ndim == 1:
        s = s[:, None, None]
    z = (r - o) / s
    m = as_mask(mask, o.shape)
    z = z[:, m] if z.ndim == 3 else z[m]
    z = z[np.isfinite(z)]
    return float(np.mean(z * z)) if z.size else math.nan


# --------------------------------------------------------------------------- stars


def match_sources(xy_a: np.ndarray, xy_b: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matches (i in a, j in b) within ``radius`` px, closest pairs first. (n, 2) int."""
    if len(xy_a) == 0 or len(xy_b) == 0:
        return np.zeros((0, 2), dtype=int)
    pairs = cKDTree(xy_a).query_ball_tree(cKDTree(xy_b), radius)
    cand = [
        (float(np.hypot(*(xy_a[i] - xy_b[j]))), i, j) for i, js in enumerate(pairs) for j in js
    ]  # few candidates per source at 1 px
    used_a, used_b, out = set(), set(), []
    for _, i, j in sorted(cand):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j))
    return np.array(out, dtype=int).reshape(-1, 2)


def star_counts(
    output: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray | None = None,
    match_px: float = 1.0,
    nsigma: float = 5.0,
    max_r50_px: float | None = None,
) -> dict[str, int]:
    """Counts behind `star_precision_recall` (to pool over images): n_output, n_target, and the
    matched ones on each side."""
    ok = as_mask(valid, np.shape(target))
    tgt = detect(target, ok, nsigma=nsigma)
    out = detect(output, ok, nsigma=nsigma, noise=tgt.noise)  # one absolute threshold for both
    pairs = match_sources(np.c_[out.x, out.y], np.c_[tgt.x, tgt.y], match_px)
    so = np.ones(len(out.x), bool) if max_r50_px is None else out.r50 <= max_r50_px
    st = np.ones(len(tgt.x), bool) if max_r50_px is None else tgt.r50 <= max_r50_px
    mo = np.zeros(len(out.x), bool)
    mt = np.zeros(len(tgt.x), bool)
    mo[pairs[:, 0]] = True
    mt[pairs[:, 1]] = True
    return {
        "n_output": int(so.sum()),
        "n_target": int(st.sum()),
        "matched_output": int((mo & so).sum()),
        "matched_target": int((mt & st).sum()),
    }


def star_precision_recall(
    output: np.ndarray,
    target: np.ndarray,
    match_px: float = 1.0,
    valid: np.ndarray | None = None,
    nsigma: float = 5.0,
    max_r50_px: float | None = None,
) -> dict[str, float]:
    """Sources detected by sep (nsigma x the *target's* pixel noise, in both) in output and
    target, matched one-to-one within ``match_px`` output px. precision = matched output sources /
    output sources (invented stars lower it), recall = matched target sources / target sources
    (lost or displaced stars lower it); 1.0 when the side has none. ``max_r50_px`` restricts the
    counted sources to compact ones (matches are still made against every detection)."""
    c = star_counts(output, target, valid, match_px, nsigma, max_r50_px)
    return precision_recall(c)


def precision_recall(c: Mapping[str, int]) -> dict[str, float]:
    """precision, recall, F1 from `star_counts` (possibly summed over images)."""
    p = c["matched_output"] / c["n_output"] if c["n_output"] else 1.0
    r = c["matched_target"] / c["n_target"] if c["n_target"] else 1.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1, **{k: float(v) for k, v in c.items()}}
