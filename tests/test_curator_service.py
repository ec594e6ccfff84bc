"""The curator end to end: real curator and cutouts service processes, real S3, the hips2fits
stand-in. The archive holds observations as the crawler stores them (meta.json + image),
rendered from the local universe with known defects: a clean field, a masked one, one mostly
missing, a grey one, one whose AVM is a few pixels off, one far off, one too small, and one
that gets blacklisted. Each gets the verdict its defect calls for; datasets built from them
are deterministic, leak-free, immutable, free of blacklisted ids and survive a kill."""

from __future__ import annotations

import io
import json
import math
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
from PIL import Image

from services.api import common_pb2, crawler_pb2, curator_pb2
from services.client.clients import CuratorClient
from services.curator import alignment, evalset_alignment, export_pairs, verdicts
from services.curator.evaluation import decode_image
from services.cutouts.geometry import header_wcs
from services.universe.render import OutreachDefects, render_outreach, tan_wcs
from services.universe.replicas.hips2fits import Hips2FitsReplica
from services.universe.sky import Sky
from tests.support.private_stack import private_stack_fixtures
from tests.support.processes import ServiceProcess, service_process

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.4  # arcsec per outreach pixel: DSS2's 0.805"/px is ~2x coarser
SIZE = (512, 384)  # (width, height)
DSS_PX_IN_OUTREACH_PX = 0.805 / SCALE

stack, store = private_stack_fixtures("curator")

# id -> (ra, dec, north angle, what is wrong); all fields star-rich, south of SDSS's footprint.
CASES: dict[str, tuple[float, float, float, str]] = {
    "heic9001a": (270.9, -24.4, 15.0, "clean"),
    "heic9002a": (280.0, -60.0, -30.0, "box"),
    "heic9003a": (271.6, -23.0, 0.0, "mostly-missing"),
    "heic9004a": (272.4, -25.3, 40.0, "grey"),
    "heic9005a": (269.8, -26.0, -20.0, "offset-small"),
    "heic9006a": (273.1, -22.2, 10.0, "offset-large"),
    "heic9007a": (268.9, -27.5, 0.0, "too-small"),
    "heic9008a": (274.0, -28.0, 5.0, "clean"),
}
SMALL_OFFSET_OUTREACH_PX = (8.0, -5.0)  # ~4 and ~2.5 DSS px
LARGE_OFFSET_OUTREACH_PX = (90.0, 40.0)  # ~49 DSS px


def _header(wcs, width: int, height: int) -> dict[str, Any]:
    header = {k: v for k, v in wcs.to_header().items() if isinstance(v, int | float | str)}
    header.update(NAXIS1=width, NAXIS2=height)
    return header


def _observation(store, image_id: str, ra: float, dec: float, angle: float, kind: str) -> None:
    """meta.json and screen.jpg as the crawler writes them: the image drawn on its true WCS,
    the meta.json's WCS the AVM's (off by a known amount for the offset cases)."""
    width, height = (48, 36) if kind == "too-small" else SIZE
    wcs = tan_wcs(ra, dec, SCALE, (height, width), angle)
    defects = None
    if kind == "box":
        defects = OutreachDefects(boxes=((20, 30, 170, 150),))  # ~11% of the image
    elif kind == "mostly-missing":
        defects = OutreachDefects(boxes=((0, 0, 340, 384),))  # ~66%
    image = render_outreach(Sky(), wcs, (height, width), "hubble", defects)
    if kind == "grey":
        image = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    claimed = wcs.deepcopy()
    shift = {"offset-small": SMALL_OFFSET_OUTREACH_PX, "offset-large": LARGE_OFFSET_OUTREACH_PX}.get(kind)
    if shift:
        claimed.wcs.crpix = np.asarray(claimed.wcs.crpix) + np.asarray(shift)
        claimed.wcs.set()
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[::-1])).save(out, format="JPEG", quality=95)
    body = out.getvalue()
    key = f"esahubble/{image_id}/screen.jpg"
    info = store.put_bytes("archive", key, body, "image/jpeg")
    header = _header(claimed, width, height)
    meta = {
        "schema": 1, "id": image_id, "source": "esahubble", "title": f"Test field {image_id}",
        "withdrawn": False, "content_hash": f"test-{image_id}-{kind}",
        "credit": f"ESA/Hubble & NASA, test credit {image_id}", "category": "Local Universe : Star : Field",
        "center": {"ra_deg": ra, "dec_deg": dec}, "north_angle_deg": angle,
        "fov_arcmin": {"x": width * SCALE / 60, "y": height * SCALE / 60},
        "pixel_size": {"width": width, "height": height}, "wcs": header,
        "images": {"screen": {
            "key": key, "width": width, "height": height, "sha256": info.sha256, "wcs": header,
        }},
    }  # fmt: skip
    store.put_json("archive", f"esahubble/{image_id}/meta.json", meta)


@pytest.fixture(scope="module")
def archive(store) -> dict[str, str]:
    for image_id, (ra, dec, angle, kind) in CASES.items():
        _observation(store, image_id, ra, dec, angle, kind)
    return {image_id: case[3] for image_id, case in CASES.items()}


@pytest.fixture(scope="module")
def hips2fits():
    replica = Hips2FitsReplica(Sky()).start()
    yield replica
    replica.stop()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("curator-logs")


@pytest.fixture(scope="module")
def cutouts(stack, logs, hips2fits):
    proc = service_process(
        stack, ["services", "cutouts"], logs, "cutouts", hips2fits_url=hips2fits.endpoint, upstream_rate_per_s="0"
    )
    proc.start()
    yield proc
    proc.stop()


def curator_process(stack, logs: Path, cutouts: ServiceProcess, name: str = "curator") -> ServiceProcess:
    return service_process(stack, ["services", "curator"], logs, name, cutouts_addr=cutouts.address)


@pytest.fixture(scope="module")
def curator(stack, logs, cutouts):
    proc = curator_process(stack, logs, cutouts).start()
    yield proc
    proc.stop()


def follow(proc: ServiceProcess, job: common_pb2.Job, timeout_s: float = 600) -> common_pb2.Job:
    with CuratorClient(proc.address) as client:
        done = client.jobs.follow(job.id, timeout_s=timeout_s)
    assert done.state == common_pb2.JOB_STATE_SUCCEEDED, (done, proc.log()[-4000:])
    return done


def key(image_id: str) -> crawler_pb2.ObservationKey:
    return crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id=image_id)


def verdict(proc: ServiceProcess, image_id: str, survey: str = "dss2-color") -> curator_pb2.Verdict:
    with CuratorClient(proc.address) as client:
        return client.stub.GetVerdict(curator_pb2.PairKey(observation=key(image_id), survey=survey), timeout=30)


@pytest.fixture(scope="module")
def evaluated(curator, archive) -> common_pb2.Job:
    with CuratorClient(curator.address) as client:
        job = client.stub.StartEvaluation(curator_pb2.StartEvaluationRequest(), timeout=30)
    return follow(curator, job)


# -- verdicts ------------------------------------------------------------------------------------------


def test_every_pair_is_evaluated_and_counted(curator, evaluated) -> None:
    counters = dict(evaluated.progress.counters)
    assert counters["evaluated"] == 2 * len(CASES)
    assert counters.get("errors", 0) == 0
    assert counters["usable"] + counters["rejected"] == counters["evaluated"]
    with urllib.request.urlopen(f"http://127.0.0.1:{curator.metrics_port}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    by_reason: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("prettyspace_curator_pairs_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            by_reason[reason] = by_reason.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    # counted by the first reason: the image's own checks come first (the grey image's two pairs,
    # the mostly-missing one's SDSS pair), then the survey's (the other six SDSS pairs)
    assert (by_reason["grey"], by_reason["missing-data"], by_reason["survey-unavailable"]) == (2, 2, 6), by_reason
    assert sum(by_reason.values()) == 2 * len(CASES)
    assert "prettyspace_curator_pairs_per_second " in metrics


def test_a_clean_pair_is_usable_and_untouched(curator, evaluated) -> None:
    v = verdict(curator, "heic9001a")
    assert v.usable, v.reasons
    assert v.alignment.method and not v.alignment.corrected
    assert math.hypot(v.alignment.dx_px, v.alignment.dy_px) < 0.5
    assert not v.mask.key and not v.outreach_mask.key
    assert v.cutout.key == "dss2-color/esahubble/heic9001a.fits"


def test_sdss_outside_its_footprint_is_rejected_with_the_reason(curator, evaluated) -> None:
    v = verdict(curator, "heic9001a", "sdss9-color")
    assert not v.usable
    assert v.reasons[0].startswith("survey-unavailable:") and "footprint" in v.reasons[0]


def test_missing_data_is_masked_on_both_sides_when_enough_remains(curator, evaluated, store) -> None:
    v = verdict(curator, "heic9002a")
    assert v.usable, v.reasons
    assert any(r.startswith("masked:") for r in v.reasons)
    outreach = verdicts.mask_from_png(store.get_bytes(v.outreach_mask.bucket, v.outreach_mask.key))
    assert outreach.shape == (SIZE[1], SIZE[0])
    # the box (x 20..170, y 30..150, FITS orientation) is invalid (but for a few JPEG ringing
    # pixels next to bright stars), the far corner valid
    assert outreach[40:140, 30:160].mean() < 0.002 and outreach[300:, 300:].all()
    assert 0.85 < outreach.mean() < 0.92
    survey = verdicts.mask_from_png(store.get_bytes(v.mask.bucket, v.mask.key))
    with fits.open(io.BytesIO(store.get_bytes(v.cutout.bucket, v.cutout.key))) as hdul:
        assert survey.shape == hdul[0].data.shape[1:]
    assert 0.8 < survey.mean() < 0.92  # the box, seen on the survey grid, a little wider


def test_mostly_missing_grey_too_small_and_far_off_pairs_are_rejected(curator, evaluated) -> None:
    expected = {
        "heic9003a": "missing-data",
        "heic9004a": "grey",
        "heic9007a": "too-small",
        "heic9006a": "misalignment",
    }
    for image_id, code in expected.items():
        v = verdict(curator, image_id)
        assert not v.usable, (image_id, v.reasons)
        assert any(r.startswith(f"{code}:") for r in v.reasons), (image_id, v.reasons)


def test_a_small_misalignment_is_measured_corrected_and_checked(curator, evaluated, store) -> None:
    v = verdict(curator, "heic9005a")
    assert v.usable, v.reasons
    assert v.alignment.corrected and any(r.startswith("corrected:") for r in v.reasons)
    # The AVM puts the sky SMALL_OFFSET outreach px off: the survey shows it moved the other way.
    expected = -np.asarray(SMALL_OFFSET_OUTREACH_PX) / DSS_PX_IN_OUTREACH_PX
    measured = np.array([v.alignment.dx_px, v.alignment.dy_px])
    assert np.hypot(*measured) == pytest.approx(np.hypot(*expected), abs=0.3)
    assert v.scores["residual_px"] <= 0.3
    # the corrected cutout is a new one, stored by the cutouts service, and lines up with the image
    assert v.cutout.key.startswith("dss2-color/footprints/")
    document = store.get_json("curation", "verdicts/esahubble/heic9005a.json")
    pair = document["pairs"]["dss2-color"]
    with fits.open(io.BytesIO(store.get_bytes(v.cutout.bucket, v.cutout.key))) as hdul:
        cube = np.asarray(hdul[0].data, dtype=np.float32)
    image = decode_image(store.get_bytes("archive", "esahubble/heic9005a/screen.jpg"))
    outreach_wcs, _ = header_wcs(document["outreach"]["image"]["wcs"], 0, 0)
    pairing_wcs, _ = header_wcs(pair["cutout"]["wcs"], 0, 0)
    again = alignment.measure_alignment(image, outreach_wcs, cube, pairing_wcs)
    assert again.solved and math.hypot(again.dx, again.dy) < 0.3, again


def test_an_unchanged_pair_is_not_evaluated_again_unless_asked(curator, evaluated) -> None:
    with CuratorClient(curator.address) as client:
        job = client.stub.StartEvaluation(curator_pb2.StartEvaluationRequest(), timeout=30)
        again = follow(curator, job)
        assert dict(again.progress.counters).get("evaluated", 0) == 0
        assert dict(again.progress.counters)["skipped"] == len(CASES)
        pair = curator_pb2.PairKey(observation=key("heic9001a"), survey="dss2-color")
        job = client.stub.StartEvaluation(curator_pb2.StartEvaluationRequest(pairs=[pair], reevaluate=True))
        forced = follow(curator, job)
    assert dict(forced.progress.counters)["evaluated"] == 1


def test_a_killed_evaluation_resumes_where_it_stopped(stack, logs, cutouts, curator, evaluated, store) -> None:
    def stamps() -> dict[str, str]:
        return {
            image_id: store.get_json("curation", f"verdicts/esahubble/{image_id}.json")["pairs"]["dss2-color"][
                "evaluated"
            ]
            for image_id in CASES
        }

    old = stamps()
    time.sleep(1.1)  # the stamps have a resolution of one second
    victim = curator_process(stack, logs, cutouts, "curator-eval-victim").start()
    curator.stop()  # only the victim may take the job, until it is killed
    try:
        with CuratorClient(victim.address) as client:
            job = client.stub.StartEvaluation(curator_pb2.StartEvaluationRequest(reevaluate=True), timeout=30)
            for update in client.jobs.watch(job.id, timeout_s=300):
                if update.progress.done >= 4:  # one chunk (2 workers x 2) done and checkpointed
                    break
        victim.kill()
        at_kill = stamps()
    finally:
        victim.stop()
        curator.start()
    done = follow(curator, job)
    assert done.attempts >= 2
    assert dict(done.progress.counters)["evaluated"] == 2 * len(CASES)  # none counted twice
    first = sorted(CASES)[: update.progress.done]
    after = stamps()
    for image_id in first:  # evaluated before the kill, and not again after it
        assert at_kill[image_id] != old[image_id] and after[image_id] == at_kill[image_id], image_id
    for image_id in sorted(CASES)[update.progress.done :]:  # the rest (in flight or not): by the resumed job
        assert after[image_id] != at_kill[image_id], image_id


def test_evaluated_pairs_export_for_study(curator, evaluated, store, tmp_path) -> None:
    written = export_pairs.export(store, tmp_path, ("dss2-color",))
    assert sorted(p.name for p in written) == [f"esahubble__{i}__dss2-color.npz" for i in sorted(CASES)]
    outreach, o_wcs, survey, s_wcs = evalset_alignment.load_real_pair(tmp_path / "esahubble__heic9005a__dss2-color.npz")
    assert outreach.shape == (SIZE[1], SIZE[0], 3) and survey.shape[0] == 3
    found = alignment.measure_alignment(outreach, o_wcs, survey, s_wcs)  # the corrected pixels, paired
    assert found.solved and math.hypot(found.dx, found.dy) < 0.3


def test_bad_requests_get_clear_statuses(curator, evaluated) -> None:
    pb = curator_pb2
    unknown = key("heic0000z")
    cases = [
        ("GetVerdict", pb.PairKey(observation=key("heic9001a"), survey="dss9"), "INVALID_ARGUMENT", "survey"),
        ("GetVerdict", pb.PairKey(observation=unknown, survey="dss2-color"), "NOT_FOUND", "evaluate"),
        ("GetVerdict", pb.PairKey(survey="dss2-color"), "INVALID_ARGUMENT", "observation"),
        (
            "StartEvaluation",
            pb.StartEvaluationRequest(pairs=[pb.PairKey(observation=unknown)]),
            "NOT_FOUND",
            "crawl it first",
        ),
        ("StartDatasetBuild", pb.StartDatasetBuildRequest(name="Bad Name!"), "INVALID_ARGUMENT", "name"),
        (
            "StartDatasetBuild",
            pb.StartDatasetBuildRequest(name="ok", validation_fraction=0.6, test_fraction=0.5),
            "INVALID_ARGUMENT",
            "nothing to train",
        ),
        ("StartDatasetBuild", pb.StartDatasetBuildRequest(name="ok", surveys=["nope"]), "INVALID_ARGUMENT", "survey"),
        ("GetDataset", pb.DatasetRef(name="never-built"), "NOT_FOUND", "build it first"),
        ("GetDataset", pb.DatasetRef(name="stars", version="latest"), "INVALID_ARGUMENT", "version"),
    ]
    with CuratorClient(curator.address) as client:
        for method, request, code, words in cases:
            with pytest.raises(grpc.RpcError) as err:
                getattr(client.stub, method)(request, timeout=30)
            assert err.value.code().name == code, (method, err.value.details())
            assert words in err.value.details(), (method, err.value.details())


# -- datasets ------------------------------------------------------------------------------------------


def build(proc: ServiceProcess, name: str, **request: Any) -> common_pb2.Job:
    request = {"validation_fraction": 0.3, "test_fraction": 0.3, "seed": 7} | request
    with CuratorClient(proc.address) as client:
        job = client.stub.StartDatasetBuild(curator_pb2.StartDatasetBuildRequest(name=name, **request), timeout=30)
    return follow(proc, job)


def manifest(store, name: str, version: str) -> list[dict[str, Any]]:
    data = store.get_bytes("datasets", f"{name}/{version}/manifest.jsonl")
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def blacklisted(curator, evaluated) -> str:
    with CuratorClient(curator.address) as client:
        entry = curator_pb2.BlacklistEntry(observation=key("heic9008a"), reason="misaligned by hand (test)")
        client.stub.SetBlacklistEntry(entry, timeout=30)
    return "heic9008a"


def test_a_dataset_holds_the_usable_pairs_with_references_splits_tiles_and_credits(curator, blacklisted, store) -> None:
    job = build(curator, "stars")
    assert job.result["version"] == "v1"
    lines = manifest(store, "stars", "v1")
    pairs = {line["pair"] for line in lines}
    assert pairs == {f"esahubble/{i}@dss2-color" for i in ("heic9001a", "heic9002a", "heic9005a")}
    for line in lines:
        obj = line["outreach"]
        assert store.stat(obj["bucket"], obj["key"]).sha256 == obj["sha256"]
        cut = line["survey_cutout"]
        assert store.stat(cut["bucket"], cut["key"]).sha256 == cut["sha256"]
        assert line["credit"].startswith("ESA/Hubble") and "Digitized Sky Survey" in line["survey_credit"]
        assert line["split"] in ("train", "validation", "test") and line["healpix"]["cells"]
    masked = next(line for line in lines if line["image_id"] == "heic9002a")
    assert masked["outreach_mask"] and masked["survey_mask"]
    corrected = next(line for line in lines if line["image_id"] == "heic9005a")
    assert corrected["survey_cutout"]["corrected"]
    tiles = [json.loads(t) for t in store.get_bytes("datasets", "stars/v1/tiles.jsonl").decode().splitlines()]
    assert [t["pair"] for t in tiles] == [line["pair"] for line in lines]
    assert all(t["corners"] for t in tiles)
    masked_tiles = next(t for t in tiles if t["pair"].startswith("esahubble/heic9002a"))
    clean_tiles = next(t for t in tiles if t["pair"].startswith("esahubble/heic9001a"))
    assert len(masked_tiles["corners"]) < len(clean_tiles["corners"])  # no crop over the box
    credits = store.get_json("datasets", "stars/v1/credits.json")
    assert len(credits["images"]) == 3 and all(c["licence"] == "CC BY 4.0" for c in credits["images"])
    summary = store.get_json("datasets", "stars/v1/summary.json")
    assert summary["pairs"] == 3 and summary["rejected"]["blacklisted"] == 2  # with DSS2 and SDSS9
    assert {"missing-data", "grey", "too-small", "misalignment", "survey-unavailable"} <= set(summary["rejected"])
    for plot in ("category_balance", "distributions", "sky_map", "rejections"):
        png = Image.open(io.BytesIO(store.get_bytes("datasets", f"stars/v1/plots/{plot}.png")))
        assert png.size[0] > 300


def test_no_healpix_cell_is_in_two_splits(curator, blacklisted, store) -> None:
    build(curator, "stars")
    cells: dict[int, str] = {}
    for line in manifest(store, "stars", "v1"):
        for cell in line["healpix"]["cells"]:
            assert cells.setdefault(cell, line["split"]) == line["split"]


def test_a_blacklisted_id_never_enters_and_published_versions_never_change(curator, blacklisted, store) -> None:
    build(curator, "stars")
    v1 = store.stat("datasets", "stars/v1/manifest.jsonl").sha256
    assert not any("heic9008a" in line["pair"] for line in manifest(store, "stars", "v1"))
    again = build(curator, "stars")  # nothing changed: the same version back
    assert again.result["version"] == "v1" and again.result["new"] == "0"
    with CuratorClient(curator.address) as client:
        client.stub.RemoveBlacklistEntry(key("heic9008a"), timeout=30)
        try:
            v2 = build(curator, "stars")
        finally:
            entry = curator_pb2.BlacklistEntry(observation=key("heic9008a"), reason="misaligned by hand (test)")
            client.stub.SetBlacklistEntry(entry, timeout=30)
        assert v2.result["version"] == "v2"
        shown = client.stub.GetDataset(curator_pb2.DatasetRef(name="stars"), timeout=30)
        assert shown.ref.version == "v2" and list(shown.versions) == ["v1", "v2"]
        first = client.stub.GetDataset(curator_pb2.DatasetRef(name="stars", version="v1"), timeout=30)
        assert first.pairs == 3 and sum(first.counts.values()) == 3
    assert any("heic9008a" in line["pair"] for line in manifest(store, "stars", "v2"))
    assert store.stat("datasets", "stars/v1/manifest.jsonl").sha256 == v1


def test_a_second_build_of_a_busy_dataset_is_refused(curator, blacklisted) -> None:
    with CuratorClient(curator.address) as client:
        request = curator_pb2.StartDatasetBuildRequest(name="busy", request_id="busy-1")
        first = client.stub.StartDatasetBuild(request, timeout=30)
        again = client.stub.StartDatasetBuild(request, timeout=30)  # a retry of the same request: the same job
        assert again.id == first.id
        with pytest.raises(grpc.RpcError) as err:
            client.stub.StartDatasetBuild(curator_pb2.StartDatasetBuildRequest(name="busy"), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and first.id in err.value.details()
    follow(curator, first)


def test_a_killed_build_resumes_to_the_same_dataset(stack, logs, cutouts, curator, blacklisted, store) -> None:
    reference = build(curator, "reference")
    victim = curator_process(stack, logs, cutouts, "curator-victim").start()
    curator.stop()  # only the victim may take the job, until it is killed
    try:
        with CuratorClient(victim.address) as client:
            request = curator_pb2.StartDatasetBuildRequest(
                name="resumed", validation_fraction=0.3, test_fraction=0.3, seed=7
            )
            job = client.stub.StartDatasetBuild(request, timeout=30)
            for update in client.jobs.watch(job.id, timeout_s=120):
                if update.progress.stage in ("plots", "write"):
                    break
        victim.kill()
        assert not store.exists("datasets", "resumed/v1/dataset.json")
    finally:
        victim.stop()
        curator.start()
    done = follow(curator, job)
    assert done.attempts >= 2 and done.result["version"] == "v1"
    assert store.get_json("datasets", "resumed/versions.json")["versions"][0]["version"] == "v1"
    assert len(store.get_json("datasets", "resumed/versions.json")["versions"]) == 1
    for name in ("manifest.jsonl", "tiles.jsonl", "credits.json"):
        assert (
            store.stat("datasets", f"resumed/v1/{name}").sha256
            == store.stat("datasets", f"reference/{reference.result['version']}/{name}").sha256
        ), name


def test_the_cli_shows_verdicts_and_builds_datasets(curator, blacklisted) -> None:
    env = {**os.environ, "PSS_CURATOR_ADDR": curator.address}
    run = [sys.executable, "-m", "services.client.cli"]
    shown = subprocess.run(
        [*run, "curate", "verdict", "esahubble/heic9005a", "--survey", "dss2-color"],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "usable" in shown.stdout and "corrected" in shown.stdout
    built = subprocess.run(
        [*run, "dataset", "build", "cli-set", "--validation", "0.3", "--test", "0.3", "--seed", "7"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "SUCCEEDED" in built.stdout and "version" in built.stdout
    listed = subprocess.run(
        [*run, "dataset", "show", "cli-set@v1"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert listed.returncode == 0 and "3 pairs" in listed.stdout and "manifest.jsonl" in listed.stdout
    missing = subprocess.run(
        [*run, "dataset", "show", "nothing-here"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
