"""Plots written beside each dataset version: category balance, FOV/pixel-scale distributions, sky map, rejections.

Every function returns PNG bytes. Figures are built with `matplotlib.figure.Figure` and drawn by
`FigureCanvasAgg` directly, never through pyplot, whose global figure registry is not thread-safe
(the curator renders these inside a gRPC server). Output is deterministic, byte for byte: fixed
size and dpi, no "Software"/date metadata, no random state; so re-building an unchanged dataset
version re-writes identical files and content hashes stay stable.

Images are in FITS orientation throughout (row 0 is the *bottom* row, as in splits.py), so they
are drawn with origin="lower".

Each function takes an optional keyword `dataset` ("name@version"), printed as a footer line so
a PNG that travels alone still says which dataset it describes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 100  # fixed: pixel size (and bytes) of every PNG follow from the figure size alone
MAX_PNG_BYTES = 300_000  # above this: 256-colour palette, then fewer pixels (see _png)
FOOTER_IN = 0.25  # height reserved at the bottom of each figure for the dataset footer
SPLIT_ORDER = ("train", "validation", "test")
# Colour-blind-safe (Okabe-Ito) colours for the canonical splits; others take the rest in order.
SPLIT_COLOURS = {"train": "#0072B2", "validation": "#E69F00", "test": "#009E73"}
EXTRA_COLOURS = ("#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
MAX_CATEGORIES = 30  # category_balance: the rest are lumped into "other" so labels stay readable
LOG_SPREAD = 30.0  # distributions: log x axis when max/min of the positive values exceeds this
HIST_BINS = 40
MAX_REASONS = 24  # rejection_examples: rows beyond this are dropped (and counted in the title)
THUMB_IN = 1.5  # rejection_examples: side of one thumbnail cell, inches
HEALPIX_EDGE_STEPS = 4  # boundary samples per cell edge: HEALPix edges are curved on the map


# --------------------------------------------------------------------------- shared helpers


def _new_figure(width_in: float, height_in: float, layout: bool = True) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: no backend switching, no pyplot
    if layout:
        # Constrained layout inside a rect that leaves room for the footer line.
        footer = min(0.2, FOOTER_IN / height_in)
        fig.set_layout_engine(ConstrainedLayoutEngine(rect=(0.0, footer, 1.0, 1.0 - footer)))
    return fig


def _footer(fig: Figure, dataset: str | None) -> None:
    if dataset:
        fig.text(0.005, 0.005, f"dataset {dataset}", ha="left", va="bottom", fontsize=8, color="0.35")


def _render(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    # metadata Software=None drops matplotlib's version stamp; PNG has no date unless asked.
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _quantized(png: bytes) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _png(fig: Figure) -> bytes:
    data = _render(fig)
    if len(data) > MAX_PNG_BYTES:
        # Photographic thumbnails (or thousands of sky cells) compress badly. First a median-cut
        # palette (deterministic), at a cost in colour fidelity that does not matter for a visual
        # check; if still too big, the figure drawn again at a lower dpi, down to half the pixels.
        paletted = _quantized(data)
        if len(paletted) > MAX_PNG_BYTES:
            scale = max(0.5, 0.9 * math.sqrt(MAX_PNG_BYTES / len(paletted)))
            paletted = _quantized(_render(fig, round(DPI * scale)))
        data = min(data, paletted, key=len)
    return data


def _ordered_splits(names: Iterable[str]) -> list[str]:
    """Canonical splits first (train, validation, test), any others after them, sorted."""
    names = set(names)
    return [s for s in SPLIT_ORDER if s in names] + sorted(names - set(SPLIT_ORDER))


def _split_colours(splits: Sequence[str]) -> dict[str, str]:
    extra = iter(EXTRA_COLOURS * (1 + len(splits) // len(EXTRA_COLOURS)))
    return {s: SPLIT_COLOURS[s] if s in SPLIT_COLOURS else next(extra) for s in splits}


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.4")


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _ellipsize(text: str, width: int) -> str:
    """Cut the middle out of a long caption: both the archive prefix and the image id stay visible."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


# --------------------------------------------------------------------------- category balance


def category_balance(counts: Mapping[str, Mapping[str, int]], title: str, *, dataset: str | None = None) -> bytes:
    """Grouped horizontal bars of pairs per category, one bar per split.

    `counts[split][category]` is the number of pairs. Left panel: absolute counts; right panel:
    each category's share of its split, where a stratified split shows bars of equal length.
    """
    splits = _ordered_splits(s for s, c in counts.items() if any(int(v) > 0 for v in c.values()))
    totals: dict[str, int] = {}
    for s in splits:
        for cat, n in counts[s].items():
            totals[cat] = totals.get(cat, 0) + int(n)
    # Largest categories on top; ties by name so the order never depends on dict order.
    cats = sorted((c for c in totals if totals[c] > 0), key=lambda c: (-totals[c], c))
    table = {s: {c: int(counts[s].get(c, 0)) for c in cats} for s in splits}
    if len(cats) > MAX_CATEGORIES:
        rest = cats[MAX_CATEGORIES - 1 :]
        other = f"other ({len(rest)} categories)"
        cats = [*cats[: MAX_CATEGORIES - 1], other]
        for s in splits:
            table[s][other] = sum(table[s].pop(c) for c in rest)

    height = min(14.0, max(4.0, 1.6 + 0.32 * max(1, len(cats)) * max(1, len(splits)) ** 0.5))
    fig = _new_figure(11.0, height)
    fig.suptitle(title, fontsize=13)
    ax_n, ax_f = fig.subplots(1, 2, sharey=True)
    if not cats:
        for ax in (ax_n, ax_f):
            ax.set_axis_off()
        _empty_note(ax_n, "no pairs")
    else:
        colours = _split_colours(splits)
        y = np.arange(len(cats), dtype=float)
        bar_h = 0.8 / len(splits)
        for i, s in enumerate(splits):
            n_split = sum(table[s].values())
            n = np.array([table[s][c] for c in cats], dtype=float)
            share = 100.0 * n / n_split if n_split else np.zeros_like(n)
            offset = (i - (len(splits) - 1) / 2) * bar_h
            label = f"{s} ({n_split:,} pairs)"
            ax_n.barh(y + offset, n, height=bar_h, color=colours[s], label=label)
            ax_f.barh(y + offset, share, height=bar_h, color=colours[s], label=label)
        ax_n.set_yticks(y, cats)
        ax_n.invert_yaxis()  # largest category at the top
        ax_n.set_xlabel("pairs")
        ax_f.set_xlabel("share of the split's pairs (%)")
        ax_n.set_title("pairs per category")
        ax_f.set_title("category share within each split")
        for ax in (ax_n, ax_f):
            ax.grid(axis="x", alpha=0.3)
            ax.set_axisbelow(True)
        ax_f.legend(loc="lower right", fontsize=9)
    _footer(fig, dataset)
    return _png(fig)


# --------------------------------------------------------------------------- distributions


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).ravel()
    return a[np.isfinite(a)]


def _histogram_panel(ax, data: Mapping[str, Iterable[float]], xlabel: str, unit: str, what: str) -> None:
    clean = {s: _clean(v) for s, v in data.items()}
    splits = _ordered_splits(s for s, v in clean.items() if v.size)
    ax.set_title(what)
    ax.set_xlabel(xlabel)
    if not splits:
        ax.set_yticks([])
        ax.set_xticks([])
        _empty_note(ax, "no values")
        return
    pooled = np.concatenate([clean[s] for s in splits])
    positive = pooled[pooled > 0]
    # Log axis when the values span more than ~1.5 decades (FOVs go from arcminutes to degrees).
    log = positive.size == pooled.size and positive.size > 0 and positive.max() / positive.min() > LOG_SPREAD
    if log:
        edges = np.geomspace(positive.min(), positive.max(), HIST_BINS + 1)
        ax.set_xscale("log")
    else:
        edges = np.histogram_bin_edges(pooled, bins=HIST_BINS)
    colours = _split_colours(splits)
    for s in splits:
        v = clean[s]
        # Fractions of each split, not counts: train dwarfs test, and it is the shapes that matter.
        w = np.full(v.size, 1.0 / v.size)
        label = f"{s} (n={v.size:,}, median {np.median(v):.3g}{unit})"
        ax.hist(v, bins=edges, weights=w, histtype="stepfilled", color=colours[s], alpha=0.15)
        ax.hist(v, bins=edges, weights=w, histtype="step", color=colours[s], linewidth=1.6, label=label)
    ax.set_ylabel("fraction of the split's pairs")
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper right")


def distributions(
    fov_arcmin: Mapping[str, Iterable[float]],
    pixel_scale_arcsec: Mapping[str, Iterable[float]],
    title: str,
    *,
    dataset: str | None = None,
) -> bytes:
    """Two histograms, one colour per split: field of view (arcmin) and outreach pixel scale (arcsec/px).

    Non-finite values are dropped; the x axis is logarithmic when the values span a large range.
    """
    fig = _new_figure(12.0, 4.8)
    fig.suptitle(title, fontsize=13)
    ax_fov, ax_px = fig.subplots(1, 2)
    _histogram_panel(ax_fov, fov_arcmin, "field of view (arcmin)", " arcmin", "field of view")
    _histogram_panel(ax_px, pixel_scale_arcsec, "outreach pixel scale (arcsec / pixel)", " arcsec/px", "pixel scale")
    _footer(fig, dataset)
    return _png(fig)


# --------------------------------------------------------------------------- sky map


def sky_xy(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in the sky map's data coordinates (radians) for ICRS (ra, dec) in degrees.

    Mollweide axes want longitude in [-pi, pi] increasing to the right; astronomers draw RA
    increasing to the *left* (the sky seen from inside), with RA 0 in the centre, so x = -RA
    wrapped to [-180, 180).
    """
    ra = np.asarray(ra_deg, dtype=float)
    dec = np.asarray(dec_deg, dtype=float)
    wrapped = (ra + 180.0) % 360.0 - 180.0
    return np.radians(-wrapped), np.radians(dec)


def _healpix_polygons(cells: Iterable[int], nside: int) -> np.ndarray:
    """Outlines (n, 4 * steps, 2) of HEALPix cells (nested) in sky_xy coordinates.

    A cell straddling the map's edge (RA 180) is returned twice, once on each side; the map's
    ellipse clips what falls outside it.
    """
    import astropy.units as u
    from astropy_healpix import boundaries_lonlat

    idx = np.unique(np.fromiter((int(c) for c in cells), dtype=np.int64))
    if idx.size == 0:
        return np.zeros((0, 4 * HEALPIX_EDGE_STEPS, 2))
    npix = 12 * nside * nside
    if idx[0] < 0 or idx[-1] >= npix:
        raise ValueError(f"HEALPix cell ids must be in [0, {npix}) for nside={nside}")
    lon, lat = boundaries_lonlat(idx, HEALPIX_EDGE_STEPS, nside, order="nested")
    x, y = sky_xy(lon.to_value(u.deg), lat.to_value(u.deg))
    # A corner at a pole has an arbitrary longitude, which would break the unwrapping below; the
    # pole is one point on the map whatever its longitude, so give it its neighbour's.
    rows, cols = np.nonzero(np.abs(y) > np.pi / 2 - 1e-9)
    x[rows, cols] = x[rows, cols - 1]
    x = np.unwrap(x, axis=1)  # continuous outlines, even across RA 180
    x = x - 2 * np.pi * np.round(x.mean(axis=1, keepdims=True) / (2 * np.pi))
    polys = [np.stack([x, y], axis=-1)]
    right, left = x.max(axis=1) > np.pi, x.min(axis=1) < -np.pi
    polys.append(np.stack([x[right] - 2 * np.pi, y[right]], axis=-1))
    polys.append(np.stack([x[left] + 2 * np.pi, y[left]], axis=-1))
    return np.concatenate(polys)


def sky_map(
    points: Sequence[tuple[float, float, str]],
    title: str,
    cells: Mapping[str, Iterable[int]] | None = None,
    nside: int | None = None,
    *,
    dataset: str | None = None,
) -> bytes:
    """Mollweide map (ICRS, RA 0 in the centre, increasing to the left) of pairs as (ra_deg, dec_deg, split).

    `cells[split]`: HEALPix cell ids (nested ordering, `nside`) drawn as filled, outlined patches,
    so the sky regions held out for validation and test are visible.
    """
    pts = [(float(r), float(d), str(s)) for r, d, s in points if math.isfinite(r) and math.isfinite(d)]
    cell_ids = {s: sorted({int(i) for i in c}) for s, c in (cells or {}).items()}
    cell_ids = {s: c for s, c in cell_ids.items() if c}
    if cell_ids and nside is None:
        raise ValueError("sky_map: cells need nside")
    splits = _ordered_splits({s for _, _, s in pts} | set(cell_ids))
    colours = _split_colours(splits)

    fig = _new_figure(11.0, 6.6)
    fig.suptitle(title, fontsize=13)
    ax = fig.add_subplot(projection="mollweide")
    ax.grid(True, alpha=0.35)
    ticks = np.arange(-150, 151, 30)
    ax.set_xticks(np.radians(ticks), [f"{(-t) % 360}°" for t in ticks], fontsize=8, color="0.3")
    ax.set_xlabel("right ascension (ICRS)")
    ax.set_ylabel("declination")

    handles = []
    size = 14.0 if len(pts) < 2000 else 4.0
    for s in splits:
        colour = colours[s]
        if s in cell_ids:
            polys = _healpix_polygons(cell_ids[s], int(nside or 0))
            # Project the vertices once here: given data coordinates, Mollweide axes would resample
            # every edge 75 times and compute data limits through the inverse projection, which
            # takes tens of seconds for a few thousand cells. The boundary samples suffice.
            flat = ax.transProjection.transform(polys.reshape(-1, 2)).reshape(polys.shape)
            collection = PolyCollection(
                flat,
                facecolors=colour,
                edgecolors=colour,
                alpha=0.25,
                linewidths=0.6,
                transform=ax.transAffine + ax.transAxes,
            )
            ax.add_collection(collection, autolim=False)
        mine = np.array([(r, d) for r, d, t in pts if t == s], dtype=float).reshape(-1, 2)
        if mine.size:
            x, y = sky_xy(mine[:, 0], mine[:, 1])
            ax.scatter(x, y, s=size, color=colour, edgecolors="none", zorder=3)
        label = f"{s}: {_plural(len(mine), 'pair')}"
        if s in cell_ids:
            label += f", {_plural(len(cell_ids[s]), 'cell')}"
            handles.append(Patch(facecolor=colour, edgecolor=colour, alpha=0.6, label=label))
        else:
            handles.append(Line2D([], [], marker="o", linestyle="none", color=colour, label=label))
    if handles:
        # Below the map, centred, so the map itself stays centred in the figure.
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=9)
    else:
        _empty_note(ax, "no pairs")
    if cell_ids:
        ax.set_title(f"HEALPix cells: nside {nside}, nested ordering", fontsize=9, color="0.3")
    _footer(fig, dataset)
    return _png(fig)


# --------------------------------------------------------------------------- rejection examples


def _block_mean(a: np.ndarray, f: int, axis: int) -> np.ndarray:
    """Means of consecutive blocks of `f` along `axis` (float32); a short last block is averaged alone."""
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    full = n // f * f
    # reshape + sum on the whole blocks: ~15x faster than np.add.reduceat on uint8.
    parts = [a[:full].reshape(n // f, f, *a.shape[1:]).sum(axis=1, dtype=np.float32) / np.float32(f)]
    if full < n:
        parts.append(a[full:].sum(axis=0, keepdims=True, dtype=np.float32) / np.float32(n - full))
    return np.moveaxis(np.concatenate(parts), 0, axis)


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Downsample so that no side exceeds `max_side`, by block averaging with one factor for both axes.

    Aspect ratio and orientation are preserved (row 0 stays row 0); edge blocks that do not fill a
    whole block are averaged over what they hold. Integer images come back in their own dtype,
    rounded; small images come back unchanged.
    """
    if max_side < 1:
        raise ValueError("max_side must be >= 1")
    img = np.asarray(image)
    if img.ndim < 2 or img.size == 0:
        return img
    h, w = img.shape[:2]
    f = math.ceil(max(h, w) / max_side)
    if f <= 1:
        return img
    # float32 sums: a 20k x 20k RGB outreach image would take GBs in float64 before the first cut.
    out = _block_mean(_block_mean(img, f, 0), f, 1)
    if np.issubdtype(img.dtype, np.integer) or img.dtype == bool:
        info = np.iinfo(img.dtype) if img.dtype != bool else None
        out = np.rint(out)
        if info is not None:
            out = np.clip(out, info.min, info.max)
        return out.astype(img.dtype)
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float32)


def _displayable(image: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """A thumbnail ready for imshow, and whether it is grey; None when there is nothing to show."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]  # alpha would show the white figure through
    if img.size == 0 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        return None
    img = thumbnail(img, 256)
    grey = img.ndim == 2
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        f[~np.isfinite(f)] = 0.0
        lo, hi = (0.0, 1.0) if f.min() >= 0 and f.max() <= 1 else (float(f.min()), float(f.max()))
        f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
        img = np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)
    return img, grey


def rejection_examples(
    examples: Mapping[str, Sequence[tuple[np.ndarray, str]]],
    title: str,
    per_reason: int = 4,
    *,
    dataset: str | None = None,
) -> bytes:
    """A grid: one row per rejection reason, up to `per_reason` captioned thumbnails each.

    Images are RGB uint8 (H, W, 3) or grey (H, W) in FITS orientation (row 0 at the bottom);
    other dtypes are stretched to their range. Big images are downsampled to <= 256 px first.
    """
    per_reason = max(1, int(per_reason))
    reasons = sorted(r for r, items in examples.items() if items)
    dropped = len(reasons) - MAX_REASONS
    reasons = reasons[:MAX_REASONS]
    if not reasons:
        fig = _new_figure(6.0, 2.5)
        fig.suptitle(title, fontsize=13)
        ax = fig.add_subplot()
        ax.set_axis_off()
        _empty_note(ax, "no rejected pairs")
        _footer(fig, dataset)
        return _png(fig)

    ncols = min(per_reason, max(len(examples[r]) for r in reasons))
    label_in, top_in, bottom_in, row_in = 2.2, 0.7, FOOTER_IN + 0.1, THUMB_IN + 0.35
    width = label_in + ncols * THUMB_IN + 0.3
    height = top_in + bottom_in + len(reasons) * row_in
    # Manual grid (no layout engine): cheap with many image axes, and the same every time.
    fig = _new_figure(width, height, layout=False)
    suffix = f" (first {MAX_REASONS} of {MAX_REASONS + dropped} reasons)" if dropped > 0 else ""
    fig.suptitle(title + suffix, fontsize=13, y=1 - 0.15 / height, va="top")
    grid = fig.add_gridspec(
        len(reasons),
        ncols + 1,
        width_ratios=[label_in, *([THUMB_IN] * ncols)],
        left=0.1 / width,
        right=1 - 0.2 / width,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        wspace=0.08,
        hspace=0.35,
    )
    for row, reason in enumerate(reasons):
        items = list(examples[reason])
        label_ax = fig.add_subplot(grid[row, 0])
        label_ax.set_axis_off()
        label = "\n".join(textwrap.wrap(reason, 24, break_on_hyphens=False, max_lines=5, placeholder=" …"))
        if len(items) > ncols:
            label += f"\n({len(items):,} examples, {ncols} shown)"
        label_ax.text(0.98, 0.5, label, ha="right", va="center", fontsize=9, transform=label_ax.transAxes)
        for col, (image, caption) in enumerate(items[:ncols]):
            ax = fig.add_subplot(grid[row, col + 1])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("0.7")
            ax.set_xlabel(_ellipsize(str(caption), 28), fontsize=7, labelpad=2)
            shown = _displayable(image)
            if shown is None:
                _empty_note(ax, "no image")
                continue
            img, grey = shown
            # origin="lower": row 0 of a FITS-oriented array is the bottom of the picture.
            if grey:
                ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            else:
                ax.imshow(img, origin="lower", interpolation="antialiased")
    _footer(fig, dataset)
    return _png(fig)
