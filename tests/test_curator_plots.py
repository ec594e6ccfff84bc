"""Dataset-version plots (PNG bytes): services/curator/plots.py."""

from __future__ import annotations

import functools
import io
import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from services.curator import plots
from services.curator.plots import (
    SPLIT_COLOURS,
    category_balance,
    distributions,
    rejection_examples,
    sky_map,
    sky_xy,
    thumbnail,
)

# --------------------------------------------------------------------------- helpers


def _decode(png: bytes) -> np.ndarray:
    """RGB pixels of a PNG, after checking it is one, small enough and not a blank canvas."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) <= plots.MAX_PNG_BYTES
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    rgb = np.asarray(img.convert("RGB"))
    assert 300 <= rgb.shape[1] <= 2000 and 200 <= rgb.shape[0] <= 3000
    # Something was drawn: titles, axes, text give many distinct colours, a blank canvas one.
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 10
    return rgb


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def _mask_of(rgb: np.ndarray, colour: np.ndarray, tol: int = 30) -> np.ndarray:
    return np.all(np.abs(rgb.astype(int) - colour) <= tol, axis=-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert rows.size, "nothing of that colour was drawn"
    return float(rows.mean()), float(cols.mean())


RNG = np.random.default_rng(1234)
COUNTS = {
    "train": {"galaxy": 500, "nebula": 300, "cluster": 120, "planetary nebula": 40},
    "validation": {"galaxy": 60, "nebula": 40, "cluster": 10},
    "test": {"galaxy": 55, "nebula": 35, "cluster": 20, "planetary nebula": 5},
}
FOV = {s: list(np.exp(RNG.normal(1.0, 1.5, n))) for s, n in (("train", 400), ("validation", 50), ("test", 50))}
SCALE = {s: list(RNG.normal(0.05, 0.01, n)) for s, n in (("train", 400), ("validation", 50), ("test", 50))}
POINTS = [
    (float(ra), float(dec), str(split))
    for ra, dec, split in zip(
        RNG.uniform(0, 360, 300),
        np.degrees(np.arcsin(RNG.uniform(-1, 1, 300))),
        RNG.choice(["train", "validation", "test"], 300),
        strict=True,
    )
]
CELLS = {"validation": [5, 17, 40, 100, 150], "test": [20, 60, 190, 33]}


def _examples() -> dict[str, list[tuple[np.ndarray, str]]]:
    rng = np.random.default_rng(7)
    photo = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    return {
        "alignment failed: too few matched stars after sigma clipping": [
            (photo, "esahubble/heic1234a"),
            (rng.integers(0, 255, (40, 900, 3), dtype=np.uint8), "esahubble/heic1235a"),
        ],
        "blacklisted": [(rng.normal(size=(120, 60)), "noirlab/noao-very-long-identifier-that-keeps-going-0001")],
    }


RENDERERS = {
    "category_balance": lambda ds: category_balance(COUNTS, "Category balance", dataset=ds),
    "distributions": lambda ds: distributions(FOV, SCALE, "FOV and pixel scale", dataset=ds),
    "sky_map": lambda ds: sky_map(POINTS, "Sky", cells=CELLS, nside=4, dataset=ds),
    "rejection_examples": lambda ds: rejection_examples(_examples(), "Rejected", dataset=ds),
}


@functools.cache
def _rendered(name: str, dataset: str) -> bytes:
    """One render per (plot, dataset) shared by the tests: rendering is the slow part."""
    return RENDERERS[name](dataset)


# --------------------------------------------------------------------------- every plot


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_valid_deterministic_png_with_footer(name: str) -> None:
    first = _rendered(name, "pairs@v3")
    _decode(first)
    assert RENDERERS[name]("pairs@v3") == first, "same input must give byte-identical PNGs"
    assert b"matplotlib" not in first.lower(), "no Software/version metadata"


def test_footer_names_the_dataset() -> None:
    # Another dataset name changes the picture, and only the footer shows it.
    assert _rendered("category_balance", "pairs@v4") != _rendered("category_balance", "pairs@v3")
    without = _decode(category_balance(COUNTS, "Category balance"))
    with_footer = _decode(_rendered("category_balance", "pairs@v3"))
    changed = np.nonzero(np.any(without != with_footer, axis=-1))[0]
    assert changed.size and changed.min() > 0.9 * without.shape[0], "only the bottom line differs"


def test_plots_from_threads_match_serial_output() -> None:
    """No pyplot state: renders running concurrently (as in the server) give the serial bytes."""
    names = ["category_balance", "sky_map"]
    got: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            got[name] = RENDERERS[name]("pairs@v3")
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(got[n] == _rendered(n, "pairs@v3") for n in names)


def test_empty_inputs() -> None:
    for png in (
        category_balance({"train": {"galaxy": 0}, "test": {}}, "zeros"),
        distributions({"train": [float("nan"), float("inf")]}, {"test": [0.05]}, "non-finite and single value"),
        sky_map([], "empty", cells={"test": []}),  # empty cell lists need no nside
        rejection_examples({"reason with no examples": []}, "empty lists", dataset="d@1"),
    ):
        _decode(png)


# --------------------------------------------------------------------------- category balance


def test_category_balance_many_categories_and_other_splits() -> None:
    counts = {
        "train": {f"category {i:02d}": 100 - i for i in range(50)},
        "test": {"category 00": 3},
        "holdout": {"category 49": 1},  # a non-canonical split still gets a colour of its own
    }
    rgb = _decode(category_balance(counts, "Many"))
    for split in ("train", "test"):
        assert _mask_of(rgb, _hex_rgb(SPLIT_COLOURS[split]), tol=10).sum() > 20


# --------------------------------------------------------------------------- distributions


def test_distributions_one_colour_per_split() -> None:
    rgb = _decode(_rendered("distributions", "pairs@v3"))
    for split in ("train", "validation", "test"):
        assert _mask_of(rgb, _hex_rgb(SPLIT_COLOURS[split]), tol=10).sum() > 100


def test_distributions_log_axis_when_spread_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    scales: list[str] = []
    original = plots._histogram_panel

    def spy(ax, *args, **kwargs):
        original(ax, *args, **kwargs)
        scales.append(ax.get_xscale())

    monkeypatch.setattr(plots, "_histogram_panel", spy)
    distributions({"train": [0.5, 3.0, 200.0]}, {"train": [0.04, 0.05, 0.06]}, "d")
    assert scales == ["log", "linear"]


# --------------------------------------------------------------------------- sky map


def test_sky_xy_ra_increases_to_the_left() -> None:
    x, y = sky_xy(np.array([0.0, 90.0, 270.0, 359.0, 180.0]), np.array([0.0, 0.0, 0.0, 0.0, 60.0]))
    assert x[0] == 0 and y[0] == 0
    assert x[1] == pytest.approx(-math.pi / 2)  # RA 90h... 90 deg is left of centre
    assert x[2] == pytest.approx(math.pi / 2)
    assert 0 < x[3] < 0.02  # just below 360 is just right of centre
    assert abs(x[4]) == pytest.approx(math.pi) and y[4] == pytest.approx(math.radians(60))


def test_sky_map_point_positions_in_png() -> None:
    """RA 0/Dec 0 in the centre, Dec +60 straight above it, RA 90 to its left (RA grows leftwards)."""
    # One split per point, so each is found by its colour; the reference render has the same
    # splits (same legend) with the points far south, so only the markers under test differ.
    points = [(0.0, 0.0, "train"), (0.0, 60.0, "validation"), (90.0, 0.0, "test")]
    reference = [(0.0, -80.0, "train"), (120.0, -80.0, "validation"), (240.0, -80.0, "test")]
    rgb, ref = _decode(sky_map(points, "where")), _decode(sky_map(reference, "where"))
    h, w, _ = rgb.shape
    where = {}
    for split in ("train", "validation", "test"):
        colour = _hex_rgb(SPLIT_COLOURS[split])
        where[split] = _centroid(_mask_of(rgb, colour) & ~_mask_of(ref, colour))
    r0, c0 = where["train"]
    assert abs(c0 - w / 2) < 0.1 * w and 0.3 * h < r0 < 0.7 * h, "RA 0, Dec 0 is in the centre"
    r60, c60 = where["validation"]
    assert r60 < r0 - 0.15 * h and abs(c60 - c0) < 3, "Dec +60 is straight above"
    r90, c90 = where["test"]
    assert c90 < c0 - 0.15 * w and abs(r90 - r0) < 3, "RA 90 is to the left"


def test_sky_map_cells() -> None:
    with pytest.raises(ValueError, match="nside"):
        sky_map([], "t", cells={"test": [1]})
    with pytest.raises(ValueError, match="cell ids"):
        sky_map([], "t", cells={"test": [12 * 4 * 4]}, nside=4)
    # Filled cells in the split colour (alpha-blended on white, so lighter than the pure colour).
    rgb = _decode(sky_map([], "cells", cells={"test": list(range(0, 192, 3))}, nside=4))
    tint = 255 - 0.25 * (255 - _hex_rgb(SPLIT_COLOURS["test"]))
    assert _mask_of(rgb, tint, tol=12).sum() > 5000


def test_healpix_outlines_are_continuous_and_straddlers_duplicated() -> None:
    polys = plots._healpix_polygons(range(12), 1)
    assert polys.shape[1:] == (4 * plots.HEALPIX_EDGE_STEPS, 2)
    spans = polys[..., 0].max(axis=1) - polys[..., 0].min(axis=1)
    assert np.all(spans < math.pi), "no outline jumps across the map"
    # Base cells 4..7 (equatorial) include one centred on RA 180: it straddles the edge.
    assert len(polys) > 12
    assert np.all(np.abs(polys[..., 1]) <= math.pi / 2 + 1e-9)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_shape_dtype_and_exact_block_means() -> None:
    img = np.arange(10 * 7, dtype=np.uint16).reshape(10, 7)
    t = thumbnail(img, max_side=4)  # factor 3: blocks of 3x3, short edge blocks averaged alone
    assert t.shape == (4, 3) and t.dtype == np.uint16
    assert t[0, 0] == np.rint(img[:3, :3].mean())
    assert t[-1, -1] == np.rint(img[9:, 6:].mean())
    big = np.zeros((3000, 1000, 3), np.uint8)
    assert thumbnail(big).shape == (250, 84, 3)  # aspect kept, longest side <= 256
    small = np.ones((100, 50, 3), np.uint8)
    assert thumbnail(small) is small
    thin = np.ones((1, 5000), np.float32)
    assert thumbnail(thin).shape == (1, 250)
    with pytest.raises(ValueError):
        thumbnail(small, max_side=0)


def test_thumbnail_keeps_fits_orientation() -> None:
    img = np.zeros((1024, 512, 3), np.uint8)
    img[:100] = (255, 0, 0)  # row 0 = bottom of the picture in FITS orientation: red
    img[-100:] = (0, 0, 255)  # top: blue
    t = thumbnail(img, 128)
    assert tuple(t[0, 0]) == (255, 0, 0) and tuple(t[-1, 0]) == (0, 0, 255)


def test_thumbnail_of_huge_image_is_fast() -> None:
    img = np.zeros((6000, 4000, 3), np.uint8)
    start = time.perf_counter()
    assert max(thumbnail(img).shape) <= 256
    assert time.perf_counter() - start < 3.0


# --------------------------------------------------------------------------- rejection examples


def test_rejection_examples_drawn_bottom_up() -> None:
    """Row 0 is the bottom of a FITS-oriented image, so it must appear at the bottom of the thumbnail."""
    img = np.zeros((200, 200, 3), np.uint8)
    img[:100] = (255, 0, 0)
    img[100:] = (0, 0, 255)
    rgb = _decode(rejection_examples({"colour check": [(img, "test/red-bottom")]}, "orientation"))
    red_row, red_col = _centroid(_mask_of(rgb, np.array([255, 0, 0])))
    blue_row, blue_col = _centroid(_mask_of(rgb, np.array([0, 0, 255])))
    assert red_row > blue_row + 50, "red (row 0) is below blue in the PNG"
    assert abs(red_col - blue_col) < 3


def test_rejection_examples_mixed_inputs() -> None:
    rng = np.random.default_rng(3)
    many = [(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), f"esahubble/heic{i:04d}a") for i in range(9)]
    examples = {
        "many": many,  # only per_reason shown
        "grey and odd": [
            (rng.normal(size=(50, 80)), "grey float"),
            (np.full((30, 30, 1), 7, np.int16), "single channel"),
            (rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), "rgba"),
            (np.zeros((0, 0, 3), np.uint8), "empty"),
        ],
        "huge": [(np.zeros((5000, 3000, 3), np.uint8), "huge")],
        "a very long rejection reason " * 4: [(np.full((10, 10), np.nan), "all nan")],
    }
    start = time.perf_counter()
    one = rejection_examples(examples, "mixed", per_reason=3)
    assert time.perf_counter() - start < 10.0
    rgb = _decode(one)
    assert rgb.shape[0] > 4 * 100  # a row per reason
    # per_reason sets the number of columns, hence the width.
    assert _decode(rejection_examples(examples, "mixed", per_reason=2)).shape[1] < rgb.shape[1]


def test_large_png_falls_back_to_palette() -> None:
    rng = np.random.default_rng(5)
    noise = {f"reason {r}": [(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), "n")] * 4 for r in range(3)}
    png = rejection_examples(noise, "noise")  # incompressible thumbnails: far over budget as RGB
    _decode(png)
    assert Image.open(io.BytesIO(png)).mode == "P"
