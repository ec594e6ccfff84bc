"""What `make demo` runs on the embedded sky: the whole main job. A crawl of both archive
replicas by the crawler service (real Chromium, real S3); survey cutouts (DSS2, SDSS9) of every
crawled observation by the cutouts service (through the hips2fits replica); curation and the demo
training dataset; the demo generator trained by the trainer service (or the one an earlier demo
run trained) and exported into Triton's model repository; then renders of a few named targets and
of held-out test fields through the gateway, each beside its survey cutout."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deploy.localstack.stack import Stack
from services.api import common_pb2, crawler_pb2, curator_pb2, cutouts_pb2, gateway_pb2, trainer_pb2
from services.client.cli import follow_with_progress
from services.client.clients import CrawlerClient, CuratorClient, CutoutsClient, GatewayClient, TrainerClient

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


DEMO_CONFIG = "demo"
# Named targets resolved by the gateway (Sesame replica, else the shipped catalogue). The local
# sky is synthetic, so a name points at whatever the local sky has there; the Hubble Ultra Deep
# Field is where it holds a real Hubble image.
DEMO_TARGETS = (("M51", 8.0), ("XDF", 4.0), ("M42", 12.0))
RUNNING = (common_pb2.JOB_STATE_PENDING, common_pb2.JOB_STATE_RUNNING)


def train_demo_model(stack: Stack, dataset: str = DEMO_DATASET) -> tuple[str, str]:
    """The demo generator's training run: the newest successful demo run on ``dataset`` when an
    earlier demo trained one, the run still going when a demo was interrupted (followed to its
    end), else a new one. Returns (run id, "reused" | "resumed watching" | "trained")."""
    with TrainerClient(stack.env()["PSS_TRAINER_ADDR"], timeout_s=30) as client:
        runs = [
            r
            for r in client.stub.ListRuns(trainer_pb2.ListRunsRequest(limit=100), timeout=30)
            if r.config == DEMO_CONFIG and r.dataset.name == dataset
        ]
        done = [r for r in runs if r.job.state == common_pb2.JOB_STATE_SUCCEEDED]
        if done:
            return done[0].id, "reused"
        going = [r for r in runs if r.job.state in RUNNING]
        if going:
            job = follow_with_progress(client.jobs, going[0].job.id)
            how = "resumed watching"
        else:
            request = trainer_pb2.StartTrainingRequest(
                dataset=curator_pb2.DatasetRef(name=dataset),
                config=DEMO_CONFIG,
                request_id=f"demo-train-{uuid.uuid4().hex}",
            )
            job = follow_with_progress(client.jobs, client.stub.StartTraining(request, timeout=30).id)
            how = "trained"
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"training job {job.id} did not succeed: {job.error}")
        return job.params["run_id"], how


def export_demo_model(stack: Stack, run_id: str, model: str = "") -> tuple[str, int]:
    """(model, version) exported from ``run_id`` (exported now unless an earlier demo did); the
    default model is the one the gateway renders with."""
    from services.trainer.export import DEFAULT_MODEL, versions  # torch: only when the demo gets here

    model = model or DEFAULT_MODEL
    store = stack.store()
    for v in reversed(versions(store, model)):
        if v.get("run_id") == run_id:
            return model, int(v["version"])
    with TrainerClient(stack.env()["PSS_TRAINER_ADDR"], timeout_s=30) as client:
        request = trainer_pb2.ExportModelRequest(run_id=run_id, model_name=model, request_id=f"demo-export-{run_id}")
        job = follow_with_progress(client.jobs, client.stub.ExportModel(request, timeout=30).id)
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"export job {job.id} did not succeed: {job.error}")
    return model, int(versions(store, model)[-1]["version"])


def _render(client: GatewayClient, request: gateway_pb2.RenderRequest, out: Path) -> list[Path]:
    result = client.render(request, timeout_s=600)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.png)
    side = out.with_name(out.stem + "-side-by-side.png")
    side.write_bytes(result.side_by_side_png)
    return [out, side]


def test_fields(stack: Stack, dataset: str = DEMO_DATASET, count: int = 2) -> list[tuple[str, float, float, float]]:
    """(title, RA, Dec, fov) of observations in the dataset's test split: fields the model never saw."""
    store = stack.store()
    with CuratorClient(stack.env()["PSS_CURATOR_ADDR"]) as client:
        found = client.stub.GetDataset(curator_pb2.DatasetRef(name=dataset), timeout=30)
    manifest = store.get_bytes("datasets", f"{dataset}/{found.ref.version}/manifest.jsonl").decode()
    fields = []
    for line in (json.loads(x) for x in manifest.splitlines() if x.strip()):
        if line.get("split") != "test":
            continue
        source, image_id = line["source"], line["image_id"]
        meta = store.get_json("archive", f"{source}/{image_id}/meta.json")
        fov = float(max(meta["fov_arcmin"]["x"], meta["fov_arcmin"]["y"]))
        centre = meta["center"]
        fields.append((f"{image_id}: {meta['title']}", float(centre["ra_deg"]), float(centre["dec_deg"]), fov))
        if len(fields) == count:
            break
    return fields


def render_demo_targets(stack: Stack, out_dir: Path, size: int = 768) -> Iterator[Path]:
    """Renders through the gateway (the newest exported generator): named targets, then held-out
    test fields of the demo dataset, each with its survey | rendering side-by-side (yielded as
    they are written)."""
    with GatewayClient(stack.env()["PSS_GATEWAY_ADDR"], timeout_s=600) as client:
        for name, fov in DEMO_TARGETS:
            request = gateway_pb2.RenderRequest(
                name=name, fov_arcmin=fov, size=common_pb2.PixelGrid(width=size, height=size), fidelity=0.5
            )
            yield from _render(client, request, out_dir / f"render-{name.lower()}.png")
        for title, ra, dec, fov in test_fields(stack):
            request = gateway_pb2.RenderRequest(
                position=common_pb2.SkyPosition(ra_deg=ra, dec_deg=dec),
                fov_arcmin=fov,
                size=common_pb2.PixelGrid(width=size, height=size),
                fidelity=0.5,
            )
            yield from _render(client, request, out_dir / f"render-test-{title.split(':')[0]}.png")
