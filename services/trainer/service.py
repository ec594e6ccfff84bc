"""Trainer gRPC service: start, watch, list training runs; export a run to the Triton repository.

A run is started by StartTraining and carried out by a "train" job, which launches the run's own
process (services/trainer/run.py) — a local subprocess, or a Kubernetes Job on a GPU node — and
relays what it reports (status.json in the run's folder) to the job's watchers: step, losses,
throughput, validation scores. The run itself checkpoints to the `models` bucket; a job resumed after
a restart, or a new job started with resume_run_id, continues it from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from services.api import curator_pb2, trainer_pb2, trainer_pb2_grpc
from services.runtime.config import Config, Setting
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.jobs import JobCancelled, JobContext, JobInterrupted
from services.runtime.jobs_api import job_to_proto
from services.runtime.refs import ref_to_proto
from services.runtime.server import ServiceContext, ServiceSpec
from services.trainer import config as configs
from services.trainer import runs
from services.trainer.launch import Launch, LocalLaunch

SERVICE = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name
ACTIVE = ("PENDING", "RUNNING")

SETTINGS = (
    Setting("TRAIN_LAUNCHER", "str", "local", "where runs execute: local (subprocess) or kubernetes (a Job)"),
    Setting("TRAIN_LOG_DIR", "str", "/tmp/pss-training", "where local runs write their logs"),
    Setting("TRAIN_POLL_S", "positive_float", "1", "how often a job relays its run's progress"),
    Setting("MODEL_NAME", "str", "generator", "Triton model name runs are exported as"),
)  # the Kubernetes Job's own settings (PSS_TRAINER_JOB_*) are read by k8s_job.JobTemplate.from_env


def _launcher_kind(config: Config) -> str:
    kind = str(config["TRAIN_LAUNCHER"]).strip().lower()
    if kind not in ("local", "kubernetes"):
        raise FailedPrecondition(f"PSS_TRAIN_LAUNCHER={kind!r}: expected local or kubernetes")
    return kind


def new_run_id(request_id: str = "") -> str:
    if request_id:
        return "run-" + hashlib.sha256(f"train|{request_id}".encode()).hexdigest()[:16]
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def run_to_proto(run: dict[str, Any], job: dict[str, Any] | None, store: Any) -> trainer_pb2.Run:
    status = runs.read_json(store, run["id"], "status.json") or {}
    state = runs.read_json(store, run["id"], "state.json")
    report = runs.read_json(store, run["id"], "report.json")
    metrics = {k: float(v) for k, v in (status.get("metrics") or {}).items()}
    if report:
        metrics.update({f"test.{k}": float(v) for k, v in (report.get("headline") or {}).items()})
    message = trainer_pb2.Run(
        id=run["id"],
        dataset=curator_pb2.DatasetRef(name=run["dataset"]["name"], version=run["dataset"]["version"]),
        config=run["config_name"],
        metrics=metrics,
    )
    if job is not None:
        message.job.CopyFrom(job_to_proto(job))
    if state:
        message.last_checkpoint.CopyFrom(
            ref_to_proto({"bucket": runs.BUCKET, "key": runs.key(run["id"], "state.pt"), **state})
        )
    if report:
        message.report.CopyFrom(ref_to_proto({"bucket": runs.BUCKET, "key": runs.key(run["id"], "report.json")}))
    return message


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        _launcher_kind(ctx.config)

    def _job(self, run: dict[str, Any]) -> dict[str, Any] | None:
        jobs = run.get("jobs") or []
        if not jobs:
            return None
        try:
            return self.ctx.jobs.get(jobs[-1])
        except NotFound:
            return None

    def StartTraining(self, request: trainer_pb2.StartTrainingRequest, context: grpc.ServicerContext) -> Any:
        if request.resume_run_id:
            return self._resume(request)
        if not request.HasField("dataset") or not request.dataset.name:
            raise InvalidArgument("dataset.name", "is required: the curated dataset to train on (NAME[@VERSION])")
        name = request.config or "demo"
        config = configs.resolve(name, dict(request.overrides))
        from services.curator import dataset as datasets  # heavy (astropy, reproject): not at start-up

        document = datasets.resolve(self.store, request.dataset.name, request.dataset.version)
        run_id = new_run_id(request.request_id)
        existing = runs.read_json(self.store, run_id, "run.json")
        if existing is not None:  # the same request again: the same run
            job = self._job(existing)
            if job is not None:
                return job_to_proto(job)
        run = {
            "id": run_id,
            "dataset": {"name": document["name"], "version": document["version"], "digest": document["digest"]},
            "config_name": name,
            "overrides": dict(request.overrides),
            "config": config.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "jobs": [],
        }
        return self._submit(run, request.request_id)

    def _resume(self, request: trainer_pb2.StartTrainingRequest) -> Any:
        run = runs.load_run(self.store, runs.validate_run_id(request.resume_run_id, "resume_run_id"))
        job = self._job(run)
        if job is not None and job["state"] in ACTIVE:
            raise FailedPrecondition(
                f"run {run['id']} is already {job['state'].lower()} (job {job['id']}); "
                f"watch it with: prettyspace jobs watch {job['id']} --service trainer"
            )
        return self._submit(run, request.request_id)

    def _submit(self, run: dict[str, Any], request_id: str) -> Any:
        runs.save_run(self.store, run)  # before the job exists: the job reads it
        job = self.ctx.jobs.submit("train", {"run_id": run["id"]}, request_id=request_id)
        if job["id"] not in run["jobs"]:
            run["jobs"].append(job["id"])
            runs.save_run(self.store, run)
        return job_to_proto(job)

    def GetRun(self, request: trainer_pb2.RunRef, context: grpc.ServicerContext) -> Any:
        run = runs.load_run(self.store, request.id)
        return run_to_proto(run, self._job(run), self.store)

    def ListRuns(self, request: trainer_pb2.ListRunsRequest, context: grpc.ServicerContext) -> Any:
        for run in runs.list_runs(self.store, request.limit or 100):
            yield run_to_proto(run, self._job(run), self.store)

    def ExportModel(self, request: trainer_pb2.ExportModelRequest, context: grpc.ServicerContext) -> Any:
        run = runs.load_run(self.store, request.run_id)
        if runs.read_json(self.store, run["id"], "state.json") is None:
            raise FailedPrecondition(f"run {run['id']} has no checkpoint yet: train it first")
        from services.trainer import export  # torch: not at start-up

        model = export.validate_model_name(request.model_name or self.ctx.config["MODEL_NAME"])
        self.ctx.jobs.refuse_overlap(
            "export",
            lambda job: f"an export to model {model}" if job["params"].get("model") == model else "",
            request.request_id,
        )
        params = {"run_id": run["id"], "model": model}
        return job_to_proto(self.ctx.jobs.submit("export", params, request_id=request.request_id))


# -- jobs -------------------------------------------------------------------------------------------


def _launch(ctx: JobContext, run: dict[str, Any]) -> Launch:
    if _launcher_kind(ctx.config) == "kubernetes":
        from services.trainer.k8s_job import kubernetes_launch

        return kubernetes_launch(run)
    return LocalLaunch(run["id"], Path(ctx.config["TRAIN_LOG_DIR"]))


def _relay(ctx: JobContext, status: dict[str, Any] | None, seen: float) -> float:
    """Copy a fresher status.json of the run into the job's progress; returns its time."""
    if not status or status.get("updated", 0) <= seen:
        return seen
    ctx.progress(
        done=int(status.get("step", 0)),
        total=int(status.get("steps", 0)),
        stage=str(status.get("stage", "")),
        message=str(status.get("message", "")),
    )
    ctx.set_metrics(status.get("metrics") or {})
    return float(status["updated"])


def training_job(ctx: JobContext) -> dict[str, Any]:
    run = runs.load_run(ctx.store, ctx.params["run_id"])
    ctx.progress(stage="starting", total=int(run["config"].get("steps", 0)))
    launch = _launch(ctx, run)
    seen, poll_s = 0.0, float(ctx.config["TRAIN_POLL_S"])
    try:
        while True:
            outcome = launch.poll()
            seen = _relay(ctx, runs.read_json(ctx.store, run["id"], "status.json"), seen)
            if outcome.state != "running":
                break
            ctx.check()
            time.sleep(poll_s)
    except JobCancelled:
        launch.stop(cancel=True)
        raise
    except JobInterrupted:
        launch.stop(cancel=False)
        raise
    if outcome.state == "failed":
        raise RuntimeError(outcome.message or "the training run failed")
    status = runs.read_json(ctx.store, run["id"], "status.json") or {}
    result = {"run_id": run["id"], "step": int(status.get("step", 0)), "stage": str(status.get("stage", ""))}
    report = runs.read_json(ctx.store, run["id"], "report.json")
    if report:
        result["report"] = runs.key(run["id"], "report.json")
        result.update({k: f"{v:.4g}" for k, v in (report.get("headline") or {}).items()})
    return result


def export_job(ctx: JobContext) -> dict[str, Any]:
    from services.trainer import export

    ctx.progress(stage="exporting")
    published = export.export_run(ctx.store, ctx.params["run_id"], ctx.params["model"])
    return {k: str(v) if not isinstance(v, str) else v for k, v in published.items() if not isinstance(v, dict)}


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(
    name="trainer",
    register=register,
    settings=SETTINGS,
    job_handlers={"train": training_job, "export": export_job},
)
