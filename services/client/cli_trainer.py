"""`prettyspace train ...`, `prettyspace runs ...` and `prettyspace model export RUN`: the trainer's commands."""

from __future__ import annotations

import argparse
from typing import Any

from services.api import common_pb2, curator_pb2, trainer_pb2
from services.client import cli
from services.client.cli_curator import _request_id
from services.client.clients import client_for


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. steps=500")
    return key.strip(), value.strip()


def cmd_train(args: argparse.Namespace) -> int:
    name, _, version = (args.dataset or "").partition("@")
    request = trainer_pb2.StartTrainingRequest(
        dataset=curator_pb2.DatasetRef(name=name, version=version),
        config=args.config,
        overrides=dict(args.set or []),
        request_id=_request_id(args),
        resume_run_id=args.resume or "",
    )
    return cli.run_job_command(
        args, "trainer", "training", lambda c: c.stub.StartTraining(request, timeout=args.timeout)
    )


def format_run(run: trainer_pb2.Run) -> str:
    state = common_pb2.JobState.Name(run.job.state).removeprefix("JOB_STATE_") if run.job.id else "-"
    lines = [
        f"run {run.id}: {state}, dataset {run.dataset.name}@{run.dataset.version}, config {run.config}",
        f"  {run.job.progress.stage or '-'}: {run.job.progress.message}".rstrip(),
    ]
    lines += [f"  {k}: {v:.4g}" for k, v in sorted(run.metrics.items())]
    for label, ref in (("checkpoint", run.last_checkpoint), ("report", run.report)):
        if ref.key:
            lines.append(f"  {label}: s3://{ref.bucket}/{ref.key}")
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace) -> int:
    with client_for("trainer", args.address, timeout_s=args.timeout) as client:
        if args.run:
            run = client.stub.GetRun(trainer_pb2.RunRef(id=args.run), timeout=args.timeout)
            cli.print_message(run, args.json, format_run(run))
            return 0
        for run in client.stub.ListRuns(trainer_pb2.ListRunsRequest(limit=args.limit), timeout=args.timeout):
            cli.print_message(run, args.json, format_run(run))
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    request = trainer_pb2.ExportModelRequest(run_id=args.run, model_name=args.name, request_id=_request_id(args))
    return cli.run_job_command(args, "trainer", "export", lambda c: c.stub.ExportModel(request, timeout=args.timeout))


def _common(parser: argparse.ArgumentParser, job: bool) -> None:
    cli.service_options(parser, "trainer", job, 30.0)


def add_parsers(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train the generator on a curated dataset (a trainer job, followed with a progress bar)",
        description="Train survey -> Hubble/Webb-like on NAME[@VERSION] with a named config (demo: the compact "
        "CPU model; full: the GPU model), evaluate it on the test split against the baselines. Exit status: "
        "0 succeeded, 1 failed or unreachable, 2 bad arguments.",
    )
    train.add_argument("--dataset", metavar="NAME[@VERSION]", help="curated dataset (required unless --resume)")
    train.add_argument("--config", default="demo", help="demo (default), full, or tiny")
    train.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE", help="override a setting")
    train.add_argument("--resume", metavar="RUN", help="continue this run from its last checkpoint")
    _common(train, job=True)
    train.set_defaults(func=cmd_train)

    show = sub.add_parser("runs", help="list training runs, or show one")
    show.add_argument("run", nargs="?", metavar="RUN")
    show.add_argument("--limit", type=int, default=20)
    _common(show, job=False)
    show.set_defaults(func=cmd_runs)

    model = sub.add_parser("model", help="publish trained models to the Triton repository")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    export = model_sub.add_parser("export", help="export RUN's generator as a new Triton model version (a job)")
    export.add_argument("run", metavar="RUN")
    export.add_argument("--name", default="", help="Triton model name (default: the trainer's, generator)")
    _common(export, job=True)
    export.set_defaults(func=cmd_model_export)
