"""Helpers shared by the benchmarks: summaries, machine info, tables, JSON results."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median (robust to the odd slow run on a shared machine), min, max and the raw samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": list(samples),
    }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_results(name: str, results: dict[str, Any], quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {
        "benchmark": name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "machine": machine_info(),
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


class ChildServer:
    """A server (a replica) run in a child process, so that it shares no GIL with the
    benchmark's client threads. ``target(pipe, *args)`` starts the server, sends what the
    parent needs first (URLs), then answers commands sent with ``call`` until "stop"."""

    def __init__(self, target: Any, args: tuple[Any, ...], name: str, start_timeout_s: float = 600) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.name = name
        self.proc = context.Process(target=target, args=(child, *args), daemon=True, name=name)
        self.proc.start()
        if not self.pipe.poll(start_timeout_s):
            raise RuntimeError(f"{name} did not start")
        self.hello: Any = self.pipe.recv()

    def call(self, command: str, timeout_s: float = 300) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(timeout_s):
            raise RuntimeError(f"{self.name} did not answer {command!r}")
        return self.pipe.recv()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.pipe.send("stop")
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)
