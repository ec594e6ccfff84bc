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
SURVEY_GREY_FRACTION = 0.5  # more of the field than this one colour: one usable plate
COLOUR_BLOCK = 16  # px: tiles on which the survey's colour noise is judged
# Colour / brightness noise below this: no second plate. Real cutouts: 0.00 on one-colour plates
# (also through JPEG), >= 0.22 on two plates' tiles; a HiPS in JPEG q90 4:2:0 keeps most faint
# two-plate tiles above 0.05 (at 0.3 it would not).
COLOUR_NOISE_RATIO = 0.05
MIN_LUM_NOISE = 0.05  # 0..255: mean |high-pass| of the brightness under this: a flat tile, not judged
MAX_SAMPLE = 1 << 18  # pixels the grey check looks at, at most (a fixed grid of rows and columns)
WHITE_LEVEL = 250.0  # 0..255: every pixel of a white cutout is at least this (else: saturated)


def _sample(rgb: np.ndarray) -> np.ndarray:
    """A fixed, deterministic subset of the (H, W, 3) image: every k-th row and column, at most
    ~MAX_SAMPLE pixels (a 1024 x 1024 image: every second row and column)."""
    h, w = rgb.shape[:2]
    k = max(1, int(np.ceil(np.sqrt(h * w / MAX_SAMPLE))))
    return rgb[::k, ::k]


def _signal_pixels(rgb: np.ndarray) -> np.ndarray:
    """(3, N) float32, channel-major: the pixels that carry signal; all (finite) pixels when too few are bright."""
    planes = np.ascontiguousarray(np.moveaxis(rgb, -1, 0)).reshape(3, -1)
    if planes.dtype != np.uint8:
        planes = planes.astype(np.float32)
        planes = planes[:, np.all(np.isfinite(planes), axis=0)]
    peak = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    bright = peak > SIGNAL_LEVEL
    use = planes[:, bright] if int(bright.sum()) >= MIN_SIGNAL_PIXELS else planes
    return use.astype(np.float32, copy=False)


def _high_percentile(planes: np.ndarray, q: float) -> np.ndarray:
    """Per-channel q-th percentile (the lower value; a partial sort, not a full one) of (3, N) pixels."""
    n = planes.shape[1]
    k = min(n - 1, int(q / 100.0 * (n - 1)))
    return np.array([np.partition(c, k)[k] for c in planes])


def _colour_line(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best colour line through black (each channel a multiple of the brightness) for (3, N)
    pixels: (channel weights, per-pixel largest departure from the line in 0..255 units)."""
    lum = (planes[0] + planes[1] + planes[2]) / np.float32(3.0)
    norm = max(float(np.dot(lum, lum)), 1e-12)
    weights = np.array([float(np.dot(lum, c)) / norm for c in planes])
    departure = np.abs(planes[0] - np.float32(weights[0]) * lum)
    for c, wt in zip(planes[1:], weights[1:], strict=True):
        np.maximum(departure, np.abs(c - np.float32(wt) * lum), out=departure)
    return weights, departure


def grey_or_single_channel(image: np.ndarray) -> tuple[bool, str]:
    """(True, reason) when the (H, W, 3) outreach image is grey, tinted grey or has one usable
    channel (two channels near zero); (False, "") for a colour image. Judged on a fixed subset
    of at most ~MAX_SAMPLE pixels (every k-th row and column): ~0.01-0.02 s at 1024 x 1024."""
    img = np.asarray(image)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1):
        return True, "grey: one channel"
    if img.ndim != 3 or img.shape[-1] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    pix = _signal_pixels(_sample(img[..., :3]))
    if pix.shape[1] == 0:
        return False, ""
    high = _high_percentile(pix, 99.0)
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


def _block_sums(a: np.ndarray, block: int) -> np.ndarray:
    """Sums of a (H, W) array over block x block tiles (the ragged far edges folded into the last tile)."""
    h, w = a.shape
    rows = np.add.reduceat(a, np.arange(max(1, h // block)) * block, axis=0, dtype=np.float64)
    return np.add.reduceat(rows, np.arange(max(1, w // block)) * block, axis=1)


def _highpass(c: np.ndarray) -> np.ndarray:
    """|lag-2 difference| of a (H, W) plane along x plus along y (NaN where undefined: at the
    edges, next to blank pixels); lag 2 so that a HiPS's 2 x 2 chroma subsampling does not hide
    the colour noise."""
    out = np.full(c.shape, np.nan, dtype=np.float32)
    out[1:-1, 1:-1] = np.abs(c[1:-1, 2:] - c[1:-1, :-2]) + np.abs(c[2:, 1:-1] - c[:-2, 1:-1])
    return out


def colour_noise_ratio(cube: np.ndarray, block: int = COLOUR_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per block x block tile of a (3, H, W) cube: (ratio, informative). ratio = mean |high-pass of
    the colour (R - B and G - (R + B) / 2)| / mean |high-pass of the brightness|. Two independent
    plates or filters each carry their own grain and noise, so the colour is as noisy as the
    brightness (ratio 1.05-2.5 on real DSS2 and SDSS cutouts, however faint); one plate copied
    into all planes has no colour noise at all (ratio 0; a lossy HiPS leaves a little).
    informative: the tile has brightness structure to judge by (not flat, not blank; saturated
    pixels, whose colour is clipped away, do not count)."""
    r, g, b = np.asarray(cube[:3], dtype=np.float32)
    clipped = np.maximum(np.maximum(r, g), b) >= WHITE_LEVEL  # saturated: its colour is clipped away
    if clipped.any():
        r, g, b = (np.where(clipped, np.float32(np.nan), c) for c in (r, g, b))
    col = _highpass(r - b) + _highpass(g - 0.5 * (r + b))
    lum = _highpass((r + g + b) / 3.0)
    valid = np.isfinite(col) & np.isfinite(lum)
    n = _block_sums(valid, block)
    col_sum = _block_sums(np.where(valid, col, 0.0), block)
    lum_sum = _block_sums(np.where(valid, lum, 0.0), block)
    informative = lum_sum > MIN_LUM_NOISE * np.maximum(n, 1.0)
    return col_sum / np.maximum(lum_sum, 1e-9), informative


def one_colour_survey(cube: np.ndarray) -> tuple[bool, str]:
    """(True, reason) when a (3, H, W) survey cutout (0..255, NaN blank) is effectively one colour:
    a DSS field with one usable plate, copied into all three colour planes.

    Judged on the colour's noise, not its size: on a faint two-plate field R and B differ by
    less than the grain on most pixels (a "grey pixels" test calls 50-60% of such real cutouts
    grey), but the difference still carries both plates' independent grain; on a one-colour
    plate it is zero (or compression residue). Tile by tile, so a cutout straddling plates is
    one colour when more than half of it is."""
    data = np.asarray(cube, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] < 3:
        raise ValueError(f"expected a (3, H, W) cube, got shape {data.shape}")
    finite = np.all(np.isfinite(data[:3]), axis=0)
    if not finite.any():
        return False, ""
    ratio, informative = colour_noise_ratio(data)
    if not informative.any():
        # No brightness structure anywhere (a flat field): one colour when the planes are equal.
        pix = data[:3, finite]
        spread = float(np.max(pix.max(axis=0) - pix.min(axis=0)))
        if spread <= SURVEY_GREY_TOL:
            return True, "one colour: all planes equal (one usable plate)"
        return False, ""
    one = ratio[informative] < COLOUR_NOISE_RATIO
    fraction = float(one.mean())
    if fraction > SURVEY_GREY_FRACTION:
        med = float(np.median(ratio[informative]))
        return True, (
            f"one colour: {fraction:.0%} of the field has no colour noise of its own "
            f"(colour/brightness noise {med:.2f} < {COLOUR_NOISE_RATIO:g}; one usable plate)"
        )
    return False, ""


def survey_kind(cube: np.ndarray) -> tuple[str, str]:
    """(kind, detail) of an unusable (3, H, W) survey cutout, or ("", "") for a usable one. kind is
    "blank" (no data, or mostly outside the footprint), "white" (uniformly white), "saturated"
    (mostly clipped at the top), "flat" (constant) or "one colour" (one usable plate)."""
    data = np.asarray(cube, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] < 3 or data.size == 0:
        raise ValueError(f"expected a (3, H, W) cube, got shape {data.shape}")
    available, reason = assess(data)
    if not available:
        rgb = data[:3]
        blank = np.all(np.isnan(rgb) | (rgb == 0), axis=0)
        if blank.all():
            return "blank", "no data"
        if reason.startswith("outside"):
            return "blank", f"{blank.mean():.0%} outside the footprint"
        covered = np.nan_to_num(rgb[:, ~blank], nan=0.0)
        if reason.startswith("white"):
            top = float(np.all(covered >= WHITE_LEVEL, axis=0).sum()) / blank.size
            if float(covered.min()) >= WHITE_LEVEL:
                return "white", f"{top:.0%} of the pixels white"
            return "saturated", f"{top:.0%} of the pixels at >= {WHITE_LEVEL:g}"
        return "flat", f"constant: std {float(covered.std(axis=1).max()):.2g} in 0..255 units"
    one, why = one_colour_survey(data)
    return ("one colour", why.removeprefix("one colour: ")) if one else ("", "")


def survey_verdict(cube: np.ndarray) -> tuple[bool, str]:
    """(usable, reason) for a survey cutout: blank, white, saturated or constant (the cutouts'
    own coverage verdict, told apart), then effectively one colour. The reason names the kind:
    "survey: blank (...)", "survey: white (...)", "survey: saturated (...)", "survey: one colour (...)"."""
    kind, detail = survey_kind(cube)
    if not kind:
        return True, ""
    if kind == "flat":
        return False, f"survey: one colour ({detail})"
    return False, f"survey: {kind} ({detail})"
