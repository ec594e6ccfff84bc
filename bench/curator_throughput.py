"""Curator evaluation throughput: (outreach image, survey cutout) pairs judged per second.

What is timed is what one evaluation worker does per pair once its inputs are read: decode
the outreach JPEG, the image-level checks (missing-data mask, grey), and the pair checks
(resolution, survey colour, the survey mask where data are missing, alignment measured by
stars or cross-correlation). Pairs are 1024 x 1024 outreach images at 0.2"/px with their DSS2
cutout (~256 x 256 at 0.805"/px), rendered from the local universe over varied fields (star
fields, galaxies, clusters, nebulae; some with missing-data boxes). Workers are spawned
processes like the evaluation job's (PSS_CURATE_WORKERS), warmed up on one pair each first.

Baseline, same pairs, same pool, same run: the earlier project's heuristics (corner-minimum +
Hough lines for boxes, mean/std thresholds for colour) and no alignment at all, which is what
it measured (nothing). Memory: peak RSS of each worker process (VmHWM) after its pairs (a pool
per method; the imports alone are ~150 MiB).

Kept out: S3 reads and the cutouts service (cached cutouts cost one gRPC call and one GET,
~10 ms, measured by the cutouts benchmark), and the one-off process start.
"""

from __future__ import annotations

import io
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from bench.common import machine_info, table

DSS2 = "CDS/P/DSS2/color"
SIZE = 1024
SCALE_ARCSEC = 0.2
# (ra, dec, north angle, style, missing-data box?)
FIELDS = (
    (270.9, -24.4, 15.0, "hubble", False),
    (280.0, -60.0, -30.0, "webb", True),
    (6.65, -12.73, 0.0, "hubble", False),
    (357.7, -21.05, 40.0, "hubble", False),
    (62.28, 38.49, -10.0, "webb", True),
    (309.37, 69.63, 25.0, "hubble", False),
    (53.16, -27.79, 0.0, "hubble", False),
    (250.42, 36.46, 0.0, "hubble", True),
)


def make_pairs(n: int) -> list[dict[str, Any]]:
    from services.cutouts.geometry import Limits, survey_grid
    from services.universe.render import OutreachDefects, render_outreach, render_survey, tan_wcs
    from services.universe.sky import Sky

    sky, out = Sky(), []
    for i in range(n):
        ra, dec, angle, style, box = FIELDS[i % len(FIELDS)]
        dec += 0.05 * (i // len(FIELDS))
        wcs = tan_wcs(ra, dec, SCALE_ARCSEC, (SIZE, SIZE), angle)
        defects = OutreachDefects(boxes=((0, 0, 300, 220),)) if box else None
        image = render_outreach(sky, wcs, (SIZE, SIZE), style, defects)
        grid, (w, h) = survey_grid(wcs, (SIZE, SIZE), 0.805, Limits())
        cube = render_survey(sky, grid, (h, w), DSS2)
        jpeg = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image[::-1])).save(jpeg, format="JPEG", quality=90)
        out.append(
            {"jpeg": jpeg.getvalue(), "wcs": wcs.to_header_string(), "cube": cube, "grid": grid.to_header_string()}
        )
    return out


def _wcs(text: str, shape: tuple[int, int]) -> Any:
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = WCS(fits.Header.fromstring(text))
    wcs.pixel_shape = shape
    return wcs


def ours(pair: dict[str, Any]) -> tuple[bool, float]:
    from services.curator.evaluate import Cutout, Policy, check_outreach, check_pair
    from services.curator.evaluation import decode_image

    started = time.perf_counter()
    image = decode_image(pair["jpeg"])
    wcs = _wcs(pair["wcs"], (image.shape[1], image.shape[0]))
    cube = pair["cube"]
    grid = _wcs(pair["grid"], (cube.shape[2], cube.shape[1]))
    policy = Policy()
    checks = check_outreach(image, policy)
    result = check_pair(image, wcs, checks, Cutout("dss2-color", True, "", cube, grid), policy)
    return result.usable, time.perf_counter() - started


def baseline(pair: dict[str, Any]) -> tuple[bool, float]:
    from services.curator import baseline as old
    from services.curator.evaluation import decode_image

    started = time.perf_counter()
    image = decode_image(pair["jpeg"])
    mask = old.baseline_missing_data_mask(image)
    grey, _ = old.baseline_grey_or_single_channel(image)
    one, _ = old.baseline_one_colour_survey(pair["cube"])
    return bool(mask.mean() < 0.4 and not grey and not one), time.perf_counter() - started


def _peak_rss_mib() -> float:
    """VmHWM: the peak RSS of this process image (ru_maxrss would carry the parent's peak across
    the fork + exec that spawns a worker)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm(_: int) -> int:
    import services.curator.evaluation  # noqa: F401 - imports are the warm-up
    from services.curator import baseline as _b  # noqa: F401

    return 0


def _timed(pool: ProcessPoolExecutor, fn: Any, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    results = list(pool.map(fn, pairs))
    wall = time.perf_counter() - started
    per_pair = [r[1] for r in results]
    return {
        "pairs": len(pairs),
        "wall_s": wall,
        "pairs_per_s": len(pairs) / wall,
        "per_pair_s_median": float(np.median(per_pair)),
        "per_pair_s_max": float(np.max(per_pair)),
        "usable": sum(r[0] for r in results),
    }


def run(quick: bool = False) -> dict[str, Any]:
    n = 8 if quick else 24
    started = time.perf_counter()
    pairs = make_pairs(n)
    render_s = time.perf_counter() - started
    results: dict[str, Any] = {"machine": machine_info(), "pairs": n, "size": SIZE, "render_s": render_s, "runs": {}}
    for workers in (1, 2):
        entry: dict[str, Any] = {}
        for name, fn in (("ours", ours), ("baseline", baseline)):
            # A pool per method, so each worker's peak memory is that method's alone.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_warm, range(workers)))
                list(pool.map(fn, pairs[:workers]))  # first-call costs (caches, lazy imports)
                entry[name] = _timed(pool, fn, pairs)
                entry[name]["peak_rss_mib_per_worker"] = max(pool.map(_peak_rss_mib_of, range(workers)))
        results["runs"][str(workers)] = entry
    two = results["runs"]["2"]
    results["ours_over_baseline_time"] = two["baseline"]["pairs_per_s"] / two["ours"]["pairs_per_s"]
    results["goal_pairs_per_s"] = 4.0
    return results


def _peak_rss_mib_of(_: int) -> float:
    time.sleep(0.2)  # let every worker take one of these
    return _peak_rss_mib()


def render(results: dict[str, Any]) -> str:
    rows = []
    for workers, entry in results["runs"].items():
        for name in ("ours", "baseline"):
            e = entry[name]
            rows.append(
                [
                    f"{name}, {workers} worker(s)",
                    e["pairs_per_s"],
                    e["per_pair_s_median"],
                    e["per_pair_s_max"],
                    f"{e['usable']}/{e['pairs']}",
                    e["peak_rss_mib_per_worker"],
                ]
            )
    head = (
        f"Curator: {results['pairs']} pairs of {results['size']}² outreach + DSS2 cutout, "
        f"{results['machine']['cpu_count']} cores (goal ≥ {results['goal_pairs_per_s']:g} pairs/s on 2)"
    )
    return "\n".join(
        [
            head,
            table(["checks", "pairs/s", "s/pair median", "s/pair max", "usable", "peak RSS MiB/worker"], rows),
            f"our checks take {results['ours_over_baseline_time']:.1f}x the baseline's time (2 workers)",
        ]
    )
