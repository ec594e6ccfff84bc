"""The earlier project's heuristics, kept as the baseline the curator's filters are measured against.

Written plainly, as that project had them: a border is "the corners are black", a box is "long
straight edges between black and not-black" (Hough lines), and colour is judged from channel
means and standard deviations. Not used for verdicts.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import canny
from skimage.transform import probabilistic_hough_line

DARK = 10.0  # mean of the channels below this: black
CORNER = 8  # corner patch size, px
MIN_LINE_FRACTION = 0.25  # Hough lines at least this fraction of the shorter side
GREY_STD = 3.0  # std of the channel means below this: grey
CHANNEL_EMPTY = 5.0  # mean of a channel below this: empty
SURVEY_STD = 2.0  # std of (R - B) below this: one colour


def baseline_missing_data_mask(image: np.ndarray) -> np.ndarray:
    """Black corners -> the dark region connected to them is a border; long Hough lines on the
    dark/not-dark edge -> the dark regions they touch are boxes or gaps."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape[:2]
    dark = img.mean(axis=2) < DARK
    labels, _ = ndi.label(dark)
    keep: set[int] = set()
    c = CORNER
    for patch, lab in (
        (dark[:c, :c], labels[:c, :c]),
        (dark[:c, -c:], labels[:c, -c:]),
        (dark[-c:, :c], labels[-c:, :c]),
        (dark[-c:, -c:], labels[-c:, -c:]),
    ):
        if patch.all():  # corner-minimum: the whole corner is black
            keep.update(int(v) for v in np.unique(lab) if v)
    edges = canny(dark.astype(float), sigma=1.0)
    lines = probabilistic_hough_line(
        edges, threshold=10, line_length=max(8, int(MIN_LINE_FRACTION * min(h, w))), line_gap=2, rng=0
    )
    for (x0, y0), (x1, y1) in lines:
        n = max(abs(x1 - x0), abs(y1 - y0)) + 1
        xs = np.clip(np.rint(np.linspace(x0, x1, n)).astype(int), 0, w - 1)
        ys = np.clip(np.rint(np.linspace(y0, y1, n)).astype(int), 0, h - 1)
        near = np.zeros((h, w), dtype=bool)
        near[ys, xs] = True
        near = ndi.binary_dilation(near, iterations=2)
        keep.update(int(v) for v in np.unique(labels[near & dark]) if v)
    return np.isin(labels, sorted(keep)) if keep else np.zeros((h, w), dtype=bool)


def baseline_grey_or_single_channel(image: np.ndarray) -> tuple[bool, str]:
    """Grey when the channel means are nearly equal and the per-pixel channel spread is small on
    average; single channel when two channel means are near zero."""
    img = np.asarray(image, dtype=np.float64)
    means = img.reshape(-1, 3).mean(axis=0)
    if int((means < CHANNEL_EMPTY).sum()) >= 2:
        return True, "single channel (two channel means near zero)"
    if float(means.std()) < GREY_STD and float(img.std(axis=2).mean()) < GREY_STD:
        return True, "grey (channel means and spreads equal)"
    return False, ""


def baseline_one_colour_survey(cube: np.ndarray) -> tuple[bool, str]:
    """One colour when R and B differ little on average (std of R - B small)."""
    data = np.asarray(cube, dtype=np.float64)
    diff = data[0] - data[2]
    if not np.isfinite(diff).any():
        return False, ""
    if float(np.nanstd(diff)) < SURVEY_STD:
        return True, "one colour (R - B std small)"
    return False, ""


def baseline_survey_verdict(cube: np.ndarray) -> tuple[bool, str]:
    """(usable, reason) as the earlier project judged a survey cutout: from the overall mean and
    standard deviation (NaN ignored) - empty when there is no data or the mean is near zero, white
    when the mean is near 255, flat when the std is small - then the R - B std test."""
    data = np.asarray(cube, dtype=np.float64)
    if not np.isfinite(data).any():
        return False, "blank (no data)"
    mean, std = float(np.nanmean(data)), float(np.nanstd(data))
    if mean < DARK:
        return False, "blank (mean near zero)"
    if mean > 255.0 - DARK:
        return False, "white (mean near 255)"
    if std < SURVEY_STD:
        return False, "flat (std small)"
    one, why = baseline_one_colour_survey(cube)
    return (False, why) if one else (True, "")
