"""Cutouts gRPC service: survey pixels (DSS2, SDSS9 through CDS hips2fits) exactly matched
to a footprint or to an archive observation, cached in the ``cutouts`` bucket."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from services.api import common_pb2, cutouts_pb2, cutouts_pb2_grpc
from services.crawler.catalog import source_name, sources_from_request
from services.cutouts import metrics
from services.cutouts.cutter import ARCHIVE, Cutter, Result
from services.cutouts.geometry import FootprintSpec, Limits
from services.cutouts.surveys import DEFAULT_SURVEYS, parse_surveys
from services.cutouts.upstream import Hips2Fits, UpstreamPolicy
from services.runtime.config import Config, Setting
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError
from services.runtime.jobs import JobContext
from services.runtime.jobs_api import job_to_proto
from services.runtime.logs import fields
from services.runtime.refs import ref_to_proto
from services.runtime.server import ServiceContext, ServiceSpec

log = logging.getLogger(__name__)
SERVICE = cutouts_pb2.DESCRIPTOR.services_by_name["Cutouts"].full_name
REAL_HIPS2FITS = "https://alasky.cds.unistra.fr/hips-image-services/hips2fits"

SETTINGS = (
    Setting("HIPS2FITS_URL", "str", REAL_HIPS2FITS, "hips2fits endpoint (the stand-in in tests and the demo)"),
    Setting("CUTOUT_SURVEYS", "str", DEFAULT_SURVEYS, "HiPS ids served, comma-separated"),
    Setting("CUTOUT_MAX_SIDE_PX", "positive_int", "8192", "largest cutout side"),
    Setting("CUTOUT_MAX_PIXELS", "positive_int", "40000000", "largest cutout area"),
    Setting("CUTOUT_MAX_FOV_DEG", "positive_float", "10", "largest field of view"),
    Setting("UPSTREAM_RATE_PER_S", "non_negative_float", "2", "hips2fits requests per second (0: unlimited)"),
    Setting("UPSTREAM_CONCURRENCY", "positive_int", "2", "hips2fits requests in flight at once"),
    Setting("UPSTREAM_TIMEOUT_S", "positive_float", "60", "timeout of one hips2fits request"),
    Setting("UPSTREAM_RETRIES", "positive_int", "3", "retries after a timeout, 5xx or connection error"),
    Setting("UPSTREAM_BACKOFF_S", "non_negative_float", "1", "first retry delay; doubles each retry"),
    Setting("UPSTREAM_TILE_SIDE_PX", "positive_int", "2048", "larger cutouts are fetched in tiles of this side"),
)


def make_cutter(config: Config, store: Any) -> Cutter:
    try:
        surveys = parse_surveys(config["CUTOUT_SURVEYS"])
    except ValueError as exc:
        raise FailedPrecondition(f"PSS_CUTOUT_SURVEYS: {exc}") from exc
    side = config["UPSTREAM_TILE_SIDE_PX"]
    policy = UpstreamPolicy(
        url=config["HIPS2FITS_URL"],
        timeout_s=config["UPSTREAM_TIMEOUT_S"],
        retries=config["UPSTREAM_RETRIES"],
        backoff_s=config["UPSTREAM_BACKOFF_S"],
        rate_per_s=config["UPSTREAM_RATE_PER_S"],
        max_concurrency=config["UPSTREAM_CONCURRENCY"],
        max_tile_side=side,
        max_tile_pixels=side * side,
    )
    limits = Limits(
        max_side_px=config["CUTOUT_MAX_SIDE_PX"],
        max_pixels=config["CUTOUT_MAX_PIXELS"],
        max_fov_deg=config["CUTOUT_MAX_FOV_DEG"],
    )
    return Cutter(store, surveys, Hips2Fits(policy, metrics.on_upstream), limits, policy.url)


def to_proto(result: Result) -> cutouts_pb2.Cutout:
    record = result.record
    refs = {name: ref_to_proto(ref) for name, ref in (("fits", record.fits), ("png", record.png)) if ref}
    return cutouts_pb2.Cutout(
        available=record.available,
        unavailable_reason=record.reason,
        wcs_header_json=json.dumps(record.wcs_header, sort_keys=True),
        survey=record.survey,
        cached=result.cached,
        grid=common_pb2.PixelGrid(width=record.wcs_header["NAXIS1"], height=record.wcs_header["NAXIS2"]),
        footprint_key=record.key,
        credit=record.credit,
        **refs,
    )


_CUTTERS: dict[int, Cutter] = {}
_CUTTERS_LOCK = threading.Lock()


def cutter_for(config: Config, store: Any) -> Cutter:
    """One per service process: the job handler and the servicer share its upstream limits."""
    with _CUTTERS_LOCK:
        key = id(store)
        if key not in _CUTTERS:
            _CUTTERS[key] = make_cutter(config, store)
        return _CUTTERS[key]


class CutoutsServicer(cutouts_pb2_grpc.CutoutsServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.cutter = cutter_for(ctx.config, ctx.store)

    def GetCutout(self, request: cutouts_pb2.CutoutRequest, context: grpc.ServicerContext) -> Any:
        target = request.WhichOneof("target")
        source = image_id = ""
        if target == "footprint":
            spec = FootprintSpec.from_proto(request.footprint)
        elif target == "observation":
            source = source_name(request.observation.source, "observation.source")
            image_id = request.observation.image_id
            if not image_id:
                raise InvalidArgument("observation.image_id", "is empty")
            spec = self.cutter.observation_spec(source, image_id)
        else:
            raise InvalidArgument("target", "give a footprint or an observation")
        if not request.survey:
            raise InvalidArgument("survey", f"is empty: one of {', '.join(sorted(self.cutter.surveys))}")
        result = self.cutter.cutout(
            request.survey, spec, request.pixel_scale_arcsec, request.match_outreach_grid, source, image_id
        )
        return to_proto(result)

    def StartCutoutBatch(self, request: cutouts_pb2.StartCutoutBatchRequest, context: grpc.ServicerContext) -> Any:
        surveys = list(dict.fromkeys(request.surveys)) or sorted(self.cutter.surveys)
        for slug in surveys:
            self.cutter.survey(slug)
        observations = [f"{source_name(o.source, 'observations.source')}/{o.image_id}" for o in request.observations]
        params = {
            "surveys": ",".join(surveys),
            "sources": ",".join(sources_from_request(list(request.sources))),
            "observations": ",".join(observations),
        }
        return job_to_proto(self.ctx.jobs.submit("cutout-batch", params, request_id=request.request_id))


def batch_job(ctx: JobContext) -> dict[str, Any]:
    """Cutouts for many observations and surveys; what is cached costs a lookup, so a resumed
    job simply goes over the list again from its checkpoint."""
    cutter = cutter_for(ctx.config, ctx.store)
    surveys = ctx.params["surveys"].split(",")
    if ctx.params.get("observations"):
        targets = [tuple(t.split("/", 1)) for t in ctx.params["observations"].split(",")]
    else:
        targets = []
        for source in ctx.params["sources"].split(","):
            for key in ctx.store.list_keys(ARCHIVE, f"{source}/"):
                if key.endswith("/meta.json"):
                    meta = ctx.store.get_json(ARCHIVE, key)
                    if not meta.get("withdrawn"):
                        targets.append((source, meta["id"]))
    pairs = [(s, src, ident) for (src, ident) in targets for s in surveys]
    checkpoint = ctx.checkpoint() or {"next": 0, "counters": {}}
    if checkpoint["counters"]:
        ctx.set_counters(checkpoint["counters"])
    ctx.progress(stage="cutouts", total=len(pairs), done=checkpoint["next"])
    lock = threading.Lock()
    state = {"next": checkpoint["next"]}

    def one(pair: tuple[str, str, str]) -> None:
        slug, source, ident = pair
        ctx.check()
        try:
            result = cutter.cutout(slug, cutter.observation_spec(source, ident), source=source, image_id=ident)
            ctx.count("cached" if result.cached else "fetched")
            if not result.record.available:
                ctx.count("unavailable")
        except ServiceError as exc:  # one bad observation or an upstream outage must not end the batch
            ctx.count("errors")
            log.warning(
                "cutout failed",
                extra=fields(job_id=ctx.job_id, target=f"{source}/{ident}", survey=slug, error=str(exc)),
            )

    workers = max(1, cutter.upstream.policy.max_concurrency)
    with ThreadPoolExecutor(workers, thread_name_prefix="cutout-batch") as pool:
        for start in range(checkpoint["next"], len(pairs), workers * 4):
            chunk = pairs[start : start + workers * 4]
            list(pool.map(one, chunk))
            with lock:
                state["next"] = start + len(chunk)
                ctx.progress(done=state["next"])
                ctx.save_checkpoint({"next": state["next"], "counters": ctx.counters()})
    counters = ctx.counters()
    return {k: counters.get(k, 0) for k in ("fetched", "cached", "unavailable", "errors")} | {"pairs": len(pairs)}


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    cutouts_pb2_grpc.add_CutoutsServicer_to_server(CutoutsServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(name="cutouts", register=register, settings=SETTINGS, job_handlers={"cutout-batch": batch_job})
