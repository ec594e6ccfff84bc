"""Curator gRPC service: pair verdicts (evaluation job), the blacklist, and immutable versioned
training datasets (build job). The domain logic lives in evaluate.py, evaluation.py, dataset.py,
blacklist.py and splits.py; this module validates requests and turns results into messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from services.api import crawler_pb2, curator_pb2, curator_pb2_grpc
from services.client.addresses import address_from_env
from services.crawler import catalog
from services.curator import blacklist, dataset, evaluation, metrics, verdicts
from services.curator.evaluate import Policy
from services.cutouts.surveys import DEFAULT_SURVEYS, parse_surveys
from services.runtime.config import Config, Setting
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, require
from services.runtime.jobs import JobContext
from services.runtime.jobs_api import job_to_proto
from services.runtime.refs import ref_to_proto
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = curator_pb2.DESCRIPTOR.services_by_name["Curator"].full_name

SETTINGS = (
    Setting("CURATE_SURVEYS", "str", DEFAULT_SURVEYS, "HiPS ids of the surveys paired with outreach images"),
    Setting("CURATE_WORKERS", "positive_int", "2", "worker processes of an evaluation job"),
    Setting("CURATE_MAX_IMAGE_PIXELS", "positive_int", "16777216", "largest stored image size evaluated"),
    Setting("CURATE_MIN_VALID_FRACTION", "positive_float", "0.6", "valid area a masked pair must keep"),
    Setting("CURATE_MIN_RESOLUTION_GAIN", "positive_float", "1", "survey pixel / outreach pixel, at least"),
    Setting("CURATE_MIN_SURVEY_SIDE_PX", "positive_int", "32", "smallest survey cutout side"),
    Setting("CURATE_MAX_SHIFT_PX", "positive_float", "10", "largest residual shift corrected (survey px)"),
    Setting("CURATE_MAX_ROTATION_DEG", "positive_float", "2", "largest residual rotation corrected"),
    Setting("CURATE_MAX_SCALE_ERROR", "positive_float", "0.02", "largest residual scale error corrected"),
    Setting("CURATE_CUTOUT_TIMEOUT_S", "positive_float", "300", "deadline of one request to the cutouts service"),
    Setting("DATASET_TILE_PX", "positive_int", "32", "training crop side on the survey grid"),
    Setting("DATASET_TILE_STRIDE_PX", "positive_int", "16", "step between training crops"),
    Setting("DATASET_HEALPIX_ORDER", "str", "auto", "HEALPix order of the splits (auto: from the field sizes)"),
)
DEFAULT_FRACTIONS = (0.1, 0.1)


def surveys_of(config: Config) -> tuple[str, ...]:
    try:
        return tuple(sorted(parse_surveys(config["CURATE_SURVEYS"])))
    except ValueError as exc:
        raise FailedPrecondition(f"PSS_CURATE_SURVEYS: {exc}") from exc


def evaluation_settings(config: Config) -> evaluation.EvaluationSettings:
    policy = Policy(
        min_valid_fraction=config["CURATE_MIN_VALID_FRACTION"],
        min_survey_side_px=config["CURATE_MIN_SURVEY_SIDE_PX"],
        min_resolution_gain=config["CURATE_MIN_RESOLUTION_GAIN"],
        max_shift_px=config["CURATE_MAX_SHIFT_PX"],
        max_rotation_deg=config["CURATE_MAX_ROTATION_DEG"],
        max_scale_error=config["CURATE_MAX_SCALE_ERROR"],
    )
    return evaluation.EvaluationSettings(
        surveys_of(config), policy, config["CURATE_MAX_IMAGE_PIXELS"], config["CURATE_CUTOUT_TIMEOUT_S"]
    )


def healpix_order(config: Config) -> int | None:
    raw = str(config["DATASET_HEALPIX_ORDER"]).strip().lower()
    if raw in ("", "auto"):
        return None
    if not raw.isdigit() or int(raw) > 29:
        raise FailedPrecondition(f"PSS_DATASET_HEALPIX_ORDER={raw!r}: expected auto or an order 0..29")
    return int(raw)


def blacklist_to_proto(document: dict[str, Any]) -> curator_pb2.Blacklist:
    return curator_pb2.Blacklist(
        entries=[
            curator_pb2.BlacklistEntry(
                observation=crawler_pb2.ObservationKey(
                    source=catalog.ENUM_BY_SOURCE[entry["source"]], image_id=entry["image_id"]
                ),
                reason=entry["reason"],
            )
            for entry in blacklist.entries(document)
        ]
    )


def _observation(key: crawler_pb2.ObservationKey, prefix: str = "") -> tuple[str, str]:
    source = catalog.source_name(key.source, f"{prefix}source")
    image_id = blacklist.validate_image_id(key.image_id, f"{prefix}image_id")
    return source, image_id


def _survey(slug: str, known: tuple[str, ...], field: str) -> str:
    if slug not in known:
        raise InvalidArgument(field, f"unknown survey {slug!r}: one of {', '.join(known)}")
    return slug


def dataset_to_proto(document: dict[str, Any], known: list[dict[str, Any]]) -> curator_pb2.Dataset:
    files = document["files"]
    return curator_pb2.Dataset(
        ref=curator_pb2.DatasetRef(name=document["name"], version=document["version"]),
        manifest=ref_to_proto(files["manifest.jsonl"]),
        credits=ref_to_proto(files["credits.json"]),
        summary=ref_to_proto(files["summary.json"]),
        tiles=ref_to_proto(files["tiles.jsonl"]),
        counts={k: int(v) for k, v in document["counts"].items()},
        digest=document["digest"],
        pairs=document["pairs"],
        created=document["created"],
        plots=[ref_to_proto(v) for k, v in sorted(files.items()) if k.startswith("plots/")],
        versions=[v["version"] for v in known],
    )


class CuratorServicer(curator_pb2_grpc.CuratorServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.surveys = surveys_of(ctx.config)

    # -- verdicts ---------------------------------------------------------------------------

    def StartEvaluation(self, request: curator_pb2.StartEvaluationRequest, context: grpc.ServicerContext) -> Any:
        pairs = []
        for i, pair in enumerate(request.pairs):
            require(pair.HasField("observation"), f"pairs[{i}].observation", "is required (source and image_id)")
            source, image_id = _observation(pair.observation, f"pairs[{i}].observation.")
            survey = _survey(pair.survey, self.surveys, f"pairs[{i}].survey") if pair.survey else ""
            if not self.store.exists(evaluation.ARCHIVE, f"{source}/{image_id}/meta.json"):
                raise NotFound(f"no observation {source}/{image_id} in the archive: crawl it first")
            pairs.append(f"{source}/{image_id}" + (f"@{survey}" if survey else ""))
        params = {"pairs": ",".join(pairs), "reevaluate": "1" if request.reevaluate else "0"}
        if not pairs:  # two evaluations of everything would do the same work twice, racing
            self.ctx.jobs.refuse_overlap(
                "curate-evaluate",
                lambda job: "" if job["params"].get("pairs") else "an evaluation of every pair",
                request.request_id,
            )
        return job_to_proto(self.ctx.jobs.submit("curate-evaluate", params, request_id=request.request_id))

    def GetVerdict(self, request: curator_pb2.PairKey, context: grpc.ServicerContext) -> Any:
        require(request.HasField("observation"), "observation", "is required (source and image_id)")
        source, image_id = _observation(request.observation, "observation.")
        survey = _survey(request.survey, self.surveys, "survey")
        document = verdicts.load(self.store, source, image_id)
        if document is None or survey not in document.get("pairs", {}):
            raise NotFound(
                f"no verdict for {source}/{image_id} with {survey} yet: evaluate it "
                f"(prettyspace curate run --pair {source}/{image_id})"
            )
        reason = blacklist.reason_for(blacklist.load(self.store), source, image_id)
        return verdicts.pair_to_proto(document, survey, reason)

    # -- blacklist ----------------------------------------------------------------------------

    def GetBlacklist(self, request: curator_pb2.GetBlacklistRequest, context: grpc.ServicerContext) -> Any:
        return blacklist_to_proto(blacklist.load(self.store))

    def SetBlacklistEntry(self, request: curator_pb2.BlacklistEntry, context: grpc.ServicerContext) -> Any:
        require(request.HasField("observation"), "observation", "is required (source and image_id)")
        source, image_id = _observation(request.observation, "observation.")
        reason = blacklist.validate_reason(request.reason)
        return blacklist_to_proto(blacklist.set_entry(self.store, source, image_id, reason))

    def RemoveBlacklistEntry(self, request: crawler_pb2.ObservationKey, context: grpc.ServicerContext) -> Any:
        source, image_id = _observation(request)
        return blacklist_to_proto(blacklist.remove_entry(self.store, source, image_id))

    # -- datasets -------------------------------------------------------------------------------

    def StartDatasetBuild(self, request: curator_pb2.StartDatasetBuildRequest, context: grpc.ServicerContext) -> Any:
        name = dataset.validate_name(request.name)
        surveys = [_survey(s, self.surveys, "surveys") for s in dict.fromkeys(request.surveys)] or list(self.surveys)
        val, test = request.validation_fraction, request.test_fraction
        if val == 0 and test == 0:
            val, test = DEFAULT_FRACTIONS
        for field, value in (("validation_fraction", val), ("test_fraction", test)):
            if not 0 <= value < 1:
                raise InvalidArgument(field, f"{value} is outside [0, 1)")
        if val + test >= 1:
            raise InvalidArgument("test_fraction", f"validation + test = {val + test:g} leaves nothing to train on")
        healpix_order(self.ctx.config)
        self.ctx.jobs.refuse_overlap(
            "dataset-build",
            lambda job: f"a build of dataset {name}" if job["params"].get("name") == name else "",
            request.request_id,
        )
        params = {
            "name": name,
            "surveys": ",".join(surveys),
            "validation_fraction": repr(val),
            "test_fraction": repr(test),
            "seed": str(request.seed),
        }
        return job_to_proto(self.ctx.jobs.submit("dataset-build", params, request_id=request.request_id))

    def GetDataset(self, request: curator_pb2.DatasetRef, context: grpc.ServicerContext) -> Any:
        document = dataset.resolve(self.store, request.name, request.version)
        return dataset_to_proto(document, dataset.versions(self.store, request.name))


# -- jobs -------------------------------------------------------------------------------------------


def evaluation_job(ctx: JobContext) -> dict[str, Any]:
    return evaluation.run_job(
        ctx, evaluation_settings(ctx.config), address_from_env("cutouts"), ctx.config["CURATE_WORKERS"]
    )


def dataset_job(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    params = dataset.BuildParams(
        name=p["name"],
        surveys=tuple(p["surveys"].split(",")),
        validation_fraction=float(p["validation_fraction"]),
        test_fraction=float(p["test_fraction"]),
        seed=int(p["seed"]),
        tile_px=ctx.config["DATASET_TILE_PX"],
        tile_stride_px=ctx.config["DATASET_TILE_STRIDE_PX"],
        healpix_order=healpix_order(ctx.config),
    )
    chosen = (ctx.checkpoint() or {}).get("version", "")

    def progress(stage: str, done: int, total: int) -> None:
        ctx.check()
        ctx.progress(stage=stage, done=done, total=total)

    result = dataset.build(
        ctx.store,
        params,
        chosen,
        on_progress=progress,
        on_version=lambda version, digest: ctx.save_checkpoint({"version": version, "digest": digest}),
    )
    metrics.DATASETS.labels("new" if result["new"] else "unchanged").inc()
    return {
        "version": result["version"],
        "new": int(result["new"]),
        **{f"pairs_{k}": v for k, v in result["counts"].items()},
    }


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    curator_pb2_grpc.add_CuratorServicer_to_server(CuratorServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(
    name="curator",
    register=register,
    settings=SETTINGS,
    job_handlers={"curate-evaluate": evaluation_job, "dataset-build": dataset_job},
)
