"""`prettyspace curate ...` and `prettyspace dataset ...`: the curator's commands."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from services.api import curator_pb2
from services.client import cli
from services.client.clients import client_for


def _pair(text: str) -> curator_pb2.PairKey:
    observation, _, survey = text.partition("@")
    return curator_pb2.PairKey(observation=cli._observation(observation), survey=survey)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1 (exclusive)")
    return value


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**32:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer 0..4294967295")
    return int(text)


_print = cli.print_message


def _request_id(args: argparse.Namespace) -> str:
    return args.request_id or f"cli-{uuid.uuid4().hex}"


def cmd_curate_run(args: argparse.Namespace) -> int:
    request = curator_pb2.StartEvaluationRequest(
        pairs=args.pair or [], reevaluate=args.reevaluate, request_id=_request_id(args)
    )
    return cli.run_job_command(
        args, "curator", "evaluation", lambda c: c.stub.StartEvaluation(request, timeout=args.timeout)
    )


def format_verdict(v: curator_pb2.Verdict) -> str:
    pair = f"{cli.SOURCE_NAMES[v.pair.observation.source]}/{v.pair.observation.image_id} with {v.pair.survey}"
    lines = [f"{pair}: {'usable' if v.usable else 'rejected'}"]
    lines += [f"  - {reason}" for reason in v.reasons]
    lines += [f"  {k}: {val:g}" for k, val in sorted(v.scores.items())]
    if v.HasField("alignment") and v.alignment.method:
        a = v.alignment
        lines.append(
            f"  alignment ({a.method}, {a.matched_sources} sources): shift ({a.dx_px:+.2f}, {a.dy_px:+.2f}) px, "
            f"rotation {a.rotation_deg:+.3f} deg, scale {a.scale:.4f}{', corrected' if a.corrected else ''}"
        )
    for name, ref in (("cutout", v.cutout), ("survey mask", v.mask), ("outreach mask", v.outreach_mask)):
        if ref.key:
            lines.append(f"  {name}: s3://{ref.bucket}/{ref.key}")
    return "\n".join(lines)


def _call(args: argparse.Namespace, call: Any) -> int:
    with client_for("curator", args.address, timeout_s=args.timeout) as client:
        return call(client)


def cmd_curate_verdict(args: argparse.Namespace) -> int:
    request = curator_pb2.PairKey(observation=args.observation, survey=args.survey)

    def call(client: Any) -> int:
        verdict = client.stub.GetVerdict(request, timeout=args.timeout)
        _print(verdict, args.json, format_verdict(verdict))
        return 0

    return _call(args, call)


def cmd_curate_blacklist(args: argparse.Namespace) -> int:
    if args.action in ("add", "remove") and args.observation is None:
        print(f"prettyspace: curate blacklist {args.action} needs SOURCE/ID", file=sys.stderr)
        return 2
    if args.action == "add" and not args.reason:
        print("prettyspace: curate blacklist add needs --reason (why this pair must stay out)", file=sys.stderr)
        return 2

    def call(client: Any) -> int:
        if args.action == "add":
            entry = curator_pb2.BlacklistEntry(observation=args.observation, reason=args.reason)
            result = client.stub.SetBlacklistEntry(entry, timeout=args.timeout)
        elif args.action == "remove":
            result = client.stub.RemoveBlacklistEntry(args.observation, timeout=args.timeout)
        else:
            result = client.stub.GetBlacklist(curator_pb2.GetBlacklistRequest(), timeout=args.timeout)
        text = "\n".join(
            f"{cli.SOURCE_NAMES[e.observation.source]}/{e.observation.image_id}\t{e.reason}" for e in result.entries
        )
        _print(result, args.json, text + f"\n({len(result.entries)} entries)")
        return 0

    return _call(args, call)


def cmd_dataset_build(args: argparse.Namespace) -> int:
    request = curator_pb2.StartDatasetBuildRequest(
        name=args.name,
        surveys=args.survey or [],
        validation_fraction=args.validation,
        test_fraction=args.test,
        seed=args.seed,
        request_id=_request_id(args),
    )
    return cli.run_job_command(
        args, "curator", "dataset build", lambda c: c.stub.StartDatasetBuild(request, timeout=args.timeout)
    )


def format_dataset(d: curator_pb2.Dataset) -> str:
    lines = [f"dataset {d.ref.name}@{d.ref.version}: {d.pairs} pairs, created {d.created}"]
    lines += [f"  {split}: {n}" for split, n in sorted(d.counts.items())]
    lines.append(f"  digest: {d.digest}")
    for name, ref in (("manifest", d.manifest), ("tiles", d.tiles), ("credits", d.credits), ("summary", d.summary)):
        lines.append(f"  {name}: s3://{ref.bucket}/{ref.key}")
    lines += [f"  plot: s3://{p.bucket}/{p.key}" for p in d.plots]
    lines.append(f"  versions: {', '.join(d.versions)}")
    return "\n".join(lines)


def cmd_dataset_show(args: argparse.Namespace) -> int:
    name, _, version = args.ref.partition("@")

    def call(client: Any) -> int:
        found = client.stub.GetDataset(curator_pb2.DatasetRef(name=name, version=version), timeout=args.timeout)
        _print(found, args.json, format_dataset(found))
        return 0

    return _call(args, call)


def _common(parser: argparse.ArgumentParser, job: bool) -> None:
    cli.service_options(parser, "curator", job, 10.0)


def add_parsers(sub: Any) -> None:
    curate = sub.add_parser("curate", help="judge (outreach image, survey cutout) pairs; the blacklist")
    curate_sub = curate.add_subparsers(dest="curate_command", required=True)
    run = curate_sub.add_parser(
        "run",
        help="evaluate pairs (a curator job, followed with a progress bar)",
        description="Evaluate every pair without a current verdict (or the given ones): missing data, grey "
        "images, survey cutouts, resolution, alignment (corrected when small). Exit status: 0 succeeded, "
        "1 failed or unreachable, 2 bad arguments.",
    )
    run.add_argument(
        "--pair", type=_pair, action="append", metavar="SOURCE/ID[@SURVEY]", help="only these (repeatable)"
    )
    run.add_argument("--reevaluate", action="store_true", help="evaluate again even where a verdict is current")
    _common(run, job=True)
    run.set_defaults(func=cmd_curate_run)

    verdict = curate_sub.add_parser("verdict", help="the verdict of one pair")
    verdict.add_argument("observation", type=cli._observation, metavar="SOURCE/ID")
    verdict.add_argument("--survey", required=True, help="survey slug, e.g. dss2-color")
    _common(verdict, job=False)
    verdict.set_defaults(func=cmd_curate_verdict)

    black = curate_sub.add_parser("blacklist", help="list, add or remove blacklist entries")
    black.add_argument("action", choices=("list", "add", "remove"))
    black.add_argument("observation", type=cli._observation, nargs="?", metavar="SOURCE/ID")
    black.add_argument("--reason", help="why (add)")
    _common(black, job=False)
    black.set_defaults(func=cmd_curate_blacklist)

    data = sub.add_parser("dataset", help="build or show an immutable, versioned training dataset")
    data_sub = data.add_subparsers(dest="dataset_command", required=True)
    build = data_sub.add_parser(
        "build",
        help="build a new version of dataset NAME from the current verdicts (a curator job)",
        description="Build NAME's next version from the usable pairs: manifest, HEALPix splits, tile index, "
        "credits, summary and plots. Unchanged inputs give the latest version back. Exit status: 0 succeeded, "
        "1 failed or unreachable, 2 bad arguments.",
    )
    build.add_argument("name")
    build.add_argument("--survey", action="append", metavar="SLUG", help="only pairs with this survey (repeatable)")
    build.add_argument("--validation", type=_fraction, default=0.1, help="validation fraction (default 0.1)")
    build.add_argument("--test", type=_fraction, default=0.1, help="test fraction (default 0.1)")
    build.add_argument("--seed", type=_seed, default=0, help="seed of the split assignment (default 0)")
    _common(build, job=True)
    build.set_defaults(func=cmd_dataset_build)

    show = data_sub.add_parser("show", help="a dataset version: counts, digest, where its files are")
    show.add_argument("ref", metavar="NAME[@VERSION]")
    _common(show, job=False)
    show.set_defaults(func=cmd_dataset_show)
