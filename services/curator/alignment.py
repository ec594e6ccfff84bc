"""Misalignment between an outreach image and its survey cutout (#6): measure, correct, judge.

The question is where the survey *actually* shows the sky compared with where its WCS says.
Both sides are brought onto the survey grid first: the outreach image (sharper, deeper,
different colours and PSF) is reduced to a luminance plane, smoothed to roughly survey
resolution and reprojected with its own WCS onto the survey WCS. A source at pixel ``p_o`` of
that resampled image is where the survey WCS says the sky is; the same source at ``p_s`` in the
survey is where it is. The measured transform is the similarity ``p_s = A @ p_o + t`` (0-based
survey pixels, FITS orientation, x right, y up).

Methods: "stars" (sep detection on both, astroalign triangle matching, then a sigma-clipped
least-squares similarity over every cross-matched source) and, where stars are few, "xcorr"
(upsampled phase cross-correlation of the smoothed planes for the shift, then a similarity
refined by maximising their normalised cross-correlation).
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
from reproject import reproject_interp
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.registration import phase_cross_correlation

MIN_STARS = 6  # matched sources for a star solution: 4 similarity parameters plus a check
MAX_STAR_RMS_PX = 0.8  # post-fit residual beyond which a star solution is not trusted
MAX_XCORR_RMS_PX = 0.8  # tile-shift residual beyond which a tile solution is not trusted
MIN_XCORR_NCC = 0.3  # correlation of the band-passed planes after refinement
MAX_XCORR_UNC_PX = 0.3  # 1-sigma position error at the worst grid corner
MIN_VALID_FRACTION = 0.2  # of the survey grid with data (and covered by the outreach image)


@dataclass(frozen=True)
class Alignment:
    """Residual misalignment of a survey cutout against an outreach image.

    dx, dy: where the survey shows the grid centre's sky minus where its WCS puts it (survey px);
    rotation_deg: counter-clockwise on the survey grid (FITS orientation); scale: survey/WCS size
    ratio; matrix, translation: the full map ``p_s = matrix @ p_o + translation``;
    uncertainty_px: 1-sigma of the position error at the grid centre; quality: 0..1 (fraction of
    stars matched, or the xcorr NCC); max_displacement_px: the largest shift of the map over the
    grid corners (what a pixel-level comparison actually sees)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unsolved(method: str, detail: str, n: int = 0) -> Alignment:
    nan = math.nan
    return Alignment(False, method, nan, nan, nan, nan, n, nan, 0.0, nan, ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0), detail)


# -- common grid ------------------------------------------------------------------------------


def _pixel_scale_deg(wcs: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))))


def _planes(
    outreach: np.ndarray, o_wcs: WCS, survey: np.ndarray, s_wcs: WCS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outreach luminance on the survey grid, survey luminance, valid mask), float64."""
    h, w = survey.shape[1:]
    lum_o = np.asarray(outreach, dtype=np.float64).mean(axis=2)
    # Anti-alias before downsampling: an outreach pixel is typically 2-10x smaller than a survey one.
    ratio = _pixel_scale_deg(s_wcs) / _pixel_scale_deg(o_wcs)
    if ratio > 1.2:
        lum_o = ndimage.gaussian_filter(lum_o, 0.45 * ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o_on_s, footprint = reproject_interp((lum_o, o_wcs.celestial), s_wcs.celestial, shape_out=(h, w))
        lum_s = np.nanmean(np.asarray(survey, dtype=np.float64), axis=0)
    valid = np.isfinite(lum_s) & np.isfinite(o_on_s) & (footprint > 0)
    return np.where(valid, o_on_s, 0.0), np.where(valid, lum_s, 0.0), valid


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


def _solve_stars(o_img: np.ndarray, s_img: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> Alignment:
    src, dst = _detect(o_img, valid), _detect(s_img, valid)
    if min(len(src), len(dst)) < MIN_STARS:
        return _unsolved("stars", f"too few sources ({len(src)} outreach, {len(dst)} survey)")
    matrix, shift, votes = _vote(src[:, :2], dst[:, :2], centre)
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
    # 1-sigma position error at the grid centre from the parameter covariance.
    jac = np.array([[centre[0], -centre[1], 1, 0], [centre[1], centre[0], 0, 1]])
    unc = float(np.sqrt(max(np.trace(jac @ cov @ jac.T), 0.0) / 2))
    quality = n / max(min(len(src), len(dst)), 1)
    solved = n >= MIN_STARS and rms <= MAX_STAR_RMS_PX
    return _alignment(solved, "stars", matrix, shift, centre, n, unc, quality, o_img.shape, f"rms {rms:.3f} px")


# -- cross-correlation ------------------------------------------------------------------------


def _bandpass(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """asinh-compressed, band-passed (difference of Gaussians) plane, unit noise: outreach and
    survey differ in stretch, depth and how saturated the big structures are (a filled nebula on
    one side, a ring on the other); their edges and knots, at the survey's resolution, agree."""
    med = float(np.median(image[valid]))
    mad = max(float(np.median(np.abs(image[valid] - med))) * 1.4826, 1e-6)
    x = np.where(valid, np.arcsinh((image - med) / (3 * mad)), 0.0)
    weight = valid.astype(float)
    fine = ndimage.gaussian_filter(x, 1.2) / np.maximum(ndimage.gaussian_filter(weight, 1.2), 1e-3)
    coarse = ndimage.gaussian_filter(x, 8.0) / np.maximum(ndimage.gaussian_filter(weight, 8.0), 1e-3)
    band = np.where(valid, fine - coarse, 0.0)
    noise = max(float(np.median(np.abs(band[valid]))) * 1.4826, 1e-9)
    return band / noise


def _warp(image: np.ndarray, matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """out(p) = image(T^-1 p), T(p) = matrix @ p + shift, in (x, y); ndimage works in (row, col)."""
    inv = np.linalg.inv(matrix)
    offset = -(inv @ shift)[::-1]
    return ndimage.affine_transform(image, inv[::-1, ::-1], offset=offset, order=1, mode="constant", cval=0.0)


TILE, STRIDE = 48, 24


def _tiles(model: np.ndarray, target: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> Alignment:
    # Coarse shift: upsampled phase correlation of the whole planes (reference = survey, moving =
    # outreach); its answer is the shift that moves the outreach plane onto the survey, (dy, dx).
    (sy, sx), _, _ = phase_cross_correlation(target, model, upsample_factor=10, normalization=None)
    matrix, shift = np.eye(2), np.array([sx, sy], dtype=float)
    h, w = valid.shape
    window = np.outer(np.hanning(TILE), np.hanning(TILE))
    ys, xs = np.arange(0, h - TILE + 1, STRIDE), np.arange(0, w - TILE + 1, STRIDE)
    rms, n, ok_pts = math.inf, 0, np.empty((0, 2))
    for _ in range(4):
        # Local shifts of overlapping tiles of the warped outreach plane against the survey give
        # point correspondences; a clipped similarity fit over them adds rotation and scale,
        # which a single phase correlation cannot see.
        warped = _warp(model, matrix, shift)
        wvalid = _warp(valid.astype(float), matrix, shift) > 0.99
        src, dst = [], []
        for y0 in ys:
            for x0 in xs:
                sl = (slice(y0, y0 + TILE), slice(x0, x0 + TILE))
                if not (wvalid[sl].all() and valid[sl].all()):
                    continue
                a, b = target[sl], warped[sl]
                if a.std() < 1.5 or b.std() < 1.5:  # noise only: a shift from it would be random
                    continue
                (dy, dx), _, _ = phase_cross_correlation(a * window, b * window, upsample_factor=20, normalization=None)
                if abs(dx) > TILE / 4 or abs(dy) > TILE / 4:
                    continue
                c = np.array([x0 + (TILE - 1) / 2, y0 + (TILE - 1) / 2])
                src.append(np.linalg.solve(matrix, c - shift))  # the outreach-plane point seen at c
                dst.append(c + np.array([dx, dy]))
        if len(src) < 4:
            return _unsolved("xcorr", f"{len(src)} tiles with structure")
        src_a, dst_a = np.array(src), np.array(dst)
        keep = np.ones(len(src_a), dtype=bool)
        for _ in range(3):
            if keep.sum() < 4:
                return _unsolved("xcorr", f"tiles disagree ({int(keep.sum())} of {len(src_a)} consistent)")
            matrix, shift, cov = _fit_similarity(src_a[keep], dst_a[keep])
            res = np.hypot(*(src_a @ matrix.T + shift - dst_a).T)
            scale = max(1.4826 * float(np.median(res[keep])), 0.1)
            keep = res <= max(3 * scale, 0.3)
        n, ok_pts = int(keep.sum()), dst_a[keep]
        rms = float(np.sqrt(np.mean(res[keep] ** 2)))
    # Tiles overlap by half: about a quarter of them carry independent information.
    jac = np.array([[centre[0], -centre[1], 1, 0], [centre[1], centre[0], 0, 1]])
    unc = float(np.sqrt(max(np.trace(jac @ cov @ jac.T), 0.0) / 2)) * 2
    spread = float(np.ptp(ok_pts[:, 0]) + np.ptp(ok_pts[:, 1])) if n else 0.0
    # Rotation and scale need tiles spread over the grid, not a clump around one object.
    solved = n >= 4 and rms <= MAX_XCORR_RMS_PX and spread >= 0.4 * (w + h) / 2
    return _alignment(
        solved,
        "xcorr",
        matrix,
        shift,
        centre,
        n,
        unc,
        n / max(len(src_a), 1),
        model.shape,
        f"{n}/{len(src_a)} tiles, rms {rms:.3f} px",
    )


def _refine(
    model: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    centre: np.ndarray,
    matrix: np.ndarray,
    shift: np.ndarray,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Gauss-Newton (Lucas-Kanade) on the similarity plus a gain and offset between the planes:
    uses every pixel of extended structure, where tiles only see local shifts.
    Returns (matrix, shift, 4x4 covariance of (dx, dy, rot, log scale), ncc, last step px)."""
    d = matrix @ centre + shift - centre
    rot = math.atan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1])
    logs = math.log(math.sqrt(abs(np.linalg.det(matrix))))
    h, w = valid.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    rx, ry = xx - centre[0], yy - centre[1]
    inner = ndimage.binary_erosion(valid, iterations=3)
    step, cov, ncc = math.inf, np.full((4, 4), math.inf), 0.0
    for _ in range(iterations):
        s_ = math.exp(logs)
        a = s_ * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
        t = centre + d - a @ centre
        warped = _warp(model, a, t)
        m = inner & (_warp(valid.astype(float), a, t) > 0.99)
        if m.sum() < 200:
            break
        gy, gx = np.gradient(warped)
        # Moving the model content by delta changes warped(p) by -grad . delta(p).
        basis = np.stack([-gx, -gy, -(gx * -ry + gy * rx), -(gx * rx + gy * ry)], axis=-1)[m]
        wv, tv = warped[m], target[m]
        design = np.column_stack([wv, np.ones_like(wv)])
        (gain, bias), *_ = np.linalg.lstsq(design, tv, rcond=None)
        resid = tv - gain * wv - bias
        jac = gain * basis
        delta, *_ = np.linalg.lstsq(jac, resid, rcond=None)
        d = d + delta[:2]
        rot += float(delta[2])
        logs += float(delta[3])
        step = float(np.hypot(delta[0], delta[1]) + abs(delta[2]) * (w + h) / 2 + abs(delta[3]) * (w + h) / 2)
        x0, y0 = wv - wv.mean(), tv - tv.mean()
        ncc = float(x0 @ y0 / max(math.sqrt(float(x0 @ x0) * float(y0 @ y0)), 1e-12))
        # Smoothed planes: neighbouring residuals are correlated over ~ the smoothing area.
        cov = np.linalg.pinv(jac.T @ jac) * float(resid @ resid) / max(len(resid) - 6, 1) * 8.0
        if step < 1e-3:
            break
    s_ = math.exp(logs)
    a = s_ * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    return a, centre + d - a @ centre, cov, ncc, step


def _solve_xcorr(o_img: np.ndarray, s_img: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> Alignment:
    model, target = _bandpass(o_img, valid), _bandpass(s_img, valid)
    tiles = _tiles(model, target, valid, centre)
    if np.isfinite(tiles.dx) and tiles.n_matched >= 4:
        matrix, shift, start = np.array(tiles.matrix), np.array(tiles.translation), "tiles"
    else:
        (sy, sx), _, _ = phase_cross_correlation(target, model, upsample_factor=10, normalization=None)
        matrix, shift, start = np.eye(2), np.array([sx, sy], dtype=float), "phase correlation"
    matrix, shift, cov, ncc, step = _refine(model, target, valid, centre, matrix, shift)
    h, w = valid.shape
    # Position error at the worst corner from the (dx, dy, rot, log scale) covariance.
    half = math.hypot(w, h) / 2
    unc_centre = float(math.sqrt(max((cov[0, 0] + cov[1, 1]) / 2, 0.0)))
    unc_corner = float(math.sqrt(max((cov[0, 0] + cov[1, 1]) / 2 + (cov[2, 2] + cov[3, 3]) * half**2, 0.0)))
    solved = ncc >= MIN_XCORR_NCC and step < 0.05 and unc_corner <= MAX_XCORR_UNC_PX
    return _alignment(
        solved,
        "xcorr",
        matrix,
        shift,
        centre,
        tiles.n_matched,
        unc_centre,
        max(ncc, 0.0),
        o_img.shape,
        f"from {start}: ncc {ncc:.3f}, corner sigma {unc_corner:.2f} px, last step {step:.3f} px",
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
    o_img, s_img, valid = _planes(outreach, outreach_wcs, survey, survey_wcs)
    if valid.mean() < MIN_VALID_FRACTION:
        return _unsolved("none", f"only {valid.mean():.0%} of the survey grid has data on both sides")
    if float(np.std(s_img[valid])) < 1e-3 or float(np.std(o_img[valid])) < 1e-3:
        return _unsolved("none", "no structure to align (flat image)")
    stars = _solve_stars(o_img, s_img, valid, centre)
    if stars.solved:
        return stars
    xcorr = _solve_xcorr(o_img, s_img, valid, centre)
    if xcorr.solved:
        return Alignment(**{**xcorr.to_dict(), "detail": f"{xcorr.detail}; stars: {stars.detail}"})
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


def alignment_verdict(
    alignment: Alignment, max_shift_px: float = 10.0, max_rotation_deg: float = 2.0, max_scale_error: float = 0.02
) -> tuple[bool, bool, str]:
    """(usable, corrected, reason). Small residuals are corrected and recorded; large or
    unsolvable ones reject. "Corrected" only when the map moves some pixel of the grid by more
    than the noise (0.3 px or 3 sigma): clean pairs stay untouched."""
    if not alignment.solved:
        return False, False, f"misalignment: unsolved ({alignment.method}: {alignment.detail})"
    shift = math.hypot(alignment.dx, alignment.dy)
    if shift > max_shift_px:
        return False, False, f"misalignment: shift {shift:.1f} px > {max_shift_px:g} px"
    if abs(alignment.rotation_deg) > max_rotation_deg:
        return False, False, f"misalignment: rotation {alignment.rotation_deg:.2f} deg > {max_rotation_deg:g} deg"
    if abs(alignment.scale - 1) > max_scale_error:
        return False, False, f"misalignment: scale error {alignment.scale - 1:+.3f} > {max_scale_error:g}"
    noise = max(0.3, 3 * alignment.uncertainty_px)
    summary = (
        f"shift ({alignment.dx:+.2f}, {alignment.dy:+.2f}) px, rotation {alignment.rotation_deg:+.3f} deg, "
        f"scale {alignment.scale:.4f} by {alignment.method}"
    )
    if alignment.max_displacement_px > noise:
        return True, True, f"aligned: corrected {summary}"
    return True, False, f"aligned: within noise ({summary})"
