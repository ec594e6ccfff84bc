"""The cutouts service end to end: a real service process (gRPC, real S3) asking the
hips2fits stand-in over HTTP for survey pixels matched to footprints and to archive
observations, with its cache, its batch job, its CLI and its errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from services.api import common_pb2, crawler_pb2, cutouts_pb2
from services.client.clients import CutoutsClient
from services.universe.replicas.hips2fits import Hips2FitsReplica
from services.universe.replicas.httpbase import Response
from services.universe.sky import Sky
from tests.support.private_stack import private_stack_fixtures
from tests.support.processes import service_process
from tests.support.slow_hips2fits import SlowReplica

REPO = Path(__file__).resolve().parents[1]
# A field inside SDSS's footprint (the north Galactic cap) and one far outside it.
IN_SDSS = (185.0, 15.0)
OUT_OF_SDSS = (300.0, -60.0)


stack, store = private_stack_fixtures("cutouts")


@pytest.fixture(scope="module")
def hips2fits():
    replica = SlowReplica(Sky(), delay_s=0.0).start()  # slowed down by the kill test only
    yield replica
    replica.stop()


@pytest.fixture(scope="module")
def settings(hips2fits) -> dict[str, str]:
    return {
        "hips2fits_url": hips2fits.endpoint,
        "upstream_rate_per_s": "0",
        "upstream_backoff_s": "0.1",
        "upstream_timeout_s": "30",
        "upstream_retries": "1",
        "cutout_max_side_px": "2048",
    }


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory, settings):
    proc = service_process(
        stack, ["services", "cutouts"], tmp_path_factory.mktemp("cutout-logs"), "cutouts", **settings
    )
    proc.start()
    yield proc
    proc.stop()


def footprint(ra: float, dec: float, fov_arcmin: float = 4.0, angle: float = 20.0, size=(300, 200)):
    return common_pb2.Footprint(
        center=common_pb2.SkyPosition(ra_deg=ra, dec_deg=dec),
        fov_x_arcmin=fov_arcmin,
        fov_y_arcmin=fov_arcmin * size[1] / size[0],
        north_angle_deg=angle,
        grid=common_pb2.PixelGrid(width=size[0], height=size[1]),
    )


def get(service, timeout: float = 120, **request) -> cutouts_pb2.Cutout:
    with CutoutsClient(service.address) as client:
        return client.stub.GetCutout(cutouts_pb2.CutoutRequest(**request), timeout=timeout)


def upstream_calls(replica: Hips2FitsReplica) -> int:
    return replica.count(r"^/hips-image-services/hips2fits")


def test_a_footprint_cutout_is_stored_with_its_wcs_and_then_served_from_the_cache(service, hips2fits, store):
    before = upstream_calls(hips2fits)
    first = get(service, footprint=footprint(*IN_SDSS), survey="dss2-color")
    assert first.available and not first.cached and first.survey == "dss2-color"
    assert "Digitized Sky Survey" in first.credit
    assert upstream_calls(hips2fits) == before + 1
    header = json.loads(first.wcs_header_json)
    assert (header["NAXIS1"], header["NAXIS2"]) == (first.grid.width, first.grid.height)
    # DSS2's native ~1"/px over a 4' x 2.67' field
    assert 200 <= first.grid.width <= 300
    with fits.open(io.BytesIO(store.get_bytes(first.fits.bucket, first.fits.key))) as hdul:
        cube, stored = hdul[0].data, WCS(hdul[0].header).celestial
    assert cube.shape == (3, first.grid.height, first.grid.width) and np.nanstd(cube) > 1
    assert stored.wcs.crval == pytest.approx([header["CRVAL1"], header["CRVAL2"]])
    info = store.stat(first.fits.bucket, first.fits.key)
    assert json.loads(info.metadata["wcs"])["CRVAL1"] == pytest.approx(header["CRVAL1"])
    assert json.loads(info.metadata["request"])["survey"] == "dss2-color"
    png = Image.open(io.BytesIO(store.get_bytes(first.png.bucket, first.png.key)))
    assert png.size == (first.grid.width, first.grid.height)
    again = get(service, footprint=footprint(*IN_SDSS), survey="dss2-color")
    assert again.cached and again.fits.sha256 == first.fits.sha256 and again.footprint_key == first.footprint_key
    assert upstream_calls(hips2fits) == before + 1  # no second upstream call


def test_the_cache_survives_a_restart(stack, tmp_path, settings, hips2fits):
    other = service_process(stack, ["services", "cutouts"], tmp_path, "cutouts-2", **settings).start()
    try:
        before = upstream_calls(hips2fits)
        again = get(other, footprint=footprint(*IN_SDSS), survey="dss2-color")
        assert again.cached and upstream_calls(hips2fits) == before
    finally:
        other.stop()


def test_sdss_outside_its_footprint_is_unavailable_with_a_reason_and_not_asked_twice(service, hips2fits, store):
    first = get(service, footprint=footprint(*OUT_OF_SDSS), survey="sdss9-color")
    assert not first.available and "footprint" in first.unavailable_reason
    assert not first.HasField("fits") and not first.HasField("png")
    before = upstream_calls(hips2fits)
    again = get(service, footprint=footprint(*OUT_OF_SDSS), survey="sdss9-color")
    assert again.cached and not again.available and upstream_calls(hips2fits) == before
    inside = get(service, footprint=footprint(*IN_SDSS), survey="sdss9-color")
    assert inside.available


def test_outreach_grid_and_explicit_scale(service) -> None:
    same = get(service, footprint=footprint(*IN_SDSS, size=(120, 80)), survey="dss2-color", match_outreach_grid=True)
    assert (same.grid.width, same.grid.height) == (120, 80)
    coarse = get(service, footprint=footprint(*IN_SDSS), survey="dss2-color", pixel_scale_arcsec=4.0)
    assert coarse.grid.width == pytest.approx(60, abs=1)


@pytest.mark.parametrize(
    ("request_fields", "needle"),
    [
        ({"footprint": footprint(10.0, 95.0), "survey": "dss2-color"}, "90"),
        ({"footprint": footprint(10.0, 10.0, fov_arcmin=0.0), "survey": "dss2-color"}, "fov"),
        ({"footprint": footprint(10.0, 10.0, fov_arcmin=1200.0), "survey": "dss2-color"}, "fov"),
        ({"footprint": footprint(10.0, 10.0), "survey": "dss3-color"}, "dss2-color"),
        ({"footprint": footprint(10.0, 10.0), "survey": ""}, "survey"),
        ({"footprint": footprint(10.0, 10.0, fov_arcmin=60.0), "survey": "sdss9-color"}, "2048"),
        ({"footprint": footprint(10.0, 10.0), "survey": "dss2-color", "pixel_scale_arcsec": -1.0}, "pixel_scale"),
        ({"survey": "dss2-color"}, "footprint"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_bound(service, request_fields, needle) -> None:
    with pytest.raises(grpc.RpcError) as err:
        get(service, **request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert needle in err.value.details()


def test_an_upstream_failure_is_unavailable_and_stores_nothing(service, hips2fits, store) -> None:
    hips2fits.set_fault("/hips-image-services/hips2fits", Response(500, b"down", content_type="text/plain"))
    try:
        keys_before = set(store.list_keys("cutouts"))
        with pytest.raises(grpc.RpcError) as err:
            get(service, footprint=footprint(40.0, 30.0), survey="dss2-color")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert set(store.list_keys("cutouts")) == keys_before
    finally:
        hips2fits.set_fault("/hips-image-services/hips2fits", None)
    assert get(service, footprint=footprint(40.0, 30.0), survey="dss2-color").available  # and it recovers


# -- observations, batch, CLI --------------------------------------------------------------------


@pytest.fixture(scope="module")
def observations(store) -> list[str]:
    """Two archive observations as the crawler stores them (meta.json with the AVM WCS)."""
    ids = []
    for i, (ra, dec, angle) in enumerate([(185.3, 15.2, 35.0), (10.7, 41.3, -60.0)]):
        ident = f"heic99{i:02d}a"
        scale = 0.1 / 3600
        width, height = 800, 600
        wcs = {
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
            "CRPIX1": (width + 1) / 2, "CRPIX2": (height + 1) / 2, "CDELT1": -scale, "CDELT2": scale,
            "CROTA2": angle, "NAXIS1": width, "NAXIS2": height,
        }  # fmt: skip
        meta = {
            "schema": 1, "id": ident, "source": "esahubble", "title": f"Test {i}", "withdrawn": False,
            "center": {"ra_deg": ra, "dec_deg": dec}, "north_angle_deg": angle,
            "fov_arcmin": {"x": width * scale * 60, "y": height * scale * 60},
            "pixel_size": {"width": width, "height": height}, "wcs": wcs,
        }  # fmt: skip
        store.put_json("archive", f"esahubble/{ident}/meta.json", meta)
        ids.append(ident)
    return ids


def test_an_observation_cutout_uses_its_avm_wcs(service, observations, store) -> None:
    got = get(
        service,
        observation=crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id=observations[0]),
        survey="dss2-color",
    )
    assert got.available and got.fits.key == f"dss2-color/esahubble/{observations[0]}.fits"
    header = json.loads(got.wcs_header_json)
    # same centre as the observation; the rotation is the observation's
    centre = WCS(header).pixel_to_world((header["NAXIS1"] - 1) / 2, (header["NAXIS2"] - 1) / 2)
    assert centre.ra.deg == pytest.approx(185.3, abs=1e-4) and centre.dec.deg == pytest.approx(15.2, abs=1e-4)
    with pytest.raises(grpc.RpcError) as err:
        get(
            service,
            observation=crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id="nope0000"),
            survey="dss2-color",
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_batch_over_the_archive_then_nothing_left_to_fetch(service, observations, stack, hips2fits) -> None:
    env = {**os.environ, **stack.env(), "PSS_CUTOUTS_ADDR": service.address}
    command = [
        sys.executable,
        "-m",
        "services.client.cli",
        "cutouts",
        "--source",
        "esahubble",
        "--survey",
        "all",
        "--json",
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    counters = json.loads(done.stdout)["progress"]["counters"]
    assert int(counters.get("fetched", 0)) + int(counters.get("cached", 0)) == 2 * len(observations)
    assert int(counters.get("errors", 0)) == 0
    before = upstream_calls(hips2fits)
    again = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and int(json.loads(again.stdout)["progress"]["counters"]["cached"]) == 4
    assert upstream_calls(hips2fits) == before


def test_metrics(service) -> None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    assert 'prettyspace_cutouts_cache_total{result="hit",survey="dss2-color"}' in text
    assert "prettyspace_cutouts_upstream_requests_total" in text and "prettyspace_cutouts_unavailable_total" in text


def test_a_batch_killed_half_way_resumes_without_fetching_anything_twice(
    stack, tmp_path, settings, store, service, hips2fits
) -> None:
    """kill -9 of a cutouts process in the middle of a batch: another process of the service
    (the module's, with the same settings) resumes the job from its checkpoint; what was stored
    before the kill comes from the cache."""
    ids = []
    for i in range(10):
        ident, ra, dec = f"heic98{i:02d}a", 30.0 + 0.3 * i, 20.0
        meta = {
            "id": ident, "source": "esawebb", "center": {"ra_deg": ra, "dec_deg": dec}, "north_angle_deg": 10.0 * i,
            "fov_arcmin": {"x": 2.0, "y": 1.5}, "pixel_size": {"width": 400, "height": 300}, "wcs": None,
        }  # fmt: skip
        store.put_json("archive", f"esawebb/{ident}/meta.json", meta)
        ids.append(crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAWEBB, image_id=ident))
    hips2fits.delay_s = 0.4
    before = upstream_calls(hips2fits)
    doomed = service_process(stack, ["services", "cutouts"], tmp_path, "cutouts-doomed", **settings).start()
    try:
        with CutoutsClient(doomed.address) as client:
            job = client.stub.StartCutoutBatch(
                cutouts_pb2.StartCutoutBatchRequest(observations=ids, surveys=["dss2-color"], request_id="kill-test")
            )
            while client.jobs.get(job.id).progress.done < 4:
                assert client.jobs.get(job.id).state == common_pb2.JOB_STATE_RUNNING
        doomed.kill()
        stored_at_kill = set(store.list_keys("cutouts", "dss2-color/keys/"))
        with CutoutsClient(service.address) as client:
            final = client.jobs.follow(job.id, timeout_s=300)
    finally:
        doomed.stop()
        hips2fits.delay_s = 0.0
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED and final.attempts == 2
    counters = final.progress.counters
    assert counters["fetched"] + counters.get("cached", 0) == 10 and counters.get("errors", 0) == 0
    # every cutout fetched once, but those in flight at the kill (at most the upstream concurrency)
    assert 10 <= upstream_calls(hips2fits) - before <= 12
    assert len(set(store.list_keys("cutouts", "dss2-color/keys/")) - stored_at_kill) <= 10 - 4
    for key in ids:
        assert store.exists("cutouts", f"dss2-color/esawebb/{key.image_id}.fits")


def test_two_replicas_asking_for_a_new_footprint_at_once_fetch_it_once(
    stack, tmp_path, settings, service, hips2fits
) -> None:
    """The module's service and a second process of the service, asked for the same new
    footprint at the same time: one fetches, the other waits for its record."""
    other = service_process(stack, ["services", "cutouts"], tmp_path, "cutouts-replica-2", **settings).start()
    hips2fits.delay_s = 1.0
    before = upstream_calls(hips2fits)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda proc: get(proc, footprint=footprint(77.0, 7.0), survey="dss2-color"), [service, other])
            )
    finally:
        hips2fits.delay_s = 0.0
        other.stop()
    assert upstream_calls(hips2fits) - before == 1
    assert sorted(a.cached for a in answers) == [False, True]
    assert answers[0].fits.sha256 == answers[1].fits.sha256
