"""The `prettyspace` command line. Every call goes through services.client."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from tqdm import tqdm

from services.api import common_pb2, crawler_pb2, cutouts_pb2
from services.client.addresses import SERVICES, env_name
from services.client.clients import TERMINAL_STATES, client_for
from services.client.health import platform_health


def cmd_status(args: argparse.Namespace) -> int:
    components = platform_health(timeout_s=args.timeout)
    if args.json:
        print(json.dumps([c.__dict__ for c in components], indent=1))
    else:
        width = max(len(c.name) for c in components)
        for c in components:
            mark = "ok " if c.ok else "!! "
            detail = f"  {c.detail}" if c.detail else ""
            print(f"{mark}{c.name:<{width}}  {c.address:<21}  {c.status}{detail}")
    return 0 if all(c.ok for c in components) else 1


def _print_job(job: common_pb2.Job) -> None:
    print(json.dumps(MessageToDict(job, preserving_proto_field_name=True), indent=1))


def _progress_line(job: common_pb2.Job) -> str:
    p = job.progress
    counters = ", ".join(f"{k}={v}" for k, v in sorted(p.counters.items()))
    metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted(p.metrics.items()) if not k.startswith("val."))
    return " ".join(x for x in (p.stage, counters, metrics) if x)


def follow_with_progress(client_jobs: object, job_id: str, *, log_every_s: float = 30.0) -> common_pb2.Job:
    """Follow a job to its end with a progress bar; shared by every job command.

    When stderr is not a terminal (a CronJob's log, CI), a plain line is written
    instead, on every change of stage and at most every `log_every_s` seconds."""
    if not sys.stderr.isatty():
        last_stage: str | None = None
        last_at = 0.0

        def log(job: common_pb2.Job) -> None:
            nonlocal last_stage, last_at
            now = time.monotonic()
            if job.state in TERMINAL_STATES or job.progress.stage != last_stage or now - last_at >= log_every_s:
                last_stage, last_at = job.progress.stage, now
                p = job.progress
                done = f"{p.done}/{p.total}" if p.total else str(p.done)
                state = common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
                print(f"{job_id}: {state} {done} {_progress_line(job)}".rstrip(), file=sys.stderr, flush=True)

        return client_jobs.follow(job_id, log)  # type: ignore[attr-defined]

    bar = tqdm(total=0, unit="item", dynamic_ncols=True, desc=job_id[:40])

    def update(job: common_pb2.Job) -> None:
        p = job.progress
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        bar.set_postfix_str(_progress_line(job), refresh=False)
        bar.refresh()

    try:
        return client_jobs.follow(job_id, update)  # type: ignore[attr-defined]
    finally:
        bar.close()


def cmd_jobs(args: argparse.Namespace) -> int:
    with client_for(args.service) as client:
        if args.action == "list":
            state = common_pb2.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else 0
            for job in client.jobs.list(kind=args.kind or "", state=state, limit=args.limit):
                p = job.progress
                print(f"{job.id:<48} {common_pb2.JobState.Name(job.state)[10:]:<10} {p.done}/{p.total} {p.stage}")
            return 0
        if args.action == "get":
            _print_job(client.jobs.get(args.id))
            return 0
        if args.action == "cancel":
            _print_job(client.jobs.cancel(args.id))
            return 0
        job = follow_with_progress(client.jobs, args.id)
        _print_job(job)
        return 0 if job.state == common_pb2.JOB_STATE_SUCCEEDED else 1


# --------------------------------------------------------------------------
# prettyspace crawl

CRAWL_SOURCES = {
    "esahubble": [crawler_pb2.SOURCE_ESAHUBBLE],
    "esawebb": [crawler_pb2.SOURCE_ESAWEBB],
    "all": [],  # StartCrawlRequest: no sources means all of them
}
SOURCE_NAMES = {crawler_pb2.SOURCE_ESAHUBBLE: "esahubble", crawler_pb2.SOURCE_ESAWEBB: "esawebb"}
MAX_UINT32 = 2**32 - 1


def _max_pages(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_UINT32:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) to {MAX_UINT32}, got {value}")
    return value


def _request_id(text: str) -> str:
    if not text.strip() or text != text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty id without surrounding spaces, got {text!r}")
    return text


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def format_job_summary(job: common_pb2.Job) -> str:
    """The final state, every counter the job reports (sorted), its result and error."""
    state = common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    lines = [f"{job.kind or 'job'} {job.id}: {state}"]
    if job.finished.seconds and job.created.seconds:
        elapsed = job.finished.ToDatetime() - job.created.ToDatetime()
        lines[0] += f" after {elapsed.total_seconds():.1f} s"
    p = job.progress
    if p.total or p.done:
        lines.append(f"  done: {p.done}" + (f"/{p.total}" if p.total else ""))
    entries = sorted(p.counters.items()) + sorted(job.result.items())
    width = max((len(k) for k, _ in entries), default=0)
    lines += [f"  {k:<{width}}  {v}" for k, v in entries]
    if p.message:
        lines.append(f"  message: {p.message}")
    if job.error:
        lines.append(f"  error: {job.error}")
    return "\n".join(lines)


def crawl_request(args: argparse.Namespace) -> crawler_pb2.StartCrawlRequest:
    return crawler_pb2.StartCrawlRequest(
        sources=CRAWL_SOURCES[args.source],
        incremental=args.incremental,
        max_pages=args.max_pages,
        # Always send an idempotency key: a retried StartCrawl then never starts a second crawl.
        request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
    )


def service_options(parser: argparse.ArgumentParser, service: str, job: bool, timeout_s: float = 10.0) -> None:
    """--json, --address, --timeout (and --request-id, --no-wait for job commands): what every
    command talking to one service takes."""
    if job:
        parser.add_argument("--request-id", type=_request_id, default=None, help="idempotency key")
        parser.add_argument("--no-wait", action="store_true", help="print the job id and return without following it")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--address", help=f"{service} host:port (default: {env_name(service)})")
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=timeout_s, metavar="S", help=f"seconds to wait for the {service}"
    )


def print_message(message: Any, as_json: bool, text: str) -> None:
    """A reply as JSON (--json) or as the given text."""
    if as_json:
        print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=1, sort_keys=True))
    else:
        print(text)


def run_job_command(args: argparse.Namespace, service: str, what: str, start: Callable[[Any], common_pb2.Job]) -> int:
    """Start a job on ``service`` with ``start(client)`` and follow it with a progress bar:
    what every job command does (crawl, cutouts, ...). Exit 0 succeeded, 1 otherwise."""
    try:
        client = client_for(service, args.address, timeout_s=args.timeout)
    except ValueError as exc:  # e.g. a malformed PSS_LOCAL_PORT_BASE
        print(f"prettyspace: {exc}", file=sys.stderr)
        return 2
    with client:
        started = time.monotonic()
        try:
            job = start(client)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                setting = "--address" if args.address else env_name(service)
                print(
                    f"prettyspace: {service} unreachable at {client.address} ({setting}): {exc.code().name}, "
                    f"gave up after {time.monotonic() - started:.1f} s; is the {service} running?",
                    file=sys.stderr,
                )
                return 1
            raise
        if args.no_wait:
            if args.json:
                _print_job(job)
            else:
                print(job.id)
            return 0
        print(f"{what} started: {job.id}", file=sys.stderr)
        try:
            job = follow_with_progress(client.jobs, job.id)
        except KeyboardInterrupt:
            print(
                f"\nprettyspace: stopped watching; the {what} goes on "
                f"(prettyspace jobs watch {job.id} --service {service}, or jobs cancel)",
                file=sys.stderr,
            )
            return 130
        except grpc.RpcError as exc:
            print(
                f"prettyspace: lost the {service} at {client.address} while following {job.id} "
                f"({exc.code().name}: {exc.details()}); the {what} may still be running: "
                f"prettyspace jobs watch {job.id} --service {service}",
                file=sys.stderr,
            )
            return 1
    if args.json:
        _print_job(job)
    else:
        print(format_job_summary(job))
    return 0 if job.state == common_pb2.JOB_STATE_SUCCEEDED else 1


def cmd_crawl(args: argparse.Namespace) -> int:
    request = crawl_request(args)
    return run_job_command(args, "crawler", "crawl", lambda c: c.stub.StartCrawl(request, timeout=args.timeout))


# -- prettyspace cutouts --------------------------------------------------------------------

CUTOUT_SURVEYS = {"dss2-color": ["dss2-color"], "sdss9-color": ["sdss9-color"], "all": []}


def _observation(text: str) -> crawler_pb2.ObservationKey:
    source, sep, image_id = text.partition("/")
    if not sep or source not in ("esahubble", "esawebb") or not image_id:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SOURCE/IMAGE_ID, e.g. esahubble/heic0506a")
    return crawler_pb2.ObservationKey(source=CRAWL_SOURCES[source][0], image_id=image_id)


def cutouts_request(args: argparse.Namespace) -> cutouts_pb2.StartCutoutBatchRequest:
    return cutouts_pb2.StartCutoutBatchRequest(
        observations=args.observation or [],
        surveys=CUTOUT_SURVEYS[args.survey],
        sources=CRAWL_SOURCES[args.source],
        request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
    )


def cmd_cutouts(args: argparse.Namespace) -> int:
    request = cutouts_request(args)
    return run_job_command(
        args, "cutouts", "cutout batch", lambda c: c.stub.StartCutoutBatch(request, timeout=args.timeout)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prettyspace", description="Prettier Space Survey command line")
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="health of every service, Triton and the object store")
    status.add_argument("--json", action="store_true")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    status.set_defaults(func=cmd_status)

    jobs = sub.add_parser("jobs", help="list, inspect, watch or cancel a service's jobs")
    jobs.add_argument("action", choices=("list", "get", "watch", "cancel"))
    jobs.add_argument("id", nargs="?", help="job id (get, watch, cancel)")
    jobs.add_argument("--service", required=True, choices=SERVICES)
    jobs.add_argument("--kind")
    jobs.add_argument("--state", choices=("pending", "running", "succeeded", "failed", "cancelled"))
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(func=cmd_jobs)

    crawl = sub.add_parser(
        "crawl",
        help="mirror the ESA/Hubble and ESA/Webb archives into the object store (a crawler job)",
        description="Start a crawl on the crawler service and follow it to its end with a progress bar. "
        "Exit status: 0 succeeded, 1 failed, cancelled or crawler unreachable, 2 bad arguments.",
    )
    crawl.add_argument("--source", required=True, choices=tuple(CRAWL_SOURCES), help="which archive (all: both)")
    crawl.add_argument("--incremental", action="store_true", help="only what is new or changed since the last crawl")
    crawl.add_argument("--max-pages", type=_max_pages, default=0, metavar="N", help="stop after N pages (0: no limit)")
    crawl.add_argument(
        "--request-id",
        type=_request_id,
        metavar="ID",
        help="idempotency key: the same id returns the same job instead of starting another (default: a new id)",
    )
    crawl.add_argument("--no-wait", action="store_true", help="print the job id and return without following it")
    crawl.add_argument("--json", action="store_true", help="print the final job as JSON")
    crawl.add_argument(
        "--address", help=f"crawler host:port (default: {env_name('crawler')}, else the local stack's port)"
    )
    crawl.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for the crawler to accept the crawl (default 10)",
    )
    crawl.set_defaults(func=cmd_crawl)

    cutouts = sub.add_parser(
        "cutouts",
        help="survey cutouts (DSS2, SDSS9) matched to crawled observations (a cutouts batch job)",
        description="Start a cutout batch on the cutouts service for every crawled observation of the "
        "source(s) (or the given ones) and follow it with a progress bar. Cached cutouts cost nothing. "
        "Exit status: 0 succeeded, 1 failed, cancelled or service unreachable, 2 bad arguments.",
    )
    cutouts.add_argument("--source", required=True, choices=tuple(CRAWL_SOURCES), help="which archive (all: both)")
    cutouts.add_argument("--survey", required=True, choices=tuple(CUTOUT_SURVEYS), help="which survey (all: every one)")
    cutouts.add_argument(
        "--observation", type=_observation, action="append", metavar="SOURCE/ID", help="only these (repeatable)"
    )
    cutouts.add_argument("--request-id", type=_request_id, default=None, help="idempotency key (default: a new one)")
    cutouts.add_argument("--no-wait", action="store_true", help="print the job id and return without following it")
    cutouts.add_argument("--json", action="store_true", help="print the final job as JSON")
    cutouts.add_argument("--address", help=f"cutouts host:port (default: {env_name('cutouts')})")
    cutouts.add_argument(
        "--timeout", type=_positive_seconds, default=10.0, metavar="S", help="seconds to wait for the service"
    )
    cutouts.set_defaults(func=cmd_cutouts)

    from services.client import cli_curator  # it builds on this module's helpers

    cli_curator.add_parsers(sub)
    from services.client import cli_trainer

    cli_trainer.add_parsers(sub)
    from services.client import cli_gateway

    cli_gateway.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "action", None) in ("get", "watch", "cancel") and not args.id:
        parser.error(f"jobs {args.action} needs a job id")
    try:
        return int(args.func(args))
    except grpc.RpcError as exc:
        print(f"prettyspace: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
