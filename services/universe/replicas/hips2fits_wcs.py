"""The cutout geometry of CDS hips2fits, rebuilt exactly as the service builds it.

From ``_create_wcs_object`` in CDS's own cutout script (github.com/cds-astro/hips2fits-cutout,
``hips2fits_cutout.py``), whose output matches real service headers to the last digit:

- ``fov`` is the size of the larger side, first converted to the projection plane: twice
  the plane coordinate of (fov/2, 0) in a unit-matrix WCS of that projection (for TAN
  ``2 tan(fov/2)``, so a 1/30 deg field gives CDELT 6.6666668547014E-05 over 500 px, as
  the real headers show);
- pixel scale ``cdelt = fov_plane / max(width, height)``, ``CDELT1 = -cdelt`` (east left;
  ``inverse_longitude`` flips it), ``CDELT2 = cdelt``;
- ``CRPIX = (width / 2, height / 2)`` (1-based FITS values, so half a pixel off the true
  centre, as the service does it);
- a non-zero ``rotation_angle`` (degrees) becomes a CD matrix with the CROTA2 convention:
  ``CD1_1 = -cdelt cos a``, ``CD1_2 = -cdelt sin a``, ``CD2_1 = -cdelt sin a``, ``CD2_2 = cdelt cos a``
  (north turns from up towards the left, i.e. counter-clockwise on the image, for a > 0);
- ``coordsys=galactic`` makes GLON/GLAT axes centred on the galactic coordinates of (ra, dec).

The sky renderer works in ICRS, so a WCS in another frame is rendered through an
ICRS WCS with the same pixel-to-sky mapping (`icrs_equivalent`).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import wcs_to_celestial_frame

# wcslib's projection codes (https://docs.astropy.org/en/stable/wcs/supported_projections.html)
PROJECTIONS = (
    "AZP", "SZP", "TAN", "STG", "SIN", "ARC", "ZEA", "AIR", "CYP", "CEA", "CAR", "MER", "SFL", "PAR", "MOL",
    "AIT", "COP", "COE", "COD", "COO", "BON", "PCO", "TSC", "CSC", "QSC", "HPX", "XPH",
)  # fmt: skip


class GeometryError(ValueError):
    """A request whose geometry cannot be built (the message says why)."""


def fov_in_plane(fov_deg: float, projection: str) -> float:
    """The field of view measured in the projection plane, as hips2fits measures it."""
    unit = WCS(naxis=2)
    unit.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    unit.wcs.crval, unit.wcs.crpix = [0.0, 0.0], [0.0, 0.0]
    unit.wcs.cd = [[1.0, 0.0], [0.0, 1.0]]
    return float(2 * unit.wcs_world2pix(fov_deg / 2.0, 0.0, 1)[0])


def cutout_wcs(
    ra: float,
    dec: float,
    fov: float,
    width: int,
    height: int,
    projection: str = "TAN",
    coordsys: str = "icrs",
    rotation_angle: float = 0.0,
    inverse_longitude: bool = False,
) -> WCS:
    """The WCS hips2fits builds from centre, field of view, size, projection and rotation."""
    if projection not in PROJECTIONS:
        raise GeometryError(f"unknown projection {projection!r}: use one of {', '.join(PROJECTIONS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plane = fov_in_plane(fov, projection)
    if not np.isfinite(plane) or plane <= 0:
        raise GeometryError(f"a field of view of {fov} deg cannot be drawn in the {projection} projection")
    cdelt = plane / max(width, height)
    centre = SkyCoord(ra, dec, unit="deg", frame="icrs")
    header: dict[str, Any] = {"NAXIS": 2}
    if coordsys == "icrs":
        header.update(CTYPE1=f"RA---{projection}", CTYPE2=f"DEC--{projection}", CRVAL1=ra, CRVAL2=dec)
    elif coordsys == "galactic":
        gal = centre.galactic
        header.update(CTYPE1=f"GLON-{projection}", CTYPE2=f"GLAT-{projection}", CRVAL1=gal.l.deg, CRVAL2=gal.b.deg)
    else:
        raise GeometryError(f"unknown coordsys {coordsys!r}: use icrs or galactic")
    header.update(CRPIX1=width / 2.0, CRPIX2=height / 2.0)
    sign = -1.0 if inverse_longitude else 1.0
    if rotation_angle != 0:
        a = np.radians(rotation_angle)
        header.update(
            CD1_1=-cdelt * np.cos(a) * sign, CD1_2=-cdelt * np.sin(a),
            CD2_1=-cdelt * np.sin(a), CD2_2=cdelt * np.cos(a),
        )  # fmt: skip
    else:
        header.update(CDELT1=-cdelt * sign, CDELT2=cdelt)
    return WCS(header=header)


def wcs_from_json(text: str) -> tuple[WCS, int, int]:
    """(WCS, width, height) from the ``wcs`` parameter: a FITS header as a JSON object,
    which must carry NAXIS1 and NAXIS2 (astroquery adds them from ``wcs.pixel_shape``)."""
    try:
        cards = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeometryError(f"the wcs parameter is not valid JSON: {exc}") from None
    if not isinstance(cards, dict):
        raise GeometryError("the wcs parameter must be a JSON object of FITS keywords")
    header = fits.Header()
    try:
        for key, value in cards.items():
            header[str(key)] = value
        width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
    except KeyError:
        raise GeometryError("the wcs must give the image size (NAXIS1 and NAXIS2)") from None
    except (ValueError, TypeError) as exc:
        raise GeometryError(f"the wcs is not a valid FITS header: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # wcslib raises a zoo of types for malformed headers
        raise GeometryError(f"the wcs is not a valid WCS: {exc}") from None
    if not wcs.has_celestial or wcs.naxis != 2:
        raise GeometryError("the wcs must have two celestial axes (e.g. RA---TAN, DEC--TAN)")
    return wcs, width, height


def icrs_equivalent(wcs: WCS) -> WCS:
    """An ICRS WCS with the same pixel-to-sky mapping as ``wcs`` (which may be galactic,
    FK5, ...): same projection and pixel matrix, the celestial-to-native rotation carried
    by CRVAL, LONPOLE and LATPOLE."""
    frame = wcs_to_celestial_frame(wcs)
    if isinstance(frame, ICRS):
        return wcs
    proj = wcs.wcs.ctype[0][4:]
    out = wcs.deepcopy()
    out.wcs.ctype = [f"RA--{proj}", f"DEC-{proj}"]
    out.wcs.radesys, out.wcs.equinox = "ICRS", np.nan
    ref = SkyCoord(*wcs.wcs.crval, unit="deg", frame=frame).icrs
    out.wcs.crval = [ref.ra.deg, ref.dec.deg]
    # Native coordinates of the ICRS axes give the rotation: the ICRS pole's native longitude
    # is LONPOLE, the native pole's ICRS latitude is LATPOLE.
    axes = SkyCoord(
        x=[1.0, 0.0, 0.0], y=[0.0, 1.0, 0.0], z=[0.0, 0.0, 1.0], frame="icrs", representation_type="cartesian"
    )
    axes_old = axes.transform_to(frame).spherical
    native = wcs.wcs.s2p(np.column_stack([axes_old.lon.deg, axes_old.lat.deg]), 0)
    phi, theta = np.radians(native["phi"]), np.radians(native["theta"])
    columns = np.stack([np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), np.sin(theta)])  # ICRS -> native
    pole = columns[2]  # the native pole in ICRS (third row of the rotation)
    out.wcs.lonpole = float(np.degrees(np.arctan2(columns[1, 2], columns[0, 2])))
    out.wcs.latpole = float(np.degrees(np.arcsin(np.clip(pole[2], -1, 1))))
    out.wcs.set()
    _check_same_mapping(wcs, out, frame)
    return out


def _check_same_mapping(a: WCS, b: WCS, frame: Any) -> None:
    h, w = (a.pixel_shape or (100, 100))[::-1]
    xs, ys = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lon, lat = a.wcs_pix2world(xs.ravel(), ys.ravel(), 0)
        ra, dec = b.wcs_pix2world(xs.ravel(), ys.ravel(), 0)
    good = np.isfinite(lon) & np.isfinite(lat)
    expected = SkyCoord(lon[good], lat[good], unit="deg", frame=frame).icrs
    got = SkyCoord(ra[good], dec[good], unit="deg", frame="icrs")
    if good.any() and float(expected.separation(got).max().deg) > 1e-8:
        raise GeometryError("the replica cannot render this projection in this coordinate frame")


def field_radius_deg(wcs: WCS, width: int, height: int) -> float:
    """Largest distance from the image centre to its edge pixels (inf if off the projection)."""
    t = np.linspace(0.0, 1.0, 9)
    xs = np.concatenate([t * (width - 1), np.full_like(t, width - 1), t * (width - 1), np.zeros_like(t)])
    ys = np.concatenate([np.zeros_like(t), t * (height - 1), np.full_like(t, height - 1), t * (height - 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = wcs.pixel_to_world((width - 1) / 2.0, (height - 1) / 2.0)
        edges = wcs.pixel_to_world(xs, ys)
    sep = centre.separation(edges).deg
    return float(np.max(sep)) if np.all(np.isfinite(sep)) else float("inf")
