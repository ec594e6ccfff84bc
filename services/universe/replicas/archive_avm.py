"""The WCS of an archive image in AVM terms, and the page labels that summarise it.

An image's true WCS is kept as the handful of numbers AVM can carry (reference
value, 1-based reference pixel, one pixel scale, a rotation and the pixel size it
refers to), rounded once at construction, so that what the JSON, the embedded XMP
and the renderer see are exactly the same numbers. The label formats copy the
site's CMS (Djangoplicity) down to its quirks: the Dec entity without a semicolon,
``int()`` truncation that drops the minus sign between -1 and 0 degrees, no zero
padding, and "right" when the rotation is negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from astropy.wcs import WCS
from pyavm import AVM


@dataclass(frozen=True)
class FieldWcs:
    """A TAN WCS in FITS orientation (y up) with standard parity: CDELT1 = -scale,
    CDELT2 = +scale, CROTA2 = rotation. ``crpix`` is 1-based, like CRPIX and
    Spatial.ReferencePixel; ``width`` x ``height`` is Spatial.ReferenceDimension."""

    ra: float
    dec: float
    crpix: tuple[float, float]
    scale: float  # deg per pixel, > 0
    rotation: float  # degrees, (-180, 180]
    width: int
    height: int

    @classmethod
    def centred(cls, ra: float, dec: float, fov_arcmin: float, width: int, height: int, rotation: float) -> FieldWcs:
        """A field of ``fov_arcmin`` across its width, reference pixel at the centre."""
        return cls.rounded(
            ra, dec, ((width + 1) / 2, (height + 1) / 2), fov_arcmin / 60 / width, rotation, width, height
        )

    @classmethod
    def rounded(
        cls, ra: float, dec: float, crpix: tuple[float, float], scale: float, rotation: float, width: int, height: int
    ) -> FieldWcs:
        # Round once so that every serialisation (JSON strings, XMP, labels) carries
        # the very numbers the image was rendered with.
        rot = (rotation + 180.0) % 360.0 - 180.0
        rot = 180.0 if rot == -180.0 else rot
        return cls(
            round(ra % 360.0, 8),
            round(dec, 8),
            (round(crpix[0], 3), round(crpix[1], 3)),
            float(f"{scale:.10e}"),
            round(rot, 4),
            int(width),
            int(height),
        )

    # -- conversions ------------------------------------------------------------

    def to_wcs(self) -> WCS:
        """The astropy WCS (0-based pixels, FITS orientation), PC form of CROTA2."""
        theta = math.radians(self.rotation)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.equinox = 2000.0
        wcs.wcs.crval = [self.ra, self.dec]
        wcs.wcs.crpix = list(self.crpix)
        wcs.wcs.cdelt = [-self.scale, self.scale]
        # CROTA2 with CDELT1 < 0 < CDELT2, as FITS (and pyavm's to_wcs) define it.
        wcs.wcs.pc = [[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]
        wcs.pixel_shape = (self.width, self.height)
        return wcs

    def resized(self, width: int) -> FieldWcs:
        """The same sky on a grid ``width`` pixels wide (height to the nearest pixel):
        edges stay aligned, so CRPIX maps as (p - 0.5) * f + 0.5, not p * f."""
        f = width / self.width
        height = max(1, round(self.height * f))
        crpix = ((self.crpix[0] - 0.5) * f + 0.5, (self.crpix[1] - 0.5) * f + 0.5)
        return replace(self, crpix=crpix, scale=self.scale / f, width=width, height=height)

    def avm(self, quality: str = "Full") -> AVM:
        avm = AVM()
        avm.Spatial.CoordinateFrame = "ICRS"
        avm.Spatial.Equinox = "J2000"
        avm.Spatial.ReferenceValue = [self.ra, self.dec]
        if quality == "Full":
            avm.Spatial.CoordsystemProjection = "TAN"
            avm.Spatial.ReferenceDimension = [float(self.width), float(self.height)]
            avm.Spatial.ReferencePixel = list(self.crpix)
            avm.Spatial.Scale = [-self.scale, self.scale]
            avm.Spatial.Rotation = self.rotation
        avm.Spatial.Quality = quality
        return avm

    def header(self) -> dict[str, float | str | int]:
        """FITS keywords, for the ground truth (json-friendly)."""
        return {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": self.ra,
            "CRVAL2": self.dec,
            "CRPIX1": self.crpix[0],
            "CRPIX2": self.crpix[1],
            "CDELT1": -self.scale,
            "CDELT2": self.scale,
            "CROTA2": self.rotation,
            "NAXIS1": self.width,
            "NAXIS2": self.height,
        }

    @property
    def fov_arcmin(self) -> tuple[float, float]:
        return self.scale * self.width * 60, self.scale * self.height * 60


# -- labels, as the site formats them --------------------------------------------


def ra_label(ra: float) -> str:
    hours = (ra + 360 if ra < 0 else ra) / 15
    h = int(hours)
    minutes = (hours - h) * 60
    m = int(minutes)
    return "%d %d %.2f" % (h, m, (minutes - m) * 60)  # noqa: UP031 - the site's own format


def dec_label_html(dec: float) -> str:
    """HTML as the site sends it: ``&deg`` without ';' and, because the degrees are
    ``int()``-truncated, no minus sign for -1 < dec < 0."""
    d = int(dec)
    minutes = abs(dec - d) * 60
    m = int(minutes)
    return "%d&deg %d' %.2f\"" % (d, m, (minutes - m) * 60)  # noqa: UP031


def fov_label(scale_x: float, scale_y: float, width: float, height: float) -> str:
    return f"{abs(scale_x) * width * 60:.2f} x {abs(scale_y) * height * 60:.2f} arcminutes"


def orientation_label_html(rotation: float) -> str:
    direction = "right" if rotation < 0 else "left"
    return f"North is {abs(rotation):.1f}&deg; {direction} of vertical"


def size_label(width: int, height: int) -> str:
    return f"{width} x {height} px"
