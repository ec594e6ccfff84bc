"""Cold start of the whole local stack to all-healthy, and its idle memory.

Baselines in the same run, so the figures read as ratios on any machine: the
object store alone (what every stack waits for first) and one bare interpreter
importing the service runtime (the floor of every service's start). Runs are
interleaved so drift on a shared machine hits all three alike. "Cold" means fresh
processes, ports and data folder each time; the file cache is warm.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import MIB, summarize, table
from deploy.localstack.stack import REPO_ROOT, Stack

IDLE_S = 3.0  # let start-up work (model load, first scans) settle before measuring memory
MEMORY_KINDS = ("rss", "pss", "uss")


def _interpreter_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import services.runtime.server"], cwd=REPO_ROOT, check=True)
    return time.perf_counter() - started


def _component_memory(pid: int) -> dict[str, float]:
    """RSS/PSS/USS in MiB of a process and all its descendants (Triton's
    Python-backend stubs are children of tritonserver)."""
    root = psutil.Process(pid)
    totals = dict.fromkeys(MEMORY_KINDS, 0.0)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        try:
            info = proc.memory_full_info()  # reads smaps: a few ms per process
        except psutil.NoSuchProcess:
            continue
        for kind in MEMORY_KINDS:
            totals[kind] += getattr(info, kind) / MIB
    return {**totals, "processes": float(len(procs))}


def _stack_run(measure_memory: bool, **kwargs: Any) -> tuple[float, float, dict[str, dict[str, float]]]:
    """(start seconds, stop seconds, memory per component) of one fresh stack."""
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pss-bench-", ignore_cleanup_errors=True) as tmp:
        stack = Stack.ephemeral(Path(tmp), **kwargs)
        try:
            started = time.perf_counter()
            stack.start(timeout_s=120)
            start_s = time.perf_counter() - started
            if measure_memory:
                time.sleep(IDLE_S)
                memory = {name: _component_memory(pid) for name, pid in stack.pids.items()}
        finally:
            stopping = time.perf_counter()
            stack.stop()  # idempotent; start() already stops what it started on failure
            stop_s = time.perf_counter() - stopping
    return start_s, stop_s, memory


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    repeats = repeats or (1 if quick else 3)
    starts: dict[str, list[float]] = {"interpreter": [], "object_store": [], "full_stack": []}
    stops: dict[str, list[float]] = {"object_store": [], "full_stack": []}
    memories: list[dict[str, dict[str, float]]] = []
    for _ in range(repeats):
        starts["interpreter"].append(_interpreter_start())
        start_s, stop_s, _mem = _stack_run(False, services=(), with_triton=False, with_replicas=False)
        starts["object_store"].append(start_s)
        stops["object_store"].append(stop_s)
        start_s, stop_s, mem = _stack_run(True)
        starts["full_stack"].append(start_s)
        stops["full_stack"].append(stop_s)
        memories.append(mem)

    # Median over runs, per component and kind; the total is the sum of those medians.
    memory: dict[str, dict[str, float]] = {
        name: {k: statistics.median(m[name][k] for m in memories) for k in (*MEMORY_KINDS, "processes")}
        for name in memories[0]
    }
    memory["total"] = {k: sum(c[k] for c in memory.values()) for k in (*MEMORY_KINDS, "processes")}
    full = statistics.median(starts["full_stack"])
    return {
        "repeats": repeats,
        "idle_s": IDLE_S,
        "start_s": {name: summarize(s) for name, s in starts.items()},
        "stop_s": {name: summarize(s) for name, s in stops.items()},
        "start_ratio": {
            "full_stack/object_store": full / statistics.median(starts["object_store"]),
            "full_stack/interpreter": full / statistics.median(starts["interpreter"]),
        },
        "idle_memory_mib": memory,
    }


def render(r: dict[str, Any]) -> str:
    full = r["start_s"]["full_stack"]["median"]
    start_rows = [[name, s["median"], s["min"], s["max"], full / s["median"]] for name, s in r["start_s"].items()]
    stop_rows = [[f"stop {name}", s["median"], s["min"], s["max"], ""] for name, s in r["stop_s"].items()]
    mem_rows = [[name, m["rss"], m["pss"], m["uss"], int(m["processes"])] for name, m in r["idle_memory_mib"].items()]
    return "\n".join(
        [
            f"Stack cold start to all-healthy, {r['repeats']} run(s), seconds",
            table(["start", "median", "min", "max", "full/this"], [*start_rows, *stop_rows]),
            "",
            f"Idle memory of the full stack after {r['idle_s']:.0f} s idle, MiB, process + children, median of runs",
            "(RSS counts shared pages in every process; PSS splits them, so its total is the fair sum;"
            " USS is private memory only)",
            table(["component", "RSS", "PSS", "USS", "procs"], mem_rows),
        ]
    )
