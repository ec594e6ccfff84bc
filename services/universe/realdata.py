"""The real parts of the sky: astronomy data that ships inside installed packages.

- 50 real Gaia DR3 rows (astroquery test data, a 0.02 deg cone at RA 280, Dec -60);
- the Hubble eXtreme Deep Field colour image (scikit-image), placed at its true centre;
  its plate scale comes from its published size (2.3' x 2.0' over 1000 x 872 px) and its
  orientation is taken as north up, east left (approximate: the release image carries no WCS);
- M13 (astropy test data: a 300 x 300 SkyView cutout with a TAN WCS, 1"/px);
- M1 on a POSS-I E plate (astroquery NED test data: DSS plate solution, 1.7"/px).

Everything else in the universe is synthetic. Inside the footprint of a real image the
real image *is* the sky: synthetic sources there are dropped (see `inside_real_images`).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from services.universe import catalog
from services.universe.cells import angular_separation_deg


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(spec.origin).parent / relative


GAIA_ROWS = ("astroquery.gaia", "tests/data/cone_search.json")
GAIA_COLUMNS = (
    "source_id",
    "ra",
    "dec",
    "phot_g_mean_mag",
    "phot_bp_mean_mag",
    "phot_rp_mean_mag",
    "pmra",
    "pmdec",
    "parallax",
)


@cache
def gaia_rows() -> dict[str, np.ndarray]:
    """The real Gaia DR3 rows, in the common column set (origin "gaia-dr3")."""
    doc = json.loads(_package_file(*GAIA_ROWS).read_text())
    names = [m["name"] for m in doc["metadata"]]
    rows = doc["data"]
    cols = catalog.empty(len(rows))
    for name in GAIA_COLUMNS:
        i = names.index(name)
        values = [np.nan if r[i] is None else r[i] for r in rows]
        cols[name] = np.asarray(values, dtype=catalog.COLUMNS[name][0])
    g = cols["phot_g_mean_mag"]
    bp_rp = np.where(np.isfinite(cols["phot_bp_mean_mag"]), cols["phot_bp_mean_mag"] - cols["phot_rp_mean_mag"], 1.0)
    cols["mag_b"], cols["mag_g"], cols["mag_r"] = catalog.gaia_to_bgr(g, bp_rp)
    cols["id"] = np.char.add("gaia-dr3-", cols["source_id"].astype("U20"))
    cols["kind"][:] = "star"
    cols["origin"][:] = "gaia-dr3"
    return cols


@cache
def gaia_patch() -> tuple[float, float, float]:
    """(ra, dec, radius) of the cone the real rows fill: synthetic stars stay out of it."""
    rows = gaia_rows()
    ra0, dec0 = 280.0, -60.0
    radius = float(angular_separation_deg(rows["ra"], rows["dec"], ra0, dec0).max()) + 1e-4
    return ra0, dec0, radius


@dataclass(frozen=True)
class RealImage:
    """A real image placed on the sky. `data` is linear-ish flux, (3, H, W) (B, G, R bands),
    background subtracted; FITS orientation (row 0 at the bottom)."""

    name: str
    title: str
    ra: float
    dec: float
    radius_deg: float  # centre-to-corner
    data: np.ndarray
    wcs: WCS
    flux_scale: float  # renderer flux per arcsec^2 for a data value of 1 (flux 1 = magnitude 25)
    credit: str
    display: np.ndarray | None = None  # (3, H, W) R, G, B in 0..1 where the image is itself an outreach picture


def _hubble_xdf() -> RealImage:
    from skimage import data as skdata

    rgb = skdata.hubble_deep_field()[::-1].astype(np.float32) / 255.0  # top-down JPEG rows -> FITS
    # Undo the display stretch on the brightness only (roughly, a 2.2 gamma) and keep the
    # colours as displayed: linearising each channel would exaggerate every hue.
    lum = rgb.mean(axis=2, keepdims=True)
    linear = lum**2.2 * rgb / np.maximum(lum, 1e-3)
    h, w = linear.shape[:2]
    scale = 2.3 / 60.0 / w  # 2.3' over the 1000 px width
    ra, dec = 53.1625, -27.7914  # XDF centre, 03h32m39.0s -27d47'29"
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(w + 1) / 2.0, (h + 1) / 2.0]
    wcs.wcs.cdelt = [-scale, scale]
    bgr = np.stack([linear[..., 2], linear[..., 1], linear[..., 0]])
    bgr -= np.median(bgr, axis=(1, 2), keepdims=True)
    radius = float(np.hypot(w, h) / 2 * scale)
    # A display value of 1 is about a 21.5 mag/arcsec^2 surface brightness in the release image.
    return RealImage(
        "hubble-xdf",
        "Hubble eXtreme Deep Field",
        ra,
        dec,
        radius,
        bgr,
        wcs,
        10 ** (-0.4 * (21.5 - 25.0)),
        "NASA, ESA, G. Illingworth, D. Magee, P. Oesch, R. Bouwens and the HUDF09 Team",
        _black_level_removed(rgb),
    )


def _black_level_removed(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) display values with the picture's grey sky taken down to black, so that
    it blends into the synthetic surroundings."""
    planes = np.moveaxis(rgb, -1, 0)
    black = np.median(planes, axis=(1, 2), keepdims=True)
    return np.ascontiguousarray(np.clip((planes - black) / (1.0 - black), 0.0, 1.0))


def _fits_image(
    name: str, title: str, package: str, relative: str, credit: str, mu_ref: float, colour: tuple[float, float, float]
) -> RealImage:
    """A one-band plate or CCD image; `colour` spreads it over the bands (b, g, r) as the
    object's light would be (the plate itself recorded one of them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        with fits.open(_package_file(package, relative)) as hdul:
            header = hdul[0].header
            data = hdul[0].data.astype(np.float32)
            wcs = WCS(header).celestial
    # The sky from the image border (the object fills the middle: a global median is not sky).
    edge = max(3, int(0.08 * min(data.shape)))
    border = np.concatenate(
        [data[:edge].ravel(), data[-edge:].ravel(), data[:, :edge].ravel(), data[:, -edge:].ravel()]
    )
    sky = np.median(border)
    spread = np.percentile(data, 99.5) - sky
    mono = (data - sky) / spread  # 1 at the 99.5th percentile
    h, w = data.shape
    ra, dec = wcs.pixel_to_world_values((w - 1) / 2.0, (h - 1) / 2.0)
    scale = float(np.mean(np.abs(wcs.proj_plane_pixel_scales()[0].to_value("deg"))))
    radius = float(np.hypot(w, h) / 2 * scale)
    return RealImage(
        name,
        title,
        float(ra),
        float(dec),
        radius,
        np.stack([mono * c for c in colour]).astype(np.float32),
        wcs,
        10 ** (-0.4 * (mu_ref - 25.0)),
        credit,
    )


@cache
def real_images() -> tuple[RealImage, ...]:
    return (
        _hubble_xdf(),
        _fits_image(
            "m13-skyview",
            "M13 (SkyView cutout)",
            "astropy.io.fits",
            "hdu/compressed/tests/data/m13.fits",
            "SkyView / DSS",
            19.0,
            (0.75, 1.0, 1.2),  # an old, yellowish population
        ),
        _fits_image(
            "m1-poss1",
            "M1, POSS-I E plate",
            "astroquery.ipac.ned",
            "tests/data/query_images.fits",
            "Palomar Observatory Sky Survey (POSS-I), STScI Digitized Sky Survey, via NED",
            20.0,
            (0.45, 0.6, 1.3),  # the E plate is red; the Crab's filaments glow in H-alpha
        ),
    )


def real_image_rows() -> dict[str, np.ndarray]:
    images = real_images()
    cols = catalog.empty(len(images))
    for i, img in enumerate(images):
        cols["id"][i] = f"image-{img.name}"
        cols["ra"][i], cols["dec"][i] = img.ra, img.dec
        cols["size_arcsec"][i] = img.radius_deg * 3600.0
        cols["subtype"][i] = img.name
    cols["kind"][:] = "image"
    cols["origin"][:] = "real-image"
    return cols


def inside_real_images(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """True where a position falls on the pixels of a real image (or the real Gaia patch
    for stars: see `gaia_patch`)."""
    out = np.zeros(np.shape(ra), dtype=bool)
    for img in real_images():
        near = angular_separation_deg(ra, dec, img.ra, img.dec) < img.radius_deg
        if near.any():
            x, y = img.wcs.world_to_pixel_values(ra[near], dec[near])
            h, w = img.data.shape[1:]
            out[near] = (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)
    return out
