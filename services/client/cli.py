"""The `prettyspace` command line. Every call goes through services.client."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import grpc
from google.protobuf.json_format import MessageToDict
from tqdm import tqdm

from services.api import common_pb2
from services.client.addresses import SERVICES
from services.client.clients import client_for
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


def follow_with_progress(client_jobs: object, job_id: str) -> common_pb2.Job:
    """Follow a job to its end with a progress bar; shared by every job command."""
    bar = tqdm(total=0, unit="item", dynamic_ncols=True, desc=job_id[:40])

    def update(job: common_pb2.Job) -> None:
        p = job.progress
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        counters = ", ".join(f"{k}={v}" for k, v in sorted(p.counters.items()))
        bar.set_postfix_str(" ".join(x for x in (p.stage, counters) if x), refresh=False)
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
