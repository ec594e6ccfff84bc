"""The gateway's render path: end-to-end latency, the cost of serving through Triton against
calling the same TorchScript in-process, throughput under concurrent renders, and what
Triton's dynamic batcher does. All in one run, on a private stack (SeaweedFS S3, the real
Triton binary with the Python backend, the cutouts service over the hips2fits replica of the
local sky) and gateway processes of our own.

The generator is the demo architecture with seeded random weights (its output conv given
weights so the noise branch works), published with the trainer's own export code as the
model ``bench_gen`` (the export's CPU config: Triton runs exactly the batches it is sent); the
same weights are published again as ``bench_gen_db``, whose config.pbtxt is the same plus
``dynamic_batching`` (a 2 ms queue delay). Every render is of one field of
the local sky (RA 83.82, Dec -5.39; 8 arcmin; DSS2 colour; fidelity 0.5; one sample; a fixed
seed, so every repetition runs the very same tiles).

1. Latency (client Render call -> result, products whole) of a 1024² and a 4096² render
   (``--quick``: 1024² only), ``no_cache``: the first render of the field (the cutout is a
   cache miss in the cutouts service) and then N more (the cutout a cache hit), median of N;
   then the same request with the render cache allowed (a hit in the ``renders`` bucket).
   Stages from the progress events the client receives: "setup" (call -> the "cutout"
   event: admission, model lookup, render-cache lookup), "cutout + rendering" ("cutout" ->
   "encoding" event), "encoding + delivery" ("encoding" -> the result: PNGs, the render
   cache's S3 writes, streaming the products). The cutout's own share is measured by the
   benchmark making the gateway's very cutout call (the gateway's code, a cutouts-cache hit);
   "rendering" is the remainder (the gateway sends rendering progress only every 0.25 s, so
   its events cannot split the two finer).
2. Overhead of Triton against in-process, on the same tiles of the same field (the cutout the
   gateway gets, normalised, tiled and batched by the gateway's own functions, the same
   seed's noise, the gateway's tile size and tiles per request), runs interleaved, after
   warm-up:
   - tiles: the batches through ``TritonRunner`` (gRPC to the stack's Triton, as many in
     flight as the gateway allows) on ``bench_gen`` (as exported: Triton runs exactly the
     batches sent) and on ``bench_gen_db`` (dynamic batching: Triton may merge the requests in flight),
     against ``LocalRunner`` on the TorchScript loaded in this process (``torch.jit.load`` of
     the published model.pt) with the intra-op threads Triton's Python backend gives its
     instance (cores / instances, deploy/triton/python_backend/model.py) and 1 inter-op thread;
     for 4096² a leading subset of the batches (the in-flight window and more);
   - the whole rendering stage (``render_pixels``: normalisation, noise, tiles, blending,
     crop) in-process, through Triton from this process, and the gateway's "rendering" stage
     of a Render (as in item 1), interleaved; for 4096² in-process once, against the
     gateway's renders of item 1.
   Ratio Triton / in-process and the overhead in per cent; the goal is <= 15 %.
3. Throughput, renders/s and tiles/s, of a gateway admitting 8 renders at once
   (PSS_GATEWAY_MAX_RENDERS=8, PSS_GATEWAY_MAX_QUEUE=16), 512² renders with distinct seeds,
   ``no_cache``, at client concurrency 1, 4 and 8.
4. Dynamic batching: a gateway with PSS_RENDER_BATCH_TILES=1 (each tile its own Triton
   request, so only Triton's batcher can batch), 1024² renders (``--quick``: 512², one tile
   each) at concurrency 4, on ``bench_gen_db`` against ``bench_gen`` (interleaved): tiles/s,
   their ratio, and the mean batch Triton executed (from its inference statistics).

When CUDA is available, the in-process tiles also run on the GPU (the module moved there).
On a small CPU machine every process shares the same few cores: the figures are ratios
taken in one run, and the load average is recorded around each part.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bench.common import MIB, summarize, table
from deploy.localstack import procs
from deploy.localstack.ports import free_port
from deploy.localstack.stack import REPO_ROOT, Stack, StackError
from deploy.triton.model_config import render_config
from services.api import common_pb2, gateway_pb2
from services.client.clients import CutoutsClient, GatewayClient, ServiceClient
from services.gateway.inference import Batch, Deadline, LocalRunner, TritonRunner
from services.gateway.render import RenderSpec, Target, noise_field, plan_grids, render_pixels, tiling_for
from services.gateway.render import batches as make_batches
from services.gateway.service import SETTINGS, GatewayServicer
from services.gateway.tiling import plan_tiles
from services.model import normalise
from services.model.generator import Generator, GeneratorConfig
from services.trainer import export

GOAL_OVERHEAD = 0.15
MODEL = "bench_gen"
MODEL_DB = "bench_gen_db"
SEED = 20240607  # the generator's weights
RENDER_SEED = 7  # the render's noise: the same tiles every repetition
FIELD = (83.82, -5.39)
FOV_ARCMIN = 8.0
FIDELITY = 0.5
SURVEY = "dss2-color"
THROUGHPUT_PX = 512
BATCHING_CONCURRENCY = 4
CONCURRENCY = (1, 4, 8)
TIMEOUT_S = 900.0


def _plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "sizes": (1024,),
            "latency_reps": {1024: 2},
            "cached_reps": 3,
            "overhead_rounds": {1024: 2},
            "overhead_batches": {1024: None},
            "stage_rounds": {1024: 1},
            "throughput_n": {1: 2, 4: 4, 8: 8},
            "batching_px": 512,
            "batching_rounds": 1,
            "batching_renders": 4,
        }
    return {
        "sizes": (1024, 4096),
        "latency_reps": {1024: 4, 4096: 2},
        "cached_reps": 5,
        # Identical work varies by about 10 % on 2 shared cores: enough interleaved rounds that
        # the medians can tell a 15 % overhead from noise.
        "overhead_rounds": {1024: 10, 4096: 2},
        "overhead_batches": {1024: None, 4096: 4},  # None: every batch of the field
        "stage_rounds": {1024: 10, 4096: 1},
        "throughput_n": {1: 6, 4: 12, 8: 16},
        "batching_px": 1024,
        "batching_rounds": 2,
        "batching_renders": 4,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the model ---------------------------------------------------------------------------------------


def _publish(store: Any) -> dict[str, Any]:
    """bench_gen (the export's config: no dynamic batching) and bench_gen_db (the same weights, the
    same config with dynamic batching); returns what the benchmark needs of them."""
    torch.manual_seed(SEED)
    generator = Generator(GeneratorConfig.demo())
    # A fresh generator's output conv is zero (only its bicubic skip path): give the residual
    # branch weights, so the tiles cost what a trained generator's cost and the noise matters.
    torch.nn.init.normal_(generator.out_conv.weight, std=0.05)
    about = {"run_id": f"bench-seeded-{SEED}"}
    provenance = export.publish_generator(store, generator, MODEL, about)
    db = export.publish_generator(store, generator, MODEL_DB, about)
    config = render_config(
        MODEL_DB,
        "python",
        export.INPUTS,
        export.OUTPUTS,
        max_batch_size=export.MAX_BATCH_SIZE,
        dynamic_batching=True,
        instance_kind="KIND_CPU",
        max_queue_delay_microseconds=2000,
    )
    store.put_bytes(export.BUCKET, f"{MODEL_DB}/config.pbtxt", config.encode(), content_type="text/plain")
    pbtxt = store.get_bytes(export.BUCKET, f"{MODEL}/config.pbtxt").decode()
    return {
        "provenance": provenance,
        "version": int(provenance["version"]),
        "version_db": int(db["version"]),
        "model_pt": store.get_bytes(export.BUCKET, f"{MODEL}/{provenance['version']}/model.pt"),
        "config_pbtxt": pbtxt,
        "config_pbtxt_db": config,
    }


def _triton_threads(pbtxt: str) -> int:
    """The intra-op threads Triton's Python backend gives one instance of this config
    (deploy/triton/python_backend/model.py: TORCH_NUM_THREADS, else cores / instances)."""
    config = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    param = config.parameters.get("TORCH_NUM_THREADS")
    if param is not None and param.string_value:
        return int(param.string_value)
    instances = sum(g.count or 1 for g in config.instance_group) or 1
    return max(1, len(os.sched_getaffinity(0)) // instances)


# -- gateway processes --------------------------------------------------------------------------------


class _Gateway:
    """A gateway process of our own on the stack's Triton, cutouts and S3."""

    def __init__(self, stack: Stack, name: str, **settings: str) -> None:
        self.name = name
        self.grpc_port, self.metrics_port = free_port(), free_port()
        env = stack.process_env(
            self.grpc_port,
            self.metrics_port,
            PSS_LOG_LEVEL="warning",
            PSS_SHUTDOWN_GRACE_S="5",
            **{f"PSS_{k.upper()}": v for k, v in settings.items()},
        )
        self.log = stack.log_dir / f"{name}.log"
        self.proc = procs.spawn(name, [sys.executable, "-m", "services", "gateway"], env, stack.log_dir, REPO_ROOT)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_serving(self, timeout_s: float = 90.0) -> _Gateway:
        client = ServiceClient(self.address, retries=False)
        deadline = time.monotonic() + timeout_s
        try:
            while client.health(timeout_s=1.0) != "SERVING":
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway {self.name} did not start:\n{procs.tail(self.log, 30)}")
                time.sleep(0.1)
        finally:
            client.close()
        return self

    def client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = GatewayClient(self.address, timeout_s=TIMEOUT_S, retries=False)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def stop(self) -> None:
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
        procs.stop_pid(self.proc.pid, 20.0)
        with contextlib.suppress(Exception):
            self.proc.wait(5)


def _request(size: int, model: str = MODEL, seed: int = RENDER_SEED, no_cache: bool = True) -> Any:
    return gateway_pb2.RenderRequest(
        position=common_pb2.SkyPosition(ra_deg=FIELD[0], dec_deg=FIELD[1]),
        fov_arcmin=FOV_ARCMIN,
        size=common_pb2.PixelGrid(width=size, height=size),
        survey=SURVEY,
        model_name=model,
        fidelity=FIDELITY,
        seed=seed,
        no_cache=no_cache,
    )


def _render(gateway: _Gateway, request: Any) -> dict[str, Any]:
    """One Render: seconds to the result, event arrival times, tiles, bytes."""
    marks: dict[str, float] = {}
    tiles = 0
    started = time.perf_counter()

    def on_progress(event: Any) -> None:
        nonlocal tiles
        now = time.perf_counter() - started
        marks.setdefault(event.stage, now)
        if event.stage == "rendering":
            tiles = max(tiles, event.total)

    result = gateway.client().render(request, on_progress, timeout_s=TIMEOUT_S)
    total = time.perf_counter() - started
    if not result.png or result.footprint.grid.width != request.size.width:
        raise RuntimeError(f"unexpected render result: {len(result.png)} B PNG, {result.footprint.grid}")
    out: dict[str, Any] = {"total_s": total, "from_cache": result.from_cache, "tiles": tiles}
    if "cutout" in marks and "encoding" in marks:
        out["setup_s"] = marks["cutout"]
        out["cutout_rendering_s"] = marks["encoding"] - marks["cutout"]
        out["encoding_delivery_s"] = total - marks["encoding"]
    out["products_mib"] = (len(result.png) + len(result.side_by_side_png) + len(result.spread_png)) / MIB
    return out


# -- the gateway's field, in this process -------------------------------------------------------------


def _gateway_default(name: str) -> int:
    """A gateway setting's default (what the gateway processes here run with, unless set)."""
    return int(next(s.default for s in SETTINGS if s.name == name))


class _Field:
    """One render's spec, grids, tiling, cutout and batches, made by the gateway's own code."""

    def __init__(self, stack: Stack, models: dict[str, Any], size: int) -> None:
        self.tile_px = _gateway_default("RENDER_TILE_PX")
        self.batch_tiles = _gateway_default("RENDER_BATCH_TILES")
        self.max_in_flight = _gateway_default("TRITON_MAX_IN_FLIGHT")
        provenance = models["provenance"]
        self.spec = RenderSpec(
            target=Target(*FIELD),
            fov_arcmin=FOV_ARCMIN,
            width=size,
            height=size,
            survey=SURVEY,
            model=MODEL,
            version=str(models["version"]),
            samples=1,
            fidelity=FIDELITY,
            north_angle_deg=0.0,
            want_fits=False,
            seed=RENDER_SEED,
            no_cache=True,
        )
        self.tiling = tiling_for(provenance, self.tile_px, self.batch_tiles)
        self.grids = plan_grids(self.spec, int(provenance.get("scale", 4)), self.tiling.margin_px)
        self._cutouts = CutoutsClient(stack.env()["PSS_CUTOUTS_ADDR"], timeout_s=120.0)
        self._store = stack.store()
        self._cutout: Any = None

    @property
    def cutout(self) -> Any:
        """The gateway's cutout pixels, fetched when first needed (after the gateway's first render
        of the field, whose cutout must be a cache miss)."""
        if self._cutout is None:
            self._cutout = self.fetch_cutout()[1]
        return self._cutout

    def fetch_cutout(self) -> tuple[float, Any]:
        """The gateway's own cutout call (GetCutout, the FITS from S3, decoded): its seconds and pixels."""
        # The servicer's method needs only these two of its attributes: the same call, not a copy.
        gateway = types.SimpleNamespace(cutouts=self._cutouts, store=self._store)
        started = time.perf_counter()
        cutout = GatewayServicer._cutout(gateway, self.spec, self.grids, Deadline(None))  # type: ignore[arg-type]
        return time.perf_counter() - started, cutout

    def batches(self, limit: int | None) -> list[Batch]:
        x, _, _ = normalise.survey_to_input(self.cutout.cube)
        _, height, width = x.shape
        tiles = plan_tiles(height, width, self.tiling.tile_px, self.tiling.overlap_px)
        noise = noise_field(self.spec.seed, 0, height, width)
        out = list(make_batches(x, noise, tiles, self.tiling.batch_tiles, self.spec.fidelity))
        return out if limit is None else out[:limit]

    def render_pixels(self, runner: Any) -> float:
        started = time.perf_counter()
        render_pixels(
            self.spec, self.grids, self.cutout, runner, self.tiling, Deadline(None), threading.Event(), _no_progress
        )
        return time.perf_counter() - started

    def close(self) -> None:
        self._cutouts.close()


def _no_progress(stage: str, done: int, total: int, message: str = "") -> None:
    pass


def _run_tiles(runner: Any, batches: list[Batch]) -> float:
    started = time.perf_counter()
    n = 0
    for batch, out in runner.map(iter(batches), Deadline(None), threading.Event()):
        n += len(batch.ids)
        if out.shape[0] != len(batch.ids):
            raise RuntimeError(f"{len(batch.ids)} tiles in, {out.shape[0]} out")
    seconds = time.perf_counter() - started
    if n != sum(len(b.ids) for b in batches):
        raise RuntimeError(f"{n} tiles came back of {sum(len(b.ids) for b in batches)}")
    return seconds


class _DeviceRunner:
    """LocalRunner on another device (CUDA): inputs moved there, outputs back to numpy."""

    def __init__(self, module: Any, device: str) -> None:
        self.module = module
        self.device = device

    def map(self, batches: Iterable[Any], deadline: Any, cancelled: threading.Event) -> Iterator[tuple[Any, Any]]:
        with torch.inference_mode():
            for batch in batches:
                out = self.module(
                    torch.from_numpy(batch.x).to(self.device),
                    torch.from_numpy(batch.noise).to(self.device),
                    torch.from_numpy(batch.fidelity_array()).to(self.device),
                )
                yield batch, out.cpu().numpy()


def _jit_load(data: bytes, device: str = "cpu") -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location=device)
    return module.eval()


class _TritonRunners:
    def __init__(self, url: str, models: dict[str, Any], max_in_flight: int) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.url = url
        self.exported = TritonRunner(self.client, url, MODEL, models["version"], max_in_flight)
        self.db = TritonRunner(self.client, url, MODEL_DB, models["version_db"], max_in_flight)

    def stats(self, model: str, version: int) -> tuple[int, int]:
        """(inferences, executions) Triton counts for a model version: their ratio is the mean batch."""
        found = self.client.get_inference_statistics(model, str(version)).model_stats
        return (int(found[0].inference_count), int(found[0].execution_count)) if found else (0, 0)

    def close(self) -> None:
        self.client.close()


def _interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each variant once per round, in an order that alternates and rotates (drift hits them alike)."""
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = (r // 2) % len(names)
        order = names[shift:] + names[:shift]  # ABC, CBA, BCA, ACB, ...
        for name in reversed(order) if r % 2 else order:
            samples[name].append(variants[name]())
    return samples


# -- the parts ---------------------------------------------------------------------------------------


def _latency(gateway: _Gateway, field: _Field, size: int, reps: int, cached_reps: int) -> dict[str, Any]:
    load_before = _load()
    first = _render(gateway, _request(size))  # the cutout is a cache miss in the cutouts service
    warm = [_render(gateway, _request(size)) for _ in range(reps)]
    cached = [_render(gateway, _request(size, no_cache=False)) for _ in range(cached_reps)]
    if any(r["from_cache"] for r in [first, *warm]) or not all(r["from_cache"] for r in cached):
        raise RuntimeError("render cache: a no_cache render came from it, or a repeated render did not")
    cutout_s = summarize([field.fetch_cutout()[0] for _ in range(max(3, reps))])
    stages = {
        k: summarize([r[k] for r in warm]) for k in ("total_s", "setup_s", "cutout_rendering_s", "encoding_delivery_s")
    }
    rendering = [r["cutout_rendering_s"] - cutout_s["median"] for r in warm]
    return {
        "tiles": first["tiles"],
        "first": first,
        "warm": stages,
        "cutout_s": cutout_s,
        "rendering_s": summarize(rendering),
        "cached_s": summarize([r["total_s"] for r in cached]),
        "warm_over_cached": stages["total_s"]["median"] / statistics.median(r["total_s"] for r in cached),
        "products_mib": first["products_mib"],
        "input_px": [field.grids.input_width, field.grids.input_height],
        "load": [load_before, _load()],
    }


def _overhead(
    field: _Field,
    runners: _TritonRunners,
    models: dict[str, Any],
    local: Any,
    cuda: Any | None,
    limit: int | None,
    rounds: int,
    stage_rounds: int,
    gateway: _Gateway,
    latency: dict[str, Any],
    warmed: set[tuple[str, tuple[int, ...]]],
) -> dict[str, Any]:
    load_before = _load()
    batches = field.batches(limit)
    n_tiles = sum(len(b.ids) for b in batches)
    by_name = {"triton": runners.exported, "triton_db": runners.db, "in_process": local}
    if cuda is not None:
        by_name["in_process_cuda"] = cuda
    shape = tuple(batches[0].x.shape)
    for name, runner in by_name.items():
        if (name, shape) not in warmed:  # TorchScript's profiling executor specialises on its first calls
            for _ in range(2):
                _run_tiles(runner, batches[:1])
            warmed.add((name, shape))
    tiles_variants: dict[str, Callable[[], float]] = {
        name: (lambda runner=runner: _run_tiles(runner, batches)) for name, runner in by_name.items()
    }
    versions = {MODEL: models["version"], MODEL_DB: models["version_db"]}
    before = {m: runners.stats(m, v) for m, v in versions.items()}
    tiles = _interleaved(tiles_variants, rounds)
    after = {m: runners.stats(m, v) for m, v in versions.items()}
    executed = {}
    for m in before:
        inferences, executions = (a - b for a, b in zip(after[m], before[m], strict=True))
        executed[m] = inferences / executions if executions else None
    med = {k: statistics.median(v) for k, v in tiles.items()}
    out: dict[str, Any] = {
        "tiles": n_tiles,
        "batches": len(batches),
        "batch_tiles": field.batch_tiles,
        "tile_input_px": list(batches[0].x.shape[2:]),
        "max_in_flight": field.max_in_flight,
        "tiles_s": {k: summarize(v) for k, v in tiles.items()},
        "per_tile_ms": {k: 1000 * v / n_tiles for k, v in med.items()},
        "triton_mean_executed_batch": {"triton": executed[MODEL], "triton_db": executed[MODEL_DB]},
        "ratio": {
            "triton/in_process": med["triton"] / med["in_process"],
            "triton_db/in_process": med["triton_db"] / med["in_process"],
        },
    }
    if stage_rounds:
        cutout_s = latency["cutout_s"]["median"]

        def gateway_stage() -> float:
            return float(_render(gateway, _request(field.spec.width))["cutout_rendering_s"] - cutout_s)

        stage_variants: dict[str, Callable[[], float]] = {"in_process": lambda: field.render_pixels(local)}
        if limit is None:  # a field cheap enough to render many times: through Triton and the gateway too
            stage_variants["triton"] = lambda: field.render_pixels(runners.db)
            stage_variants["gateway"] = gateway_stage
        stage = _interleaved(stage_variants, stage_rounds)
        if "gateway" not in stage:  # the latency part's Render calls, just before
            stage["gateway"] = latency["rendering_s"]["samples"]
        out["stage_s"] = {k: summarize(v) for k, v in stage.items()}
        base = statistics.median(stage["in_process"])
        for key in ("triton", "gateway"):
            if key in stage:
                out["ratio"][f"stage {key}/in_process"] = statistics.median(stage[key]) / base
    out["load"] = [load_before, _load()]
    return out


def _throughput(gateway: _Gateway, concurrency: int, n: int, serial: Iterator[int]) -> dict[str, Any]:
    requests = [_request(THROUGHPUT_PX, seed=next(serial)) for _ in range(n)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(request: Any) -> None:
        r = _render(gateway, request)
        with lock:
            results.append(r)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix=f"render-c{concurrency}") as pool:
        list(pool.map(one, requests))
    wall = time.perf_counter() - started
    tiles = sum(r["tiles"] for r in results)
    return {
        "n": n,
        "wall_s": wall,
        "renders_per_s": n / wall,
        "tiles_per_s": tiles / wall,
        "latency_s": summarize([r["total_s"] for r in results]),
    }


def _batching(
    gateway: _Gateway,
    runners: _TritonRunners,
    models: dict[str, Any],
    size: int,
    rounds: int,
    renders: int,
    serial: Iterator[int],
) -> dict[str, Any]:
    load_before = _load()
    versions = {MODEL: models["version"], MODEL_DB: models["version_db"]}
    samples: dict[str, list[float]] = {MODEL: [], MODEL_DB: []}
    executed: dict[str, list[tuple[int, int]]] = {MODEL: [], MODEL_DB: []}
    latencies: dict[str, list[float]] = {MODEL: [], MODEL_DB: []}
    for model in versions:  # warm-up, untimed: this tile shape at batch 1, on each model
        _render(gateway, _request(size, model=model, seed=next(serial)))
    for r in range(rounds):
        for model in (MODEL_DB, MODEL) if r % 2 == 0 else (MODEL, MODEL_DB):
            requests = [_request(size, model=model, seed=next(serial)) for _ in range(renders)]
            before = runners.stats(model, versions[model])
            started = time.perf_counter()
            with ThreadPoolExecutor(BATCHING_CONCURRENCY, thread_name_prefix="batching") as pool:
                results = list(pool.map(lambda q: _render(gateway, q), requests))
            wall = time.perf_counter() - started
            after = runners.stats(model, versions[model])
            samples[model].append(sum(x["tiles"] for x in results) / wall)
            executed[model].append((after[0] - before[0], after[1] - before[1]))
            latencies[model].extend(x["total_s"] for x in results)
    out: dict[str, Any] = {"size_px": size, "renders_per_round": renders, "concurrency": BATCHING_CONCURRENCY}
    for model in (MODEL_DB, MODEL):
        inferences = sum(e[0] for e in executed[model])
        executions = sum(e[1] for e in executed[model])
        out[model] = {
            "tiles_per_s": summarize(samples[model]),
            "latency_s": summarize(latencies[model]),
            "inferences": inferences,
            "executions": executions,
            "mean_executed_batch": inferences / executions if executions else None,
        }
    out["ratio_dynamic/none"] = statistics.median(samples[MODEL_DB]) / statistics.median(samples[MODEL])
    out["load"] = [load_before, _load()]
    return out


# -- run ---------------------------------------------------------------------------------------------


def _start_stack(root: Path) -> Stack:
    for attempt in range(3):  # free ports are picked, not reserved: on a collision, try others
        stack = Stack.ephemeral(root / f"stack{attempt}", services=("cutouts",))
        try:
            stack.start(timeout_s=180)
            return stack
        except StackError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def run(quick: bool = False) -> dict[str, Any]:
    plan = _plan(quick)
    results: dict[str, Any] = {
        "field": {"ra_deg": FIELD[0], "dec_deg": FIELD[1], "fov_arcmin": FOV_ARCMIN, "survey": SURVEY},
        "fidelity": FIDELITY,
        "goal_overhead": GOAL_OVERHEAD,
        "sizes": list(plan["sizes"]),
        "load_start": _load(),
    }
    stack: Stack | None = None
    gateways: list[_Gateway] = []
    fields: list[_Field] = []
    runners: _TritonRunners | None = None
    serial = iter(range(1000, 10**6))
    with tempfile.TemporaryDirectory(prefix="pss-bench-gateway-", ignore_cleanup_errors=True) as tmp:
        try:
            started = time.perf_counter()
            # Before any torch work here: the inter-op pool can be sized only before it starts.
            threads = _triton_threads(export.python_config(MODEL))
            torch.set_num_threads(threads)
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
            stack = _start_stack(Path(tmp))
            models = _publish(stack.store())
            if _triton_threads(models["config_pbtxt"]) != threads:
                raise RuntimeError("the published config gives Triton's instance other threads than expected")
            gateway = _Gateway(stack, "gateway")
            concurrent = _Gateway(stack, "gateway-c8", gateway_max_renders="8", gateway_max_queue="16")
            batch1 = _Gateway(
                stack, "gateway-b1", render_batch_tiles="1", gateway_max_renders="8", gateway_max_queue="16"
            )
            gateways += [gateway, concurrent, batch1]
            for g in gateways:
                g.wait_serving()
            results["setup_s"] = time.perf_counter() - started
            results["machine"] = {
                "cpu_count": os.cpu_count(),
                "cpu_affinity": len(os.sched_getaffinity(0)),
                "device": "cpu",
                "torch": torch.__version__,
                "torch_threads_in_process": torch.get_num_threads(),
                "torch_interop_threads_in_process": torch.get_num_interop_threads(),
                "triton_instance_threads": threads,
                "cuda": torch.cuda.is_available(),
                "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
            }
            results["model"] = {
                "name": MODEL,
                "version": models["version"],
                "generator": models["provenance"]["generator"],
                "config_dynamic_batching": "dynamic_batching" in models["config_pbtxt"],
                "config_db_dynamic_batching": "dynamic_batching" in models["config_pbtxt_db"],
            }
            # Warm-up, untimed: each gateway loads the models into Triton, opens its connections.
            _render(gateway, _request(256, seed=next(serial)))
            _render(concurrent, _request(THROUGHPUT_PX, seed=next(serial)))
            _render(batch1, _request(256, model=MODEL, seed=next(serial)))
            _render(batch1, _request(256, model=MODEL_DB, seed=next(serial)))

            in_flight = _gateway_default("TRITON_MAX_IN_FLIGHT")
            runners = _TritonRunners(stack.env()["PSS_TRITON_GRPC_ADDR"], models, in_flight)
            local = LocalRunner(_jit_load(models["model_pt"]))
            cuda = _DeviceRunner(_jit_load(models["model_pt"], "cuda"), "cuda") if torch.cuda.is_available() else None

            results["latency"], results["overhead"] = {}, {}
            warmed: set[tuple[str, tuple[int, ...]]] = set()  # (runner, batch shape) warmed up
            for size in plan["sizes"]:
                field = _Field(stack, models, size)
                fields.append(field)
                results["latency"][str(size)] = _latency(
                    gateway, field, size, plan["latency_reps"][size], plan["cached_reps"]
                )
                results["overhead"][str(size)] = _overhead(
                    field,
                    runners,
                    models,
                    local,
                    cuda,
                    plan["overhead_batches"][size],
                    plan["overhead_rounds"][size],
                    plan["stage_rounds"][size],
                    gateway,
                    results["latency"][str(size)],
                    warmed,
                )
            load_before = _load()
            results["throughput"] = {
                str(c): _throughput(concurrent, c, plan["throughput_n"][c], serial) for c in CONCURRENCY
            }
            results["throughput_load"] = [load_before, _load()]
            results["batching"] = _batching(
                batch1, runners, models, plan["batching_px"], plan["batching_rounds"], plan["batching_renders"], serial
            )
        finally:
            for field in fields:
                field.close()
            if runners is not None:
                runners.close()
            for g in gateways:
                g.stop()
            if stack is not None:
                stack.stop()
    results["load_end"] = _load()
    return results


# -- render ------------------------------------------------------------------------------------------


def _pct(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f} %"


def render(results: dict[str, Any]) -> str:
    r = results
    m = r["machine"]
    lines = [
        f"Gateway render path ({r['field']['survey']}, RA {r['field']['ra_deg']} Dec {r['field']['dec_deg']},"
        f" {r['field']['fov_arcmin']:g}', fidelity {r['fidelity']}, demo generator {r['model']['name']}"
        f" v{r['model']['version']}; {m['cpu_affinity']} cores, device {m['device']}"
        f"{' + ' + m['cuda_device'] if m['cuda'] else ''}, torch {m['torch']}, threads in-process"
        f" {m['torch_threads_in_process']} = Triton instance {m['triton_instance_threads']})",
        "",
        "1. End-to-end latency, seconds (warm: cutout a cache hit, medians; first: the field's first render,"
        " cutout a miss; cached: the render cache)",
    ]
    rows = []
    for size, e in r["latency"].items():
        w = e["warm"]
        rows.append(
            [
                f"{size}²",
                e["tiles"],
                e["first"]["total_s"],
                w["total_s"]["median"],
                1000 * w["setup_s"]["median"],
                e["cutout_s"]["median"],
                e["rendering_s"]["median"],
                w["encoding_delivery_s"]["median"],
                1000 * e["cached_s"]["median"],
                e["warm_over_cached"],
                f"{w['total_s']['n']}/{e['cached_s']['n']}",
            ]
        )
    lines.append(
        table(
            [
                "render",
                "tiles",
                "first",
                "warm",
                "setup ms",
                "cutout",
                "rendering",
                "enc+deliv",
                "cached ms",
                "warm/cached",
                "n",
            ],
            rows,
        )
    )
    lines += [
        "",
        "2. Triton path against in-process TorchScript, same tiles, runs interleaved"
        f" (goal: overhead <= {100 * r['goal_overhead']:.0f} %; medians, and the fastest run of each;"
        " exec. batch: the mean batch Triton ran)",
    ]
    rows = []
    for size, o in r["overhead"].items():
        what = f"{size}² {o['tiles']} tiles ({o['batches']} x {o['batch_tiles']}, {o['tile_input_px'][0]} px)"
        inproc, inproc_min = o["tiles_s"]["in_process"]["median"], o["tiles_s"]["in_process"]["min"]
        for key, label in (
            ("in_process", "in-process"),
            ("triton", "Triton (as exported)"),
            ("triton_db", "Triton (dyn. batching)"),
            ("in_process_cuda", "in-process CUDA"),
        ):
            if key not in o["tiles_s"]:
                continue
            med = o["tiles_s"][key]["median"]
            executed = o["triton_mean_executed_batch"].get(key)
            rows.append(
                [
                    f"{what} tiles, {label}",
                    med,
                    o["per_tile_ms"][key],
                    med / inproc,
                    _pct(med / inproc) if key.startswith("triton") else "",
                    _pct(o["tiles_s"][key]["min"] / inproc_min) if key.startswith("triton") else "",
                    f"{executed:.1f}" if executed else "",
                    o["tiles_s"][key]["n"],
                ]
            )
        for key, label in (("in_process", "in-process"), ("triton", "Triton"), ("gateway", "gateway Render")):
            if key in o.get("stage_s", {}):
                st, base = o["stage_s"][key], o["stage_s"]["in_process"]
                rows.append(
                    [
                        f"{size}² rendering stage, {label}",
                        st["median"],
                        "",
                        st["median"] / base["median"],
                        _pct(st["median"] / base["median"]) if key != "in_process" else "",
                        _pct(st["min"] / base["min"]) if key != "in_process" else "",
                        "",
                        st["n"],
                    ]
                )
    lines.append(table(["path", "s", "ms/tile", "x in-proc", "overhead", "of the mins", "exec. batch", "n"], rows))
    lines += ["", "3. Throughput, 512² renders (distinct seeds, no_cache), gateway admitting 8"]
    rows = [
        [
            f"concurrency {c}",
            t["n"],
            t["renders_per_s"],
            t["tiles_per_s"],
            t["latency_s"]["median"],
            t["latency_s"]["max"],
        ]
        for c, t in r["throughput"].items()
    ]
    lines.append(table(["", "renders", "renders/s", "tiles/s", "latency med s", "latency max s"], rows))
    b = r["batching"]
    lines += [
        "",
        f"4. Dynamic batching: {b['size_px']}² renders ({b['renders_per_round']} a round), 1 tile per Triton request,"
        f" concurrency {b['concurrency']}",
    ]
    rows = [
        [
            f"{name} ({'dynamic batching' if name == MODEL_DB else 'none'})",
            b[name]["tiles_per_s"]["median"],
            b[name]["latency_s"]["median"],
            f"{b[name]['mean_executed_batch']:.2f}" if b[name]["mean_executed_batch"] else "",
            b[name]["tiles_per_s"]["n"],
        ]
        for name in (MODEL_DB, MODEL)
    ]
    lines.append(table(["model", "tiles/s", "render latency med s", "exec. batch", "rounds"], rows))
    lines.append(f"dynamic / none tiles/s: {b['ratio_dynamic/none']:.2f}")
    lines.append(f"(load average 1/5/15 min: start {r['load_start']}, end {r['load_end']}; setup {r['setup_s']:.0f} s)")
    return "\n".join(lines)
