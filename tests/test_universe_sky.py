"""The sky model and its two views: determinism, continuity over cell borders, poles and
RA = 0, real data at its true place, and catalogue positions landing where the WCS says
(measured on the rendered pixels, within 0.3 px)."""

from __future__ import annotations

import json

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from services.universe import realdata
from services.universe.footprints import dss_plate
from services.universe.render import (
    SURVEYS,
    OutreachDefects,
    in_survey_footprint,
    render_outreach,
    render_survey,
)
from services.universe.sky import DEFAULT_SEED, Sky
from services.universe.surveys import Plate, dss_one_colour

DSS2, SDSS9 = SURVEYS
SKY = Sky()


def tan_wcs(
    ra: float,
    dec: float,
    scale_arcsec: float,
    shape: tuple[int, int],
    rotation_deg: float = 0.0,
    galactic: bool = False,
) -> WCS:
    """A north-up (then rotated) TAN grid centred on (ra, dec), as hips2fits builds them;
    galactic: (ra, dec) are (l, b) and the grid is in Galactic coordinates (coordsys=galactic)."""
    h, w = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["GLON-TAN", "GLAT-TAN"] if galactic else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(w + 1) / 2.0, (h + 1) / 2.0]
    s, t = scale_arcsec / 3600.0, np.radians(rotation_deg)
    wcs.wcs.cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
    return wcs


def tables_equal(a, b) -> bool:
    return (
        a.colnames == b.colnames
        and len(a) == len(b)
        and all(np.array_equal(a[c], b[c], equal_nan=a[c].dtype.kind == "f") for c in a.colnames)
    )


# --- determinism --------------------------------------------------------------------


def test_catalogue_is_deterministic_and_seeded():
    first = SKY.sources(150.0, 20.0, 0.1, mag_limit=23)
    again = Sky(DEFAULT_SEED).sources(150.0, 20.0, 0.1, mag_limit=23)
    other = Sky(seed=7).sources(150.0, 20.0, 0.1, mag_limit=23)
    assert len(first) > 100
    assert tables_equal(first, again)
    assert len(set(first["id"])) == len(first)
    assert not (len(first) == len(other) and np.allclose(first["ra"], other["ra"]))
    stars = SKY.stars(150.0, 20.0, 0.1)
    assert len(set(stars["source_id"])) == len(stars)
    assert tables_equal(stars, SKY.stars(150.0, 20.0, 0.1))


@pytest.mark.parametrize("hips", SURVEYS)
def test_survey_render_is_deterministic(hips):
    wcs = tan_wcs(185.0, 15.0, 1.0 if hips == DSS2 else 0.4, (200, 240), rotation_deg=20)
    a = render_survey(SKY, wcs, (200, 240), hips)
    b = render_survey(SKY, wcs, (200, 240), hips)
    assert a.shape == (3, 200, 240) and a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    other = render_survey(Sky(seed=7), wcs, (200, 240), hips)
    assert other.tobytes() != a.tobytes()


def test_outreach_render_is_deterministic():
    wcs = tan_wcs(150.1, 2.2, 0.06, (300, 400), rotation_deg=-35)
    a = render_outreach(SKY, wcs, (300, 400), "webb", OutreachDefects(border_px=12, chip_gap=True))
    b = render_outreach(SKY, wcs, (300, 400), "webb", OutreachDefects(border_px=12, chip_gap=True))
    assert a.shape == (300, 400, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()


# --- continuity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ra", "dec"),
    [(150.0, 20.0), (0.02, 5.0), (359.97, -30.0), (45.0, 89.93), (200.0, -89.95)],
    ids=["plain", "ra0+", "ra0-", "north-pole", "south-pole"],
)
def test_cone_equals_union_of_smaller_cones(ra, dec):
    big = SKY.sources(ra, dec, 0.3, mag_limit=21)
    offsets = [
        (0, 0),
        (0.15, 0),
        (-0.15, 0),
        (0, 0.15),
        (0, -0.15),
        (0.15, 0.15),
        (-0.15, -0.15),
        (0.15, -0.15),
        (-0.15, 0.15),
    ]
    seen: set[str] = set()
    from services.universe.cells import offsets_to_radec

    for de, dn in offsets:
        r2, d2 = offsets_to_radec(ra, dec, np.array(de * 3600.0), np.array(dn * 3600.0))
        small = SKY.sources(float(r2), float(d2), 0.12, mag_limit=21)
        # every small-cone source that lies in the big cone is in it, with identical values
        inside = set(small["id"]) & set(big["id"])
        seen |= inside
        sub_small = small[np.isin(small["id"], list(inside))]
        sub_big = big[np.isin(big["id"], list(inside))]
        assert np.array_equal(sub_small["ra"], sub_big["ra"]) and np.array_equal(sub_small["mag_g"], sub_big["mag_g"])
    # the small cones tile the inner part of the big cone: nothing there is missing
    from services.universe.cells import angular_separation_deg

    inner = big[angular_separation_deg(np.asarray(big["ra"]), np.asarray(big["dec"]), ra, dec) < 0.12]
    assert len(inner) > 20
    assert set(inner["id"]) <= seen


# --- real data ----------------------------------------------------------------------


def test_real_gaia_rows_are_in_place():
    stars = SKY.stars(280.0, -60.0, 0.05)
    real = stars[stars["origin"] == "gaia-dr3"]
    assert len(real) == 50
    doc = json.loads(realdata._package_file(*realdata.GAIA_ROWS).read_text())
    names = [m["name"] for m in doc["metadata"]]
    truth = {r[names.index("source_id")]: (r[names.index("ra")], r[names.index("dec")]) for r in doc["data"]}
    for row in real:
        ra, dec = truth[int(row["source_id"])]
        assert row["ra"] == pytest.approx(ra, abs=1e-9) and row["dec"] == pytest.approx(dec, abs=1e-9)
    assert set(stars.colnames) >= {"source_id", "ref_epoch", "pmra", "pmdec", "parallax", "phot_bp_mean_mag"}
    assert np.all(stars["ref_epoch"] == 2016.0)
    # synthetic stars do not double the real patch
    synthetic = stars[stars["origin"] == "synthetic"]
    from services.universe.cells import angular_separation_deg

    _, _, radius = realdata.gaia_patch()
    assert np.all(
        angular_separation_deg(np.asarray(synthetic["ra"]), np.asarray(synthetic["dec"]), 280.0, -60.0) >= radius
    )


def test_hubble_deep_field_appears_at_its_position():
    xdf = next(img for img in realdata.real_images() if img.name == "hubble-xdf")
    shape = (400, 460)
    wcs = tan_wcs(xdf.ra, xdf.dec, 0.25, shape)
    rendered = render_outreach(SKY, wcs, shape, "hubble").astype(float).sum(axis=2)
    # the real image, resampled onto the same grid, must match the render's structure
    from reproject import reproject_interp

    truth = reproject_interp((xdf.data.sum(axis=0), xdf.wcs), wcs, shape_out=shape, return_footprint=False)
    core = np.s_[100:300, 100:360]
    corr = np.corrcoef(np.nan_to_num(truth[core]).ravel(), rendered[core].ravel())[0, 1]
    assert corr > 0.5
    assert "image-hubble-xdf" in set(SKY.sources(xdf.ra, xdf.dec, 0.01)["id"])


# --- survey footprints --------------------------------------------------------------


def test_sdss_blank_outside_footprint_and_data_inside():
    # Straddles the southern edge of stripe 82 (|dec| < 1.25 deg) at RA 20.
    shape = (160, 160)
    wcs = tan_wcs(20.0, -1.25, 40.0, shape)
    image = render_survey(SKY, wcs, shape, SDSS9)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    inside = in_survey_footprint(SDSS9, ra, dec)
    assert 0.2 < inside.mean() < 0.8
    assert np.all(np.isnan(image[:, ~inside]))
    assert np.all(np.isfinite(image[:, inside]))
    assert in_survey_footprint(DSS2, ra, dec).all()
    dss = render_survey(SKY, wcs, shape, DSS2)
    assert np.isfinite(dss).all()


def test_dss2_has_one_colour_fields():
    # Find plates with one usable colour along a declination zone; deterministic.
    ra = np.arange(0.5, 360.0, 5.0)
    dec = np.full_like(ra, 32.5)
    flags = dss_one_colour(DEFAULT_SEED, ra, dec)
    assert 0 < flags.sum() < flags.size
    i = int(np.flatnonzero(flags)[0])
    plate = Plate.of(DEFAULT_SEED, int(dss_plate(ra[i : i + 1], dec[i : i + 1])[0]))
    assert plate.one_colour in ("red", "blue")
    image = render_survey(SKY, tan_wcs(float(ra[i]), 32.5, 2.0, (64, 64)), (64, 64), DSS2)
    assert np.allclose(image[0], image[2]) and np.allclose(image[1], image[0])
    j = int(np.flatnonzero(~flags)[0])
    colour = render_survey(SKY, tan_wcs(float(ra[j]), 32.5, 2.0, (64, 64)), (64, 64), DSS2)
    assert not np.allclose(colour[0], colour[2])


# --- catalogue positions on the pixels ------------------------------------------------


def _windowed_centroid(image: np.ndarray, x: float, y: float, sigma: float) -> tuple[float, float]:
    """Gaussian-windowed centroid, iterated (converges to the centre of a symmetric
    profile), after subtracting the median of a surrounding annulus."""
    r = int(np.ceil(4 * sigma)) + 3
    ix, iy = round(float(x)), round(float(y))
    cut = image[iy - r : iy + r + 1, ix - r : ix + r + 1].astype(float)
    yy, xx = np.mgrid[iy - r : iy + r + 1, ix - r : ix + r + 1]
    ring = np.hypot(xx - x, yy - y) > r - 2
    cut = cut - np.median(cut[ring])
    cx, cy = x, y
    for _ in range(30):
        wgt = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sigma**2) * cut
        nx, ny = (wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()
        # a windowed centroid converges to where the window-weighted first moment vanishes
        cx, cy = cx + 2.0 * (nx - cx), cy + 2.0 * (ny - cy)
    return cx, cy


def _isolated_stars(wcs: WCS, shape, mag_range, min_sep_px: float, mag_col="mag_g"):
    h, w = shape
    from services.universe.grid import Grid

    grid = Grid(wcs, shape)
    cat = SKY.catalog(grid.ra, grid.dec, grid.radius_deg + 0.01, mag_limit=29)
    # astropy's own frame handling is the reference (the grid may be Galactic)
    x, y = wcs.world_to_pixel(SkyCoord(cat["ra"] * u.deg, cat["dec"] * u.deg, frame="icrs"))
    picks = []
    for i in np.flatnonzero((cat["kind"] == "star") & (cat[mag_col] > mag_range[0]) & (cat[mag_col] < mag_range[1])):
        if not (min_sep_px < x[i] < w - 1 - min_sep_px and min_sep_px < y[i] < h - 1 - min_sep_px):
            continue
        d = np.hypot(x - x[i], y - y[i])
        brightest = np.minimum(cat["mag_g"], cat["mag_r"])
        brightish = brightest < cat[mag_col][i] + 3
        extended = cat["size_arcsec"] / grid.pixel_arcsec  # px
        # much brighter neighbours (halos, spikes) must be farther away
        reach = min_sep_px * np.maximum(1.0, 10 ** (0.12 * (cat[mag_col][i] - brightest)))
        near = (d < reach + 3 * extended) & brightish
        near[i] = False
        if not near.any():
            picks.append((x[i], y[i]))
    return picks


GRIDS = [
    # (name, hips or style, ra, dec, arcsec/px, shape, rotation)
    ("dss2", DSS2, 150.3, 20.4, 1.0, (900, 900), 0.0),
    ("dss2-rotated", DSS2, 210.0, -40.0, 1.7, (400, 480), 37.0),
    ("dss2-pole", DSS2, 33.0, 89.96, 1.0, (600, 600), 0.0),
    ("dss2-ra0", DSS2, 0.0, -12.0, 1.2, (900, 900), -20.0),
    ("sdss9", SDSS9, 185.0, 30.0, 0.4, (900, 900), 0.0),
    ("sdss9-rotated", SDSS9, 160.0, 45.0, 0.6, (600, 700), 123.0),
    ("sdss9-ra0", SDSS9, 0.0, 0.3, 0.396, (900, 900), 10.0),
    ("hubble", "hubble", 275.0, -15.0, 0.1, (400, 500), 25.0),
    ("webb", "webb", 266.0, -28.5, 0.06, (400, 400), -70.0),
    ("dss2-galactic", DSS2, "l=150 b=45", None, 1.0, (900, 900), 15.0),
    ("sdss9-galactic", SDSS9, "l=180 b=30", None, 0.4, (900, 900), -40.0),
]
# Magnitudes of stars bright enough for a precise centroid, not saturated.
MAGS = {DSS2: (13.0, 17.5), SDSS9: (15.5, 19.5), "hubble": (20.0, 25.5), "webb": (20.0, 25.5)}


@pytest.mark.parametrize(("name", "view", "ra", "dec", "scale", "shape", "rot"), GRIDS, ids=[g[0] for g in GRIDS])
def test_catalogue_positions_land_where_the_wcs_says(name, view, ra, dec, scale, shape, rot):
    if isinstance(ra, str):  # a Galactic grid
        lon, lat = (float(part.split("=")[1]) for part in ra.split())
        wcs = tan_wcs(lon, lat, scale, shape, rot, galactic=True)
    else:
        wcs = tan_wcs(ra, dec, scale, shape, rot)
    if view in SURVEYS:
        image = np.nansum(render_survey(SKY, wcs, shape, view), axis=0)
        fwhm_arcsec = 2.6 if view == DSS2 else 1.3
    else:
        image = render_outreach(SKY, wcs, shape, view).astype(float).sum(axis=2)
        fwhm_arcsec = 0.1
    fwhm_px = max(fwhm_arcsec / scale, 1.2)
    picks = _isolated_stars(wcs, shape, MAGS[view], min_sep_px=6 * fwhm_px + 6)
    assert len(picks) >= 3, "too few isolated stars to measure"
    offsets = np.array(
        [np.subtract(_windowed_centroid(image, x, y, fwhm_px / 2.355 * 1.2), (x, y)) for x, y in picks[:40]]
    )
    errors = np.hypot(offsets[:, 0], offsets[:, 1])
    assert errors.max() < 0.3, errors
    # no systematic shift (a convention error would show as one: half a pixel, a flip)
    assert np.hypot(*offsets.mean(axis=0)) < 0.1, offsets.mean(axis=0)


def test_sdss_footprint_covers_about_a_third_of_the_sky() -> None:
    """The real SDSS9 HiPS covers about 36 % of the sky (SITES.md); the local one likewise."""
    from services.universe.footprints import sdss_sky_fraction

    assert 0.30 < sdss_sky_fraction() < 0.42
