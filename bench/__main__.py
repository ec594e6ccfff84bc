"""`python -m bench [stack|objectstore|universe|replicas|crawler|cutouts|curator|trainer|gateway|all] [--quick]`:
run benchmarks, print a table, write bench/results/<name>.json (with machine info and a timestamp)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench import (
    crawler_throughput,
    curator_throughput,
    cutouts_latency,
    gateway_latency,
    objectstore_throughput,
    replica_pages,
    stack_startup,
    trainer_quality,
    universe_render,
)
from bench.common import write_results

BENCHMARKS: dict[str, tuple[str, ModuleType]] = {
    "stack": ("stack_startup", stack_startup),
    "objectstore": ("objectstore_throughput", objectstore_throughput),
    "universe": ("universe_render", universe_render),
    "replicas": ("replica_pages", replica_pages),
    "crawler": ("crawler_throughput", crawler_throughput),
    "cutouts": ("cutouts_latency", cutouts_latency),
    "curator": ("curator_throughput", curator_throughput),
    "trainer": ("trainer_quality", trainer_quality),
    "gateway": ("gateway_latency", gateway_latency),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("which", nargs="?", default="all", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test, not figures)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # "all" leaves out the trainer: it needs the running stack and demo dataset, and takes ~20 minutes.
    names = [k for k in BENCHMARKS if k != "trainer"] if args.which == "all" else [args.which]
    for key in names:
        name, module = BENCHMARKS[key]
        started = time.monotonic()
        run: Callable[..., dict[str, Any]] = module.run
        results = run(quick=args.quick)
        path = write_results(name, results, args.quick)
        print(module.render(results))
        print(f"({name}: {time.monotonic() - started:.0f} s; results in {path})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
