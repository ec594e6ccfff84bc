"""Misalignment between an outreach image and its survey cutout (#6): measure, correct, judge.

The question is where the survey *actually* shows the sky compared with where its WCS says.
Both sides are brought onto the survey grid first: the outreach image (sharper, deeper,
different colours and PSF) is reduced to a luminance plane, smoothed to roughly survey
resolution and reprojected with its own WCS onto the survey WCS. A source at pixel ``p_o`` of
that resampled image is where the survey WCS says the sky is; the same source at ``p_s`` in the
survey is where it is. The measured transform is the similarity ``p_s = A @ p_o + t`` (0-based
survey pixels, FITS orientation, x right, y up).

Methods: "stars" (sep detection on both, a near-identity vote, then a sigma-clipped
least-squares similarity over every cross-matched source; astroalign's triangle matching, slow
when it fails, only as a last resort) and, where stars are few, "xcorr" (phase cross-correlation
of band-passed planes for the shift, tile shifts, then a similarity refined by Gauss-Newton on
their correlation, coarse to fine, checked against a second band-pass). Where the similarity is
poorly constrained or unstable, a shift-only solve may still say "aligned, nothing to correct"
(see _shift_only). The xcorr uncertainty a correction must beat adds a block-scatter estimate
(see _block_scatter) and a systematic rotation/scale floor to the model error: at resolution
gains near 1 and on faint-galaxy fields the model error alone was 2-3x optimistic.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import astroalign
import numpy as np
import sep
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from services.cutouts.geometry import pixel_map, rescaled_wcs

MIN_STARS = 6  # matched sources for a star solution: 4 similarity parameters plus a check
MAX_STAR_RMS_PX = 0.8  # post-fit residual beyond which a star solution is not trusted
MAX_XCORR_RMS_PX = 0.8  # tile-shift residual beyond which a tile solution is not trusted
MIN_XCORR_NCC = 0.3  # correlation of the band-passed planes after refinement
MAX_XCORR_UNC_PX = 0.3  # 1-sigma position error at the worst grid corner
XCORR_FLOOR_PX = 0.05  # systematic 1-sigma floor of a cross-correlation shift (px) ...
XCORR_FLOOR_ROT = 2.5e-4  # ... and of its rotation (rad) and log scale
# What a cross-correlation rotation and scale are off by on truly aligned pairs (clean evaluation
# pairs and real screen-size pairs: 1-2e-3 on soft, differently stretched structure): what a
# correction must beat far out on a large grid; not part of the solved/unsolved test.
XCORR_SYSTEMATIC_ROT = 1e-3
XCORR_MAX_GAP_PX = 0.3  # largest disagreement between band-passes before a solution is called unstable
MAX_REFINE_POINTS = 25000  # pixels the Gauss-Newton refinement samples (speed on large grids)
STAR_FLOOR_PX = 0.02  # systematic 1-sigma floor of a star solution (centroids of different PSFs) ...
STAR_FLOOR_ROT = 3e-4  # ... and of its rotation and log scale (a clean 800 px grid: 0.47 px at a corner)
ANTI_ALIAS_SIGMA = 0.45
ANTI_ALIAS_MIN_RATIO = 1.2
MIN_VALID_FRACTION = 0.2  # of the survey grid with data (and covered by the outreach image)


@dataclass(frozen=True)
class Alignment:
    """Residual misalignment of a survey cutout against an outreach image.

    dx, dy: where the survey shows the grid centre's sky minus where its WCS puts it (survey px);
    rotation_deg: counter-clockwise on the survey grid (FITS orientation); scale: survey/WCS size
    ratio; matrix, translation: the full map ``p_s = matrix @ p_o + translation``;
    uncertainty_px: 1-sigma of the position error at the grid centre; quality: 0..1 (fraction of
    stars matched, or the xcorr NCC); max_displacement_px: the largest shift of the map over the
    grid corners (what a pixel-level comparison actually sees); max_uncertainty_px: 1-sigma of the
    position error at the worst grid corner (what a correction must beat to mean anything)."""

    solved: bool
    method: str  # "stars", "xcorr" or "none"
    dx: float
    dy: float
    rotation_deg: float
    scale: float
    n_matched: int
    uncertainty_px: float
    quality: float
    max_displacement_px: float
    matrix: tuple[tuple[float, float], tuple[float, float]]
    translation: tuple[float, float]
    detail: str = ""
    max_uncertainty_px: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unsolved(method: str, detail: str, n: int = 0) -> Alignment:
    nan = math.nan
    return Alignment(False, method, nan, nan, nan, nan, n, nan, 0.0, nan, ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0), detail)


# -- common grid ------------------------------------------------------------------------------


def _pixel_scale_deg(wcs: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))))


# Of the image: a channel burnt out over more than this is left out of the alignment plane. At 1 %
# a real pair whose 2.5 % blue plateau still carried its structure was lost; the evaluation set's
# burnt-out channels cover 4.5 % (a nebula's red) and 17 % (the ring's blue).
PLATEAU_MAX_FRACTION = 0.03


def _unsaturated_channels(raw: np.ndarray) -> list[int]:
    """The outreach channels to build the alignment plane from: those without large saturated
    plateaus. An outreach stretch often burns out one channel over a nebula (a ring nebula's
    interior in blue) while the others still show its knots; averaging the burnt channel in
    hides them, and masking its plateau removes the very structure that pins the alignment.
    Saturated star cores (a few px, removed by the opening) do not count. At least the least
    saturated channel is kept."""
    # Plateaus are found on a 4x subsampled mask: a plateau that matters is far wider than 4 px.
    sat = raw[::4, ::4] >= 254
    plateau = np.array([ndimage.binary_opening(sat[..., c], iterations=2).mean() for c in range(raw.shape[2])])
    keep = [c for c in range(raw.shape[2]) if plateau[c] <= PLATEAU_MAX_FRACTION]
    return keep or [int(np.argmin(plateau))]


def _planes(
    outreach: np.ndarray, o_wcs: WCS, survey: np.ndarray, s_wcs: WCS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(outreach luminance on the survey grid, survey luminance, valid mask, saturated mask), float64.

    The outreach image (typically 2-10x finer than the survey) is block-averaged by an integer
    factor first, then anti-aliased with the Gaussian that makes up the rest of the resolution
    difference, then resampled bilinearly (one map_coordinates on the survey grid, the pixel map
    from a coarse grid of exact WCS transforms): cheap for a screen-size outreach image.
    Saturated outreach pixels (any channel at 254+) are flagged: their plateaus have edges that
    are not on the sky, which cross-correlation must not use."""
    h, w = survey.shape[1:]
    o_wcs = o_wcs.celestial
    ratio = _pixel_scale_deg(s_wcs) / _pixel_scale_deg(o_wcs)
    k = max(1, int(ratio // 2)) if o_wcs.sip is None else 1
    raw = np.asarray(outreach)
    keep = _unsaturated_channels(raw)
    channels = raw if len(keep) == raw.shape[2] else raw[..., keep]  # no copy in the usual case
    sat = (channels >= 254).any(axis=2).astype(np.float32)
    lum_o = channels.mean(axis=2, dtype=np.float32)
    if k > 1:
        hh, ww = (lum_o.shape[0] // k) * k, (lum_o.shape[1] // k) * k
        lum_o = lum_o[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
        sat = sat[:hh, :ww].reshape(hh // k, k, ww // k, k).max(axis=(1, 3))
        o_wcs = rescaled_wcs(o_wcs, k)
    # Anti-alias: the Gaussian of 0.45 survey px, less what block averaging already did.
    sigma2 = (ANTI_ALIAS_SIGMA * ratio / k) ** 2 - (1.0 / 12.0 if k > 1 else 0.0)
    if ratio > ANTI_ALIAS_MIN_RATIO and sigma2 > 0.05:
        lum_o = ndimage.gaussian_filter(lum_o, math.sqrt(sigma2))
    fx, fy = pixel_map(o_wcs, s_wcs.celestial, (h, w))
    coords = np.array([fy, fx])
    o_on_s = ndimage.map_coordinates(lum_o, coords, order=1, mode="constant", cval=np.nan).astype(np.float64)
    sat_on_s = ndimage.map_coordinates(sat, coords, order=1, mode="constant", cval=0.0) > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lum_s = np.nanmean(np.asarray(survey, dtype=np.float64), axis=0)
    valid = np.isfinite(lum_s) & np.isfinite(o_on_s)
    return np.where(valid, o_on_s, 0.0), np.where(valid, lum_s, 0.0), valid, sat_on_s


# -- stars ------------------------------------------------------------------------------------


def _detect(image: np.ndarray, valid: np.ndarray, max_sources: int = 80) -> np.ndarray:
    """(N, 3) x, y, flux of compact sources, brightest first, windowed centroids."""
    data = np.ascontiguousarray(image, dtype=np.float64)
    mask = ~ndimage.binary_erosion(valid, iterations=4)  # sources cut by the data edge centroid badly
    bkg = sep.Background(data, mask=mask, bw=32, bh=32)
    sub = data - bkg.back()
    rms = max(float(bkg.globalrms), 1e-6)
    try:
        objs = sep.extract(sub, 5.0, err=rms, mask=mask, minarea=4, deblend_cont=0.01)
    except Exception:  # sep's pixel-buffer limits on dense fields: fewer, brighter sources
        objs = sep.extract(sub, 15.0, err=rms, mask=mask, minarea=6, deblend_cont=0.01)
    if len(objs) == 0:
        return np.empty((0, 3))
    compact = (objs["flag"] < 8) & (objs["b"] / np.maximum(objs["a"], 1e-6) > 0.5) & (objs["a"] < 6)
    objs = objs[compact]
    objs = objs[np.argsort(-objs["flux"])][:max_sources]
    if len(objs) == 0:
        return np.empty((0, 3))
    # Windowed centroids: far less sensitive than isophotal ones to stretch, PSF wings and depth.
    sig = np.clip(2.0 / 2.35 * np.sqrt(objs["a"] * objs["b"]) * 1.2, 0.8, 4.0)
    x, y, flag = sep.winpos(sub, objs["x"], objs["y"], sig, mask=mask)
    ok = (flag == 0) & (np.hypot(x - objs["x"], y - objs["y"]) < 2.0)
    return np.column_stack([x[ok], y[ok], objs["flux"][ok]])


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares dst = A @ src + t with A = [[a, -b], [b, a]]: (A, t, covariance of (a, b, tx, ty))."""
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    target = dst.reshape(-1)
    params, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ params
    dof = max(2 * n - 4, 1)
    cov = np.linalg.pinv(design.T @ design) * float(resid @ resid) / dof
    a, b, tx, ty = params
    return np.array([[a, -b], [b, a]]), np.array([tx, ty]), cov


def _vote(
    src: np.ndarray, dst: np.ndarray, centre: np.ndarray, max_shift: float = 64.0, max_rot_deg: float = 4.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Catalogue-free cross-match for a near-identity map: every (outreach, survey) pair votes for
    an offset, for each trial rotation about the centre; the densest 3x3 px cell wins. Robust to
    the two sides detecting different stars (depth, colours), which breaks triangle matching."""
    best = (0, 0.0, np.zeros(2))
    edges = np.arange(-max_shift, max_shift + 1e-9, 1.0)
    for rot in np.arange(-max_rot_deg, max_rot_deg + 1e-9, 0.5):
        r = math.radians(rot)
        rmat = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        moved = (src - centre) @ rmat.T + centre
        diff = (dst[None, :, :] - moved[:, None, :]).reshape(-1, 2)
        hist, _, _ = np.histogram2d(diff[:, 0], diff[:, 1], bins=(edges, edges))
        votes = ndimage.uniform_filter(hist, 3, mode="constant") * 9
        k = int(np.argmax(votes))
        if votes.flat[k] > best[0] + 0.5:
            i, j = np.unravel_index(k, votes.shape)
            best = (round(float(votes.flat[k])), rot, np.array([edges[i] + 0.5, edges[j] + 0.5]))
    votes, rot, offset = best
    r = math.radians(rot)
    rmat = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return rmat, offset + centre - rmat @ centre, votes


def _solve_stars(
    o_img: np.ndarray,
    s_img: np.ndarray,
    valid: np.ndarray,
    centre: np.ndarray,
    triangles: bool = True,
    sources: tuple[np.ndarray, np.ndarray] | None = None,
) -> Alignment:
    """Stars: a near-identity vote, then (triangles) astroalign's triangle matching, which is
    slow (about 1 s) when it fails, so measure_alignment tries it last."""
    src, dst = sources if sources is not None else (_detect(o_img, valid), _detect(s_img, valid))
    if min(len(src), len(dst)) < MIN_STARS:
        return _unsolved("stars", f"too few sources ({len(src)} outreach, {len(dst)} survey)")
    matrix, shift, votes = _vote(src[:, :2], dst[:, :2], centre)
    if votes < MIN_STARS and not triangles:
        return _unsolved("stars", f"no match ({votes} votes)", 0)
    if votes < MIN_STARS:
        try:
            transform, _ = astroalign.find_transform(src[:, :2], dst[:, :2], max_control_points=40, min_area=4)
        except Exception as exc:  # astroalign.MaxIterError and friends: no consistent triangles
            return _unsolved("stars", f"no match ({votes} votes, astroalign: {type(exc).__name__})", 0)
        matrix, shift = transform.params[:2, :2], transform.params[:2, 2]
    tree = cKDTree(dst[:, :2])
    radius = 2.0
    for _ in range(4):
        # Re-match every detection through the current map and refit: astroalign only uses the
        # brightest control points; clipping at 3 sigma drops blends and depth-dependent centroids.
        pred = src[:, :2] @ matrix.T + shift
        dist, idx = tree.query(pred, distance_upper_bound=radius)
        ok = np.isfinite(dist)
        if ok.sum() < MIN_STARS:
            return _unsolved("stars", f"{int(ok.sum())} sources matched", int(ok.sum()))
        pairs_s, pairs_d = src[ok, :2], dst[idx[ok], :2]
        matrix, shift, cov = _fit_similarity(pairs_s, pairs_d)
        res = np.hypot(*(pairs_s @ matrix.T + shift - pairs_d).T)
        rms = float(np.sqrt(np.mean(res**2)))
        radius = max(3.0 * rms, 0.5)
    n = int(ok.sum())
    # 1-sigma position error at the grid centre and at the worst corner from the parameter covariance.
    h, w = o_img.shape
    sig = []
    for x, y in (centre, (0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        jac = np.array([[x, -y, 1, 0], [y, x, 0, 1]], dtype=float)
        floor = STAR_FLOOR_PX**2 + ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) * STAR_FLOOR_ROT**2
        sig.append(math.sqrt(max(float(np.trace(jac @ cov @ jac.T)), 0.0) / 2 + floor))
    quality = n / max(min(len(src), len(dst)), 1)
    solved = n >= MIN_STARS and rms <= MAX_STAR_RMS_PX
    return _alignment(
        solved, "stars", matrix, shift, centre, n, sig[0], max(sig), quality, o_img.shape, f"rms {rms:.3f} px"
    )


# -- cross-correlation ------------------------------------------------------------------------


def _bandpass(image: np.ndarray, valid: np.ndarray, fine_sigma: float = 1.2, coarse_sigma: float = 8.0) -> np.ndarray:
    """asinh-compressed, band-passed (difference of Gaussians) plane, unit noise: outreach and
    survey differ in stretch, depth and how saturated the big structures are (a filled nebula on
    one side, a ring on the other); their edges and knots, at the survey's resolution, agree."""
    med = float(np.median(image[valid]))
    mad = max(float(np.median(np.abs(image[valid] - med))) * 1.4826, 1e-6)
    x = np.where(valid, np.arcsinh((image - med) / (3 * mad)), 0.0)
    weight = valid.astype(float)
    fine = ndimage.gaussian_filter(x, fine_sigma) / np.maximum(ndimage.gaussian_filter(weight, fine_sigma), 1e-3)
    coarse = ndimage.gaussian_filter(x, coarse_sigma) / np.maximum(ndimage.gaussian_filter(weight, coarse_sigma), 1e-3)
    band = np.where(valid, fine - coarse, 0.0)
    noise = max(float(np.median(np.abs(band[valid]))) * 1.4826, 1e-9)
    return band / noise


def _warp(image: np.ndarray, matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """out(p) = image(T^-1 p), T(p) = matrix @ p + shift, in (x, y); ndimage works in (row, col)."""
    inv = np.linalg.inv(matrix)
    offset = -(inv @ shift)[::-1]
    return ndimage.affine_transform(image, inv[::-1, ::-1], offset=offset, order=1, mode="constant", cval=0.0)


TILE, STRIDE = 48, 24


def _xcorr_shifts(a: np.ndarray, b: np.ndarray, window: bool = True) -> np.ndarray:
    """(N, 2) shifts (dx, dy) moving each plane b[i] onto a[i] (stacks of equal-shape planes):
    FFT cross-correlation (Hann-windowed for tiles), integer peak plus a parabolic sub-pixel step.
    About 0.1 px: only a starting point for the refinement, which uses every pixel. numpy's FFT
    only: no BLAS, whose threads crawl on a busy machine."""
    n, th, tw = a.shape
    if window:
        win = np.outer(np.hanning(th), np.hanning(tw))
        a, b = a * win, b * win
    corr = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=(th, tw))
    flat = corr.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, (th, tw))
    rows = np.arange(n)

    def sub(c0: np.ndarray, cm: np.ndarray, cp: np.ndarray) -> np.ndarray:
        den = cm - 2 * c0 + cp
        return np.where(den < 0, 0.5 * (cm - cp) / np.where(den < 0, den, -1.0), 0.0)

    c0 = corr[rows, iy, ix]
    fy = sub(c0, corr[rows, (iy - 1) % th, ix], corr[rows, (iy + 1) % th, ix])
    fx = sub(c0, corr[rows, iy, (ix - 1) % tw], corr[rows, iy, (ix + 1) % tw])
    dy = np.where(iy > th // 2, iy - th, iy) + fy
    dx = np.where(ix > tw // 2, ix - tw, ix) + fx
    return np.column_stack([dx, dy])


def _tiles(
    model: np.ndarray, target: np.ndarray, valid: np.ndarray, matrix: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Local shifts of overlapping tiles of the warped outreach plane against the survey give
    point correspondences; a clipped similarity fit over them adds rotation and scale to the
    starting map (matrix, shift), which a single phase correlation cannot see.
    Returns (matrix, shift, tiles used, tiles with structure); n = 0 when it failed."""
    h, w = valid.shape
    ys, xs = np.arange(0, h - TILE + 1, STRIDE), np.arange(0, w - TILE + 1, STRIDE)
    n_all = 0
    for _ in range(2):
        warped = _warp(model, matrix, shift)
        wvalid = _warp(valid.astype(float), matrix, shift) > 0.99
        both = wvalid & valid
        a_list, b_list, centres = [], [], []
        for y0 in ys:
            for x0 in xs:
                sl = (slice(y0, y0 + TILE), slice(x0, x0 + TILE))
                if both[sl].mean() < 0.9:  # the data edge, or much of it saturated
                    continue
                a, b = target[sl], warped[sl]
                if a.std() < 1.5 or b.std() < 1.5:  # noise only: a shift from it would be random
                    continue
                a_list.append(a)
                b_list.append(b)
                centres.append((x0 + (TILE - 1) / 2, y0 + (TILE - 1) / 2))
        n_all = len(a_list)
        if n_all < 4:
            return matrix, shift, 0, n_all
        d = _xcorr_shifts(np.array(a_list), np.array(b_list))
        c = np.array(centres)
        ok = (np.abs(d) <= TILE / 4).all(axis=1)
        src_a = np.linalg.solve(matrix, (c - shift).T).T[ok]  # the outreach-plane point seen at c
        dst_a = (c + d)[ok]
        if len(src_a) < 4:
            return matrix, shift, 0, n_all
        keep = np.ones(len(src_a), dtype=bool)
        for _ in range(3):
            if keep.sum() < 4:
                return matrix, shift, 0, n_all
            m_fit, s_fit, _ = _fit_similarity(src_a[keep], dst_a[keep])
            res = np.hypot(*(src_a @ m_fit.T + s_fit - dst_a).T)
            scale = max(1.4826 * float(np.median(res[keep])), 0.1)
            keep = res <= max(3 * scale, 0.5)
        matrix, shift = m_fit, s_fit
    return matrix, shift, int(keep.sum()), n_all


def _similarity(d: np.ndarray, rot: float, logs: float, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s_ = math.exp(logs)
    a = s_ * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    return a, centre + d - a @ centre


def _refine(
    model: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    centre: np.ndarray,
    matrix: np.ndarray,
    shift: np.ndarray,
    iterations: int = 20,
    shift_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray]:
    """Gauss-Newton (Lucas-Kanade) on the similarity plus a gain and offset between the planes:
    uses every pixel of extended structure, where tiles only see local shifts. Works on the
    pixels where the survey plane has structure (the steeper half of the gradients), sampling
    the model and its gradient there through the current map: no full-image warps.
    Returns (matrix, shift, 4x4 covariance of (dx, dy, rot, log scale), ncc, last step px,
    the block scatter's covariance, see _block_scatter)."""
    d = matrix @ centre + shift - centre
    rot = math.atan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1])
    logs = math.log(math.sqrt(abs(np.linalg.det(matrix))))
    h, w = valid.shape
    inner = ndimage.binary_erosion(valid, iterations=3)
    ty, tx = np.gradient(target)
    grad = np.hypot(tx, ty)
    if inner.sum() < 200:
        return matrix, shift, np.full((4, 4), math.inf), 0.0, math.inf, np.full((4, 4), math.inf)
    sel = inner & (grad >= np.percentile(grad[inner], 50))
    py, px = np.nonzero(sel)
    # A large grid: every k-th selected pixel (evenly spread). Neighbouring residuals of the
    # smoothed planes are correlated over ~8 px, so a sparser sample loses little information
    # and its residuals are correspondingly less redundant (the covariance factor below).
    k = max(1, math.ceil(len(px) / MAX_REFINE_POINTS))
    py, px = py[::k], px[::k]
    pts = np.column_stack([px, py]).astype(float)
    rx, ry = pts[:, 0] - centre[0], pts[:, 1] - centre[1]
    tv_all = target[py, px]
    redundancy = max(8.0 / k, 1.0)
    gmy, gmx = np.gradient(model)
    validf = valid.astype(float)
    size = (w + h) / 2
    step, cov, ncc, scatter = math.inf, np.full((4, 4), math.inf), 0.0, np.full((4, 4), math.inf)
    # Coarse to fine: every 4th sample until the steps are small, then all of them (the
    # statistics, the covariance and the last steps always come from the full sample).
    every = np.arange(len(pts))
    subset = every[::4] if len(pts) >= 8000 else every
    for _ in range(iterations + 5):
        a, t = _similarity(d, rot, logs, centre)
        inv = np.linalg.inv(a)
        full = len(subset) == len(every)
        pts_i, rx_i, ry_i, tv_i = pts[subset], rx[subset], ry[subset], tv_all[subset]
        # Model-plane position of each selected survey pixel (elementwise: no BLAS, see _xcorr_shifts).
        ux, uy = pts_i[:, 0] - t[0], pts_i[:, 1] - t[1]
        q = np.column_stack([inv[0, 0] * ux + inv[0, 1] * uy, inv[1, 0] * ux + inv[1, 1] * uy])
        coords = [q[:, 1], q[:, 0]]
        ok = ndimage.map_coordinates(validf, coords, order=1, mode="constant", cval=0.0) > 0.99
        if ok.sum() < 100:
            break
        c_ok = [q[ok, 1], q[ok, 0]]
        wv = ndimage.map_coordinates(model, c_ok, order=1, mode="constant", cval=0.0)
        mx = ndimage.map_coordinates(gmx, c_ok, order=1, mode="constant", cval=0.0)
        my = ndimage.map_coordinates(gmy, c_ok, order=1, mode="constant", cval=0.0)
        gx, gy = inv[0, 0] * mx + inv[1, 0] * my, inv[0, 1] * mx + inv[1, 1] * my  # chain rule: A^-T grad
        tv, rxo, ryo = tv_i[ok], rx_i[ok], ry_i[ok]
        x0, y0 = wv - wv.mean(), tv - tv.mean()
        sxx, sxy, syy = float(np.sum(x0 * x0)), float(np.sum(x0 * y0)), float(np.sum(y0 * y0))
        gain = sxy / max(sxx, 1e-12)
        ncc = sxy / max(math.sqrt(sxx * syy), 1e-12)
        resid = y0 - gain * x0
        # Moving the model content by delta changes warped(p) by -grad . delta(p).
        jac = -gain * np.column_stack([gx, gy, gy * rxo - gx * ryo, gx * rxo + gy * ryo])
        if shift_only:  # rotation and scale held where they are
            jac = jac[:, :2]
        hess = np.einsum("ni,nj->ij", jac, jac)
        try:
            delta = np.linalg.solve(hess, np.einsum("ni,n->i", jac, resid))
        except np.linalg.LinAlgError:
            break
        if shift_only:
            delta = np.concatenate([delta, [0.0, 0.0]])
            hess = np.pad(hess, (0, 2)) + np.diag([0.0, 0.0, 1e30, 1e30])
        d = d + delta[:2]
        rot += float(delta[2])
        logs += float(delta[3])
        step = float(math.hypot(delta[0], delta[1]) + (abs(delta[2]) + abs(delta[3])) * size)
        if not full:
            if step < 0.05:
                subset = every
            continue
        # Smoothed planes: neighbouring residuals are correlated over ~ the smoothing area.
        cov = np.linalg.inv(hess) * float(np.sum(resid * resid)) / max(len(resid) - 6, 1) * redundancy
        n_par = 2 if shift_only else 4
        scatter = _block_scatter(jac, resid, pts_i[ok], delta[:n_par])
        scatter = np.pad(scatter, (0, 4 - n_par))
        if step < 0.005:
            break
    a, t = _similarity(d, rot, logs, centre)
    return a, t, cov, ncc, step, scatter


SCATTER_BLOCK = 32  # px: interleaved blocks, each class of which covers the whole grid


def _block_scatter(jac: np.ndarray, resid: np.ndarray, pts: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Empirical covariance of the Gauss-Newton solution: the step solved from each of four
    interleaved classes of 32 px blocks alone scatters by sqrt(4) times the error of the step
    from all of them. The model covariance assumes residuals correlated over ~8 px; structure
    the two images show differently (faint galaxies, stretch) correlates them further, which
    this sees and the model does not."""
    cls = (pts[:, 0] // SCATTER_BLOCK % 2 + 2 * (pts[:, 1] // SCATTER_BLOCK % 2)).astype(int)
    steps = []
    for c in range(4):
        sel = cls == c
        if sel.sum() < 50:
            return np.zeros((len(delta), len(delta)))
        j = jac[sel]
        try:
            steps.append(np.linalg.solve(np.einsum("ni,nj->ij", j, j), np.einsum("ni,n->i", j, resid[sel])))
        except np.linalg.LinAlgError:
            return np.zeros((len(delta), len(delta)))
    dev = np.array(steps) - delta
    return dev.T @ dev / (4 * 3)


def _corner_sigma(cov: np.ndarray, shape: tuple[int, int], centre: np.ndarray) -> float:
    """1-sigma position error at the worst grid corner from the (dx, dy, rot, log scale) covariance."""
    h, w = shape
    if not np.isfinite(cov).all():
        return math.inf
    worst = 0.0
    for x, y in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        rx, ry = x - centre[0], y - centre[1]
        jac = np.array([[1.0, 0.0, -ry, rx], [0.0, 1.0, rx, ry]])
        worst = max(worst, float(np.trace(jac @ cov @ jac.T)) / 2)
    return math.sqrt(max(worst, 0.0))


def _max_gap(m1: np.ndarray, t1: np.ndarray, m2: np.ndarray, t2: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest distance between two maps over the grid corners and centre (px)."""
    h, w = shape
    pts = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]], dtype=float)
    return float(np.hypot(*((pts @ m1.T + t1) - (pts @ m2.T + t2)).T).max())


def _solve_xcorr(
    o_img: np.ndarray, s_img: np.ndarray, valid: np.ndarray, saturated: np.ndarray, centre: np.ndarray
) -> Alignment:
    # Saturated outreach plateaus (a burnt-out nebula core) have edges that are not on the sky;
    # saturated star cores (a few px) are kept: they are what the two images have in common.
    plateau = ndimage.binary_opening(saturated, iterations=3)
    use = valid & ~ndimage.binary_dilation(plateau, iterations=3)
    if use.mean() < MIN_VALID_FRACTION:
        return _unsolved("xcorr", f"only {use.mean():.0%} of the grid unsaturated with data on both sides")
    model, target = _bandpass(o_img, use), _bandpass(s_img, use)
    # Coarse shift: cross-correlation of the whole planes, the shift moving the outreach plane
    # onto the survey.
    coarse_shift = _xcorr_shifts(target[None], model[None], window=False)[0]
    matrix, shift, n_tiles, n_all = _tiles(model, target, use, np.eye(2), coarse_shift)
    start = f"{n_tiles}/{n_all} tiles" if n_tiles else "phase correlation"
    matrix, shift, cov, ncc, step, scatter = _refine(model, target, use, centre, matrix, shift)
    shape = use.shape
    # Systematic floor: smoothed, differently stretched planes never agree to better than this.
    cov = cov + np.diag([XCORR_FLOOR_PX**2, XCORR_FLOOR_PX**2, XCORR_FLOOR_ROT**2, XCORR_FLOOR_ROT**2])
    unc_centre = float(math.sqrt(max((cov[0, 0] + cov[1, 1]) / 2, 0.0)))
    unc_corner = _corner_sigma(cov, shape, centre)
    # What a correction must beat: the model error, the block scatter (which sees residuals
    # correlated further than the model assumes: faint galaxies, stretch, resampling at a
    # resolution gain near 1) and the systematic rotation and scale floor.
    sys_cov = cov + scatter + np.diag([0.0, 0.0, XCORR_SYSTEMATIC_ROT**2, XCORR_SYSTEMATIC_ROT**2])
    unc_corner_sys = _corner_sigma(sys_cov, shape, centre)
    problems = []
    if ncc < MIN_XCORR_NCC:
        problems.append("low correlation")
    if step >= 0.05:
        problems.append("not converged")
    if unc_corner > MAX_XCORR_UNC_PX:
        problems.append("poorly constrained")
    second: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the finer band-passed planes
    sim2: tuple[np.ndarray, np.ndarray, float, float] | None = None
    if not problems or ncc >= MIN_XCORR_NCC:
        second = (_bandpass(o_img, use, *SECOND_BAND), _bandpass(s_img, use, *SECOND_BAND), use)
        m2, t2, _, ncc2, step2, _ = _refine(second[0], second[1], use, centre, matrix, shift)
        sim2 = (m2, t2, ncc2, step2)
    if not problems and sim2 is not None:
        # Sanity: the same map must come out of a differently band-passed pair of planes (finer
        # and coarser structure). Edges of soft, differently stretched objects (a ring nebula,
        # a galaxy's disc) move with the stretch; a solution resting on them does not hold.
        gap = _max_gap(matrix, shift, sim2[0], sim2[1], shape) if sim2[3] < 0.05 else math.inf
        combined = math.sqrt(unc_corner**2 + (gap / 2) ** 2)
        tie = None
        if gap > max(XCORR_MAX_GAP_PX, 3 * unc_corner) and (
            gap > XCORR_MAX_COMBINE_GAP_PX or combined > MAX_XCORR_COMBINED_UNC_PX
        ):
            tie = _tie_break(o_img, s_img, use, centre, matrix, shift)
        if tie is not None:
            # Two of three band-passes agree as closely as the stability check asks of two: the
            # first band-pass's map stands, with its own error (as when the first two agree).
            start += f", band-passes {gap:.2f} px apart, a third agrees within {tie:.2f} px"
        elif gap > max(XCORR_MAX_GAP_PX, 3 * unc_corner) and (
            gap > XCORR_MAX_COMBINE_GAP_PX or combined > MAX_XCORR_COMBINED_UNC_PX
        ):
            problems.append(f"unstable: band-passes disagree by {gap:.2f} px")
        elif gap > max(XCORR_MAX_GAP_PX, 3 * unc_corner):
            # A moderate disagreement: the mean of the two maps, half the gap added to its error.
            matrix, shift = (matrix + sim2[0]) / 2, (shift + sim2[1]) / 2
            unc_corner, unc_corner_sys = combined, math.sqrt(unc_corner_sys**2 + (gap / 2) ** 2)
            start += f", band-passes {gap:.2f} px apart combined"
    detail = (
        f"from {start}: ncc {ncc:.3f}, corner sigma {unc_corner:.2f} px ({unc_corner_sys:.2f} with block scatter "
        f"and floor), last step {step:.3f} px" + (f" ({', '.join(problems)})" if problems else "")
    )
    if problems and second is not None and sim2 is not None:
        fallback = _shift_only(model, target, second, centre, coarse_shift, (matrix, shift, ncc, step), sim2, n_tiles)
        if fallback is not None:
            return Alignment(**{**fallback.to_dict(), "detail": f"{fallback.detail}; similarity {detail}"})
    return _alignment(
        not problems, "xcorr", matrix, shift, centre, n_tiles, unc_centre, unc_corner_sys, max(ncc, 0.0), shape, detail
    )


# Band-passes this far apart are averaged, not declared unstable, when the corner error, with half
# the gap added, stays within MAX_XCORR_COMBINED_UNC_PX. Above 0.8 px the mean is not to be
# trusted: on the evaluation set's ring nebula every band-pass is pulled the same way (0.82-0.90 px
# apart, the mean 1.4-1.85 px off at the corners), and the XDF's one such case was 0.32 px off at
# the centre; at 0.54-0.60 px the means were right.
XCORR_MAX_COMBINE_GAP_PX = 0.8
MAX_XCORR_COMBINED_UNC_PX = 0.5  # see XCORR_MAX_COMBINE_GAP_PX
SECOND_BAND = (0.8, 4.0)  # (fine, coarse) sigmas of the stability check's band-pass
THIRD_BAND = (1.0, 6.0)  # the tie-break's band-pass, between the first (1.2, 8.0) and the second
SHIFT_ONLY_MAX_PX = 0.5  # a shift-only solution is only trusted to say "no correction needed"
SHIFT_ONLY_MIN_NCC_RATIO = 0.98  # of the shift-only to the similarity correlation, per band-pass


def _tie_break(
    o_img: np.ndarray, s_img: np.ndarray, use: np.ndarray, centre: np.ndarray, matrix: np.ndarray, shift: np.ndarray
) -> float | None:
    """Where the two band-passes disagree, a third, intermediate one decides: the largest gap
    between its map and the first band-pass's when that is within XCORR_MAX_GAP_PX (two of three
    agree; the finer band-pass is the odd one out, typically resting on stars the two images do
    not share), else None."""
    model, target = _bandpass(o_img, use, *THIRD_BAND), _bandpass(s_img, use, *THIRD_BAND)
    m3, t3, cov3, ncc3, step3, _ = _refine(model, target, use, centre, matrix, shift)
    if step3 >= 0.05 or ncc3 < MIN_XCORR_NCC or not np.isfinite(cov3).all():
        return None
    gap13 = _max_gap(matrix, shift, m3, t3, use.shape)
    if gap13 > XCORR_MAX_GAP_PX:
        return None
    return gap13


def _shift_only(
    model: np.ndarray,
    target: np.ndarray,
    second: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    coarse_shift: np.ndarray,
    sim1: tuple[np.ndarray, np.ndarray, float, float],
    sim2: tuple[np.ndarray, np.ndarray, float, float],
    n_tiles: int,
) -> Alignment | None:
    """Where the similarity is poorly constrained, unstable or did not converge, a pure shift
    (rotation 0, scale 1) may still be pinned down. It is only trusted to say "aligned, nothing
    to correct", when (1) the similarity fits the planes hardly better than the shift in either
    band-pass (a real rotation or scale error of the size that matters costs far more
    correlation), (2) the similarity's own rotation and scale, in one band-pass at least, move
    no corner by more than 3 sigma, (3) the shift-only solutions of both band-passes are within
    3 sigma of zero. Sigma honestly adds the statistical error, half the band-passes'
    disagreement and a third of the similarity's twist, and must stay within MAX_XCORR_UNC_PX:
    a truly aligned pair whose soft structure cannot pin rotation and scale passes; the verdict
    then sees a displacement within noise."""
    use = second[2]
    h, w = use.shape
    shifts, sigmas, nccs, scatters = [], [], [], []
    for (m_plane, t_plane), sim in (((model, target), sim1), ((second[0], second[1]), sim2)):
        _, t, cov, ncc, step, scatter = _refine(m_plane, t_plane, use, centre, np.eye(2), coarse_shift, shift_only=True)
        if step >= 0.05 or not np.isfinite(cov[:2, :2]).all() or ncc < SHIFT_ONLY_MIN_NCC_RATIO * sim[2]:
            return None
        shifts.append(t)
        sigmas.append(math.sqrt(max((cov[0, 0] + cov[1, 1]) / 2, 0.0) + XCORR_FLOOR_PX**2))
        nccs.append(ncc)
        scatters.append(math.sqrt(max((scatter[0, 0] + scatter[1, 1]) / 2, 0.0)))
    converged = [sim for sim in (sim1, sim2) if sim[3] < 0.05]
    if nccs[0] < MIN_XCORR_NCC or not converged:
        return None
    # Rotation and scale only, per band-pass: on soft structure their fits scatter by a few 0.1 %;
    # the smaller is taken (a real rotation or scale shows in both, and in the correlation ratio).
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=float) - centre
    twist = min(float(np.hypot(*(corners @ sim[0].T - corners).T).max()) for sim in converged)
    gap = float(math.hypot(*(shifts[0] - shifts[1])))
    sigma = math.sqrt(sigmas[0] ** 2 + (gap / 2) ** 2)
    unc_corner = math.sqrt(sigma**2 + (twist / 3) ** 2)
    if unc_corner > MAX_XCORR_UNC_PX or twist > 3 * unc_corner:
        return None
    if max(math.hypot(*t) for t in shifts) > min(SHIFT_ONLY_MAX_PX, 3 * unc_corner):
        return None
    return _alignment(
        True,
        "xcorr",
        np.eye(2),
        shifts[0],
        centre,
        n_tiles,
        sigma,
        math.sqrt(unc_corner**2 + scatters[0] ** 2),
        max(nccs[0], 0.0),
        use.shape,
        f"shift only: ncc {nccs[0]:.3f}/{nccs[1]:.3f}, band-passes {gap:.2f} px apart, "
        f"similarity twist {twist:.2f} px, corner sigma {unc_corner:.2f} px",
    )


# -- result -----------------------------------------------------------------------------------


def _alignment(
    solved: bool,
    method: str,
    matrix: np.ndarray,
    shift: np.ndarray,
    centre: np.ndarray,
    n: int,
    unc: float,
    unc_corner: float,
    quality: float,
    shape: tuple[int, ...],
    detail: str,
) -> Alignment:
    h, w = shape[:2]
    moved = centre @ matrix.T + shift - centre
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=float)
    disp = np.hypot(*(corners @ matrix.T + shift - corners).T)
    return Alignment(
        solved=bool(solved),
        method=method,
        dx=float(moved[0]),
        dy=float(moved[1]),
        rotation_deg=float(math.degrees(math.atan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1]))),
        scale=float(math.sqrt(abs(np.linalg.det(matrix)))),
        n_matched=int(n),
        uncertainty_px=float(unc),
        quality=float(quality),
        max_displacement_px=float(max(disp.max(), np.hypot(*moved))),
        matrix=((float(matrix[0, 0]), float(matrix[0, 1])), (float(matrix[1, 0]), float(matrix[1, 1]))),
        translation=(float(shift[0]), float(shift[1])),
        detail=detail,
        max_uncertainty_px=float(unc_corner),
    )


def measure_alignment(outreach: np.ndarray, outreach_wcs: WCS, survey: np.ndarray, survey_wcs: WCS) -> Alignment:
    """The residual similarity between where the survey shows the sky and where survey_wcs says.

    outreach: (H, W, 3) uint8 on outreach_wcs; survey: (3, h, w) float, NaN blank, on survey_wcs;
    both in FITS orientation. Stars first; cross-correlation where they are too few or disagree."""
    survey = np.asarray(survey)
    if survey.ndim != 3 or outreach.ndim != 3:
        raise ValueError(f"expected outreach (H, W, 3) and survey (3, h, w), got {outreach.shape}, {survey.shape}")
    h, w = survey.shape[1:]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    if not np.isfinite(survey).any():
        return _unsolved("none", "survey cutout is blank")
    o_img, s_img, valid, saturated = _planes(outreach, outreach_wcs, survey, survey_wcs)
    if valid.mean() < MIN_VALID_FRACTION:
        return _unsolved("none", f"only {valid.mean():.0%} of the survey grid has data on both sides")
    if float(np.std(s_img[valid])) < 1e-3 or float(np.std(o_img[valid])) < 1e-3:
        return _unsolved("none", "no structure to align (flat image)")
    sources = (_detect(o_img, valid), _detect(s_img, valid))
    stars = _solve_stars(o_img, s_img, valid, centre, triangles=False, sources=sources)
    if stars.solved:
        return stars
    xcorr = _solve_xcorr(o_img, s_img, valid, saturated, centre)
    if xcorr.solved:
        return Alignment(**{**xcorr.to_dict(), "detail": f"{xcorr.detail}; stars: {stars.detail}"})
    if "votes" in stars.detail:  # enough sources, no near-identity match: a large map, or none
        stars = _solve_stars(o_img, s_img, valid, centre, triangles=True, sources=sources)
        if stars.solved:
            return stars
    return Alignment(**{**xcorr.to_dict(), "solved": False, "detail": f"{xcorr.detail}; stars: {stars.detail}"})


def correct_wcs(survey_wcs: WCS, alignment: Alignment) -> WCS:
    """The WCS under which the survey pixels show what they show: W_c(p) = W(T^-1 p).

    With T(p) = A p + t on 0-based pixels and the linear part M (p1 - crpix) of the projection:
    M' = M A^-1 and crpix' = 1 + t + A (crpix - 1). Exact for any projection (the map is applied
    in the intermediate plane), the projection and reference point are unchanged."""
    if not alignment.solved:
        raise ValueError(f"cannot correct with an unsolved alignment ({alignment.detail})")
    a = np.array(alignment.matrix, dtype=float)
    t = np.array(alignment.translation, dtype=float)
    out = survey_wcs.deepcopy()
    inv = np.linalg.inv(a)
    if out.wcs.has_cd():
        out.wcs.cd = out.wcs.cd @ inv
    else:
        out.wcs.pc = out.wcs.get_pc() @ inv
    out.wcs.crpix = 1.0 + t + a @ (np.asarray(out.wcs.crpix, dtype=float) - 1.0)
    out.wcs.set()
    return out


def aligned_grid_wcs(survey_wcs: WCS, alignment: Alignment) -> WCS:
    """The grid on which to ask for a NEW survey cutout so that its pixel p shows what the
    outreach image, resampled onto survey_wcs, shows at p: the survey's own astrometry taken as
    right and the outreach WCS as what is off. G(p) = W(T(p)) with T(p) = A p + t (0-based):
    M' = M A and crpix' = 1 + A^-1 (crpix - 1 - t); projection and reference point unchanged."""
    if not alignment.solved:
        raise ValueError(f"cannot align a grid with an unsolved alignment ({alignment.detail})")
    a = np.array(alignment.matrix, dtype=float)
    t = np.array(alignment.translation, dtype=float)
    out = survey_wcs.deepcopy()
    if out.wcs.has_cd():
        out.wcs.cd = out.wcs.cd @ a
    else:
        out.wcs.pc = out.wcs.get_pc() @ a
    out.wcs.crpix = 1.0 + np.linalg.solve(a, np.asarray(out.wcs.crpix, dtype=float) - 1.0 - t)
    out.wcs.set()
    return out


ROTATION_TOLERANCE_DEG = 0.35  # measurement error allowed past the rotation limit (xcorr: ~0.2 deg)
SHIFT_TOLERANCE_PX = 0.5
SCALE_TOLERANCE = 0.005
MIN_CORRECTION_PX = 0.3  # the offset goal: a smaller displacement is left alone


def alignment_verdict(
    alignment: Alignment, max_shift_px: float = 10.0, max_rotation_deg: float = 2.0, max_scale_error: float = 0.02
) -> tuple[bool, bool, str]:
    """(usable, corrected, reason). Small residuals are corrected and recorded; large or
    unsolvable ones reject. The limits are inclusive, widened by the measurement's own error
    (a fixed tolerance or 3 sigma, whichever is larger), so a pair at the limit is not rejected
    for noise. "Corrected" only when the map moves some grid pixel by more than 0.3 px and more
    than 3 sigma of its position error there: clean pairs stay untouched."""
    if not alignment.solved:
        return False, False, f"misalignment: unsolved ({alignment.method}: {alignment.detail})"
    sigma = alignment.uncertainty_px if math.isfinite(alignment.uncertainty_px) else 0.0
    sigma_corner = alignment.max_uncertainty_px if math.isfinite(alignment.max_uncertainty_px) else sigma
    shift = math.hypot(alignment.dx, alignment.dy)
    if shift > max_shift_px + max(SHIFT_TOLERANCE_PX, 3 * sigma):
        return False, False, f"misalignment: shift {shift:.1f} px > {max_shift_px:g} px"
    if abs(alignment.rotation_deg) > max_rotation_deg + ROTATION_TOLERANCE_DEG:
        return False, False, f"misalignment: rotation {alignment.rotation_deg:.2f} deg > {max_rotation_deg:g} deg"
    if abs(alignment.scale - 1) > max_scale_error + SCALE_TOLERANCE:
        return False, False, f"misalignment: scale error {alignment.scale - 1:+.3f} > {max_scale_error:g}"
    noise = max(MIN_CORRECTION_PX, 3 * sigma_corner)
    summary = (
        f"shift ({alignment.dx:+.2f}, {alignment.dy:+.2f}) px, rotation {alignment.rotation_deg:+.3f} deg, "
        f"scale {alignment.scale:.4f} by {alignment.method}"
    )
    if alignment.max_displacement_px > noise:
        return True, True, f"aligned: corrected {summary}"
    moved = alignment.max_displacement_px
    return True, False, f"aligned: within noise ({summary}; moves at most {moved:.2f} px < {noise:.2f} px)"
