"""Pages served per second by the esahubble.org archive replica: a listing page, a
detail page, the per-image JSON, a d2d feed page and an already rendered (cached)
JPEG, over keep-alive HTTP/1.1 at concurrency 1 and 4.

Baselines in the same run, so the figures read as ratios on any machine: the same
JPEG as a static route of the very same server (what routing, logging and the
threaded server cost on their own), and as a file of the standard library's
``http.server`` (SimpleHTTPRequestHandler). The servers run in a child process so
the client's threads do not share its interpreter lock; endpoints are interleaved
round by round so drift on a shared machine hits them all alike.
"""

from __future__ import annotations

import functools
import http.client
import multiprocessing
import statistics
import tempfile
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import summarize, table

CONCURRENCY = (1, 4)
SCREEN_WIDTH = 640
SAME_SERVER = "static JPEG, same server"
HTTP_SERVER = "static JPEG, http.server"


class _KeepAliveFiles(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the replica
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve(cache_dir: str, static_dir: str, pipe: Any) -> None:
    """Child process: the replica (plus a static route on it) and a plain file server."""
    from services.universe.replicas.archive import ArchiveReplica
    from services.universe.replicas.httpbase import Response
    from services.universe.sky import Sky

    replica = ArchiveReplica("esahubble", Sky(), Path(cache_dir), screen_width=SCREEN_WIDTH).start()
    truth = replica.truth()
    entry = next(o for o in truth["observations"].values() if o["avm_quality"] == "Full" and not o["edge_cases"])
    started = time.perf_counter()
    jpeg = urllib.request.urlopen(entry["served"]["screen"]["url"], timeout=600).read()  # renders it once
    render_s = time.perf_counter() - started
    (Path(static_dir) / "static.jpg").write_bytes(jpeg)
    replica.route("GET", r"/_bench/static\.jpg", lambda _: Response(200, jpeg, {}, "image/jpeg"))
    files = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_KeepAliveFiles, directory=static_dir))
    files.daemon_threads = True
    threading.Thread(target=files.serve_forever, daemon=True).start()
    listing = truth["listing"]
    ident = entry["id"]
    pipe.send(
        {
            "render_s": render_s,
            "image_bytes": len(jpeg),
            "targets": {
                "listing page": (replica.url, f"{listing['path']}?{listing['query']}"),
                "detail page": (replica.url, f"/images/{ident}/"),
                "image JSON": (replica.url, f"/images/{ident}/api/json/"),
                "d2d feed page": (replica.url, "/images/d2d/"),
                "cached JPEG": (replica.url, urlsplit(entry["served"]["screen"]["url"]).path),
                SAME_SERVER: (replica.url, "/_bench/static.jpg"),
                HTTP_SERVER: (f"http://127.0.0.1:{files.server_address[1]}", "/static.jpg"),
            },
        }
    )
    pipe.recv()  # until the parent is done
    files.shutdown()
    replica.stop()


def _worker(base: str, path: str, deadline: float, counts: list[int], sizes: list[int]) -> None:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    done = 0
    while time.perf_counter() < deadline:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        done += 1
        sizes.append(len(body))
    conn.close()
    counts.append(done)


def _rate(base: str, path: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests per second over ``seconds`` with ``concurrency`` keep-alive clients."""
    counts: list[int] = []
    sizes: list[int] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    threads = [threading.Thread(target=_worker, args=(base, path, deadline, counts, sizes)) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started), (sizes[0] if sizes else 0)


def run(quick: bool = False) -> dict[str, Any]:
    seconds, repeats = (1.0, 1) if quick else (3.0, 3)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory(prefix="pss-bench-cache-") as cache, tempfile.TemporaryDirectory() as static:
        server = context.Process(target=_serve, args=(cache, static, child), daemon=True)
        server.start()
        try:
            if not parent.poll(900):
                raise RuntimeError("the replica did not start")
            info = parent.recv()
            targets: dict[str, tuple[str, str]] = info["targets"]
            samples: dict[str, dict[int, list[float]]] = {name: {c: [] for c in CONCURRENCY} for name in targets}
            sizes: dict[str, int] = {}
            for base, path in targets.values():  # warm-up (connections, caches), discarded
                _rate(base, path, 1, 0.2)
            for round_no in range(repeats):
                names = list(targets)
                names = names[round_no % len(names) :] + names[: round_no % len(names)]
                for name in names:
                    for concurrency in CONCURRENCY:
                        rps, size = _rate(*targets[name], concurrency, seconds)
                        samples[name][concurrency].append(rps)
                        sizes[name] = size
        finally:
            parent.send("stop")
            server.join(timeout=30)
            if server.is_alive():
                server.terminate()
    base_rps = {c: statistics.median(samples[SAME_SERVER][c]) for c in CONCURRENCY}
    return {
        "seconds_per_sample": seconds,
        "repeats": repeats,
        "screen_width": SCREEN_WIDTH,
        "first_render_s": info["render_s"],
        "endpoints": {
            name: {
                "bytes": sizes[name],
                "rps": {str(c): summarize(samples[name][c]) for c in CONCURRENCY},
                "vs_static_same_server": {
                    str(c): statistics.median(samples[name][c]) / base_rps[c] for c in CONCURRENCY
                },
            }
            for name in targets
        },
    }


def render(r: dict[str, Any]) -> str:
    rows = [
        [
            name,
            e["bytes"],
            *(e["rps"][str(c)]["median"] for c in CONCURRENCY),
            *(e["vs_static_same_server"][str(c)] for c in CONCURRENCY),
        ]
        for name, e in r["endpoints"].items()
    ]
    headers = [
        "endpoint",
        "bytes",
        *(f"req/s c={c}" for c in CONCURRENCY),
        *(f"vs static c={c}" for c in CONCURRENCY),
    ]
    return "\n".join(
        [
            f"Archive replica (esahubble), keep-alive HTTP/1.1, median of {r['repeats']} x"
            f" {r['seconds_per_sample']:.0f} s; 'vs static' = req/s relative to a static JPEG route"
            " on the same server (1.00 = as fast)",
            table(headers, rows),
            f"(first render of the {r['screen_width']}-px screen JPEG: {r['first_render_s']:.1f} s, then cached)",
        ]
    )
