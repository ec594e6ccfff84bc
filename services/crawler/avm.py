"""Astronomy Visualization Metadata (AVM) of an archive image, from the per-image JSON
document or from the XMP packet embedded in the image file, and the FITS WCS header it
implies at any pixel size.

Conventions (AVM 1.2, as pyavm reads them): ``Spatial.ReferencePixel`` is 1-based and
FITS-oriented (y up: the JPEG's last row is y = 1), ``Spatial.Scale`` is in degrees per
pixel with the first element negative, ``Spatial.Rotation`` is CROTA2 in degrees (north
left of vertical when positive). Pure functions: no network, no files.
"""

from __future__ import annotations

import ast
import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Derived sizes keep the aspect ratio to the nearest pixel; beyond this the file is a crop
# or a different image and the AVM no longer describes it.
ASPECT_TOLERANCE = 0.01
_BYTES_REPR = re.compile(r"""^b(['"])(.*)\1$""", re.S)
_XMP = re.compile(rb"<x:xmpmeta\b.*?</x:xmpmeta>", re.S)


# -- the "b'...'" server bug ---------------------------------------------------------


def unbug(value: Any) -> Any:
    """Undo the archive's bug that sends some strings as the repr of bytes (``"b'TAN'"``),
    recursively in lists; escapes such as ``\\xc3\\xb8`` are decoded as UTF-8."""
    if isinstance(value, list):
        return [unbug(v) for v in value]
    if not isinstance(value, str):
        return value
    match = _BYTES_REPR.match(value)
    if not match:
        return value
    if "\\" not in value:
        return match.group(2)
    try:
        raw = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return match.group(2)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else match.group(2)


def _number(value: Any) -> float | None:
    """A float from a JSON/XMP value (number or string); None when empty."""
    value = unbug(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _pair(value: Any) -> tuple[float | None, float | None] | None:
    """A two-element AVM list (either element may be empty); None when absent."""
    value = unbug(value)
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):  # some serialisers flatten lists to "a, b" or "a b"
        value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"expected two values, got {value!r}")
    first, second = _number(value[0]), _number(value[1])
    return None if first is None and second is None else (first, second)


def _full_pair(value: Any, name: str) -> tuple[float, float] | None:
    pair = _pair(value)
    if pair is None:
        return None
    if pair[0] is None or pair[1] is None:
        raise ValueError(f"{name} has an empty element: {value!r}")
    return pair[0], pair[1]


def _text(value: Any) -> str | None:
    value = unbug(value)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# -- the spatial AVM -------------------------------------------------------------------


@dataclass(frozen=True)
class SpatialAvm:
    """The ``Spatial.*`` AVM of one image."""

    ra: float
    dec: float
    quality: str  # "Full" | "Position"
    projection: str | None  # "TAN" ...; None -> no usable WCS
    reference_dimension: tuple[float, float] | None
    reference_pixel: tuple[float, float] | None  # 1-based, FITS orientation
    scale: tuple[float, float] | None  # deg/px as AVM gives them (x usually negative)
    rotation: float | None  # CROTA2, degrees
    frame: str = "ICRS"
    equinox: float = 2000.0

    @property
    def has_wcs(self) -> bool:
        return bool(self.projection) and None not in (self.reference_dimension, self.reference_pixel, self.scale)

    def _require_wcs(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        if not self.has_wcs:
            raise ValueError("the AVM has no full WCS (projection, reference pixel, dimension and scale)")
        assert self.reference_dimension and self.reference_pixel and self.scale
        return self.reference_dimension, self.reference_pixel, self.scale

    def header(self, width: int | None = None, height: int | None = None) -> dict[str, Any]:
        """The FITS header for an image of ``width`` x ``height`` px (default: the
        ReferenceDimension), CRPIX and CDELT rescaled from the ReferenceDimension."""
        (ref_w, ref_h), (px, py), (sx, sy) = self._require_wcs()
        # AVM 1.2 (and pyavm): only the magnitudes of Scale count; the parity is FITS's.
        header = fits_header(
            self.ra,
            self.dec,
            (px, py),
            (-abs(sx), abs(sy)),
            self.rotation or 0.0,
            (round(ref_w), round(ref_h)),
            projection=self.projection or "TAN",
            frame=self.frame,
            equinox=self.equinox,
        )
        return header if width is None else rescale_header(header, width, height)

    def fov_arcmin(self) -> tuple[float, float]:
        """Field of view (x, y) in arcminutes: |Scale| x ReferenceDimension."""
        (ref_w, ref_h), _, (sx, sy) = self._require_wcs()
        return abs(sx) * ref_w * 60.0, abs(sy) * ref_h * 60.0

    def pixel_scale_arcsec(self) -> float:
        """Arcseconds per pixel at the ReferenceDimension."""
        _, _, (sx, _) = self._require_wcs()
        return abs(sx) * 3600.0


def fits_header(
    ra: float,
    dec: float,
    crpix: tuple[float, float],
    cdelt: tuple[float, float],
    rotation: float,
    size: tuple[int, int],
    *,
    projection: str = "TAN",
    frame: str = "ICRS",
    equinox: float = 2000.0,
) -> dict[str, Any]:
    """A JSON-friendly FITS WCS header (CDELT + CROTA2 form, 1-based CRPIX)."""
    proj = projection.strip().upper()[:3].rjust(3, "-")
    lon, lat = {"GAL": ("GLON", "GLAT"), "ECL": ("ELON", "ELAT"), "SGAL": ("SLON", "SLAT")}.get(frame, ("RA--", "DEC-"))
    header: dict[str, Any] = {
        "NAXIS": 2,
        "NAXIS1": int(size[0]),
        "NAXIS2": int(size[1]),
        "CTYPE1": f"{lon}-{proj}",
        "CTYPE2": f"{lat}-{proj}",
        "CRVAL1": float(ra),
        "CRVAL2": float(dec),
        "CRPIX1": float(crpix[0]),
        "CRPIX2": float(crpix[1]),
        "CDELT1": float(cdelt[0]),
        "CDELT2": float(cdelt[1]),
        "CROTA2": float(rotation),
        "CUNIT1": "deg",
        "CUNIT2": "deg",
    }
    if lon == "RA--":
        header["RADESYS"] = frame if frame in ("ICRS", "FK5", "FK4") else "ICRS"
        header["EQUINOX"] = float(equinox)
    return header


def rescale_header(header: Mapping[str, Any], width: int, height: int | None = None) -> dict[str, Any]:
    """The same sky on a ``width`` x ``height`` grid. Edges stay aligned, so CRPIX maps as
    (p - 0.5) * f + 0.5, not p * f; one factor for both axes (square pixels, the other
    side rounded to whole pixels). ValueError when the aspect ratio does not match."""
    ref_w, ref_h = float(header["NAXIS1"]), float(header["NAXIS2"])
    f = width / ref_w
    expected = ref_h * f
    if height is None:
        height = max(1, round(expected))
    elif abs(height - expected) > max(1.0, ASPECT_TOLERANCE * expected):
        raise ValueError(
            f"a {width} x {height} px image is not the {ref_w:.0f} x {ref_h:.0f} px one the WCS refers to, rescaled"
        )
    out = dict(header)
    out["NAXIS1"], out["NAXIS2"] = int(width), int(height)
    out["CRPIX1"] = (float(header["CRPIX1"]) - 0.5) * f + 0.5
    out["CRPIX2"] = (float(header["CRPIX2"]) - 0.5) * f + 0.5
    out["CDELT1"] = float(header["CDELT1"]) / f
    out["CDELT2"] = float(header["CDELT2"]) / f
    return out


def to_astropy(header: Mapping[str, Any]):
    """An astropy WCS of a header from this module (imported lazily: astropy is slow to load)."""
    from astropy.wcs import WCS

    return WCS(dict(header))


def pixel_to_world(header: Mapping[str, Any], x: float, y: float) -> tuple[float, float]:
    """Sky position of the 1-based FITS pixel (x, y)."""
    ra, dec = to_astropy(header).all_pix2world([[x, y]], 1)[0]
    return float(ra) % 360.0, float(dec)


# -- readers ---------------------------------------------------------------------------


def _spatial_keys(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``Spatial.*`` values of a per-image JSON document (flat keys) or of a d2d feed
    entry (``Assets[].ObservationData.Spatial``), keyed by the name after ``Spatial.``."""
    flat = {k.split(".", 1)[1]: v for k, v in doc.items() if k.startswith("Spatial.")}
    if flat:
        return flat
    for asset in doc.get("Assets") or []:
        spatial = ((asset or {}).get("ObservationData") or {}).get("Spatial")
        if spatial:
            return dict(spatial)
    return {}


def _equinox(value: Any) -> float:
    text = _text(value)
    if text is None:
        return 2000.0
    try:
        return float(text.lstrip("JjBb"))
    except ValueError as exc:
        raise ValueError(f"unknown equinox {text!r}") from exc


def spatial_avm(values: Mapping[str, Any]) -> SpatialAvm | None:
    """A SpatialAvm from Spatial.* values (names without the prefix); None when there is
    no ReferenceValue. An empty y scale means a square pixel: y = -x."""
    reference = _full_pair(values.get("ReferenceValue"), "Spatial.ReferenceValue")
    if reference is None:
        return None
    scale = _pair(values.get("Scale"))
    if scale is not None:
        sx, sy = scale
        scale = (sx if sx is not None else -sy, sy if sy is not None else -sx)  # type: ignore[operator]
    projection = _text(values.get("CoordsystemProjection"))
    dimension = _full_pair(values.get("ReferenceDimension"), "Spatial.ReferenceDimension")
    pixel = _full_pair(values.get("ReferencePixel"), "Spatial.ReferencePixel")
    quality = _text(values.get("Quality")) or ("Full" if projection and scale and pixel else "Position")
    if dimension is not None and min(dimension) <= 0:
        raise ValueError(f"Spatial.ReferenceDimension must be positive: {dimension}")
    if scale is not None and 0.0 in scale:
        raise ValueError(f"Spatial.Scale must not be zero: {scale}")
    return SpatialAvm(
        ra=reference[0] % 360.0,
        dec=reference[1],
        quality=quality,
        projection=projection.upper() if projection else None,
        reference_dimension=dimension,
        reference_pixel=pixel,
        scale=scale,  # type: ignore[arg-type]
        rotation=_number(values.get("Rotation")),
        frame=(_text(values.get("CoordinateFrame")) or "ICRS").upper(),
        equinox=_equinox(values.get("Equinox")),
    )


def avm_from_json(doc: Mapping[str, Any] | None) -> SpatialAvm | None:
    """The spatial AVM of the per-image JSON document (flat ``Spatial.*`` keys, list values
    as strings, ``"b'…'"`` bug strings, nulls); None when there is no ReferenceValue."""
    return spatial_avm(_spatial_keys(doc)) if doc else None


def avm_from_image(data: bytes) -> SpatialAvm | None:
    """The spatial AVM of the XMP packet embedded in an image file (JPEG, PNG or TIFF:
    the packet is plain XML inside the file); None when the file carries none."""
    from pyavm import AVM

    for match in _XMP.finditer(data):
        if b"avm" not in match.group(0).lower():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pyavm warns about every optional tag
                avm = AVM.from_xml(match.group(0))
        except Exception as exc:  # pyavm raises bare exceptions of many kinds on bad XML
            log.warning("unreadable XMP packet in image: %s", exc)
            continue
        spatial = avm.Spatial
        values = {
            name: getattr(spatial, name, None)
            for name in (
                "ReferenceValue",
                "ReferenceDimension",
                "ReferencePixel",
                "Scale",
                "Rotation",
                "CoordsystemProjection",
                "Quality",
                "CoordinateFrame",
                "Equinox",
            )
        }
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return spatial_avm(values)
    return None


def max_offset_px(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How far apart two headers of the same image put the sky: the largest distance, in
    pixels of ``a``, between where ``b`` puts the corners and centre and where ``a`` does."""
    import numpy as np

    wa, wb = to_astropy(a), to_astropy(b)
    w, h = int(a["NAXIS1"]), int(a["NAXIS2"])
    x = np.array([1.0, w, 1.0, w, (w + 1) / 2])
    y = np.array([1.0, 1.0, h, h, (h + 1) / 2])
    ra, dec = wb.all_pix2world(x, y, 1)
    xa, ya = wa.all_world2pix(ra, dec, 1)
    return float(np.max(np.hypot(xa - x, ya - y)))
