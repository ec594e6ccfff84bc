"""Latency and throughput of the cutouts service (GetCutout) on the hips2fits stand-in.

What one run measures, for square survey grids of 512 and 2048 px (DSS2 colour, a
footprint of 1"/px asked with ``match_outreach_grid``, so the survey grid is exactly the
footprint's grid; the 2048 px field is 34' across, well under the stand-in's 1 degree
radius); ``--quick`` does 512 px only, with fewer repetitions, as a smoke test:

1. Cold latency (a cache miss: a footprint never asked before; every repetition moves the
   centre, so its footprint key is new) against cached latency (the same footprint again),
   sequentially, one request at a time: medians, and the ratio cold / cached (issue #5's
   goal: a cached cutout at least 20x faster than a cold one).
2. Throughput, cutouts/s, at client concurrency 1 and 4 (a thread pool, one client channel
   per thread), cold (distinct new footprints) and cached (the same footprints again).
3. A baseline in the same run: astroquery's ``hips2fitsClass().query_with_wcs`` straight to
   the same stand-in, for the very grid the service asks for (built with the service's own
   geometry), one request at a time and 4 at once: what the service adds over a bare
   upstream call (decoding, blank mask, coverage verdict, FITS + PNG encoding, S3 writes).

The service runs with PSS_UPSTREAM_RATE_PER_S=0 (no politeness delay) and
PSS_UPSTREAM_CONCURRENCY=4; its default tile side (2048) makes a 2048 px cutout one
upstream request, so the 2048 px grid is also measured on a second service process with
PSS_UPSTREAM_TILE_SIDE_PX=1024 (4 tiles fetched in parallel, then mosaicked). The service's
own metrics (time in hips2fits requests, time of the whole upstream fetch) are read around
each cold measurement, to show where a cold request's time goes.

Kept out of the figures on purpose: the stand-in runs in a child process (its rendering
threads do not share the benchmark client's interpreter lock); each service process and
the baseline client make one untimed request of each size before timing (imports, first
connections). The stand-in renders on the same machine as the service and the object
store: on a small machine they share few cores (the CPU count is in the results).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import MIB, ChildServer, summarize, table
from deploy.localstack.stack import Stack
from services.api import common_pb2, cutouts_pb2
from services.client.clients import CutoutsClient
from tests.support.processes import ServiceProcess, service_process

SURVEY = "dss2-color"
HIPS = "CDS/P/DSS2/color"
SIZES = (512, 2048)
SCALE_ARCSEC = 1.0  # footprint pixel scale: the survey grid is the footprint's grid
CENTRE = (185.0, 15.0)  # the north Galactic cap (inside SDSS too)
STEP_DEG = 0.05  # centre shift between footprints: every footprint is new
CONCURRENCY = (1, 4)
UPSTREAM_CONCURRENCY = 4
TIMEOUT_S = 600
HIPS2FITS_PATH = r"^/hips-image-services/hips2fits"
# (label, tile side, sizes measured on that service)
SERVICES = (("tile 2048 (default)", 2048, SIZES), ("tile 1024", 1024, (2048,)))


def _plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "sizes": (512,),
            "services": (("tile 2048 (default)", 2048, (512,)),),
            "latency_reps": {512: 3},
            "cached_per_cold": 3,
            "throughput_n": {512: {1: 3, 4: 4}},
            "baseline_reps": {512: 3},
        }
    return {
        "sizes": SIZES,
        "services": SERVICES,
        "latency_reps": {512: 7, 2048: 3},
        "cached_per_cold": 3,
        "throughput_n": {512: {1: 6, 4: 12}, 2048: {1: 3, 4: 4}},
        "baseline_reps": {512: 7, 2048: 3},
    }


# -- the stand-in, in a child process --------------------------------------------------------


def _serve(pipe: Any) -> None:
    """Child process: the hips2fits stand-in; answers "count" (hips2fits requests so far) and "stop"."""
    from services.universe.replicas.hips2fits import Hips2FitsReplica
    from services.universe.sky import Sky

    replica = Hips2FitsReplica(Sky()).start()
    try:
        pipe.send(replica.endpoint)
        while True:
            command = pipe.recv()
            if command == "stop":
                break
            if command == "count":
                pipe.send(replica.count(HIPS2FITS_PATH))
    finally:
        replica.stop()


class _Replica(ChildServer):
    """The hips2fits stand-in in a child process."""

    def __init__(self) -> None:
        super().__init__(_serve, (), "hips2fits-replica", start_timeout_s=120)
        self.endpoint: str = self.hello

    def count(self) -> int:
        return int(self.call("count", timeout_s=60))


# -- footprints ---------------------------------------------------------------------------------

_serial = itertools.count()
_serial_lock = threading.Lock()


def _new_footprint(size: int) -> common_pb2.Footprint:
    """A square footprint of ``size`` px at SCALE_ARCSEC, never asked before in this run."""
    with _serial_lock:
        n = next(_serial)
    fov = size * SCALE_ARCSEC / 60
    return common_pb2.Footprint(
        center=common_pb2.SkyPosition(
            ra_deg=CENTRE[0] + STEP_DEG * (n % 100), dec_deg=CENTRE[1] + STEP_DEG * (n // 100)
        ),
        fov_x_arcmin=fov,
        fov_y_arcmin=fov,
        north_angle_deg=0.0,
        grid=common_pb2.PixelGrid(width=size, height=size),
    )


def _survey_grid(footprint: common_pb2.Footprint) -> Any:
    """The WCS the service asks hips2fits for (its own geometry, as GetCutout builds it)."""
    from services.cutouts.geometry import FootprintSpec, Limits, outreach_wcs, survey_grid

    wcs, shape = outreach_wcs(FootprintSpec.from_proto(footprint))
    grid, _ = survey_grid(wcs, shape, None, Limits())
    return grid


# -- the service ----------------------------------------------------------------------------------


class _Service:
    def __init__(self, stack: Stack, log_dir: Path, endpoint: str, tile_side: int) -> None:
        self.tile_side = tile_side
        self.process: ServiceProcess = service_process(
            stack,
            ["services", "cutouts"],
            log_dir,
            f"cutouts-tile{tile_side}",
            hips2fits_url=endpoint,
            upstream_rate_per_s="0",
            upstream_concurrency=str(UPSTREAM_CONCURRENCY),
            upstream_tile_side_px=str(tile_side),
            upstream_timeout_s="300",
            upstream_retries="1",
            upstream_backoff_s="0.1",
            log_level="warning",
        )
        self._local = threading.local()
        self._clients: list[CutoutsClient] = []
        self._lock = threading.Lock()

    def start(self) -> _Service:
        self.process.start(timeout_s=60)
        return self

    def _client(self) -> CutoutsClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = CutoutsClient(self.process.address, retries=False)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def get(self, footprint: common_pb2.Footprint) -> tuple[float, cutouts_pb2.Cutout]:
        request = cutouts_pb2.CutoutRequest(footprint=footprint, survey=SURVEY, match_outreach_grid=True)
        stub = self._client().stub
        started = time.perf_counter()
        cutout = stub.GetCutout(request, timeout=TIMEOUT_S)
        return time.perf_counter() - started, cutout

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.process.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out: dict[str, float] = {}
        for name in ("prettyspace_cutouts_fetch_seconds", "prettyspace_cutouts_upstream_request_seconds"):
            for part in ("sum", "count"):
                values = re.findall(rf"^{name}_{part}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
                out[f"{name}_{part}"] = sum(float(v) for v in values)
        return out

    def stop(self) -> None:
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
        self.process.stop()


def _check(cutout: cutouts_pb2.Cutout, size: int, cached: bool) -> None:
    if not cutout.available or (cutout.grid.width, cutout.grid.height) != (size, size) or cutout.cached != cached:
        raise RuntimeError(
            f"unexpected cutout: available={cutout.available} ({cutout.unavailable_reason!r}),"
            f" grid {cutout.grid.width}x{cutout.grid.height} (wanted {size}x{size}),"
            f" cached={cutout.cached} (wanted {cached})"
        )


def _latency(service: _Service, replica: _Replica, size: int, reps: int, cached_per_cold: int) -> dict[str, Any]:
    """Sequential cold requests (new footprints), each followed by ``cached_per_cold`` cached ones."""
    cold: list[float] = []
    cached: list[float] = []
    sizes: dict[str, int] = {}
    before_calls, before_metrics = replica.count(), service.metrics()
    footprints = []
    for _ in range(reps):
        footprint = _new_footprint(size)
        footprints.append(footprint)
        seconds, cutout = service.get(footprint)
        _check(cutout, size, cached=False)
        cold.append(seconds)
        sizes = {"fits_mib": cutout.fits.size / MIB, "png_mib": cutout.png.size / MIB}
    cold_calls, after_metrics = replica.count() - before_calls, service.metrics()
    for footprint in footprints:
        for _ in range(cached_per_cold):
            seconds, cutout = service.get(footprint)
            _check(cutout, size, cached=True)
            cached.append(seconds)
    cached_calls = replica.count() - before_calls - cold_calls

    def delta(name: str) -> float:
        return after_metrics[name] - before_metrics[name]

    fetches = delta("prettyspace_cutouts_fetch_seconds_count")
    requests = delta("prettyspace_cutouts_upstream_request_seconds_count")
    cold_s, cached_s = summarize(cold), summarize(cached)
    return {
        "cold_s": cold_s,
        "cached_s": cached_s,
        "cold_over_cached": cold_s["median"] / cached_s["median"],
        "upstream_calls_per_cold": cold_calls / reps,
        "upstream_calls_cached": cached_calls,
        # From the service's metrics, means over the cold requests: the whole upstream fetch
        # (all tiles, the mosaic) and one hips2fits HTTP request (decoding and blank mask included).
        "service_fetch_s_mean": delta("prettyspace_cutouts_fetch_seconds_sum") / fetches if fetches else None,
        "service_upstream_request_s_mean": (
            delta("prettyspace_cutouts_upstream_request_seconds_sum") / requests if requests else None
        ),
        **sizes,
    }


def _throughput(service: _Service, size: int, concurrency: int, n: int) -> dict[str, Any]:
    footprints = [_new_footprint(size) for _ in range(n)]
    out: dict[str, Any] = {"n": n}
    for phase, cached in (("cold", False), ("cached", True)):
        latencies: list[float] = []

        def one(footprint: common_pb2.Footprint, cached: bool = cached, latencies: list[float] = latencies) -> None:
            seconds, cutout = service.get(footprint)
            _check(cutout, size, cached=cached)
            latencies.append(seconds)

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency, thread_name_prefix=f"client-c{concurrency}") as pool:
            list(pool.map(one, footprints))
        wall = time.perf_counter() - started
        out[phase] = {
            "wall_s": wall,
            "per_s": n / wall,
            "latency_median_s": statistics.median(latencies),
        }
    return out


# -- the baseline: astroquery straight to the stand-in ----------------------------------------


def _baseline(endpoint: str, size: int, reps: int) -> dict[str, Any]:
    from astroquery.hips2fits import hips2fitsClass

    local = threading.local()

    def query() -> float:
        client = getattr(local, "client", None)
        if client is None:
            client = hips2fitsClass()
            client.server = endpoint
            client.timeout = TIMEOUT_S
            local.client = client
        grid = _survey_grid(_new_footprint(size))
        started = time.perf_counter()
        hdul = client.query_with_wcs(
            hips=HIPS, wcs=grid, format="fits", min_cut=0.5, max_cut=99.5, stretch="linear", cmap="Greys_r"
        )
        data = hdul[0].data  # astroquery has read the FITS: the pixels are in memory
        seconds = time.perf_counter() - started
        if data.shape != (3, size, size):
            raise RuntimeError(f"baseline: expected (3, {size}, {size}), got {data.shape}")
        return seconds

    query()  # untimed: imports, the first connection
    sequential = [query() for _ in range(reps)]
    out: dict[str, Any] = {"latency_s": summarize(sequential), "per_s": {"1": reps / sum(sequential)}}
    n = max(4, reps)
    started = time.perf_counter()
    with ThreadPoolExecutor(4, thread_name_prefix="baseline") as pool:
        list(pool.map(lambda _: query(), range(n)))
    out["per_s"]["4"] = n / (time.perf_counter() - started)
    return out


# -- run ------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    plan = _plan(quick)
    results: dict[str, Any] = {
        "survey": SURVEY,
        "scale_arcsec": SCALE_ARCSEC,
        "upstream_concurrency": UPSTREAM_CONCURRENCY,
        "concurrency": list(CONCURRENCY),
        "sizes": list(plan["sizes"]),
        "services": {},
        "baseline": {},
    }
    replica: _Replica | None = None
    stack: Stack | None = None
    services: list[_Service] = []
    with tempfile.TemporaryDirectory(prefix="pss-bench-cutouts-") as tmp:
        root = Path(tmp)
        try:
            started = time.perf_counter()
            replica = _Replica()
            stack = Stack.ephemeral(root / "stack", services=(), with_triton=False, with_replicas=False)
            stack.start(timeout_s=120)
            results["setup_s"] = time.perf_counter() - started
            for label, tile_side, sizes in plan["services"]:
                service = _Service(stack, root / "logs", replica.endpoint, tile_side).start()
                services.append(service)
                for size in sizes:
                    service.get(_new_footprint(size))  # untimed: imports and first connections
                by_size: dict[str, Any] = {}
                for size in sizes:
                    entry = _latency(service, replica, size, plan["latency_reps"][size], plan["cached_per_cold"])
                    entry["throughput"] = {
                        str(c): _throughput(service, size, c, plan["throughput_n"][size][c]) for c in CONCURRENCY
                    }
                    by_size[str(size)] = entry
                results["services"][label] = {"tile_side_px": tile_side, "sizes": by_size}
                service.stop()
                services.remove(service)
            for size in plan["sizes"]:
                results["baseline"][str(size)] = _baseline(replica.endpoint, size, plan["baseline_reps"][size])
        finally:
            for service in services:
                service.stop()
            if stack is not None:
                stack.stop()
            if replica is not None:
                replica.stop()
    return results


# -- render ---------------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    r = results
    rows = []
    for label, svc in r["services"].items():
        for size, e in svc["sizes"].items():
            base = r["baseline"].get(size)
            t = e["throughput"]
            rows.append(
                [
                    f"{size}² {label}",
                    e["upstream_calls_per_cold"],
                    e["cold_s"]["median"],
                    1000 * e["cached_s"]["median"],
                    e["cold_over_cached"],
                    t["1"]["cold"]["per_s"],
                    t["4"]["cold"]["per_s"],
                    t["1"]["cached"]["per_s"],
                    t["4"]["cached"]["per_s"],
                    e["fits_mib"],
                    e["cold_s"]["median"] / base["latency_s"]["median"] if base else "",
                ]
            )
    for size, base in r["baseline"].items():
        rows.append(
            [
                f"{size}² astroquery -> stand-in",
                1,
                base["latency_s"]["median"],
                "",
                "",
                base["per_s"]["1"],
                base["per_s"]["4"],
                "",
                "",
                "",
                1.0,
            ]
        )
    headers = [
        "grid, service",
        "upstream req",
        "cold s",
        "cached ms",
        "cold/cached",
        "cold/s c=1",
        "cold/s c=4",
        "cached/s c=1",
        "cached/s c=4",
        "FITS MiB",
        "cold x bare",
    ]
    where_rows = []
    for label, svc in r["services"].items():
        for size, e in svc["sizes"].items():
            base = r["baseline"].get(size)
            where_rows.append(
                [
                    f"{size}² {label}",
                    base["latency_s"]["median"] if base else "",
                    e["service_upstream_request_s_mean"],
                    e["service_fetch_s_mean"],
                    statistics.fmean(e["cold_s"]["samples"]),
                    e["cold_s"]["min"],
                    e["cold_s"]["max"],
                    e["cached_s"]["min"] * 1000,
                    e["cached_s"]["max"] * 1000,
                ]
            )
    where_headers = [
        "",
        "bare request s",
        "svc request s",
        "svc fetch s",
        "cold s (mean)",
        "cold min",
        "cold max",
        "cached min ms",
        "cached max ms",
    ]
    first = next(iter(r["services"].values()))["sizes"]
    reps = ", ".join(
        f"{s}²: {e['cold_s']['n']} cold, {e['cached_s']['n']} cached, throughput"
        f" {'/'.join(str(e['throughput'][c]['n']) for c in map(str, r['concurrency']))}"
        for s, e in first.items()
    )
    return "\n".join(
        [
            f'Cutouts service on the hips2fits stand-in ({r["survey"]}, {r["scale_arcsec"]:g}"/px footprints,'
            f" match_outreach_grid; PSS_UPSTREAM_RATE_PER_S=0, PSS_UPSTREAM_CONCURRENCY={r['upstream_concurrency']})",
            "(cold: a footprint never asked; cached: the same again; medians of sequential requests; cutouts/s at"
            " client concurrency c; cold x bare: service cold median / astroquery's median for the same grid;"
            " goal cold/cached >= 20)",
            table(headers, rows),
            "",
            "Where a cold request's time goes (means from the service's metrics over the cold latency runs: one"
            " hips2fits request incl. decoding + blank mask; the whole upstream fetch incl. tiles + mosaic)",
            table(where_headers, where_rows),
            f"(repetitions: {reps}; setup {r['setup_s']:.1f} s)",
        ]
    )
