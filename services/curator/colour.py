"""Colour verdicts: grey or single-channel outreach images, one-colour survey cutouts.

Both questions are "does this image carry one colour signal only?". Mean/std thresholds (the
earlier project's) confuse a dim or mostly-red field with a monochrome one; here each channel is
fitted as a linear function of the brightness on the pixels that hold signal, and the image is
monochrome when no pixel departs from that fit: a grey, tinted-grey (sepia) or single-band
image is one line in colour space, while any real colour picture has stars, knots and dust of
different colours that leave it by tens of counts.
"""

from __future__ import annotations

import numpy as np

from services.cutouts.coverage import assess

SIGNAL_LEVEL = 12.0  # 0..255: pixels brighter than this carry colour (dark sky is noise)
NEAR_ZERO = 4.0  # 0..255: a channel whose 99th percentile is below this is empty
COLOUR_DEPARTURE = 5.0  # 0..255: a pixel this far off the colour line has a colour of its own
COLOURED_FRACTION = 2e-4  # fewer pixels than this with their own colour: monochrome
MIN_SIGNAL_PIXELS = 64
SURVEY_GREY_TOL = 2.0  # 0..255: R, G and B within this of each other: a grey survey pixel
SURVEY_GREY_FRACTION = 0.5  # more grey than this (of the pixels with signal): one usable plate


def _signal_pixels(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) float pixels that carry signal; all pixels when too few are bright."""
    flat = rgb.reshape(-1, 3).astype(np.float64)
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    bright = flat[flat.max(axis=1) > SIGNAL_LEVEL]
    return bright if len(bright) >= MIN_SIGNAL_PIXELS else flat


def _colour_line(pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best colour line through black (each channel a multiple of the brightness): (channel
    weights, per-pixel largest departure from the line in 0..255 units)."""
    lum = pix.mean(axis=1, keepdims=True)
    weights = (lum * pix).sum(axis=0) / max(float((lum * lum).sum()), 1e-12)
    return weights, np.abs(pix - lum * weights).max(axis=1)


def grey_or_single_channel(image: np.ndarray) -> tuple[bool, str]:
    """(True, reason) when the (H, W, 3) outreach image is grey, tinted grey or has one usable
    channel (two channels near zero); (False, "") for a colour image."""
    img = np.asarray(image)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1):
        return True, "grey: one channel"
    if img.ndim != 3 or img.shape[-1] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    pix = _signal_pixels(img[..., :3])
    if len(pix) == 0:
        return False, ""
    high = np.percentile(pix, 99.0, axis=0)
    empty = [name for name, v in zip("RGB", high, strict=True) if v < NEAR_ZERO]
    if len(empty) >= 2:
        kept = next(name for name in "RGB" if name not in empty)
        return True, f"single channel: only {kept} holds data ({'/'.join(empty)} near zero)"
    # Monochrome: (almost) no pixel leaves the colour line. A colour picture always has some
    # (stars, knots, dust: measured >= 27 of 49k even in a nearly uniform yellow galaxy), while
    # grey, sepia or re-encoded grey images depart by at most the rounding/JPEG noise.
    weights, departure = _colour_line(pix)
    coloured = float((departure > COLOUR_DEPARTURE).mean())
    if coloured < COLOURED_FRACTION:
        if float(weights.max() - weights.min()) < 0.05:
            return True, f"grey: channels equal ({coloured:.3%} of pixels depart by > {COLOUR_DEPARTURE:g})"
        tint = "/".join(f"{v:.2f}" for v in weights)
        return True, f"monochrome: one tinted channel (R/G/B {tint}; {coloured:.3%} of pixels depart)"
    return False, ""


def one_colour_survey(cube: np.ndarray) -> tuple[bool, str]:
    """(True, reason) when a (3, H, W) survey cutout (0..255, NaN blank) is effectively one colour:
    a DSS field with one usable plate, copied into all three colour planes."""
    data = np.asarray(cube, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] < 3:
        raise ValueError(f"expected a (3, H, W) cube, got shape {data.shape}")
    pix = np.moveaxis(data[:3], 0, -1).reshape(-1, 3)
    pix = pix[np.all(np.isfinite(pix), axis=1)]
    if len(pix) == 0:
        return False, ""
    # Dark survey sky (SDSS's black point sits just under the sky) is grey-ish noise anyway:
    # judge on the pixels with signal, where two independent plates/filters always differ.
    bright = pix[pix.max(axis=1) > SIGNAL_LEVEL]
    use = bright if len(bright) >= MIN_SIGNAL_PIXELS else pix
    grey = (use.max(axis=1) - use.min(axis=1)) <= SURVEY_GREY_TOL
    fraction = float(grey.mean())
    if fraction > SURVEY_GREY_FRACTION:
        return True, f"one colour: {fraction:.0%} of the pixels are grey (one usable plate)"
    return False, ""


def survey_verdict(cube: np.ndarray) -> tuple[bool, str]:
    """(usable, reason) for a survey cutout: blank/white/constant (cutouts' own verdict), then one colour."""
    available, reason = assess(cube)
    if not available:
        return False, reason
    one, why = one_colour_survey(cube)
    return (False, why) if one else (True, "")
