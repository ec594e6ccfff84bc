"""The local stack from the command line (the Makefile's up/down/status/demo).

python -m deploy.localstack install   unpack the Triton server binary (cached)
python -m deploy.localstack up        start S3, Triton and every service; wait healthy
python -m deploy.localstack status    health of each component
python -m deploy.localstack down      drain and stop everything
python -m deploy.localstack demo      up, then show the platform healthy
"""

from __future__ import annotations

import argparse
import sys
import time

from deploy.localstack import triton
from deploy.localstack.demo import (
    build_dataset,
    crawl_archives,
    curate_pairs,
    cut_surveys,
    export_dataset_plots,
    export_demo_model,
    preview_embedded_sky,
    render_demo_targets,
    train_demo_model,
)
from deploy.localstack.stack import DEFAULT_CACHE, DEFAULT_ROOT, Stack, StackError
from services.api import common_pb2


def _print_health(stack: Stack) -> bool:
    health = stack.health()
    width = max(len(h.name) for h in health)
    for h in health:
        detail = f"  {h.detail}" if h.detail else ""
        print(f"{'ok ' if h.ok else '!! '}{h.name:<{width}}  {h.address:<21}  {h.status}{detail}")
    return all(h.ok for h in health)


def cmd_install(_: argparse.Namespace) -> int:
    install = triton.install_triton(DEFAULT_CACHE / "triton")
    print(f"tritonserver ready at {install.binary}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    existing = Stack.load(DEFAULT_ROOT)
    if existing and all(existing.running().values()):
        print("the local stack is already running:")
        return 0 if _print_health(existing) else 1
    if existing:
        print("cleaning up a stack that is no longer complete")
        existing.stop()
    stack = Stack.local(DEFAULT_ROOT)
    try:
        stack.start(timeout_s=args.timeout, progress=True)
    except StackError as exc:
        print(f"the local stack did not come up: {exc}", file=sys.stderr)
        return 1
    _print_health(stack)
    print(f"\nlogs: {stack.log_dir}/   settings for clients: {stack.root / 'stack.env'}")
    print("stop it with `make down`")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    stack = Stack.load(DEFAULT_ROOT)
    if stack is None:
        print("no local stack is running (start it with `make up`)")
        return 1
    return 0 if _print_health(stack) else 1


def cmd_down(_: argparse.Namespace) -> int:
    stack = Stack.load(DEFAULT_ROOT)
    if stack is None:
        print("no local stack is running")
        return 0
    started = time.monotonic()
    killed = stack.stop()
    forced = [name for name, k in killed.items() if k]
    print(
        f"stopped {', '.join(killed)} in {time.monotonic() - started:.1f} s"
        + (f" (had to kill: {', '.join(forced)})" if forced else "")
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    code = cmd_up(args)
    if code:
        return code
    stack = Stack.load(DEFAULT_ROOT)
    assert stack is not None
    steps = (
        ("crawling the archive replicas (first listing page of each; incremental after the first run)", crawl_archives),
        ("survey cutouts (DSS2, SDSS9) of every crawled observation (cached ones cost nothing)", cut_surveys),
        ("curating the pairs: missing data, colour, resolution, alignment (current verdicts are kept)", curate_pairs),
        ("building the demo training dataset (HEALPix splits, tile index, credits, plots)", build_dataset),
    )
    for title, step in steps:
        print(f"\n{title}:")
        job = step(stack)
        counters = ", ".join(f"{k} {v}" for k, v in sorted({**job.progress.counters, **job.result}.items()))
        print(f"  {common_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_').lower()}: {counters}")
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            print(f"  it did not succeed: {job.error}")
            return 1
    print("\nthe demo dataset's summary plots:")
    for path in export_dataset_plots(stack, DEFAULT_ROOT / "demo"):
        print(f"  {path}")
    print("\nthe embedded sky, seen as the survey cutout and as the crawled archive image:")
    for path in preview_embedded_sky(stack, DEFAULT_ROOT / "demo"):
        print(f"  {path}")
    print("\ntraining the demo generator (trainer service; ~13 min + evaluation on 2 cores, once):")
    run_id, how = train_demo_model(stack)
    model, version = export_demo_model(stack, run_id)
    print(f"  run {run_id} ({how}), exported as {model} version {version} into the models bucket")
    print("\nrendering named targets and held-out test fields through the gateway (Triton serving the generator):")
    for path in render_demo_targets(stack, DEFAULT_ROOT / "demo"):
        print(f"  {path}")
    print(
        "\nThe platform is up: an S3 object store, Triton serving the trained generator from the\n"
        "`models` bucket, the crawler, cutouts, curator, trainer and gateway services, and replicas of\n"
        "esahubble.org, esawebb.org, CDS hips2fits, CDS Sesame and the Gaia TAP serving the local sky.\n"
        f"Browse the Hubble archive replica: {stack.env()['PSS_ESAHUBBLE_URL']}/images/archive/search/\n"
        "Render anything yourself (with the settings of .stack/stack.env):\n"
        '  set -a; . .stack/stack.env; set +a; .venv/bin/prettyspace render "M51" --fov 8 --size 1024 --out m51.png'
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.localstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (
        ("install", cmd_install),
        ("up", cmd_up),
        ("status", cmd_status),
        ("down", cmd_down),
        ("demo", cmd_demo),
    ):
        p = sub.add_parser(name)
        p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:  # a bad setting or a missing binary
        print(f"local stack: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
