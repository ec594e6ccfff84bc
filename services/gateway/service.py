"""Gateway gRPC service: point anywhere in the sky, get a Hubble/Webb-like rendering.

Render streams progress and then the result. It resolves the target (Sesame, then the shipped
catalogue), asks the cutouts service for the survey pixels, runs the tiles through Triton and
returns PNG, FITS, spread and side-by-side with their provenance; renders are cached in the
`renders` bucket. A bounded admission queue gives RESOURCE_EXHAUSTED beyond its size; the
caller's deadline bounds the cutout and Triton calls; a client that cancels stops its tiles.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import grpc
import tritonclient.grpc as grpcclient
from astropy.wcs import WCS
from google.protobuf import timestamp_pb2

from services.api import common_pb2, cutouts_pb2, gateway_pb2, gateway_pb2_grpc
from services.client.addresses import local_address
from services.client.clients import CutoutsClient
from services.cutouts.geometry import header_wcs
from services.gateway import products
from services.gateway.admission import Admission
from services.gateway.inference import Deadline, TritonRunner
from services.gateway.models import ModelRegistry, ServedVersion
from services.gateway.names import NameResolver
from services.gateway.render import (
    DEFAULT_SIZE_PX,
    Cancelled,
    CutoutPixels,
    Limits,
    RenderCache,
    Rendered,
    RenderSpec,
    Target,
    Tiling,
    check_position,
    check_spec,
    default_fov,
    derive_seed,
    make_provenance,
    output_footprint,
    plan_grids,
    read_cutout_fits,
    render_key,
    render_pixels,
    tiling_for,
)
from services.runtime.config import Setting
from services.runtime.errors import DeadlineExceeded, InvalidArgument, ServiceError, Unavailable
from services.runtime.server import ServiceContext, ServiceSpec
from services.trainer.export import DEFAULT_MODEL

log = logging.getLogger(__name__)
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
DEFAULT_SURVEY = "dss2-color"
CHUNK_BYTES = 1024 * 1024  # products above this size travel as ProductChunk messages
CUTOUT_TIMEOUT_S = 120.0

SETTINGS = (
    Setting("TRITON_GRPC_ADDR", "address", local_address("triton"), "Triton gRPC endpoint host:port"),
    Setting("CUTOUTS_ADDR", "address", local_address("cutouts"), "cutouts service host:port"),
    Setting(
        "SESAME_URL",
        "str",
        "https://cds.unistra.fr/cgi-bin/nph-sesame/",
        "CDS Sesame name resolver ('off': the shipped catalogue only)",
    ),
    Setting("GATEWAY_MAX_RENDERS", "positive_int", "2", "renders running at once"),
    Setting("GATEWAY_MAX_QUEUE", "positive_int", "8", "renders waiting; beyond: RESOURCE_EXHAUSTED"),
    Setting("TRITON_MAX_IN_FLIGHT", "positive_int", "4", "Triton requests in flight per render"),
    Setting("RENDER_TILE_PX", "positive_int", "192", "survey pixels per tile side (raised to fit the overlap)"),
    Setting("RENDER_BATCH_TILES", "positive_int", "4", "tiles per Triton request"),
    Setting(
        "TRITON_MODEL_CONFIG_NAME",
        "str",
        "default",
        "model config Triton runs: 'default' (config.pbtxt) or a --model-config-name such as 'gpu'",
    ),
    Setting("TRITON_KEEP_VERSIONS", "positive_int", "2", "newest published model versions kept loaded"),
    Setting("MODEL_POLL_S", "positive_float", "15", "how often newly exported model versions are looked for"),
)


def _config_name(value: str) -> str:
    return "" if value == "default" else value


def _deadline(context: grpc.ServicerContext) -> Deadline:
    return Deadline(context.time_remaining())


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        cfg = ctx.config
        self.store = ctx.store
        self.cutouts = CutoutsClient(cfg["CUTOUTS_ADDR"], timeout_s=CUTOUT_TIMEOUT_S)
        self.triton_url = cfg["TRITON_GRPC_ADDR"]
        self.triton = grpcclient.InferenceServerClient(self.triton_url)
        self.models = ModelRegistry(
            ctx.store, self.triton_url, cfg["TRITON_KEEP_VERSIONS"], _config_name(cfg["TRITON_MODEL_CONFIG_NAME"])
        )
        sesame = cfg["SESAME_URL"]
        self.resolver = NameResolver(None if sesame.lower() == "off" else sesame)
        self.admission = Admission(cfg["GATEWAY_MAX_RENDERS"], cfg["GATEWAY_MAX_QUEUE"])
        self.max_in_flight = cfg["TRITON_MAX_IN_FLIGHT"]
        self.tile_px = cfg["RENDER_TILE_PX"]
        self.batch_tiles = cfg["RENDER_BATCH_TILES"]
        self.limits = Limits()
        self.cache = RenderCache(ctx.store)
        self.poll_s = cfg["MODEL_POLL_S"]
        self._stop = threading.Event()
        threading.Thread(target=self._watch_models, name="gateway-models", daemon=True).start()

    def _watch_models(self) -> None:
        """Serve newly exported versions without a restart (and without waiting for a render)."""
        while not self._stop.wait(self.poll_s):
            for model in {DEFAULT_MODEL, *self.models.known()}:
                try:
                    self.models.sync(model)
                except ServiceError as exc:  # none published yet, Triton restarting: try again later
                    log.debug("model sync skipped: %s", exc)
                except Exception:  # the watcher must outlive any one failure
                    log.exception("model sync failed")

    # -- RPCs ----------------------------------------------------------------------------

    def ResolveName(self, request: gateway_pb2.ResolveNameRequest, context: grpc.ServicerContext) -> Any:
        found = self.resolver.resolve(request.name)
        return gateway_pb2.ResolvedName(
            name=found.name,
            position=common_pb2.SkyPosition(ra_deg=found.ra_deg, dec_deg=found.dec_deg),
            resolver=found.resolver,
            size_arcmin=found.size_arcmin,
        )

    def Render(self, request: gateway_pb2.RenderRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        spec = self._spec(request)
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        deadline = _deadline(context)
        with self.admission.enter() as ticket:
            if ticket.waited_behind:
                yield _progress("queued", 0, 0, f"{ticket.waited_behind} render(s) ahead")
            ticket.wait(deadline.remaining(), cancelled)
            if cancelled.is_set():
                raise Cancelled()
            served = self.models.served(spec.model, spec.version)
            tiling = tiling_for(served.provenance, self.tile_px, self.batch_tiles)
            key = render_key(spec, served.model, served.version, tiling)
            rendered = None if spec.no_cache else self.cache.load(key, spec.want_fits)
            if rendered is None:
                with self.models.lease(served):
                    rendered = yield from self._render_now(spec, served, tiling, deadline, cancelled)
                rendered.record = self.cache.save(key, rendered)
        yield from _result_events(rendered, spec.target.resolver)

    # -- steps ---------------------------------------------------------------------------

    def _render_now(
        self,
        spec: RenderSpec,
        served: ServedVersion,
        tiling: Tiling,
        deadline: Deadline,
        cancelled: threading.Event,
    ) -> Generator[gateway_pb2.RenderEvent, None, Rendered]:
        """Cutout, tiles through Triton, products; yields progress, returns the rendering."""
        grids = plan_grids(spec, served.scale, tiling.margin_px)
        yield _progress("cutout", 0, 1, f"{spec.survey} {grids.input_width} x {grids.input_height} px")
        cutout = self._cutout(spec, grids, deadline)
        runner = TritonRunner(self.triton, self.triton_url, served.model, served.version, self.max_in_flight)
        events: list[gateway_pb2.RenderEvent] = []

        def progress(stage: str, done: int, total: int, message: str = "") -> None:
            events.append(_progress(stage, done, total, message))

        # Tiles run in a worker thread so that progress reaches the client while they do.
        result: dict[str, Any] = {}
        job = (spec, grids, cutout, runner, tiling, deadline, cancelled, progress)
        worker = threading.Thread(target=_capture, args=(result, render_pixels, *job), daemon=True)
        worker.start()
        yield from _drain(events, worker, cancelled)
        if "error" in result:
            raise result["error"]
        image, spread, survey01, stats = result["value"]
        yield _progress("encoding", 0, 1, "PNG, FITS, spread, side-by-side")
        provenance = make_provenance(spec, served.model, served.version, served.provenance, cutout, stats, tiling)
        wcs = grids.output_wcs(cutout.wcs, spec.width, spec.height)
        return Rendered(
            png=products.rendering_png(image, provenance),
            spread_png=products.spread_png(spread, provenance) if spread is not None else b"",
            side_by_side_png=products.side_by_side_png(survey01, image, provenance),
            fits=products.rendering_fits(image, wcs, provenance, spread) if spec.want_fits else b"",
            provenance=provenance,
            footprint=output_footprint(spec, wcs),
        )

    def _spec(self, request: gateway_pb2.RenderRequest) -> RenderSpec:
        which = request.WhichOneof("target")
        if which == "name":
            found = self.resolver.resolve(request.name)
            target = Target(found.ra_deg, found.dec_deg, found.name, found.resolver, found.size_arcmin)
        elif which == "position":
            check_position(request.position.ra_deg, request.position.dec_deg)
            target = Target(request.position.ra_deg, request.position.dec_deg)
        else:
            raise InvalidArgument("target", 'give a name (e.g. "M51") or a position (RA/Dec in degrees)')
        width = request.size.width or request.size.height or DEFAULT_SIZE_PX
        height = request.size.height or width
        spec = RenderSpec(
            target=target,
            fov_arcmin=request.fov_arcmin or default_fov(target),
            width=width,
            height=height,
            survey=request.survey or DEFAULT_SURVEY,
            model=request.model_name or DEFAULT_MODEL,
            version=request.model_version,
            samples=max(1, request.samples),
            fidelity=request.fidelity,
            north_angle_deg=request.north_angle_deg,
            want_fits=request.want_fits,
            seed=request.seed,
            no_cache=request.no_cache,
        )
        check_spec(spec, self.limits)
        if not spec.seed:
            spec = RenderSpec(**{**spec.__dict__, "seed": derive_seed(spec)})
        return spec

    def _cutout(self, spec: RenderSpec, grids: Any, deadline: Deadline) -> CutoutPixels:
        fp = grids.footprint(spec)
        request = cutouts_pb2.CutoutRequest(
            footprint=common_pb2.Footprint(
                center=common_pb2.SkyPosition(ra_deg=fp["ra_deg"], dec_deg=fp["dec_deg"]),
                fov_x_arcmin=fp["fov_x_arcmin"],
                fov_y_arcmin=fp["fov_y_arcmin"],
                north_angle_deg=fp["north_angle_deg"],
                grid=common_pb2.PixelGrid(width=fp["width"], height=fp["height"]),
            ),
            survey=spec.survey,
            match_outreach_grid=True,  # exactly this grid: the output WCS is derived from it
        )
        left = deadline.remaining()
        timeout = CUTOUT_TIMEOUT_S if left is None else max(0.01, min(left, CUTOUT_TIMEOUT_S))
        try:
            cutout = self.cutouts.stub.GetCutout(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded("the render's deadline passed while fetching the survey cutout") from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise InvalidArgument("survey", f"the cutouts service refused the field: {exc.details()}") from None
            raise Unavailable(f"the cutouts service is unavailable ({code.name}): {exc.details()}") from None
        if not cutout.available:
            raise InvalidArgument("survey", f"{spec.survey} has no pixels here: {cutout.unavailable_reason}")
        cube = read_cutout_fits(self.store.get_bytes(cutout.fits.bucket, cutout.fits.key))
        wcs, _ = header_wcs(json.loads(cutout.wcs_header_json), cube.shape[2], cube.shape[1])
        ref = {"bucket": cutout.fits.bucket, "key": cutout.fits.key, "sha256": cutout.fits.sha256}
        hips = json.loads(cutout.wcs_header_json).get("HIPS", "") or spec.survey
        return CutoutPixels(cube=cube, wcs=wcs, credit=cutout.credit, survey_hips=hips, ref=ref)

    def close(self) -> None:
        self._stop.set()
        self.cutouts.close()
        self.triton.close()


def _capture(result: dict[str, Any], fn: Any, *args: Any) -> None:
    try:
        result["value"] = fn(*args)
    except BaseException as exc:  # handed to the RPC thread, which raises it
        result["error"] = exc


def _drain(events: list[Any], worker: threading.Thread, cancelled: threading.Event) -> Iterator[Any]:
    """Relay the worker's progress (the latest of each burst) until it ends."""
    while worker.is_alive():
        worker.join(0.25)
        if events:
            latest = events[-1]
            events.clear()
            yield latest
    if cancelled.is_set():
        raise Cancelled()


def _progress(stage: str, done: int, total: int, message: str = "") -> gateway_pb2.RenderEvent:
    return gateway_pb2.RenderEvent(
        progress=common_pb2.JobProgress(stage=stage, done=done, total=total, message=message)
    )


def _result_events(rendered: Rendered, resolver: str) -> Iterator[gateway_pb2.RenderEvent]:
    p = rendered.provenance
    inline: dict[str, bytes] = {}
    for product in ("png", "fits", "spread_png", "side_by_side_png"):
        data: bytes = getattr(rendered, product)
        if len(data) <= CHUNK_BYTES:
            inline[product] = data
            continue
        for offset in range(0, len(data), CHUNK_BYTES):
            chunk = gateway_pb2.ProductChunk(
                product=product, offset=offset, total_size=len(data), data=data[offset : offset + CHUNK_BYTES]
            )
            yield gateway_pb2.RenderEvent(chunk=chunk)
    created = timestamp_pb2.Timestamp()
    created.FromJsonString(p["created"])
    fp = rendered.footprint
    result = gateway_pb2.RenderResult(
        **inline,
        footprint=common_pb2.Footprint(
            center=common_pb2.SkyPosition(ra_deg=fp["ra_deg"], dec_deg=fp["dec_deg"]),
            fov_x_arcmin=fp["fov_x_arcmin"],
            fov_y_arcmin=fp["fov_y_arcmin"],
            north_angle_deg=fp["north_angle_deg"],
            grid=common_pb2.PixelGrid(width=fp["width"], height=fp["height"]),
            wcs_header_json=fp["wcs_header_json"],
        ),
        provenance=common_pb2.Provenance(
            inputs=[
                common_pb2.ObjectRef(**{k: v for k, v in ref.items() if k in ("bucket", "key", "sha256")})
                for ref in p["inputs"]
            ],
            survey=p["survey"],
            model_name=p["model_name"],
            model_version=p["model_version"],
            disclaimer=p["disclaimer"],
            credits=p["credits"],
            created=created,
            parameters={k: str(v) for k, v in p["parameters"].items()},
            software_version=p["software_version"],
        ),
        cached=common_pb2.ObjectRef(**rendered.record),
        from_cache=rendered.from_cache,
        resolver=resolver,
    )
    yield gateway_pb2.RenderEvent(result=result)


def output_wcs(result: gateway_pb2.RenderResult) -> WCS:
    header = json.loads(result.footprint.wcs_header_json)
    return header_wcs(header, result.footprint.grid.width, result.footprint.grid.height)[0]


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(name="gateway", register=register, settings=SETTINGS)
