"""The hips2fits stand-in, through astroquery's real client: the grid and WCS asked for,
stars where the returned WCS says, the real service's rotation convention, identical
bytes for identical requests, real-style errors, SDSS blank outside its footprint, and
the request log."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Angle, Latitude, Longitude, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astroquery.hips2fits import hips2fitsClass

from services.universe.render import in_survey_footprint
from services.universe.replicas.hips2fits import PATH, Hips2FitsReplica
from services.universe.replicas.hips2fits_wcs import fov_in_plane
from services.universe.sky import Sky
from tests.support.stars import centroid_offsets, isolated_bright_stars

DSS, SDSS = "CDS/P/DSS2/color", "CDS/P/SDSS9/color"


def fetch(url: str, params: dict[str, object]) -> tuple[int, bytes, str]:
    full = f"{url}{PATH}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=60) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def query(client: hips2fitsClass, hips: str, ra: float, dec: float, fov: float, size: tuple[int, int], **kw: object):
    return client.query(
        hips=hips,
        width=size[0],
        height=size[1],
        projection=kw.pop("projection", "TAN"),
        ra=Longitude(ra * u.deg),
        dec=Latitude(dec * u.deg),
        fov=Angle(fov * u.deg),
        rotation_angle=Angle(kw.pop("rotation", 0.0) * u.deg),
        **kw,
    )


@pytest.mark.parametrize(
    ("hips", "ra", "dec", "fov", "rotation", "coordsys"),
    [
        (DSS, 150.1, 2.2, 0.2, 0.0, "icrs"),
        (DSS, 150.1, 2.2, 0.2, 30.0, "icrs"),
        (DSS, 150.1, 2.2, 0.2, -70.0, "galactic"),
        (SDSS, 180.0, 30.0, 0.09, -25.0, "galactic"),
    ],
)
def test_query_stars_land_where_the_returned_wcs_says(
    client: hips2fitsClass, sky: Sky, hips: str, ra: float, dec: float, fov: float, rotation: float, coordsys: str
) -> None:
    size = (800, 700)
    hdul = query(client, hips, ra, dec, fov, size, rotation=rotation, coordsys=coordsys)
    data, header = hdul[0].data, hdul[0].header
    assert data.shape == (3, 700, 800) and data.dtype == np.uint8  # an RGB cube, as for a colour HiPS
    assert (header["NAXIS"], header["NAXIS3"], header["WCSAXES"]) == (3, 3, 2)
    assert header["CTYPE1"] == ("RA---TAN" if coordsys == "icrs" else "GLON-TAN")
    assert (header["CRPIX1"], header["CRPIX2"]) == (400.0, 350.0)  # width/2, height/2 as hips2fits sets them
    wcs = WCS(header).celestial
    scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))
    assert scale == pytest.approx(fov_in_plane(fov, "TAN") / 800, rel=1e-12)
    centre = wcs.pixel_to_world(399.0, 349.0).icrs  # CRPIX is 1-based: the reference point is at (399, 349)
    assert centre.separation(SkyCoord(ra, dec, unit="deg")).arcsec < 1e-6

    stars = isolated_bright_stars(sky, wcs, (700, 800), ra, dec, fov * 0.75)
    assert len(stars) >= 2
    offsets = centroid_offsets(data.astype(float).sum(axis=0), wcs, stars["ra"], stars["dec"])
    assert np.hypot(offsets[:, 0], offsets[:, 1]).max() < 0.5


def test_query_with_wcs_returns_that_grid(client: hips2fitsClass, sky: Sky) -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [321.5, 200.0]
    wcs.wcs.cd = [[-2.0e-4, 1.2e-4], [1.1e-4, 2.1e-4]]
    wcs.pixel_shape = (640, 400)
    hdul = client.query_with_wcs(hips=DSS, wcs=wcs, format="fits")
    data, got = hdul[0].data, WCS(hdul[0].header).celestial
    assert data.shape == (3, 400, 640)
    assert got.wcs.ctype[0] == "RA---SIN" and list(got.wcs.crpix) == [321.5, 200.0]
    np.testing.assert_allclose(got.pixel_scale_matrix, wcs.pixel_scale_matrix, rtol=1e-12)
    stars = isolated_bright_stars(sky, got, (400, 640), 150.1, 2.2, 0.12)
    offsets = centroid_offsets(data.astype(float).sum(axis=0), got, stars["ra"], stars["dec"])
    assert len(stars) >= 2 and np.hypot(offsets[:, 0], offsets[:, 1]).max() < 0.5


def test_rotation_angle_follows_the_real_service(client: hips2fitsClass) -> None:
    """hips2fits turns rotation_angle a into CD1_1 = -c cos a, CD1_2 = -c sin a,
    CD2_1 = -c sin a, CD2_2 = c cos a (CDS's hips2fits_cutout.py, the CROTA2 convention):
    for a > 0 north points up and to the left of the image."""
    a, fov, size = 35.0, 0.05, 200
    header = query(client, DSS, 10.0, 20.0, fov, (size, size), rotation=a)[0].header
    c = fov_in_plane(fov, "TAN") / size
    expected = c * np.array(
        [[-np.cos(np.radians(a)), -np.sin(np.radians(a))], [-np.sin(np.radians(a)), np.cos(np.radians(a))]]
    )
    np.testing.assert_allclose(WCS(header).celestial.pixel_scale_matrix, expected, rtol=1e-12)
    wcs = WCS(header).celestial
    x0, y0 = wcs.world_to_pixel(SkyCoord(10.0, 20.0, unit="deg"))
    x1, y1 = wcs.world_to_pixel(SkyCoord(10.0, 20.01, unit="deg"))
    north = np.degrees(np.arctan2(-(x1 - x0), y1 - y0))  # angle of north from +y, towards -x
    assert north == pytest.approx(a, abs=0.01)


def test_same_request_same_bytes(replica: Hips2FitsReplica) -> None:
    for fmt in ("fits", "png", "jpg"):
        params = {"hips": DSS, "width": 160, "height": 120, "fov": 0.04, "ra": 83.82, "dec": -5.39, "format": fmt}
        first, second = fetch(replica.url, params), fetch(replica.url, params)
        assert first[0] == 200 and first == second


def test_images_are_top_down_rgb_and_rgba(client: hips2fitsClass) -> None:
    cube = query(client, DSS, 83.82, -5.39, 0.04, (160, 120))[0].data
    jpg = query(client, DSS, 83.82, -5.39, 0.04, (160, 120), format="jpg", min_cut=0, max_cut=100)
    png = query(client, DSS, 83.82, -5.39, 0.04, (160, 120), format="png", min_cut=0, max_cut=100)
    assert jpg.shape == (120, 160, 3) and png.shape == (120, 160, 4) and np.all(png[..., 3] == 255)
    # With cuts at the extremes the stretch is linear; the image rows run top-down.
    lo, hi = np.percentile(cube, 0), np.percentile(cube, 100)
    expected = ((np.moveaxis(cube, 0, -1)[::-1] - lo) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(png[..., :3], expected)
    assert np.abs(jpg.astype(int) - expected).mean() < 4  # JPEG is lossy


def test_unknown_hips_is_a_json_error_and_astroquery_raises(replica: Hips2FitsReplica, client: hips2fitsClass) -> None:
    status, body, content_type = fetch(
        replica.url, {"hips": "CDS/P/nothing", "width": 10, "height": 10, "fov": 0.1, "ra": 1, "dec": 2}
    )
    error = json.loads(body)
    assert status == 400 and content_type == "application/json" and set(error) == {"title", "description"}
    with pytest.raises(AttributeError, match="HiPS not found"):
        query(client, "CDS/P/nothing", 1.0, 2.0, 0.1, (10, 10))
    for params, word in [
        ({"hips": DSS, "height": 10, "fov": 0.1, "ra": 1, "dec": 2}, "width"),
        ({"hips": DSS, "width": 10, "height": 10, "fov": 0.1, "ra": 1, "dec": 2, "format": "gif"}, "format"),
        ({"hips": DSS, "width": 10, "height": 10, "fov": 0.1, "ra": 1, "dec": 2, "projection": "XYZ"}, "projection"),
        ({"hips": DSS, "width": 10**6, "height": 10, "fov": 0.1, "ra": 1, "dec": 2}, "width"),
        ({"hips": DSS, "wcs": "{not json"}, "JSON"),
    ]:
        status, body, _ = fetch(replica.url, params)
        assert status == 400 and word in json.loads(body)["description"]


def test_sdss_is_blank_outside_its_footprint(replica: Hips2FitsReplica) -> None:
    outside, inside = (10.0, -30.0), (180.0, 30.0)
    assert not in_survey_footprint(SDSS, *outside) and in_survey_footprint(SDSS, *inside)
    params = {"hips": SDSS, "width": 64, "height": 64, "fov": 0.02}
    cubes = {}
    for name, (ra, dec) in (("outside", outside), ("inside", inside)):
        status, body, _ = fetch(replica.url, {**params, "ra": ra, "dec": dec})
        assert status == 200
        cubes[name] = fits.HDUList.fromstring(body)[0].data
    assert not cubes["outside"].any()  # blank: 0 in a uint8 colour cube
    assert cubes["inside"].mean() > 1
    status, body, _ = fetch(replica.url, {**params, "hips": DSS, "ra": outside[0], "dec": outside[1]})
    assert fits.HDUList.fromstring(body)[0].data.mean() > 1  # DSS covers the whole sky


def logged(replica: Hips2FitsReplica, marker: str, expected: int, **kw: object) -> int:
    """Requests whose query string has the marker. The base server writes its log entry just
    after the response, so give the last entry a moment to appear."""
    deadline = time.monotonic() + 2.0
    while True:
        count = sum(1 for r in replica.requests if marker in r.query and all(getattr(r, k) == v for k, v in kw.items()))
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.01)


def test_request_log_counts_requests(replica: Hips2FitsReplica, client: hips2fitsClass) -> None:
    query(client, DSS, 40.125, 10.0, 0.01, (32, 32))
    fetch(replica.url, {"hips": DSS, "width": 32, "height": 32, "fov": 0.01, "ra": 40.125, "dec": 10.0})
    fetch(replica.url, {"hips": "nope", "ra": 40.125})
    assert logged(replica, "ra=40.125", 3) == 3
    assert logged(replica, "ra=40.125", 2, status=200) == 2
    assert logged(replica, "ra=40.125", 1, status=400) == 1
    assert replica.count(PATH) >= 3
