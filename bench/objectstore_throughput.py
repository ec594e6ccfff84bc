"""Put/get throughput of our object-store layer against the raw minio client
underneath it, on the same SeaweedFS store in the same run.

Ratios are ours/raw in time (1.00 = no overhead, 2.00 = twice as slow): first
against the raw in-memory call (writes: known-length `put_object`; reads:
`get_object().read()`), then against the raw call doing the same job (unknown
length, from a file, to a file), which isolates what our layer adds.
Operations are interleaved round by round (order rotated each round) so drift
hits every operation alike; the first round is a discarded warm-up.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MIB, summarize, table
from deploy.localstack.stack import Stack
from services.runtime.objectstore import ObjectStore

BUCKET = "bench"
RAW_PUT = "raw put_object"
RAW_GET = "raw get_object().read()"
# The local store is capped at 16 volumes x 64 MB, and deleted or overwritten
# bytes come back only when a volume is vacuumed: reclaim space as we go (untimed).
VACUUM_EVERY = 256 * MIB


@dataclass(frozen=True)
class Op:
    name: str
    baseline: str  # the raw in-memory put/get this one's main ratio is against
    like: str  # the raw minio call doing the same job (same input/output), for a second ratio
    run: Callable[[], None]
    writes: int  # bytes it stores (staging copies included), for the vacuum budget


def _raw_get(store: ObjectStore, key: str) -> None:
    response = store.client.get_object(BUCKET, key)
    try:
        response.read()
    finally:
        response.close()
        response.release_conn()


def _ops(store: ObjectStore, size: int, data: bytes, tmp: Path, full: bool) -> list[Op]:
    c = store.client
    ops = [
        Op(RAW_PUT, RAW_PUT, RAW_PUT, lambda: c.put_object(BUCKET, "raw-put", io.BytesIO(data), size), size),
        Op("put_bytes", RAW_PUT, RAW_PUT, lambda: store.put_bytes(BUCKET, "put-bytes", data), size),
        Op(RAW_GET, RAW_GET, RAW_GET, lambda: _raw_get(store, "ref"), 0),
        Op("get_bytes (verified)", RAW_GET, RAW_GET, lambda: store.get_bytes(BUCKET, "ref"), 0),
    ]
    if not full:
        return ops
    source = tmp / "source.bin"
    source.write_bytes(data)
    # Chunk lists built once, outside the timing; a gRPC upload hands us chunks like these.
    chunks_1m = [data[i : i + MIB] for i in range(0, size, MIB)]
    chunks_64k = [data[i : i + 64 * 1024] for i in range(0, size, 64 * 1024)]
    part = 16 * MIB  # the part size put_stream and put_file use
    raw_stream, raw_fput, raw_fget = "raw put_object, length -1", "raw fput_object", "raw fget_object"
    return [
        *ops,
        # Unknown length, like put_stream's staging upload, without our reader, staging and copy.
        Op(
            raw_stream,
            RAW_PUT,
            raw_stream,
            lambda: c.put_object(BUCKET, "raw-put-stream", io.BytesIO(data), -1, part_size=part),
            size,
        ),
        Op(
            "put_stream, 1 MiB chunks",
            RAW_PUT,
            raw_stream,
            lambda: store.put_stream(BUCKET, "s-1m", chunks_1m),
            2 * size,
        ),
        Op(
            "put_stream, 64 KiB chunks",
            RAW_PUT,
            raw_stream,
            lambda: store.put_stream(BUCKET, "s-64k", chunks_64k),
            2 * size,
        ),
        Op(raw_fput, RAW_PUT, raw_fput, lambda: c.fput_object(BUCKET, "raw-fput", str(source), part_size=part), size),
        Op("put_file", RAW_PUT, raw_fput, lambda: store.put_file(BUCKET, "put-file", source), size),
        Op(raw_fget, RAW_GET, raw_fget, lambda: c.fget_object(BUCKET, "ref", str(tmp / "raw.bin")), 0),
        Op("download (verified)", RAW_GET, raw_fget, lambda: store.download(BUCKET, "ref", tmp / "ours.bin"), 0),
    ]


def _vacuum(stack: Stack, store: ObjectStore) -> None:
    """Delete what the operations wrote (not the reference object) and reclaim the space."""
    for key in store.list_keys(BUCKET):
        if key != "ref":
            store.delete(BUCKET, key)
    master = f"http://127.0.0.1:{stack.layout.seaweed_base}/vol/vacuum?garbageThreshold=0.01"
    with urllib.request.urlopen(master, timeout=60) as response:
        response.read()


def _measure(stack: Stack, store: ObjectStore, size: int, repeats: int, tmp: Path) -> dict[str, Any]:
    data = os.urandom(size)  # incompressible: no layer can win by compressing
    ops = _ops(store, size, data, tmp, full=size > 16 * MIB)
    store.put_bytes(BUCKET, "ref", data)  # what the reads read, written by our layer (it has a sha256)
    times: dict[str, list[float]] = {op.name: [] for op in ops}
    written = 0
    for round_no in range(repeats + 1):  # round 0 warms up connections, volumes and caches
        shift = round_no % len(ops)
        for op in ops[shift:] + ops[:shift]:
            if written + op.writes > VACUUM_EVERY:  # untimed, between operations
                _vacuum(stack, store)
                written = 0
            started = time.perf_counter()
            op.run()
            if round_no:
                times[op.name].append(time.perf_counter() - started)
            written += op.writes
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        op.name: {
            "baseline": op.baseline,
            "seconds": summarize(times[op.name]),
            "mib_per_s": size / MIB / medians[op.name],
            "time_ratio_vs_raw": medians[op.name] / medians[op.baseline],
            "like_for_like": op.like,
            "time_ratio_vs_like": medians[op.name] / medians[op.like],
        }
        for op in ops
    }


def run(quick: bool = False) -> dict[str, Any]:
    plan = {1 * MIB: 3 if quick else 20, 50 * MIB: 1 if quick else 5}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pss-bench-", ignore_cleanup_errors=True) as tmp:
        stack = Stack.ephemeral(Path(tmp) / "stack", services=(), with_triton=False)
        try:
            stack.start(timeout_s=60)
            store = stack.store()
            store.ensure_buckets([BUCKET])
            for size, repeats in plan.items():
                ops = _measure(stack, store, size, repeats, Path(tmp))
                results[f"{size // MIB} MiB"] = {"repeats": repeats, "ops": ops}
        finally:
            stack.stop()
    return results


def render(r: dict[str, Any]) -> str:
    out = [
        "Object store throughput, ours vs raw minio on the same SeaweedFS store (MiB = 2^20 bytes);",
        "ratios are in time, ours/raw: >1 is slower",
    ]
    for size, block in r.items():
        rows = [
            [
                name,
                o["mib_per_s"],
                o["seconds"]["median"] * 1000,
                o["time_ratio_vs_raw"],
                o["like_for_like"],
                o["time_ratio_vs_like"],
            ]
            for name, o in block["ops"].items()
        ]
        out += [
            "",
            f"{size} objects, {block['repeats']} timed rounds after 1 warm-up, median",
            table(["operation", "MiB/s", "ms", "vs raw put/get", "like-for-like raw", "vs it"], rows),
        ]
    return "\n".join(out)
