"""The crawler service end to end: a real crawler process (gRPC, real headless Chromium
through Playwright, real S3) crawling the archive replicas of both ESA sites.

The tests of this module run in order on one store, as the crawler lives: a first
crawl that is killed (-9) half-way and resumed, then an unchanged full recrawl, an
unchanged incremental recrawl, a recrawl after the sites changed, bad pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from services.api import common_pb2, crawler_pb2
from services.client.clients import CrawlerClient
from services.crawler.browser import browser_available
from services.universe.replicas.archive import ArchiveReplica
from services.universe.replicas.httpbase import Response
from services.universe.sky import Sky
from tests.support.private_stack import private_stack_fixtures
from tests.support.processes import ServiceProcess, service_process

pytestmark = pytest.mark.skipif(
    not browser_available(), reason="Debian's chromium is not installed (.ci/run installs it)"
)

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "universe"
SOURCES = ("esahubble", "esawebb")
SIZES = ("screen", "large")
SKIPPED_EDGES = {"missing_coordinates", "position_only", "solar_system", "deep_field"}
ENUM = {"esahubble": crawler_pb2.SOURCE_ESAHUBBLE, "esawebb": crawler_pb2.SOURCE_ESAWEBB}
DONE = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


# -- fixtures ---------------------------------------------------------------------------------


stack, store = private_stack_fixtures("crawl")


@pytest.fixture(scope="module")
def replicas():
    # Small served sizes keep the lazily rendered images cheap; the rules are the same.
    sites = {
        s: ArchiveReplica(s, Sky(), CACHE, screen_width=200, large_width=400, slow_page_s=0.5).start() for s in SOURCES
    }
    yield sites
    for site in sites.values():
        site.stop()


@pytest.fixture(scope="module")
def crawler_settings(replicas) -> dict[str, str]:
    return {
        "esahubble_url": replicas["esahubble"].url,
        "esawebb_url": replicas["esawebb"].url,
        "crawl_rate_per_host": "0",
        "crawl_backoff_s": "0.2",
        "crawl_concurrency": "4",
        "crawl_sizes": ",".join(SIZES),
        "log_level": os.environ.get("PSS_TEST_CRAWLER_LOG_LEVEL", "info"),
    }


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crawler-logs")


@pytest.fixture(scope="module")
def crawler(stack, logs, crawler_settings):
    proc = service_process(stack, ["services", "crawler"], logs, "crawler", **crawler_settings).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def truth(replicas) -> dict[str, dict[str, Any]]:
    return {s: replicas[s].truth() for s in SOURCES}


def start(proc: ServiceProcess, **request: Any) -> common_pb2.Job:
    with CrawlerClient(proc.address) as client:
        return client.stub.StartCrawl(crawler_pb2.StartCrawlRequest(**request), timeout=30)


def follow(proc: ServiceProcess, job_id: str, timeout_s: float = 600) -> common_pb2.Job:
    with CrawlerClient(proc.address) as client:
        return client.jobs.follow(job_id, timeout_s=timeout_s)


def crawl(proc: ServiceProcess, **request: Any) -> common_pb2.Job:
    job = follow(proc, start(proc, **request).id)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, (job, proc.log()[-3000:])
    return job


def report(store, source: str, job_id: str) -> dict[str, Any]:
    return store.get_json("crawl-state", f"{source}/runs/{job_id}.json")


def usable(truth_site: dict[str, Any]) -> set[str]:
    return {
        i for i, o in truth_site["observations"].items() if o["listed"] and not SKIPPED_EDGES & set(o["edge_cases"])
    }


def assert_same_sky(header: dict[str, Any], expected: dict[str, Any], tolerance_px: float = 0.05) -> None:
    """Both headers put the same sky on the same pixels (corners and centre)."""
    ours, theirs = WCS(fits.Header(header)), WCS(fits.Header(expected))
    w, h = expected["NAXIS1"], expected["NAXIS2"]
    assert (header["NAXIS1"], header["NAXIS2"]) == (w, h)
    pixels = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 2]], dtype=float)
    sky = theirs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    x, y = ours.world_to_pixel(sky)
    assert np.max(np.hypot(x - pixels[:, 0], y - pixels[:, 1])) < tolerance_px


# -- 1. first crawl, killed half-way and resumed -------------------------------------------------


@pytest.fixture(scope="module")
def first_crawl(stack, logs, crawler_settings, replicas, crawler, store):
    """A full crawl of both sites by a process killed with SIGKILL in the middle of the
    items, finished by the next process (the ``crawler`` fixture's) after the lease."""
    for site in replicas.values():
        site.reset_log()
    doomed = service_process(stack, ["services", "crawler"], logs, "crawler-killed", **crawler_settings).start()
    job = start(doomed, request_id="first-crawl")
    with CrawlerClient(doomed.address) as client:
        deadline = time.monotonic() + 300
        while True:
            current = client.jobs.get(job.id)
            if current.progress.counters.get("images", 0) >= 30:
                break
            assert current.state not in DONE, current
            assert time.monotonic() < deadline, "the crawl made no progress"
            time.sleep(0.2)
    doomed.kill()
    killed_at = current
    stored_at_kill = [k for k in store.list_keys("archive") if k.endswith(".jpg")]
    finished = follow(crawler, job.id)
    assert finished.state == common_pb2.JOB_STATE_SUCCEEDED, (finished, crawler.log()[-3000:])
    requests = sum(len(site.requests) for site in replicas.values())
    return {"job": finished, "killed_at": killed_at, "requests": requests, "stored_at_kill": stored_at_kill}


def test_killed_crawl_resumes_without_losing_or_refetching(first_crawl, replicas, truth, store) -> None:
    job = first_crawl["job"]
    assert job.attempts == 2
    assert 0 < first_crawl["killed_at"].progress.done < job.progress.done
    for source, site in replicas.items():
        image_200s: dict[str, int] = {}
        for r in site.requests:
            if r.path.startswith("/archives/images/") and r.status == 200:
                image_200s[r.path] = image_200s.get(r.path, 0) + 1
        # an image stored before the kill was never downloaded again...
        observations = truth[source]["observations"]
        stored = [k.split("/") for k in first_crawl["stored_at_kill"] if k.startswith(f"{source}/")]
        for _, ident, name in stored:
            path = f"/archives/images/{name.removesuffix('.jpg')}/{observations[ident]['file_name']}.jpg"
            assert image_200s[path] == 1, path
        # ...only the few in flight at the kill (one per concurrent page and size) were fetched twice
        assert sum(n - 1 for n in image_200s.values()) <= 4 * len(SIZES)
        # exactly one record per usable observation, each with its images
        ids = {k.split("/")[1] for k in store.list_keys("archive", f"{source}/") if k.endswith("/meta.json")}
        assert ids == usable(truth[source])
    # counters restored from the checkpoint: nothing counted twice by the second attempt
    expected_new = sum(len(usable(truth[s])) for s in SOURCES)
    assert job.progress.counters["new"] == expected_new
    listed = sum(truth[s]["listing"]["total"] for s in SOURCES)
    assert job.progress.counters["skipped"] == listed - expected_new
    assert job.progress.counters["withdrawn"] == 0


def test_every_observation_is_extracted_as_the_replica_publishes_it(first_crawl, crawler, truth) -> None:
    with CrawlerClient(crawler.address) as client:
        for source in SOURCES:
            listed = list(client.stub.ListObservations(crawler_pb2.ListObservationsRequest(sources=[ENUM[source]])))
            assert sorted(o.key.image_id for o in listed) == sorted(usable(truth[source]))
            for obs in listed:
                t = truth[source]["observations"][obs.key.image_id]
                assert obs.title == t["title"] and obs.credit == t["credit"]
                assert obs.page_url.endswith(t["page"]["path"])
                assert obs.license == "CC BY 4.0"
                assert obs.constellation == t["constellation"]
                assert obs.release_date.ToDatetime().isoformat() == t["release_date"]
                assert (obs.pixel_size.width, obs.pixel_size.height) == tuple(t["declared_size"])
                assert obs.category.split(" : ")[0] in {"Local Universe", "Milky Way", "Unspecified"}
                if t["avm_quality"] == "Full":  # the AVM's exact numbers
                    # the centre of the pixel grid (not CRVAL, which may sit off-centre)
                    w, h = t["wcs"]["NAXIS1"], t["wcs"]["NAXIS2"]
                    centre = WCS(fits.Header(t["wcs"])).pixel_to_world((w - 1) / 2, (h - 1) / 2)
                    assert obs.footprint.center.ra_deg == pytest.approx(centre.ra.deg, abs=1e-6)
                    assert obs.footprint.center.dec_deg == pytest.approx(centre.dec.deg, abs=1e-6)
                    assert obs.footprint.north_angle_deg == pytest.approx(t["wcs"]["CROTA2"], abs=1e-3)
                    scale_arcmin = abs(t["wcs"]["CDELT1"]) * 60
                    assert obs.footprint.fov_x_arcmin == pytest.approx(scale_arcmin * t["wcs"]["NAXIS1"], rel=1e-4)
                    assert obs.footprint.fov_y_arcmin == pytest.approx(scale_arcmin * t["wcs"]["NAXIS2"], rel=1e-4)
                    assert obs.value_sources["center"] == "avm"
                    assert json.loads(obs.footprint.wcs_header_json)["CTYPE1"].startswith("RA---TAN")
                else:  # no AVM: the page labels, to their rounding
                    assert obs.value_sources["center"] == "labels"
                    assert obs.footprint.center.ra_deg == pytest.approx(t["label_wcs"]["CRVAL1"], abs=1e-3)
                for size in SIZES:
                    if t["served"][size]["status"] != 200:
                        assert size not in obs.images
                        continue
                    ref = obs.images[size]
                    assert ref.bucket == "archive" and ref.key == f"{source}/{obs.key.image_id}/{size}.jpg"
                    assert len(ref.sha256) == 64 and ref.size > 0


def test_stored_images_carry_the_wcs_of_their_own_size(first_crawl, store, truth) -> None:
    checked = 0
    for source in SOURCES:
        for ident in sorted(usable(truth[source])):
            t = truth[source]["observations"][ident]
            meta = store.get_json("archive", f"{source}/{ident}/meta.json")
            for size, entry in meta["images"].items():
                served = t["served"][size]
                assert (entry["width"], entry["height"]) == tuple(served["size"])
                assert store.stat("archive", entry["key"]).sha256 == entry["sha256"]
                if t["wcs"] is not None:
                    # exact from an AVM; from the rounded page labels (no AVM) to a few pixels
                    labels_only = entry["wcs_source"] == "labels"
                    assert labels_only == (not t["avm_quality"]), (ident, entry["wcs_source"])
                    assert_same_sky(entry["wcs"], served["wcs"], 0.01 * entry["width"] if labels_only else 0.05)
                    checked += 1
                    if served["embedded_avm"] in ("served", "declared") and not labels_only:
                        assert entry["embedded_avm_offset_px"] < 0.05, (ident, size)  # the file's AVM agrees
    assert checked > 150
    # the edge case whose embedded AVM describes the original, not the file, still lines up
    mismatch = truth["esahubble"]["edge_cases"]["avm_reference_dimension_mismatch"][0]
    meta = store.get_json("archive", f"esahubble/{mismatch}/meta.json")
    assert_same_sky(
        meta["images"]["screen"]["wcs"], truth["esahubble"]["observations"][mismatch]["served"]["screen"]["wcs"]
    )


def test_skips_and_errors_are_recorded_with_reasons_and_urls(first_crawl, store, truth) -> None:
    for source in SOURCES:
        state = store.get_json("crawl-state", f"{source}/state.json")
        skipped = {i: item["skip_reason"] for i, item in state["items"].items() if item["status"] == "skipped"}
        t = truth[source]
        expected = {i for i, o in t["observations"].items() if o["listed"] and SKIPPED_EDGES & set(o["edge_cases"])}
        assert set(skipped) == expected
        for edge, needle in (
            ("missing_coordinates", "coordinates"),
            ("position_only", "field of view"),
            ("solar_system", "Solar System"),
            ("deep_field", "Early Universe"),
        ):
            for ident in t["edge_cases"].get(edge, []):
                if t["observations"][ident]["listed"]:
                    assert needle.lower() in skipped[ident].lower(), (ident, skipped[ident])
        # the image that 404s is an error with its URL, and the crawl went on
        run = report(store, source, first_crawl["job"].id)
        broken = t["edge_cases"]["image_404"][0]
        urls = {e["url"] for e in run["errors"] if e["kind"] == "http_404"}
        assert t["observations"][broken]["served"]["screen"]["url"] in urls
        # the malformed page was still read (a browser copes with it)
        malformed = t["edge_cases"]["malformed_html"][0]
        meta = store.get_json("archive", f"{source}/{malformed}/meta.json")
        assert meta["constellation"] == t["observations"][malformed]["constellation"]


def test_429_with_retry_after_is_waited_out(first_crawl, replicas, truth) -> None:
    for source, site in replicas.items():
        for path in (
            truth[source]["listing"]["throttled_first_request"],
            truth[source]["observations"][truth[source]["edge_cases"]["throttled_429"][0]]["page"]["path"],
        ):
            answers = [(r.time, r.status) for r in site.requests if r.path == path]
            assert answers[0][1] == 429 and answers[1][1] == 200, answers
            assert answers[1][0] - answers[0][0] >= truth[source]["retry_after_s"] - 0.05


def test_robots_txt_is_fetched_and_obeyed(first_crawl, replicas) -> None:
    for site in replicas.values():
        assert site.count(r"^/robots\.txt$") >= 1
        for disallowed in ("/admin/", "/media/archives/images/original/", "/_replica/"):
            assert site.count("^" + disallowed) == 0
        assert all("PrettierSpaceSurvey" in r.headers.get("user-agent", "") for r in site.requests)


# -- 2. recrawls ------------------------------------------------------------------------------------


def test_unchanged_full_recrawl_downloads_no_image_and_reextracts_nothing(first_crawl, crawler, replicas, store, truth):
    for site in replicas.values():
        site.reset_log()
    meta_before = {s: store.stat("archive", f"{s}/{sorted(usable(truth[s]))[0]}/meta.json") for s in SOURCES}
    job = crawl(crawler)
    for source, site in replicas.items():
        assert site.count(r"^/archives/images/", status=200) == 0
        detail_200 = [
            r.path for r in site.requests if r.status == 200 and r.path.count("/") == 3 and "/archive" not in r.path
        ]
        assert detail_200 == [], detail_200  # every detail page and JSON answered 304
        run = report(store, source, job.id)
        assert run["outcomes"]["unchanged"] == len(usable(truth[source]))
        assert run["outcomes"]["new"] == run["outcomes"]["changed"] == run["outcomes"]["withdrawn"] == 0
        # meta.json not rewritten
        assert store.stat("archive", meta_before[source].key).etag == meta_before[source].etag
    assert job.progress.counters.get("images", 0) == 0


def test_unchanged_incremental_recrawl_costs_a_few_requests(first_crawl, crawler, replicas, store, truth):
    for site in replicas.values():
        site.reset_log()
    job = crawl(crawler, incremental=True)
    requests = sum(len(site.requests) for site in replicas.values())
    assert requests <= 0.05 * first_crawl["requests"], (requests, first_crawl["requests"])
    for source, site in replicas.items():
        assert site.count(r"^/archives/images/") == 0
        assert site.count(r"^/images/(?!d2d/|archive/)[A-Za-z0-9_-]+/") == 0  # no detail page, no JSON
        run = report(store, source, job.id)
        assert run["outcomes"]["unchanged"] == len(usable(truth[source]))


def test_incremental_recrawl_reports_exactly_what_the_sites_changed(first_crawl, crawler, replicas, store):
    changes = {s: replicas[s].set_generation(1) for s in SOURCES}
    for site in replicas.values():
        site.reset_log()
    job = crawl(crawler, incremental=True)
    for source, site in replicas.items():
        run = report(store, source, job.id)
        c = changes[source]
        assert sorted(run["changes"]["new"]) == sorted(c.added)
        assert sorted(run["changes"]["withdrawn"]) == sorted(c.withdrawn)
        assert sorted(run["changes"]["changed"]) == sorted(c.modified)
        for ident in c.withdrawn:  # marked, never deleted
            meta = store.get_json("archive", f"{source}/{ident}/meta.json")
            assert meta["withdrawn"] is True and meta["withdrawn_at"]
            assert store.exists("archive", f"{source}/{ident}/screen.jpg")
        for ident, what in c.modified.items():
            meta = store.get_json("archive", f"{source}/{ident}/meta.json")
            if "image" in what:  # new pixels: every size fetched again
                assert site.count(rf"^/archives/images/[a-z]+/{ident}\.jpg$", status=200) == len(SIZES)
            for entry in meta["images"].values():  # what is stored is what is served now
                served = urllib.request.urlopen(entry["url"], timeout=30).read()
                assert (
                    hashlib.sha256(served).hexdigest() == entry["sha256"] == store.stat("archive", entry["key"]).sha256
                )
            if "title" in what:
                assert meta["title"].endswith("(reprocessed)")
    with CrawlerClient(crawler.address) as client:
        gone = changes["esahubble"].withdrawn[0]
        default = {o.key.image_id for o in client.stub.ListObservations(crawler_pb2.ListObservationsRequest())}
        everything = {
            o.key.image_id
            for o in client.stub.ListObservations(crawler_pb2.ListObservationsRequest(include_withdrawn=True))
        }
        assert gone not in default and gone in everything


def test_bad_pages_are_recorded_and_the_crawl_goes_on(first_crawl, crawler, replicas, store, truth):
    site, t = replicas["esawebb"], truth["esawebb"]
    plain = [i for i in sorted(usable(t)) if not t["observations"][i]["edge_cases"]]
    latin1, missing, broken_json = plain[:3]
    site.set_fault(
        f"/images/{latin1}/",
        Response(200, "<h1>Caf\xe9</h1>".encode("latin-1"), content_type="text/html; charset=utf-8"),
    )
    site.set_fault(f"/images/{missing}/", Response(404, b"<h1>gone</h1>", content_type="text/html"))
    site.set_fault(f"/images/{broken_json}/api/json/", Response(200, b"{not json", content_type="application/json"))
    try:
        job = crawl(crawler, sources=[crawler_pb2.SOURCE_ESAWEBB])  # full: every item is revisited
    finally:
        for ident in (latin1, missing):
            site.set_fault(f"/images/{ident}/", None)
        site.set_fault(f"/images/{broken_json}/api/json/", None)
    run = report(store, "esawebb", job.id)
    kinds = {(e["url"].removeprefix(site.url), e["kind"]) for e in run["errors"]}
    assert (f"/images/{latin1}/", "decode") in kinds
    assert (f"/images/{missing}/", "http_404") in kinds
    assert (f"/images/{broken_json}/api/json/", "parse") in kinds
    assert run["outcomes"]["unchanged"] >= len(usable(t)) - 10  # the rest of the site was crawled
    # what was stored before is kept, not degraded by a page that could not be read
    for ident in (latin1, broken_json):
        meta = store.get_json("archive", f"esawebb/{ident}/meta.json")
        assert meta["constellation"] == t["observations"][ident]["constellation"]
        assert meta["title"] == t["observations"][ident]["title"]
    assert set(run["changes"]["new"]) == set(run["changes"]["changed"]) == set()


class ShiftingReplica(ArchiveReplica):
    """Publishes its next generation while the crawler is between listing pages 1 and 2."""

    shift_to: int | None = None

    def _listing(self, request):  # type: ignore[no-untyped-def]
        if self.shift_to is not None and request.path.startswith("/images/archive/search/page/2/"):
            self.set_generation(self.shift_to)
            self.shift_to = None
        return super()._listing(request)


def test_a_listing_that_changes_during_the_walk_is_walked_again(first_crawl, stack, logs, crawler_settings, store):
    # The store holds esahubble at generation 1 (the recrawl above); this copy of the site
    # starts there and publishes generation 2 half-way through the listing.
    site = ShiftingReplica("esahubble", Sky(), CACHE, 1, screen_width=200, large_width=400, slow_page_s=0.5).start()
    before = site.set_generation(1)
    site.shift_to = 2
    settings = {**crawler_settings, "esahubble_url": site.url}
    proc = service_process(stack, ["services", "crawler"], logs, "crawler-shift", **settings)
    try:
        proc.start()
        job = crawl(proc, sources=[crawler_pb2.SOURCE_ESAHUBBLE])
        after = site.set_generation(2)
        run = report(store, "esahubble", job.id)
        assert site.generation == 2 and run["listing_complete"]
        assert site.count(r"^/images/archive/search/$") == 2  # page 1 was read again after the shift
        assert sorted(run["changes"]["new"]) == sorted(set(after.added) - set(before.added))
        assert sorted(run["changes"]["withdrawn"]) == sorted(set(after.withdrawn) - set(before.withdrawn))
        state = store.get_json("crawl-state", "esahubble/state.json")
        active = {i for i, item in state["items"].items() if item["status"] == "active"}
        skipped = {i for i, item in state["items"].items() if item["status"] == "skipped"}
        assert active == usable(site.truth()) and not active & skipped
    finally:
        proc.stop()
        site.stop()


# -- 3. API, CLI, metrics -----------------------------------------------------------------------------


def test_api_errors_are_clear(crawler) -> None:
    with CrawlerClient(crawler.address) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.GetObservation(
                crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id="nope0000")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope0000" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.stub.GetObservation(crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id="../x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            client.stub.GetObservation(crawler_pb2.ObservationKey(image_id="heic0000a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "source" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.stub.StartCrawl(crawler_pb2.StartCrawlRequest(sources=[7]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_one_crawl_per_source_at_a_time(first_crawl, crawler) -> None:
    job = start(crawler, sources=[crawler_pb2.SOURCE_ESAHUBBLE])
    with CrawlerClient(crawler.address) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.StartCrawl(crawler_pb2.StartCrawlRequest(sources=[crawler_pb2.SOURCE_ESAHUBBLE]))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and job.id in err.value.details()
    assert follow(crawler, job.id).state == common_pb2.JOB_STATE_SUCCEEDED


def test_list_filters(first_crawl, crawler, truth) -> None:
    with CrawlerClient(crawler.address) as client:
        milky = list(client.stub.ListObservations(crawler_pb2.ListObservationsRequest(category_prefix="milky way")))
        assert milky and all(o.category.startswith("Milky Way") for o in milky)
        request = crawler_pb2.ListObservationsRequest(sources=[crawler_pb2.SOURCE_ESAWEBB])
        request.released_after.FromJsonString("2024-01-01T00:00:00Z")
        recent = list(client.stub.ListObservations(request))
        assert recent and all(o.release_date.ToJsonString() >= "2024" for o in recent)
        assert all(o.key.source == crawler_pb2.SOURCE_ESAWEBB for o in recent)


def test_cli_crawl_with_progress(first_crawl, crawler, stack) -> None:
    env = {**os.environ, **stack.env(), "PSS_CRAWLER_ADDR": crawler.address}
    done = subprocess.run(
        [sys.executable, "-m", "services.client.cli", "crawl", "--source", "esawebb", "--incremental"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unchanged" in done.stdout


def test_metrics_count_the_crawl(first_crawl, crawler) -> None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{crawler.metrics_port}/metrics", timeout=5).read().decode()
    assert 'prettyspace_crawler_items_total{outcome="unchanged",source="esahubble"}' in text
    assert "prettyspace_crawler_requests_total" in text and "prettyspace_crawler_crawl_duration_seconds" in text


def test_a_crawler_without_chromium_refuses_crawls_clearly(stack, logs, crawler_settings) -> None:
    settings = {**crawler_settings, "chromium_path": "/nonexistent/chromium"}
    proc = service_process(stack, ["services", "crawler"], logs, "crawler-nochromium", **settings).start()
    try:
        with CrawlerClient(proc.address) as client, pytest.raises(grpc.RpcError) as err:
            client.stub.StartCrawl(crawler_pb2.StartCrawlRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PSS_CHROMIUM_PATH" in err.value.details() and "chromium" in err.value.details()
    finally:
        proc.stop()
