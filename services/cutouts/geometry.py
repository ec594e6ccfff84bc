"""Footprint geometry: from an outreach image's footprint to the survey grid asked of hips2fits.

Conventions (the crawler's meta.json, the archive replica's FieldWcs, astropy):

* Pixels are 0-based in astropy calls, 1-based in FITS CRPIX; images are held in FITS
  orientation, ``array[..., y, x]`` with row 0 at the *bottom* (a JPEG's first row is the top).
* Grid sizes are ``(width, height)``, like ``WCS.pixel_shape`` and NAXIS1/NAXIS2; arrays are
  ``(C, height, width)``.
* A footprint without a header becomes a TAN WCS with the reference pixel at the grid centre,
  CDELT1 = -fov_x / width, CDELT2 = +fov_y / height (east to the left, as on the sky) and
  CROTA2 = north_angle_deg, i.e. PC = [[cos t, sin t], [-sin t, cos t]]. A positive angle puts
  north *left* of vertical ("North is 30° left of vertical"): a star due north of the centre lies
  up and to the left in the image. This is the AVM ``Spatial.Rotation`` and hips2fits'
  ``rotation_angle``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from reproject import reproject_interp
from reproject.mosaicking import reproject_and_coadd
from scipy.interpolate import RectBivariateSpline

from services.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class Limits:
    max_side_px: int = 8192  # per side of a survey grid
    max_pixels: int = 40_000_000  # width x height of a survey grid
    min_fov_arcmin: float = 0.05  # per axis
    max_fov_deg: float = 10.0  # per axis


@dataclass(frozen=True)
class FootprintSpec:
    """An outreach image's footprint: centre, field of view per image axis, north angle and
    pixel grid, or a full FITS header (which wins when set)."""

    ra_deg: float
    dec_deg: float
    fov_x_arcmin: float
    fov_y_arcmin: float
    north_angle_deg: float
    width: int
    height: int
    wcs_header: dict[str, Any] | None = None

    @classmethod
    def from_proto(cls, fp: Any) -> FootprintSpec:
        """From a prettyspace.v1.Footprint message."""
        header = None
        if fp.wcs_header_json:
            try:
                header = json.loads(fp.wcs_header_json)
            except ValueError as exc:
                raise InvalidArgument("wcs_header_json", f"not JSON ({exc})") from None
            if not isinstance(header, dict):
                raise InvalidArgument("wcs_header_json", "must be a JSON object of FITS keywords")
        return cls(
            fp.center.ra_deg,
            fp.center.dec_deg,
            fp.fov_x_arcmin,
            fp.fov_y_arcmin,
            fp.north_angle_deg,
            fp.grid.width,
            fp.grid.height,
            header,
        )

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FootprintSpec:
        """From a crawler meta.json: its ``wcs`` header is at ``pixel_size``, like the grid."""
        center = meta.get("center") or {}
        fov = meta.get("fov_arcmin") or {}
        size = meta.get("pixel_size") or {}
        return cls(
            float(center.get("ra_deg", math.nan)),
            float(center.get("dec_deg", math.nan)),
            float(fov.get("x") or 0.0),
            float(fov.get("y") or 0.0),
            float(meta.get("north_angle_deg") or 0.0),
            int(size.get("width") or 0),
            int(size.get("height") or 0),
            dict(meta["wcs"]) if meta.get("wcs") else None,
        )


@dataclass(frozen=True)
class Tile:
    """A part of a grid: pixels [x0, x0 + width) x [y0, y0 + height) and their own WCS."""

    x0: int
    y0: int
    width: int
    height: int
    wcs: WCS


# -- footprint -> WCS -----------------------------------------------------------------


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def header_wcs(header: dict[str, Any], width: int, height: int) -> tuple[WCS, tuple[int, int]]:
    """The celestial WCS of a JSON FITS header; ValueError saying why it is unusable."""
    hdr = fits.Header()
    for key, value in header.items():
        if isinstance(value, bool | int | float | str) and not str(key).upper().startswith(("COMMENT", "HISTORY")):
            hdr[str(key).upper()] = value
    w = int(hdr.get("NAXIS1", width) or 0)
    h = int(hdr.get("NAXIS2", height) or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DATE-OBS, RADECSYS and such fixes are fine
        try:
            wcs = WCS(hdr, naxis=2)
        except Exception as exc:
            text = " ".join(str(exc).split())
            if "singular" in text:
                raise ValueError("degenerate pixel scale: the CDELT/CD/PC matrix is singular") from None
            raise ValueError(f"not a usable WCS ({text[:200]})") from None
    if not wcs.has_celestial or wcs.naxis != 2 or wcs.wcs.lng != 0:
        raise ValueError(f"needs a celestial longitude/latitude pair, got CTYPE {list(wcs.wcs.ctype)}")
    if w <= 0 or h <= 0:
        raise ValueError("no pixel grid: NAXIS1/NAXIS2 missing and the footprint's grid is empty")
    matrix = wcs.pixel_scale_matrix
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-30:
        raise ValueError("degenerate or missing pixel scale (CDELT/CD/PC)")
    wcs.sip = None  # hips2fits takes a plain projection; AVM headers carry no distortion anyway
    wcs.pixel_shape = (w, h)
    centre = wcs.pixel_to_world_values((w - 1) / 2, (h - 1) / 2)
    if not np.all(np.isfinite(centre)):
        raise ValueError("the grid centre does not map to the sky")
    return wcs, (w, h)


def _tan_wcs(spec: FootprintSpec) -> WCS:
    # The same numbers the crawler writes for a labels-only footprint (extract._label_header).
    t = math.radians(spec.north_angle_deg)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [spec.ra_deg % 360.0, spec.dec_deg]
    wcs.wcs.crpix = [(spec.width + 1) / 2, (spec.height + 1) / 2]
    wcs.wcs.cdelt = [-spec.fov_x_arcmin / 60 / spec.width, spec.fov_y_arcmin / 60 / spec.height]
    wcs.wcs.pc = [[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]
    wcs.pixel_shape = (spec.width, spec.height)
    return wcs


def outreach_wcs(spec: FootprintSpec) -> tuple[WCS, tuple[int, int]]:
    """(wcs, (width, height)) of the outreach image. Call validate() first: this trusts the spec."""
    if spec.wcs_header:
        return header_wcs(spec.wcs_header, spec.width, spec.height)
    return _tan_wcs(spec), (spec.width, spec.height)


def _extent_arcmin(wcs: WCS, shape: tuple[int, int]) -> tuple[float, float]:
    """Length of the grid's x and y edges on the sky (linear part of the WCS, at the reference point)."""
    m = wcs.pixel_scale_matrix
    return (
        float(np.hypot(m[0, 0], m[1, 0]) * shape[0] * 60),
        float(np.hypot(m[0, 1], m[1, 1]) * shape[1] * 60),
    )


def validate(spec: FootprintSpec, limits: Limits) -> None:
    """InvalidArgument naming the field and the bound it breaks; nothing when the footprint is usable."""
    if not _finite(spec.ra_deg):
        raise InvalidArgument("center.ra_deg", f"must be a finite number, got {spec.ra_deg}")
    if not (_finite(spec.dec_deg) and -90.0 <= spec.dec_deg <= 90.0):
        raise InvalidArgument("center.dec_deg", f"must be within [-90, 90], got {spec.dec_deg}")
    if spec.wcs_header:
        try:
            wcs, shape = header_wcs(spec.wcs_header, spec.width, spec.height)
        except ValueError as exc:
            raise InvalidArgument("wcs_header_json", str(exc)) from None
        fov_x, fov_y = _extent_arcmin(wcs, shape)
        names = ("wcs_header_json (x extent)", "wcs_header_json (y extent)")
    else:
        if not _finite(spec.north_angle_deg):
            raise InvalidArgument("north_angle_deg", f"must be a finite number, got {spec.north_angle_deg}")
        for name, value in (("grid.width", spec.width), ("grid.height", spec.height)):
            if not (isinstance(value, int) and value > 0):
                raise InvalidArgument(name, f"must be > 0 px, got {value}")
        fov_x, fov_y = spec.fov_x_arcmin, spec.fov_y_arcmin
        names = ("fov_x_arcmin", "fov_y_arcmin")
    for name, fov in zip(names, (fov_x, fov_y), strict=True):
        if not (_finite(fov) and fov > 0):
            raise InvalidArgument(name, f"field of view must be > 0 arcmin, got {fov}")
        if fov < limits.min_fov_arcmin:
            raise InvalidArgument(name, f"field of view {fov:.4g} arcmin < minimum {limits.min_fov_arcmin:g} arcmin")
        if fov > limits.max_fov_deg * 60:
            raise InvalidArgument(name, f"field of view {fov / 60:.4g} deg > maximum {limits.max_fov_deg:g} deg")


# -- survey grid ----------------------------------------------------------------------


def _orientation(matrix: np.ndarray) -> np.ndarray:
    """The rotation (or, for a mirrored image, reflection) part of a pixel-scale matrix: the
    polar decomposition M = U P drops the scales (and any skew) but keeps where north and
    east point on the grid."""
    w, _, vt = np.linalg.svd(matrix)
    return w @ vt


def survey_grid(
    wcs: WCS, shape: tuple[int, int], scale_arcsec: float | None, limits: Limits
) -> tuple[WCS, tuple[int, int]]:
    """The grid to ask the survey for: the outreach image's sky, same projection and reference
    point, same orientation and parity, same grid centre, square pixels of ``scale_arcsec``
    (None: the outreach grid itself). Returns (wcs with pixel_shape set, (width, height))."""
    width, height = int(shape[0]), int(shape[1])
    src = wcs.celestial.deepcopy()
    src.sip = None
    src.wcs.set()
    m = src.pixel_scale_matrix
    if scale_arcsec is None:
        out_shape = (width, height)
        matrix = m
    else:
        if not (math.isfinite(scale_arcsec) and scale_arcsec > 0):
            raise InvalidArgument("scale_arcsec", f"must be > 0, got {scale_arcsec}")
        s = scale_arcsec / 3600.0
        ext_x, ext_y = _extent_arcmin(src, (width, height))
        out_shape = (max(1, round(ext_x / 60 / s)), max(1, round(ext_y / 60 / s)))
        matrix = _orientation(m) * s
    _check_grid(out_shape, limits, scale_arcsec)

    # Keep the grid centre on the same sky point: the offset of the reference pixel from the
    # centre, in intermediate world coordinates, is the same on both grids.
    centre_in = np.array([(width + 1) / 2, (height + 1) / 2])
    centre_out = np.array([(out_shape[0] + 1) / 2, (out_shape[1] + 1) / 2])
    crpix = centre_out + np.linalg.solve(matrix, m @ (src.wcs.crpix - centre_in))

    out = WCS(naxis=2)
    out.wcs.ctype = list(src.wcs.ctype)
    out.wcs.cunit = ["deg", "deg"]
    out.wcs.crval = [src.wcs.crval[0] % 360.0, src.wcs.crval[1]]
    out.wcs.crpix = list(crpix)
    # CDELT + PC, the form astroquery's to_header() sends. CD = diag(CDELT) @ PC, so CDELT is
    # the row norms; with CDELT1 < 0 < CDELT2 a standard-parity PC is a pure rotation (CROTA2).
    cdelt = np.array([-np.hypot(*matrix[0]), np.hypot(*matrix[1])])
    out.wcs.cdelt = cdelt
    out.wcs.pc = matrix / cdelt[:, None]
    # Projection details that change the mapping away from the defaults travel along.
    for attr in ("radesys", "equinox", "lonpole", "latpole"):
        value = getattr(src.wcs, attr)
        if (isinstance(value, str) and value) or (isinstance(value, float) and math.isfinite(value)):
            setattr(out.wcs, attr, value)
    if src.wcs.get_pv():
        out.wcs.set_pv(src.wcs.get_pv())
    out.wcs.set()
    out.pixel_shape = out_shape
    return out, out_shape


def _check_grid(shape: tuple[int, int], limits: Limits, scale_arcsec: float | None) -> None:
    at = f" at {scale_arcsec:g} arcsec/px" if scale_arcsec is not None else " (the outreach grid)"
    for name, side in (("width", shape[0]), ("height", shape[1])):
        if side > limits.max_side_px:
            raise InvalidArgument(f"survey grid {name}", f"{side} > {limits.max_side_px} px{at}")
    if shape[0] * shape[1] > limits.max_pixels:
        raise InvalidArgument(
            "survey grid", f"{shape[0]} x {shape[1]} = {shape[0] * shape[1]} > {limits.max_pixels} pixels{at}"
        )


# -- canonical key --------------------------------------------------------------------


def _num(value: float, digits: int) -> float | None:
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}e}") + 0.0  # +0.0: -0.0 and 0.0 give one key


def footprint_key(survey_slug: str, wcs: WCS, shape: tuple[int, int]) -> str:
    """sha256 (32 hex chars) of the survey and what the grid means on the sky, not how the header
    spells it: CD, PC x CDELT and CROTA2 forms of one grid give one key; values are rounded far
    below a pixel (1e-9 deg, 1e-6 px, 10 significant digits) so float noise does not split keys."""
    w = wcs.celestial.deepcopy()
    w.wcs.set()
    m = w.pixel_scale_matrix
    canon = {
        "survey": survey_slug,
        "shape": [int(shape[0]), int(shape[1])],
        "ctype": [c.strip().upper() for c in w.wcs.ctype],
        "crval": [round(round(float(w.wcs.crval[0]) % 360.0, 9) % 360.0, 9) + 0.0, round(float(w.wcs.crval[1]), 9)],
        "crpix": [round(float(v), 6) + 0.0 for v in w.wcs.crpix],
        "matrix": [[_num(float(v), 9) for v in row] for row in m],
        "radesys": w.wcs.radesys.strip().upper(),
        "equinox": _num(float(w.wcs.equinox), 6),
        "lonpole": _num(float(w.wcs.lonpole), 9),
        "latpole": _num(float(w.wcs.latpole), 9),
        "pv": sorted([int(i), int(m_), _num(float(v), 9)] for i, m_, v in w.wcs.get_pv()),
    }
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- tiles and mosaic -----------------------------------------------------------------


def tiles(wcs: WCS, shape: tuple[int, int], max_side: int, max_pixels: int) -> list[Tile]:
    """The fewest near-equal tiles of the grid with sides <= max_side and <= max_pixels each,
    row by row from the bottom-left. One tile when the grid fits."""
    width, height = int(shape[0]), int(shape[1])
    if max_side < 1 or max_pixels < 1:
        raise ValueError("max_side and max_pixels must be >= 1")
    nx, ny = math.ceil(width / max_side), math.ceil(height / max_side)
    while math.ceil(width / nx) * math.ceil(height / ny) > max_pixels:
        # Cut the longer tile side again: keeps tiles close to square.
        if math.ceil(width / nx) >= math.ceil(height / ny):
            nx += 1
        else:
            ny += 1
    xs = [round(i * width / nx) for i in range(nx + 1)]
    ys = [round(j * height / ny) for j in range(ny + 1)]
    out = []
    for j in range(ny):
        for i in range(nx):
            x0, y0, w, h = xs[i], ys[j], xs[i + 1] - xs[i], ys[j + 1] - ys[j]
            tile_wcs = wcs.celestial.slice((slice(y0, y0 + h), slice(x0, x0 + w)))  # numpy order: (y, x)
            tile_wcs.pixel_shape = (w, h)
            out.append(Tile(x0, y0, w, h, tile_wcs))
    return out


def _offset(tile_wcs: WCS, target: WCS, shape: tuple[int, int], tolerance: float = 1e-3) -> tuple[int, int] | None:
    """Where the tile sits in the target grid when its pixel centres fall exactly on the target's
    (a grid cut by tiles(), returned as asked): the (x, y) of its first pixel; else None."""
    w, h = shape
    xs, ys = np.array([0, w - 1, 0, w - 1, (w - 1) / 2]), np.array([0, 0, h - 1, h - 1, (h - 1) / 2])
    tx, ty = target.world_to_pixel_values(*tile_wcs.pixel_to_world_values(xs, ys))
    steps = np.concatenate([tx - xs, ty - ys])
    if not (
        np.all(np.isfinite(steps))
        and np.ptp(steps[:5]) < tolerance
        and np.ptp(steps[5:]) < tolerance
        and np.all(np.abs(steps - np.round(steps)) < tolerance)
    ):
        return None
    return round(float(steps[0])), round(float(steps[5]))


def mosaic(parts: list[tuple[Tile, np.ndarray]], wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """(C, height, width) float32 of the whole grid from (tile, (C, h, w) cube) parts, each cube on
    its tile's WCS (what hips2fits returned). Tiles whose pixels sit on the target's (the normal
    case) are placed as they are: exact, seamless, and blank (NaN) areas do not bleed into their
    neighbours; any other tile is coadded with reproject (bilinear). A pixel no tile covers is NaN."""
    if not parts:
        raise ValueError("no tiles to mosaic")
    width, height = int(shape[0]), int(shape[1])
    channels = {np.asarray(cube).shape[0] for _, cube in parts}
    if len(channels) != 1:
        raise ValueError(f"tiles disagree on the number of channels: {sorted(channels)}")
    target = wcs.celestial
    out = np.full((channels.pop(), height, width), np.nan, dtype=np.float32)
    offsets = [_offset(tile.wcs, target, (tile.width, tile.height)) for tile, _ in parts]
    if all(
        o is not None and 0 <= o[0] <= width - t.width and 0 <= o[1] <= height - t.height
        for o, (t, _) in zip(offsets, parts, strict=True)
    ):
        # Tiles on the target's own pixels (the normal case): what reproject would compute
        # nearest-neighbour, without its coordinate transforms.
        for (x0, y0), (tile, cube) in zip(offsets, parts, strict=True):  # type: ignore[misc]
            out[:, y0 : y0 + tile.height, x0 : x0 + tile.width] = cube
        return out
    for c in range(out.shape[0]):
        inputs = [(np.asarray(cube[c], dtype=np.float64), tile.wcs) for tile, cube in parts]
        plane, _ = reproject_and_coadd(
            inputs,
            target,
            shape_out=(height, width),
            reproject_function=reproject_interp,
            combine_function="mean",
            blank_pixel_value=np.nan,
        )
        out[c] = plane
    return out


def rescaled_wcs(wcs: WCS, factor: float) -> WCS:
    """The same sky on pixels ``factor`` times larger (k x k binning: factor k; a grid refined n
    times: factor 1/n). New pixel q covers old pixels factor*q .. factor*(q+1) - 1 (0-based), so the
    1-based CRPIX maps as (C - 0.5) / factor + 0.5."""
    out = wcs.celestial.deepcopy()
    if out.wcs.has_cd():
        out.wcs.cd = np.asarray(out.wcs.cd, dtype=float) * factor
    else:
        out.wcs.cdelt = np.asarray(out.wcs.cdelt, dtype=float) * factor
    out.wcs.crpix = (np.asarray(out.wcs.crpix, dtype=float) - 0.5) / factor + 0.5
    out.wcs.set()
    return out


def pixel_map(src_wcs: WCS, dst_wcs: WCS, shape: tuple[int, int], step: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in src_wcs pixels of every dst_wcs pixel of ``shape`` (h, w): the exact transform
    on a coarse grid, splined in between (smooth to far below 0.01 px for any sky projection).
    ValueError where src_wcs cannot place part of the grid."""
    h, w = shape
    gx = np.linspace(0, w - 1, max(4, math.ceil((w - 1) / step) + 1))
    gy = np.linspace(0, h - 1, max(4, math.ceil((h - 1) / step) + 1))
    xx, yy = np.meshgrid(gx, gy)
    sx, sy = src_wcs.world_to_pixel_values(*dst_wcs.pixel_to_world_values(xx, yy))
    sx, sy = np.asarray(sx, dtype=float), np.asarray(sy, dtype=float)
    if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
        raise ValueError("the source WCS does not cover the whole destination grid's sky")
    px, py = np.arange(w, dtype=float), np.arange(h, dtype=float)
    fx = RectBivariateSpline(gy, gx, sx, kx=3, ky=3)(py, px)
    fy = RectBivariateSpline(gy, gx, sy, kx=3, ky=3)(py, px)
    return fx, fy
