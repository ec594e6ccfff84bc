"""A stand-in for CDS hips2fits (https://alasky.cds.unistra.fr/hips-image-services/hips2fits),
cutting the sky model's survey view (``render.render_survey``) on the requested grid.

Query parameters (GET, or a form-encoded POST) are the real service's: ``hips``, then either
``wcs`` (a FITS header as JSON, with NAXIS1/NAXIS2) or ``width``, ``height``, ``fov``, ``ra``,
``dec``, ``projection`` (default TAN), ``coordsys`` (icrs, galactic), ``rotation_angle``
(degrees) and ``inverse_longitude``; ``format`` (fits, jpg, png) and, for images, ``min_cut``,
``max_cut`` (values or percentiles; default 0.5% and 99.5%), ``stretch`` (linear, sqrt, power,
log, asinh) and ``cmap``. The grid is built as hips2fits builds it (``hips2fits_wcs``).

What comes back, as the real service does it for a colour HiPS (cf. its cutout script):
FITS is a (3, H, W) uint8 cube (NAXIS3 = 3, planes R, G, B; BITPIX 8) with the cutout's
2-D celestial WCS in the header, and 0 where the survey has no data (SDSS outside its
footprint); JPEG is RGB and PNG RGBA, top row first, after the percentile cuts and the
stretch (astropy ``simple_norm``, asinh_a 0.1) on the same cube; the colour map only
applies to single-band HiPS, so it is checked but has no effect. Errors are 400 with the
JSON body ``{"title": ..., "description": ...}`` that astroquery turns into its exception.
The same request always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from http import HTTPStatus

import matplotlib  # only for its registry of colour-map names
import numpy as np
from astropy.io import fits
from astropy.visualization import simple_norm
from astropy.wcs import WCS
from PIL import Image

from services.universe.render import SURVEYS, render_survey
from services.universe.replicas.hips2fits_wcs import (
    GeometryError,
    cutout_wcs,
    field_radius_deg,
    icrs_equivalent,
    wcs_from_json,
)
from services.universe.replicas.httpbase import ReplicaServer, Request, Response
from services.universe.sky import Sky

PATH = "/hips-image-services/hips2fits"
REAL_URL = "https://alasky.cds.unistra.fr/hips-image-services/hips2fits"
TITLES = {"CDS/P/DSS2/color": "DSS colored", "CDS/P/SDSS9/color": "SDSS9 color"}  # obs_title of each HiPS
FORMATS = {"fits": "application/fits", "jpg": "image/jpeg", "png": "image/png"}
STRETCHES = ("linear", "sqrt", "power", "log", "asinh")
MAX_SIDE = 10000  # pixels per side
MAX_PIXELS = 25_000_000  # the replica renders on two cores: bigger cutouts would take minutes
MAX_FIELD_RADIUS_DEG = 1.0  # centre to edge; the sky model renders wide fields slowly


class Hips2FitsError(Exception):
    def __init__(self, title: str, description: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(f"{title}: {description}")
        self.title, self.description, self.status = title, description, status

    def response(self) -> Response:
        body = json.dumps({"title": self.title, "description": self.description}).encode()
        return Response(self.status, body, content_type="application/json")


@dataclass(frozen=True)
class Cutout:
    """One parsed request: which survey, on which grid, encoded how."""

    hips: str
    wcs: WCS  # the grid asked for, in its own frame (what the FITS header carries)
    render_wcs: WCS  # the same grid in ICRS, which the renderer works in
    width: int
    height: int
    format: str
    min_cut: str  # a value, or a percentile such as "0.5%"
    max_cut: str
    stretch: str
    cmap: str


def resolve_hips(value: str) -> str:
    """The HiPS an id or keyword designates (hips2fits takes either; among several
    matches it picks one, this replica the first in order)."""
    wanted = value.strip().lower()
    for hips in SURVEYS:
        if wanted in (hips.lower(), hips.lower().removeprefix("cds/")):
            return hips
    for hips in SURVEYS:
        if wanted and wanted in hips.lower():
            return hips
    raise Hips2FitsError(
        "HiPS not found",
        f"No HiPS matches '{value}'. This local replica of hips2fits serves {' and '.join(SURVEYS)}.",
    )


def _number(request: Request, name: str, default: float | None = None) -> float:
    text = request.arg(name)
    if text is None or text.strip() == "":
        if default is None:
            raise Hips2FitsError("Missing parameter", f"'{name}' is required when no 'wcs' is given")
        return default
    try:
        value = float(text)
    except ValueError:
        raise Hips2FitsError("Invalid parameter", f"'{name}' must be a number, got '{text}'") from None
    if not np.isfinite(value):
        raise Hips2FitsError("Invalid parameter", f"'{name}' must be finite, got '{text}'")
    return value


def _size(request: Request, name: str) -> int:
    value = _number(request, name)
    if value != int(value) or not 1 <= value <= MAX_SIDE:
        raise Hips2FitsError("Invalid parameter", f"'{name}' must be an integer from 1 to {MAX_SIDE}, got {value:g}")
    return int(value)


def _cut(request: Request, name: str) -> str | None:
    text = (request.arg(name) or "").strip()
    if not text:
        return None
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?", text):
        raise Hips2FitsError(
            "Invalid parameter", f"'{name}' must be a value or a percentile such as 0.5%, got '{text}'"
        )
    if text.endswith("%") and not 0 <= float(text[:-1]) <= 100:
        raise Hips2FitsError("Invalid parameter", f"'{name}' percentile must be between 0% and 100%")
    return text


def _grid(request: Request) -> tuple[WCS, int, int]:
    if request.arg("wcs"):
        wcs, width, height = wcs_from_json(request.arg("wcs") or "")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise GeometryError(f"NAXIS1 and NAXIS2 must be from 1 to {MAX_SIDE}")
        return wcs, width, height
    if request.arg("object") and request.arg("ra") is None:
        raise Hips2FitsError(
            "Invalid parameter",
            "name resolution ('object', via Sesame) is not available in the replica: give ra and dec",
        )
    width, height = _size(request, "width"), _size(request, "height")
    fov = _number(request, "fov")
    if not 0 < fov <= 180:
        raise GeometryError(f"'fov' must be in (0, 180] degrees, got {fov:g}")
    ra, dec = _number(request, "ra"), _number(request, "dec")
    if not -90 <= dec <= 90:
        raise GeometryError(f"'dec' must be in [-90, 90], got {dec:g}")
    inverse_arg = request.arg("inverse_longitude") or request.arg("inverseLongitude") or "false"
    inverse = inverse_arg.strip().lower() in ("true", "1", "yes")
    wcs = cutout_wcs(
        ra % 360.0,
        dec,
        fov,
        width,
        height,
        projection=(request.arg("projection") or "TAN").strip().upper(),
        coordsys=(request.arg("coordsys") or "icrs").strip().lower(),
        rotation_angle=_number(request, "rotation_angle", 0.0),
        inverse_longitude=inverse,
    )
    return wcs, width, height


def parse(request: Request) -> Cutout:
    """Check every parameter as the service does; raise Hips2FitsError with the reason."""
    hips_arg = request.arg("hips")
    if not hips_arg:
        raise Hips2FitsError("Missing parameter", "'hips' is required: the ID or a keyword of a HiPS")
    hips = resolve_hips(hips_arg)
    fmt = (request.arg("format") or "fits").strip().lower()
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in FORMATS:
        raise Hips2FitsError("Invalid parameter", f"'format' must be fits, jpg or png, got '{fmt}'")
    stretch = (request.arg("stretch") or "linear").strip().lower()
    if stretch not in STRETCHES:
        raise Hips2FitsError("Invalid parameter", f"'stretch' must be one of {', '.join(STRETCHES)}, got '{stretch}'")
    cmap = (request.arg("cmap") or "Greys_r").strip()
    if cmap not in matplotlib.colormaps:
        raise Hips2FitsError("Invalid parameter", f"'cmap' must be a Matplotlib colour map, got '{cmap}'")
    try:
        wcs, width, height = _grid(request)
        if width * height > MAX_PIXELS:
            raise GeometryError(f"the cutout is limited to {MAX_PIXELS} pixels (width x height)")
        wcs.pixel_shape = (width, height)
        render_wcs = icrs_equivalent(wcs)
    except GeometryError as exc:
        raise Hips2FitsError("Invalid parameter", str(exc)) from None
    radius = field_radius_deg(wcs, width, height)
    if radius > MAX_FIELD_RADIUS_DEG:
        raise Hips2FitsError(
            "Invalid parameter",
            f"this local replica renders fields up to {MAX_FIELD_RADIUS_DEG:g} deg from centre to edge "
            f"(this one reaches {radius:.3g} deg)",
        )
    min_cut, max_cut = _cut(request, "min_cut") or "0.5%", _cut(request, "max_cut") or "99.5%"  # documented defaults
    return Cutout(hips, wcs, render_wcs, width, height, fmt, min_cut, max_cut, stretch, cmap)


def to_uint8(cube: np.ndarray) -> np.ndarray:
    """Display values as a colour HiPS stores them: uint8, blank (no data) as 0; fractions
    are dropped, as the service's bilinear sum is cast to the tiles' uint8."""
    return np.floor(np.clip(np.nan_to_num(cube, nan=0.0), 0.0, 255.0)).astype(np.uint8)


def encode_fits(cutout: Cutout, cube: np.ndarray) -> bytes:
    header = cutout.wcs.to_header()
    header.add_history(f"Generated by the local hips2fits replica (prettyspace), a stand-in for {REAL_URL}")
    header.add_history(f"From HiPS {cutout.hips} ({TITLES.get(cutout.hips, '')})")
    buf = io.BytesIO()
    fits.PrimaryHDU(data=cube, header=header).writeto(buf)
    return buf.getvalue()


def _cut_value(spec: str, data: np.ndarray) -> float:
    if spec.endswith("%"):
        return float(np.nanpercentile(data, float(spec[:-1])))
    return float(spec)


def encode_image(cutout: Cutout, cube: np.ndarray) -> bytes:
    rgb = np.moveaxis(cube, 0, -1)  # (H, W, 3), FITS orientation
    vmin, vmax = _cut_value(cutout.min_cut, rgb), _cut_value(cutout.max_cut, rgb)
    if vmax <= vmin:
        vmax = vmin + 1.0  # a flat cutout: avoid dividing by zero, the image stays flat
    norm = simple_norm(rgb, stretch=cutout.stretch, vmin=vmin, vmax=vmax, asinh_a=0.1, clip=True)
    scaled = np.ma.filled(norm(rgb.astype(np.float64)), 0.0)
    pixels = (np.flipud(scaled) * 255).astype(np.uint8)  # top row first; truncation, like Matplotlib's imsave
    buf = io.BytesIO()
    if cutout.format == "png":
        alpha = np.full((*pixels.shape[:2], 1), 255, dtype=np.uint8)
        Image.fromarray(np.concatenate([pixels, alpha], axis=-1), "RGBA").save(buf, format="PNG", dpi=(42, 42))
    else:
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", dpi=(42, 42))
    return buf.getvalue()


class Hips2FitsReplica(ReplicaServer):
    """hips2fits on 127.0.0.1: point astroquery at it with
    ``h = hips2fitsClass(); h.server = replica.url + "/hips-image-services/hips2fits"``."""

    def __init__(self, sky: Sky, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__("hips2fits", host=host, port=port)
        self.sky = sky
        self.route("GET", PATH, self._cutout)
        self.route("POST", PATH, self._cutout)

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def cutout(self, cutout: Cutout) -> np.ndarray:
        """The (3, H, W) uint8 cube of a parsed request."""
        return to_uint8(render_survey(self.sky, cutout.render_wcs, (cutout.height, cutout.width), cutout.hips))

    def _cutout(self, request: Request) -> Response:
        try:
            cutout = parse(request)
        except Hips2FitsError as exc:
            return exc.response()
        cube = self.cutout(cutout)
        body = encode_fits(cutout, cube) if cutout.format == "fits" else encode_image(cutout, cube)
        return Response(200, body, content_type=FORMATS[cutout.format])
