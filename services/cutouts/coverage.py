"""Whether a survey cutout holds usable sky: a verdict with a reason, not an error.

hips2fits answers outside a survey's footprint (SDSS covers about a third of the sky) with a
well-formed image of zeros, and a bad plate or a failed render can be white or flat. Such a
cutout must be reported as unavailable, never stored as a training pair.
"""

from __future__ import annotations

import numpy as np

BLANK_MAX = 0.5  # more than this fraction of blank pixels: outside the footprint
WHITE_LEVEL = 250.0  # 0..255 display units: every band at or above it is saturated white
WHITE_MAX = 0.5  # more than this fraction of white pixels: white/saturated
FLAT_STD = 0.5  # display units: a cutout whose bands vary less than this is empty


def assess(
    cube: np.ndarray, *, blank_max: float = BLANK_MAX, white_max: float = WHITE_MAX, flat_std: float = FLAT_STD
) -> tuple[bool, str]:
    """(available, reason) for a (3, H, W) cube in 0..255 display units (uint8, or float with NaN
    for blank). A pixel is blank when every band is 0 or NaN (a colour HiPS's "no data")."""
    data = np.asarray(cube, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"expected a (C, H, W) cube, got shape {np.shape(cube)}")
    missing = np.isnan(data)
    blank = np.all(missing | (data == 0), axis=0)
    blank_fraction = float(blank.mean())
    if blank_fraction > blank_max:
        return False, f"outside the survey's footprint ({blank_fraction:.0%} blank)"
    covered = data[:, ~blank]  # (C, N) of the pixels that have data
    white = np.all(np.nan_to_num(covered, nan=0.0) >= WHITE_LEVEL, axis=0)
    white_fraction = float(white.sum()) / blank.size
    if white_fraction > white_max:
        return False, f"white/saturated ({white_fraction:.0%} of pixels)"
    spread = float(np.nanmax(np.nanstd(covered, axis=1))) if covered.size else 0.0
    if spread < flat_std:
        return False, f"empty: constant image (std {spread:.2g} in 0..255 units)"
    return True, ""
