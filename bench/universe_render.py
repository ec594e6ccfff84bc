"""Render time of the local universe's views (the hips2fits stand-in and the archive
replica call these for every new footprint).

Survey view (DSS2 at 1"/px, SDSS9 at 0.4"/px) for 512², 1024², 2048² footprints in a high
Galactic latitude field and a dense one, and the outreach view at 1024x768.
Baselines in the same run, so the figures read as ratios on any machine:
- "catalogue": generating the footprint's sources alone (every render starts with it);
- "numpy stamps": a plain numpy renderer of the same point sources (a 7x7 Gaussian per
  star added with np.add.at), the floor of any renderer that draws stars one by one.
All renders are cold: the per-cell source cache is cleared before each run, as for a
footprint never seen before.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from bench.common import summarize, table
from services.universe import sky as sky_module
from services.universe.grid import Grid
from services.universe.render import SURVEYS, render_outreach, render_survey, tan_wcs
from services.universe.sky import Sky

# A sparse field and the densest one each survey covers (SDSS stays above |b| ~ 10 deg).
FIELDS = {
    "CDS/P/DSS2/color": {"high-latitude": (185.0, 15.0), "milky-way": (280.0, -5.0)},
    "CDS/P/SDSS9/color": {"high-latitude": (185.0, 15.0), "low-latitude": (108.0, 38.0)},
}
SCALES = {"CDS/P/DSS2/color": 1.0, "CDS/P/SDSS9/color": 0.4}


def _cold() -> None:
    sky_module.clear_cache()


def _timed(fn) -> tuple[float, Any]:
    _cold()
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _numpy_stamps(grid: Grid, cols: dict[str, np.ndarray], fwhm_arcsec: float) -> float:
    """Seconds to draw the catalogue's point sources as 7x7 Gaussians with np.add.at."""
    started = time.perf_counter()
    x, y = grid.to_pixels(cols["ra"], cols["dec"])
    h, w = grid.shape
    ok = np.isfinite(x) & np.isfinite(y) & (x > -4) & (x < w + 3) & (y > -4) & (y < h + 3)
    x, y = x[ok], y[ok]
    flux = 10 ** (-0.4 * (cols["mag_g"][ok] - 25.0))
    sigma = fwhm_arcsec / grid.pixel_arcsec / 2.355
    image = np.zeros(grid.shape)
    off = np.arange(-3, 4)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    px = ix[:, None, None] + off[None, None, :]
    py = iy[:, None, None] + off[None, :, None]
    g = np.exp(-0.5 * ((px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2) / sigma**2)
    g *= (flux / g.sum(axis=(1, 2)))[:, None, None]
    px, py = np.broadcast_arrays(px, py)
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    np.add.at(image, (py[inside], px[inside]), g[inside])
    return time.perf_counter() - started


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    repeats = repeats or (1 if quick else 3)
    sizes = (512, 1024) if quick else (512, 1024, 2048)
    sky = Sky()
    render_survey(sky, tan_wcs(10.0, 10.0, 1.0, (32, 32)), (32, 32), SURVEYS[0])  # one-time loading (real data)
    survey: list[dict[str, Any]] = []
    for hips in SURVEYS:
        for field, (ra, dec) in FIELDS[hips].items():
            for size in sizes:
                wcs = tan_wcs(ra, dec, SCALES[hips], (size, size))
                grid = Grid(wcs, (size, size))
                renders, catalogues, stamps = [], [], []
                n_sources = 0
                for _ in range(repeats):  # interleaved, so drift hits all three alike
                    t_cat, cols = _timed(lambda g=grid: sky.catalog(g.ra, g.dec, g.radius_deg, mag_limit=22.0))
                    catalogues.append(t_cat)
                    n_sources = len(cols["ra"])
                    point = cols["kind"] == "star"
                    stamps.append(_numpy_stamps(grid, {k: v[point] for k, v in cols.items()}, 2.0))
                    t_render, _ = _timed(lambda w=wcs, s=size, h=hips: render_survey(sky, w, (s, s), h))
                    renders.append(t_render)
                survey.append(
                    {
                        "hips": hips,
                        "field": field,
                        "size": size,
                        "sources": n_sources,
                        "render_s": summarize(renders),
                        "catalogue_s": summarize(catalogues),
                        "numpy_stamps_s": summarize(stamps),
                    }
                )
    outreach: list[dict[str, Any]] = []
    for target, style, (ra, dec, scale) in _outreach_targets(sky):
        wcs = tan_wcs(ra, dec, scale, (768, 1024), rotation_deg=30.0)
        times = [_timed(lambda w=wcs, st=style: render_outreach(sky, w, (768, 1024), st))[0] for _ in range(repeats)]
        outreach.append(
            {"target": target, "style": style, "shape": "1024x768", "scale": scale, "render_s": summarize(times)}
        )
    return {"repeats": repeats, "survey": survey, "outreach": outreach}


def _outreach_targets(sky: Sky) -> list[tuple[str, str, tuple[float, float, float]]]:
    """What the archive replica renders: empty deep fields, the Milky Way, and its showy
    objects (the biggest of each kind the sky model has), framed to fill the image."""
    marks = sky.landmarks()
    targets = [
        ("deep field", "hubble", (185.0, 15.0, 0.05)),
        ("milky way", "webb", (280.0, -5.0, 0.04)),
        ("real XDF", "hubble", (53.1625, -27.7914, 0.1)),
    ]
    for subtype, style in (("spiral", "hubble"), ("emission", "webb"), ("globular", "hubble"), ("planetary", "webb")):
        rows = marks[marks["subtype"] == subtype]
        row = rows[int(np.argmax(np.asarray(rows["size_arcsec"])))]
        scale = float(np.clip(2.5 * float(row["size_arcsec"]) / 1024, 0.04, 1.0))  # the object fills the frame
        targets.append((f'{subtype} {row["size_arcsec"]:.0f}"', style, (float(row["ra"]), float(row["dec"]), scale)))
    return targets


def render(r: dict[str, Any]) -> str:
    rows = []
    for s in r["survey"]:
        render_s = s["render_s"]["median"]
        rows.append(
            [
                f"{s['hips'].split('/')[2]} {s['field']} {s['size']}²",
                s["sources"],
                render_s,
                s["render_s"]["min"],
                s["catalogue_s"]["median"],
                s["numpy_stamps_s"]["median"],
                render_s / max(s["catalogue_s"]["median"], 1e-9),
                s["size"] ** 2 / render_s / 1e6,
            ]
        )
    out_rows = [
        [o["target"], f'{o["style"]} {o["shape"]} {o["scale"]:.3f}"/px', o["render_s"]["median"], o["render_s"]["min"]]
        for o in r["outreach"]
    ]
    median_1024 = statistics.median(s["render_s"]["median"] for s in r["survey"] if s["size"] == 1024)
    return "\n".join(
        [
            f"Survey view render, cold cache, {r['repeats']} run(s), seconds (median 1024²: {median_1024:.2f} s)",
            table(
                ["footprint", "sources", "render", "min", "catalogue", "numpy stamps", "render/cat", "Mpx/s"],
                rows,
            ),
            "",
            "Outreach view render, cold cache, seconds",
            table(["target", "image", "median", "min"], out_rows),
        ]
    )
