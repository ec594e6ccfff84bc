"""The hips2fits client of the cutout service, against the local hips2fits stand-in over HTTP
(no mocks): the grid asked for in FITS orientation, NaN where blank, the rate limit and the
concurrency bound seen from the server side, retries of 5xx and timeouts, errors that are not
retried, and tiled fetches of large grids put back together."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from astropy.wcs import WCS
from astroquery.hips2fits import hips2fitsClass

from services.cutouts.upstream import Hips2Fits, UnknownHips, UpstreamError, UpstreamPolicy, blank_mask
from services.runtime.errors import InvalidArgument, Unavailable
from services.universe.render import in_survey_footprint, render_survey
from services.universe.replicas.hips2fits import PATH, Hips2FitsReplica, to_uint8
from services.universe.replicas.httpbase import Response
from services.universe.sky import Sky
from tests.support.slow_hips2fits import SlowReplica

DSS, SDSS = "CDS/P/DSS2/color", "CDS/P/SDSS9/color"
SDSS_INSIDE, SDSS_OUTSIDE = (180.0, 30.0), (10.0, -30.0)


def tan_wcs(ra: float, dec: float, scale_arcsec: float, angle_deg: float, width: int, height: int) -> WCS:
    """The contract's TAN grid: CDELT1 = -scale, CDELT2 = +scale, CROTA2 = angle (north left of up)."""
    t = np.radians(angle_deg)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    w.wcs.pc = [[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]
    w.pixel_shape = (width, height)
    return w


def expected_cube(data: np.ndarray) -> np.ndarray:
    """What the client must make of a hips2fits uint8 cube: float32, NaN where the survey has no
    data (0 in every band over a region; an isolated black sky pixel stays 0)."""
    cube = data.astype(np.float32)
    cube[:, blank_mask(cube)] = np.nan
    return cube


@pytest.fixture
def slow(sky: Sky) -> Iterator[SlowReplica]:
    server = SlowReplica(sky, delay_s=0.3)
    server.start()
    yield server
    server.stop()


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port nobody listens on (bound but not listening, so nothing else takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def policy(url: str, **kw: object) -> UpstreamPolicy:
    defaults: dict[str, object] = {"timeout_s": 20, "retries": 2, "backoff_s": 0.01, "rate_per_s": 0}
    return UpstreamPolicy(url=url, **{**defaults, **kw})  # type: ignore[arg-type]


# -- the pixels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hips", "angle", "size"),
    [(DSS, 0.0, (96, 64)), (DSS, 35.0, (80, 120)), (SDSS, -60.0, (100, 72))],
)
def test_cutout_is_the_grid_asked_for_in_fits_orientation(
    replica: Hips2FitsReplica, sky: Sky, hips: str, angle: float, size: tuple[int, int]
) -> None:
    width, height = size
    wcs = tan_wcs(*SDSS_INSIDE, 1.0, angle, width, height)
    cube = Hips2Fits(policy(replica.endpoint)).cutout(hips, wcs, (width, height))
    assert cube.shape == (3, height, width) and cube.dtype == np.float32

    # The same as astroquery's own call, value for value.
    direct = hips2fitsClass()
    direct.server = replica.endpoint
    hdul = direct.query_with_wcs(hips=hips, wcs=wcs, format="fits")
    np.testing.assert_array_equal(cube, expected_cube(hdul[0].data))
    assert WCS(hdul[0].header).celestial.wcs.compare(wcs.wcs, tolerance=1e-9)  # the service echoes the grid

    # And the survey's truth on that grid with row 0 at the bottom: no flip, no transpose.
    truth = expected_cube(to_uint8(render_survey(sky, wcs, (height, width), hips)))
    np.testing.assert_array_equal(cube, truth)
    assert not np.array_equal(cube, cube[:, ::-1, :], equal_nan=True)
    assert np.nanmax(cube) <= 255 and np.nanmin(cube) >= 0


def test_sdss_outside_its_footprint_is_nan(replica: Hips2FitsReplica) -> None:
    assert not in_survey_footprint(SDSS, *SDSS_OUTSIDE)
    client = Hips2Fits(policy(replica.endpoint))
    outside = tan_wcs(*SDSS_OUTSIDE, 1.0, 0.0, 64, 64)
    assert np.isnan(client.cutout(SDSS, outside, (64, 64))).all()
    assert not np.isnan(client.cutout(DSS, outside, (64, 64))).any()  # DSS covers the whole sky
    inside = client.cutout(SDSS, tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 64, 64), (64, 64))
    assert np.isfinite(inside).mean() > 0.5


# -- politeness -------------------------------------------------------------------------------


def _fetch_in_threads(client: Hips2Fits, n: int, hips: str = DSS, size: int = 32) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = client.cutout(hips, tan_wcs(180.0 + 0.01 * i, 30.0, 1.0, 0.0, size, size), (size, size))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return [r for r in results if r is not None]


def test_rate_limit_spreads_requests(replica: Hips2FitsReplica) -> None:
    # Warm the stand-in first: a cold first render would shift the first log stamp by itself.
    _fetch_in_threads(Hips2Fits(policy(replica.endpoint, rate_per_s=0, max_concurrency=6)), 6)
    before = len(replica.requests)
    client = Hips2Fits(policy(replica.endpoint, rate_per_s=5.0, max_concurrency=6))
    assert len(_fetch_in_threads(client, 6)) == 6
    times = sorted(r.time for r in replica.requests[before:] if r.path == PATH)
    assert len(times) == 6 and client.requests == 6
    # 5 intervals of 0.2 s between starts, some slack for jitter. (The log stamps each request
    # when it is answered, after a render of varying length: single gaps say little, the span does.)
    limited = times[-1] - times[0]
    assert limited >= 0.9

    # Unlimited, the same six requests are not spread out: the limiter is what spread them.
    before = len(replica.requests)
    _fetch_in_threads(Hips2Fits(policy(replica.endpoint, rate_per_s=0, max_concurrency=6)), 6)
    times = sorted(r.time for r in replica.requests[before:] if r.path == PATH)
    assert times[-1] - times[0] < limited / 1.5


def test_concurrency_bound_seen_by_the_server(slow: SlowReplica, sky: Sky) -> None:
    client = Hips2Fits(policy(slow.endpoint, max_concurrency=2))
    started = time.monotonic()
    cubes = _fetch_in_threads(client, 6)
    elapsed = time.monotonic() - started
    assert slow.peak == 2  # bounded, and the bound is used
    assert elapsed >= 3 * slow.delay_s * 0.9
    # Thread-safe: each thread got its own grid's pixels.
    for i, cube in enumerate(cubes):
        wcs = tan_wcs(180.0 + 0.01 * i, 30.0, 1.0, 0.0, 32, 32)
        np.testing.assert_array_equal(cube, expected_cube(to_uint8(render_survey(sky, wcs, (32, 32), DSS))))

    slow.peak = 0
    _fetch_in_threads(Hips2Fits(policy(slow.endpoint, max_concurrency=6)), 6)
    assert slow.peak > 2  # the measure sees parallel requests when they are allowed


# -- failures ---------------------------------------------------------------------------------


def test_server_error_is_retried_then_unavailable(replica: Hips2FitsReplica) -> None:
    outcomes: list[str] = []
    client = Hips2Fits(policy(replica.endpoint, retries=2), on_request=lambda o, s, b: outcomes.append(o))
    before = replica.count(PATH, status=500)
    replica.set_fault(PATH, Response(500, b"internal error", content_type="text/plain"))
    try:
        with pytest.raises(UpstreamError) as caught:
            client.cutout(DSS, tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 32, 32), (32, 32))
    finally:
        replica.set_fault(PATH, None)
    assert isinstance(caught.value, Unavailable)
    message = str(caught.value)
    assert "HTTP 500" in message and replica.endpoint in message and DSS in message and "3 attempts" in message
    assert replica.count(PATH, status=500) - before == 3 and client.requests == 3
    assert outcomes == ["retry", "retry", "error"]


def test_server_error_then_recovery(replica: Hips2FitsReplica) -> None:
    outcomes: list[str] = []

    def on_request(outcome: str, seconds: float, nbytes: int) -> None:
        outcomes.append(outcome)
        if outcome == "retry":
            replica.set_fault(PATH, None)  # the service recovers before the retry
        else:
            assert outcome != "ok" or nbytes > 0

    client = Hips2Fits(policy(replica.endpoint, retries=2), on_request=on_request)
    before = len(replica.requests)
    replica.set_fault(PATH, Response(503, b"busy", content_type="text/plain"))
    try:
        cube = client.cutout(DSS, tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 32, 32), (32, 32))
    finally:
        replica.set_fault(PATH, None)
    assert cube.shape == (3, 32, 32) and outcomes == ["retry", "ok"]
    assert [r.status for r in replica.requests[before:] if r.path == PATH] == [503, 200]


def test_timeout_is_retried_then_unavailable_naming_it(slow: SlowReplica) -> None:
    slow.delay_s = 1.0
    outcomes: list[str] = []
    client = Hips2Fits(policy(slow.endpoint, timeout_s=0.3, retries=1), on_request=lambda o, s, b: outcomes.append(o))
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"timed out after 0\.3 s") as caught:
        client.cutout(DSS, tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 32, 32), (32, 32))
    assert time.monotonic() - started < 1.5  # gave up at the timeout, did not wait for the answer
    assert "2 attempts" in str(caught.value) and client.requests == 2 and outcomes == ["retry", "error"]


def test_unknown_hips_is_not_retried(replica: Hips2FitsReplica) -> None:
    outcomes: list[str] = []
    client = Hips2Fits(policy(replica.endpoint), on_request=lambda o, s, b: outcomes.append(o))
    before = len(replica.requests)
    with pytest.raises(UnknownHips, match="CDS/P/NOPE") as caught:
        client.cutout("CDS/P/NOPE", tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 32, 32), (32, 32))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, InvalidArgument)
    assert "No HiPS matches" in str(caught.value)
    assert [r.status for r in replica.requests[before:] if r.path == PATH] == [400]
    assert client.requests == 1 and outcomes == ["error"]


def test_refusal_by_the_service_is_not_retried(replica: Hips2FitsReplica) -> None:
    client = Hips2Fits(policy(replica.endpoint))
    before = len(replica.requests)
    too_wide = tan_wcs(*SDSS_INSIDE, 60.0, 0.0, 200, 200)  # 3.3 deg: the stand-in refuses > 1 deg radius
    with pytest.raises(UpstreamError, match="refused") as caught:
        client.cutout(DSS, too_wide, (200, 200))
    assert not isinstance(caught.value, UnknownHips) and "renders fields up to" in str(caught.value)
    assert [r.status for r in replica.requests[before:] if r.path == PATH] == [400]


def test_unreachable_service_is_unavailable() -> None:
    with closed_port() as port:
        client = Hips2Fits(policy(f"http://127.0.0.1:{port}{PATH}", retries=1))
        with pytest.raises(UpstreamError, match="ConnectionError"):
            client.cutout(DSS, tan_wcs(*SDSS_INSIDE, 1.0, 0.0, 32, 32), (32, 32))
    assert client.requests == 2


# -- tiles ------------------------------------------------------------------------------------


def test_large_grid_is_fetched_in_tiles_and_mosaicked(replica: Hips2FitsReplica) -> None:
    geometry = pytest.importorskip("services.cutouts.geometry")
    width, height = 200, 150
    wcs = tan_wcs(*SDSS_INSIDE, 1.0, 20.0, width, height)
    parts = geometry.tiles(wcs, (width, height), 64, 64 * 64)
    assert len(parts) > 1

    tiled = Hips2Fits(policy(replica.endpoint, max_tile_side=64, max_tile_pixels=64 * 64, max_concurrency=3))
    before = len(replica.requests)
    cube = tiled.cutout(DSS, wcs, (width, height))
    logged = [r for r in replica.requests[before:] if r.path == PATH]
    assert tiled.requests == len(logged) == len(parts) and all(r.status == 200 for r in logged)
    assert cube.shape == (3, height, width) and cube.dtype == np.float32

    # Every tile lands where it belongs, value for value (each tile as astroquery gets it).
    direct = hips2fitsClass()
    direct.server = replica.endpoint
    for tile in parts:
        expected = expected_cube(direct.query_with_wcs(hips=DSS, wcs=tile.wcs, format="fits")[0].data)
        got = cube[:, tile.y0 : tile.y0 + tile.height, tile.x0 : tile.x0 + tile.width]
        np.testing.assert_allclose(got, expected, atol=1e-3)

    # And the whole matches a single request of the same grid, up to the stand-in's noise, which is
    # seeded per requested footprint (so a tile's grain differs from the same pixels of the whole).
    whole = Hips2Fits(policy(replica.endpoint)).cutout(DSS, wcs, (width, height))
    assert np.array_equal(np.isnan(cube), np.isnan(whole))
    finite = np.isfinite(whole)
    assert abs(float(np.mean(cube[finite] - whole[finite]))) < 1.0
    assert np.corrcoef(cube[finite], whole[finite])[0, 1] > 0.6


def test_blank_is_a_region_of_zeros_not_a_dark_pixel() -> None:
    cube = np.full((3, 40, 40), 30.0, dtype=np.float32)
    cube[:, :12, :12] = 0  # a corner off the survey's footprint
    cube[:, 30, 30] = 0  # one black sky pixel
    cube[0, 20:30, 20:30] = 0  # dark in one band only: data
    mask = blank_mask(cube)
    assert mask[:12, :12].all() and mask.sum() == 144
