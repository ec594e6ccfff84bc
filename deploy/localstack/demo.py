"""What `make demo` runs on the embedded sky until the gateway renders (#8): a crawl of
both archive replicas by the crawler service (real Chromium, real S3), then survey cutouts
(DSS2, SDSS9) of every crawled observation by the cutouts service (through the hips2fits
replica), then, for a few observations, the stored DSS2 cutout beside the crawled image of
the same footprint. Both come from the same local sky."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deploy.localstack.stack import Stack
from services.api import common_pb2, crawler_pb2, curator_pb2, cutouts_pb2
from services.client.cli import follow_with_progress
from services.client.clients import CrawlerClient, CuratorClient, CutoutsClient

KINDS = ("galaxy", "nebula", "cluster")
DEMO_DATASET = "demo"


def _get(url: str, timeout_s: float = 120.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def pick_fields(truth: dict, count: int) -> list[dict]:
    """Clean observations (no edge case, full AVM), one kind after another."""
    clean = [o for o in truth["observations"].values() if not o["edge_cases"] and o.get("avm_quality") == "Full"]
    picked: list[dict] = []
    for i in range(count * len(KINDS)):
        kind = KINDS[i % len(KINDS)]
        candidates = [o for o in clean if o["kind"] == kind and o not in picked]
        if candidates:
            picked.append(candidates[0])
        if len(picked) == count:
            break
    return picked


def side_by_side(survey: np.ndarray, outreach: Image.Image, title: str, credit: str) -> Image.Image:
    left = Image.fromarray(np.asarray(survey, dtype=np.uint8)[..., :3]).resize(outreach.size)
    caption, footer = 28, 22
    canvas = Image.new("RGB", (outreach.width * 2 + 10, outreach.height + caption + footer), (20, 20, 20))
    canvas.paste(left, (0, caption))
    canvas.paste(outreach, (outreach.width + 10, caption))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 8), f"DSS2 cutout (cutouts service, hips2fits replica) - {title}", fill=(230, 230, 230))
    draw.text(
        (outreach.width + 16, 8), "crawled Hubble-like image (archive replica, synthetic sky)", fill=(230, 230, 230)
    )
    # The credit line travels with the image (CC BY 4.0), even a replica's.
    draw.text((outreach.width + 16, caption + outreach.height + 5), f"Credit: {credit}", fill=(200, 200, 200))
    return canvas


def crawl_archives(stack: Stack, max_pages: int = 1, sources: tuple[str, ...] = ()) -> common_pb2.Job:
    """An incremental crawl of the replicas (all by default) through the crawler service
    (the first one is a full crawl: nothing is stored yet), followed with a progress bar."""
    request = crawler_pb2.StartCrawlRequest(
        incremental=True,
        max_pages=max_pages,
        sources=[crawler_pb2.Source.Value(f"SOURCE_{s.upper()}") for s in sources],
    )
    with CrawlerClient(stack.env()["PSS_CRAWLER_ADDR"]) as client:
        job = client.stub.StartCrawl(request, timeout=30)
        return follow_with_progress(client.jobs, job.id)


def cut_surveys(stack: Stack, sources: tuple[str, ...] = ()) -> common_pb2.Job:
    """Survey cutouts (every configured survey) for every crawled observation, through the
    cutouts service; cached ones cost nothing, so a second run makes no upstream call."""
    request = cutouts_pb2.StartCutoutBatchRequest(
        sources=[crawler_pb2.Source.Value(f"SOURCE_{s.upper()}") for s in sources],
        request_id=f"demo-{uuid.uuid4().hex}",
    )
    with CutoutsClient(stack.env()["PSS_CUTOUTS_ADDR"]) as client:
        job = client.stub.StartCutoutBatch(request, timeout=30)
        return follow_with_progress(client.jobs, job.id)


def curate_pairs(stack: Stack) -> common_pb2.Job:
    """Verdicts for every (image, cutout) pair without a current one, through the curator."""
    request = curator_pb2.StartEvaluationRequest(request_id=f"demo-{uuid.uuid4().hex}")
    with CuratorClient(stack.env()["PSS_CURATOR_ADDR"]) as client:
        job = client.stub.StartEvaluation(request, timeout=30)
        return follow_with_progress(client.jobs, job.id)


def build_dataset(stack: Stack, name: str = DEMO_DATASET) -> common_pb2.Job:
    """The next version of the demo dataset (the same version again when nothing changed)."""
    request = curator_pb2.StartDatasetBuildRequest(name=name, request_id=f"demo-{uuid.uuid4().hex}")
    with CuratorClient(stack.env()["PSS_CURATOR_ADDR"]) as client:
        job = client.stub.StartDatasetBuild(request, timeout=30)
        return follow_with_progress(client.jobs, job.id)


def export_dataset_plots(stack: Stack, out_dir: Path, name: str = DEMO_DATASET) -> list[Path]:
    """The latest version's summary plots, copied next to the other demo pictures."""
    store = stack.store()
    with CuratorClient(stack.env()["PSS_CURATOR_ADDR"]) as client:
        found = client.stub.GetDataset(curator_pb2.DatasetRef(name=name), timeout=30)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ref in found.plots:
        path = out_dir / f"{name}-{found.ref.version}-{ref.key.rsplit('/', 1)[-1]}"
        path.write_bytes(store.get_bytes(ref.bucket, ref.key))
        written.append(path)
    return written


def preview_embedded_sky(stack: Stack, out_dir: Path, count: int = 3) -> list[Path]:
    """For a few crawled Hubble observations: the DSS2 cutout the cutouts service stored for
    its footprint, beside the crawled image (same sky, same orientation)."""
    env = stack.env()
    truth = json.loads(_get(env["PSS_ESAHUBBLE_URL"] + "/_replica/truth"))
    store = stack.store()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    crawled = {k.split("/")[1] for k in store.list_keys("archive", "esahubble/") if k.endswith("/meta.json")}
    with CutoutsClient(env["PSS_CUTOUTS_ADDR"]) as client:
        for obs in pick_fields(
            {"observations": {k: v for k, v in truth["observations"].items() if k in crawled}}, count
        ):
            meta = store.get_json("archive", f"esahubble/{obs['id']}/meta.json")
            key = crawler_pb2.ObservationKey(source=crawler_pb2.SOURCE_ESAHUBBLE, image_id=obs["id"])
            cutout = client.stub.GetCutout(cutouts_pb2.CutoutRequest(observation=key, survey="dss2-color"), timeout=120)
            survey = Image.open(io.BytesIO(store.get_bytes(cutout.png.bucket, cutout.png.key))).convert("RGB")
            outreach = Image.open(io.BytesIO(store.get_bytes("archive", meta["images"]["screen"]["key"]))).convert(
                "RGB"
            )
            path = out_dir / f"{obs['id']}-dss2-vs-hubble.png"
            title = f"{obs['id']}: {meta['title']}"
            side_by_side(np.asarray(survey), outreach, title, meta["credit"]).save(path)
            written.append(path)
    return written
