"""A deterministic, labelled evaluation set for the missing-data and colour filters, drawn from
the local universe, and `evaluate`: per-filter precision/recall for ours and the baseline.

Outreach images are rendered small (256 x 192) over galaxies, nebulae, clusters and plain
fields; defects are drawn on them with a known true mask (borders of several widths, irregular
borders, chip gaps at any angle, rectangles, rotated rectangles, ellipses, triangles, corner
wedges, L shapes, combinations, and the renderer's own OutreachDefects). Grey, tinted-grey,
noisy-grey and single-channel versions test the colour filter; DSS2 cutouts on one-colour and
normal plates, and SDSS cutouts, test the survey filter.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from skimage.draw import ellipse, polygon

from services.curator import baseline, colour, masks
from services.universe.render import OutreachDefects, render_outreach, render_survey, tan_wcs
from services.universe.sky import DEFAULT_SEED, Sky
from services.universe.surveys import DSS2, SDSS9, dss_one_colour

SHAPE = (192, 256)  # (H, W): small, so the whole set renders in seconds
SEED = 6
DEFECT_KINDS = (
    "border",
    "border_sides",
    "irregular_border",
    "chip_gap",
    "tilted_gap",
    "box",
    "rotated_box",
    "ellipse",
    "triangle",
    "corner_wedge",
    "l_shape",
    "combination",
    "renderer",
    "wide_border",
    "big_box",
)


@dataclass(frozen=True)
class Case:
    name: str
    filter: str  # "missing_data", "grey", "survey_one_colour"
    label: bool  # True: the filter should fire
    image: np.ndarray  # (H, W, 3) uint8 outreach, or (3, H, W) float32 survey cube
    truth: np.ndarray | None = None  # true missing-data mask (None: not known exactly)


@lru_cache(maxsize=1)
def _sky() -> Sky:
    return Sky()


def fields(n_per_kind: int = 6, n_plain: int = 4) -> list[tuple[str, float, float, float, str]]:
    """(name, ra, dec, scale "/px, style) for galaxies, nebulae, clusters and plain fields; deterministic."""
    rng = np.random.default_rng(SEED)
    marks = _sky().landmarks()
    out = []
    for kind in ("galaxy", "nebula", "cluster"):
        rows = marks[marks["kind"] == kind]
        for j, i in enumerate(sorted(rng.choice(len(rows), n_per_kind, replace=False))):
            r = rows[int(i)]
            scale = max(float(r["size_arcsec"]) * rng.uniform(1.2, 4.0) / SHAPE[1], 0.05)
            out.append((f"{kind}-{r['id']}", float(r["ra"]), float(r["dec"]), scale, ("hubble", "webb")[j % 2]))
    for j in range(n_plain):
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-0.9, 0.9))))
        out.append((f"field-{j}", ra, dec, float(rng.uniform(0.05, 0.5)), ("hubble", "webb")[j % 2]))
    return out


@lru_cache(maxsize=256)
def _render(ra: float, dec: float, scale: float, style: str, defects: OutreachDefects | None = None) -> np.ndarray:
    return render_outreach(_sky(), tan_wcs(ra, dec, scale, SHAPE), SHAPE, style, defects)


def _band(h: int, w: int, x: float, y: float, angle_deg: float, width: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    t = np.radians(angle_deg)
    return np.abs(-(xx - x) * np.sin(t) + (yy - y) * np.cos(t)) < width / 2.0


def _rotated_rect(h: int, w: int, x: float, y: float, a: float, b: float, angle_deg: float) -> np.ndarray:
    t = np.radians(angle_deg)
    corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) / 2.0
    rot = corners @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    m = np.zeros((h, w), dtype=bool)
    rr, cc = polygon(rot[:, 1] + y, rot[:, 0] + x, (h, w))
    m[rr, cc] = True
    return m


def defect_mask(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A true missing-data mask of the given kind (not "renderer"), random size and place."""
    h, w = shape
    m = np.zeros((h, w), dtype=bool)
    if kind == "border":
        b = int(rng.choice([2, 4, 8, 16, 24]))
        m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    elif kind == "border_sides":
        b = int(rng.choice([3, 6, 12, 30, 60]))
        sides = [int(rng.integers(4))]
        if rng.random() < 0.5:
            sides.append((sides[0] + 1 + int(rng.integers(3))) % 4)
        for side in sides:
            rows = (slice(0, b), slice(h - b, h), slice(None), slice(None))[side]
            cols = (slice(None), slice(None), slice(0, b), slice(w - b, w))[side]
            m[rows, cols] = True
    elif kind == "irregular_border":
        b = float(rng.choice([3, 6, 10, 20]))
        yy, xx = np.mgrid[0:h, 0:w]
        for n, axis in ((w, "bottom"), (w, "top"), (h, "left"), (h, "right")):
            walk = np.cumsum(rng.normal(0, 0.35 * b / np.sqrt(n / 8), n))
            edge = np.clip(b + walk - walk.mean(), 1, 3 * b)
            if axis == "bottom":
                m |= yy < edge[None, :]
            elif axis == "top":
                m |= yy >= h - edge[None, :]
            elif axis == "left":
                m |= xx < edge[:, None]
            else:
                m |= xx >= w - edge[:, None]
    elif kind == "chip_gap":
        horizontal = rng.random() < 0.5
        width = float(rng.uniform(3, 8))
        tilt = float(rng.uniform(-2, 2))
        if horizontal:
            m = _band(h, w, w / 2, h * rng.uniform(0.3, 0.7), tilt, width)
        else:
            m = _band(h, w, w * rng.uniform(0.3, 0.7), h / 2, 90 + tilt, width)
    elif kind == "tilted_gap":
        m = _band(h, w, w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7), rng.uniform(0, 180), rng.uniform(3, 10))
    elif kind == "box":
        bw, bh = int(rng.integers(12, 90)), int(rng.integers(12, 70))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        m[y0 : y0 + bh, x0 : x0 + bw] = True
    elif kind == "rotated_box":
        m = _rotated_rect(
            h,
            w,
            rng.uniform(30, w - 30),
            rng.uniform(30, h - 30),
            rng.uniform(16, 90),
            rng.uniform(16, 60),
            rng.uniform(5, 85),
        )
    elif kind == "ellipse":
        rr, cc = ellipse(
            rng.uniform(20, h - 20),
            rng.uniform(20, w - 20),
            rng.uniform(8, 40),
            rng.uniform(8, 50),
            (h, w),
            rotation=rng.uniform(0, np.pi),
        )
        m[rr, cc] = True
    elif kind == "triangle":
        cx, cy = rng.uniform(30, w - 30), rng.uniform(30, h - 30)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 3))
        r = rng.uniform(15, 50, 3)
        rr, cc = polygon(cy + r * np.sin(ang), cx + r * np.cos(ang), (h, w))
        m[rr, cc] = True
    elif kind == "corner_wedge":
        # A rotated mosaic's edge cuts a corner off: a right triangle at a corner.
        a, b = rng.uniform(15, 0.6 * w), rng.uniform(15, 0.6 * h)
        corner = int(rng.integers(4))
        xs = np.array([0, a, 0]) if corner % 2 == 0 else np.array([w, w - a, w])
        ys = np.array([0, 0, b]) if corner < 2 else np.array([h, h, h - b])
        rr, cc = polygon(ys, xs, (h, w))
        m[rr, cc] = True
    elif kind == "l_shape":
        x0, y0 = int(rng.integers(10, w - 80)), int(rng.integers(10, h - 70))
        m[y0 : y0 + 14, x0 : x0 + 70] = True
        m[y0 : y0 + 60, x0 : x0 + 14] = True
    elif kind == "combination":
        for sub in rng.choice(
            ["border", "chip_gap", "box", "rotated_box", "corner_wedge", "ellipse"], 2, replace=False
        ):
            m |= defect_mask(str(sub), shape, rng)
    elif kind == "wide_border":  # leaves too little valid area: the pair is rejected
        b = int(rng.integers(40, 60))
        m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    elif kind == "big_box":
        bw, bh = int(rng.uniform(0.6, 0.95) * w), int(rng.uniform(0.6, 0.95) * h)
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        m[y0 : y0 + bh, x0 : x0 + bw] = True
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    return m


def _renderer_defects(rng: np.random.Generator) -> OutreachDefects:
    h, w = SHAPE
    x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 30))
    return OutreachDefects(
        border_px=int(rng.choice([0, 4, 10])),
        chip_gap=bool(rng.random() < 0.5),
        boxes=((x0, y0, x0 + int(rng.integers(14, 40)), y0 + int(rng.integers(14, 30))),),
    )


def mask_cases(n_defects_per_field: int = 4) -> list[Case]:
    rng = np.random.default_rng(SEED + 1)
    out: list[Case] = []
    for k, (name, ra, dec, scale, style) in enumerate(fields()):
        clean = _render(ra, dec, scale, style)
        out.append(Case(f"{name}/{style}/clean", "missing_data", False, clean, np.zeros(SHAPE, dtype=bool)))
        for j in range(n_defects_per_field):
            kind = DEFECT_KINDS[(k * n_defects_per_field + j) % len(DEFECT_KINDS)]
            if kind == "renderer":
                img = _render(ra, dec, scale, style, _renderer_defects(rng))
                truth = None  # where the defect met sky that was black already is unknowable
            else:
                truth = defect_mask(kind, SHAPE, rng)
                img = clean.copy()
                img[truth] = 0
            out.append(Case(f"{name}/{style}/{kind}", "missing_data", True, img, truth))
    return out


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """The (H, W, 3) uint8 image (FITS orientation) as a crawled release JPEG gives it back:
    flipped to top-first, encoded by PIL at `quality`, decoded and flipped back."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[::-1])).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[::-1].copy()


JPEG_QUALITIES = (85, 90, 95)


def jpeg_mask_cases(cases: list[Case], every: int = 2) -> list[Case]:
    """JPEG round-tripped versions (quality 85-95) of every `every`-th missing-data case (clean
    and defect, the truth unchanged), filter "missing_data_jpeg": ringing beside bright stars
    leaves pixels at 2-13 inside black regions. Reported apart from the lossless cases: on these
    small, crowded renders it fills thin gaps and small boxes with ringing outright."""
    out = []
    for j, c in enumerate(cases[::every]):
        q = JPEG_QUALITIES[j % len(JPEG_QUALITIES)]
        out.append(Case(f"{c.name}/jpeg{q}", "missing_data_jpeg", c.label, jpeg_round_trip(c.image, q), c.truth))
    return out


LARGE_KINDS = ("frame", "side", "two_sides", "box", "rotated_box", "box_and_border")


def large_defect_mask(kind: str, shape: tuple[int, int], valid: float, rng: np.random.Generator) -> np.ndarray:
    """A large true missing-data mask leaving about `valid` of the image: the pairs near the
    usable/reject threshold."""
    h, w = shape
    m = np.zeros((h, w), dtype=bool)
    lost = 1.0 - valid
    if kind == "frame":  # (h - 2b)(w - 2b) = valid * h * w
        b = int(np.rint(((h + w) - np.sqrt((h + w) ** 2 - 4 * lost * h * w)) / 4))
        m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    elif kind == "side":
        side = int(rng.integers(4))
        n = int(np.rint(lost * (h if side < 2 else w)))
        rows = (slice(0, n), slice(h - n, h), slice(None), slice(None))[side]
        cols = (slice(None), slice(None), slice(0, n), slice(w - n, w))[side]
        m[rows, cols] = True
    elif kind == "two_sides":  # an L: a bottom/top strip and a left/right strip
        f = 1.0 - np.sqrt(valid)
        by, bx = int(np.rint(f * h)), int(np.rint(f * w))
        m[(slice(0, by), slice(h - by, h))[int(rng.integers(2))]] = True
        m[:, (slice(0, bx), slice(w - bx, w))[int(rng.integers(2))]] = True
    elif kind in ("box", "box_and_border"):
        area = lost * h * w
        if kind == "box_and_border":
            b = int(rng.integers(4, 12))
            m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
            area = max(area - m.sum(), 0.02 * h * w)
        aspect = rng.uniform(0.7, 1.4) * w / h
        bh = int(min(h, round(np.sqrt(area / aspect))))
        bw = int(min(w, round(area / max(bh, 1))))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        m[y0 : y0 + bh, x0 : x0 + bw] = True
    elif kind == "rotated_box":
        side = np.sqrt(lost * h * w)
        m = _rotated_rect(
            h, w, w / 2 + rng.uniform(-20, 20), h / 2 + rng.uniform(-20, 20), side, side, rng.uniform(5, 40)
        )
    else:
        raise ValueError(f"unknown large defect kind {kind!r}")
    return m


def large_cases(n_per_field: int = 2) -> list[Case]:
    """Large defects leaving 25-95% of the image valid: the usable/reject verdict's cases (about
    half of them under the 60% threshold)."""
    rng = np.random.default_rng(SEED + 4)
    out: list[Case] = []
    for k, (name, ra, dec, scale, style) in enumerate(fields()):
        clean = _render(ra, dec, scale, style)
        for j in range(n_per_field):
            kind = LARGE_KINDS[(k * n_per_field + j) % len(LARGE_KINDS)]
            truth = large_defect_mask(kind, SHAPE, float(rng.uniform(0.25, 0.95)), rng)
            img = clean.copy()
            img[truth] = 0
            out.append(Case(f"{name}/{style}/large_{kind}", "missing_data_large", True, img, truth))
    return out


def _grey_versions(img: np.ndarray, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = np.repeat(lum[..., None], 3, axis=-1)
    tint = np.array(rng.choice([(1.0, 0.9, 0.75), (0.8, 0.9, 1.0), (1.0, 0.95, 0.9)]))
    noisy = grey + rng.normal(0, 0.8, grey.shape)  # re-encoding noise, independent per channel
    single = np.zeros_like(grey)
    c = int(rng.integers(3))
    single[..., c] = img[..., c]
    single_noisy = single + np.abs(rng.normal(0, 0.7, single.shape)) * (np.arange(3) != c)
    versions = [
        ("grey", grey),
        ("tinted", grey * tint),
        ("grey_noisy", noisy),
        ("single", single),
        ("single_noisy", single_noisy),
    ]
    return [(n, np.clip(np.rint(v), 0, 255).astype(np.uint8)) for n, v in versions]


def grey_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 2)
    out: list[Case] = []
    for k, (name, ra, dec, scale, style) in enumerate(fields()):
        img = _render(ra, dec, scale, style)
        out.append(Case(f"{name}/{style}/colour", "grey", False, img))
        versions = _grey_versions(img, rng)
        name_v, version = versions[k % len(versions)]
        out.append(Case(f"{name}/{style}/{name_v}", "grey", True, version))
        name_w, version_w = versions[(k + 2) % len(versions)]
        out.append(Case(f"{name}/{style}/{name_w}", "grey", True, version_w))
    return out


def survey_fields(n_each: int = 8) -> list[tuple[str, float, float, bool]]:
    """(name, ra, dec, one_colour) DSS2 field centres on one-colour and on normal plates."""
    rng = np.random.default_rng(SEED + 3)
    ra = rng.uniform(0, 360, 4000)
    dec = np.degrees(np.arcsin(rng.uniform(-0.95, 0.95, 4000)))
    flags = dss_one_colour(DEFAULT_SEED, ra, dec)
    # The whole cutout on one plate: the flags at the four corners (~0.05 deg off) agree.
    d = 0.05
    same = np.ones_like(flags)
    for dx, dy in ((d, d), (-d, d), (d, -d), (-d, -d)):
        same &= dss_one_colour(DEFAULT_SEED, ra + dx / np.cos(np.radians(dec)), dec + dy) == flags
    one = np.flatnonzero(flags & same)[:n_each]
    two = np.flatnonzero(~flags & same)[:n_each]
    return [(f"dss-{i}", float(ra[i]), float(dec[i]), bool(flags[i])) for i in (*one, *two)]


@lru_cache(maxsize=128)
def _survey(ra: float, dec: float, hips: str, scale: float, size: int) -> np.ndarray:
    return render_survey(_sky(), tan_wcs(ra, dec, scale, (size, size)), (size, size), hips)


HIPS_SCALE = 0.805  # "/px: the DSS2 colour HiPS's native pixel (the cutouts the stack serves)


def one_colour_fraction(wcs, shape: tuple[int, int], step: int = 4) -> float:
    """Fraction of a survey cutout's pixels on a one-colour DSS2 plate (the universe's truth),
    sampled every `step` px."""
    h, w = shape
    yy, xx = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    return float(dss_one_colour(DEFAULT_SEED, ra, dec).mean())


def hips_like_fields(n_each: int = 10, n_boundary: int = 6) -> list[tuple[str, float, float, tuple[int, int], float]]:
    """(name, ra, dec, (h, w), one-colour fraction) for DSS2 cutouts like the ones the stack
    serves: native HiPS pixels, 40-160 px, mostly plain (faint, low-signal) fields, some on
    plate boundaries; n_each on one-colour plates (fraction > 0.65), n_each on two (< 0.35) and
    n_boundary across a plate boundary (5-35% or 65-95% one colour). Fractions in between are
    left out: no clear label."""
    rng = np.random.default_rng(SEED + 6)
    one: list = []
    two: list = []
    while len(one) < n_each or len(two) < n_each:
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-0.95, 0.95))))
        shape = (int(rng.integers(40, 161)), int(rng.integers(40, 161)))
        frac = one_colour_fraction(tan_wcs(ra, dec, HIPS_SCALE, shape), shape)
        bucket = one if frac > 0.65 else two if frac < 0.35 else None
        if bucket is not None and len(bucket) < n_each:
            bucket.append((f"hips-{len(one) + len(two)}", ra, dec, shape, frac))
    # Straddling a zone boundary (every 5 deg in dec) between a one-colour and a two-plate plate.
    edge: list = []
    while len(edge) < n_boundary:
        ra, dec_b = float(rng.uniform(0, 360)), 5.0 * int(rng.integers(-16, 17))
        shape = (int(rng.integers(60, 161)), int(rng.integers(60, 161)))
        if dss_one_colour(DEFAULT_SEED, np.array([ra, ra]), np.array([dec_b - 0.1, dec_b + 0.1])).sum() != 1:
            continue
        span = shape[0] * HIPS_SCALE / 3600.0
        dec = dec_b + (0.5 - rng.uniform(0.1, 0.3)) * span * (1 if len(edge) % 2 else -1)
        frac = one_colour_fraction(tan_wcs(ra, dec, HIPS_SCALE, shape), shape)
        if 0.05 < frac < 0.35 or 0.65 < frac < 0.95:
            edge.append((f"hips-edge-{len(edge)}", ra, dec, shape, frac))
    return [*one, *two, *edge]


@lru_cache(maxsize=64)
def _hips_survey(ra: float, dec: float, shape: tuple[int, int]) -> np.ndarray:
    """A DSS2 cutout as the HiPS serves it: 8-bit values (rounded), native pixels."""
    cube = render_survey(_sky(), tan_wcs(ra, dec, HIPS_SCALE, shape), shape, DSS2)
    return np.clip(np.rint(cube), 0, 255).astype(np.float32)


SURVEY_KINDS = ("one_colour", "blank", "mostly_blank", "white", "saturated", "flat")


def _sdss_fields() -> list[tuple[float, float]]:
    """SDSS field centres inside its footprint (where a 96 px cutout is almost all data)."""
    out = []
    for ra, dec in (
        (180.0, 30.0),
        (150.0, 10.0),
        (200.0, 45.0),
        (230.0, 20.0),
        (170.0, 55.0),
        (160.0, 40.0),
        (210.0, 5.0),
        (190.0, 15.0),
        (140.0, 25.0),
        (220.0, 35.0),
    ):
        if np.isfinite(_survey(ra, dec, SDSS9, 0.4, 96)).mean() > 0.9:
            out.append((ra, dec))
    return out


def survey_cases() -> list[Case]:
    """Survey cutouts, label True where the survey filter (`colour.survey_verdict`) must reject:
    DSS2 fields on one-colour plates; blank (all NaN), mostly blank (outside the footprint),
    white, saturated and constant cutouts. Usable (False): DSS2 on two plates, SDSS, SDSS
    partially blank at its footprint's edge, cutouts with a small saturated star. The case name
    ends with the kind."""
    rng = np.random.default_rng(SEED + 5)
    out: list[Case] = []
    dss = survey_fields(n_each=14)
    for name, ra, dec, one in dss:
        kind = "one_colour" if one else "two_plates"
        out.append(Case(f"{name}/dss2/{kind}", "survey", one, _survey(ra, dec, DSS2, 1.0, 96)))
    # As the stack serves them: 8-bit, native pixels, mostly faint fields (where R and B differ
    # by less than the grain on most pixels), some straddling plates.
    for name, ra, dec, shape, frac in hips_like_fields():
        kind = "one_colour" if frac > 0.5 else "two_plates_faint"
        if name.startswith("hips-edge"):
            kind = "one_colour" if frac > 0.5 else "two_plates_edge"
        out.append(Case(f"{name}/dss2/{kind}", "survey", frac > 0.5, _hips_survey(ra, dec, shape)))
    # SDSS: never one colour (three filters on one CCD), dark noisy sky.
    sdss = [_survey(ra, dec, SDSS9, 0.4, 96) for ra, dec in _sdss_fields()]
    for j, cube in enumerate(sdss):
        out.append(Case(f"sdss-{j}/sdss9/normal", "survey", False, cube))
    normals = [c.image for c in out if not c.label]
    for j, cube in enumerate(sdss):
        # At the footprint's edge: part of the cutout blank (NaN), under half of it: usable.
        part = cube.copy()
        n = int(rng.uniform(0.1, 0.4) * part.shape[2])
        part[:, :, -n:] = np.nan
        out.append(Case(f"sdss-{j}/sdss9/partial_blank", "survey", False, part))
        mostly = cube.copy()
        n = int(rng.uniform(0.6, 0.95) * mostly.shape[2])
        mostly[:, :, :n] = np.nan if j % 2 else 0.0
        out.append(Case(f"sdss-{j}/sdss9/mostly_blank", "survey", True, mostly))
    for j in range(4):
        base = normals[(3 * j) % len(normals)]
        out.append(Case(f"blank-{j}/none/blank", "survey", True, np.full_like(base, np.nan)))
        white = np.clip(255.0 - np.abs(rng.normal(0, 0.8 * (j % 2), base.shape)), 0, 255).astype(np.float32)
        out.append(Case(f"white-{j}/none/white", "survey", True, white))
        sat = base.copy()
        yy, xx = np.mgrid[0 : base.shape[1], 0 : base.shape[2]]
        r = np.hypot(yy - rng.uniform(30, 66), xx - rng.uniform(30, 66))
        sat[:, r < rng.uniform(60, 80)] = 255.0  # a saturated star (or plate flaw) covering most of it
        out.append(Case(f"sat-{j}/dss2/saturated", "survey", True, sat))
        star = base.copy()
        star[:, r < rng.uniform(5, 12)] = 255.0  # a small saturated star: usable
        out.append(Case(f"star-{j}/dss2/small_saturated_star", "survey", False, star))
        flat = np.full_like(base, float(rng.uniform(5, 200)))
        if j % 2:
            flat[:, np.isnan(base[0])] = np.nan
        out.append(Case(f"flat-{j}/none/flat", "survey", True, flat))
    return out


def all_cases() -> list[Case]:
    plain, large = mask_cases(), large_cases()
    return [*plain, *large, *jpeg_mask_cases(plain), *jpeg_mask_cases(large, 3), *grey_cases(), *survey_cases()]


def _pr(pred: list[bool], label: list[bool]) -> dict[str, float]:
    p, t = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "n": len(t),
        "positives": int(t.sum()),
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def evaluate(cases: list[Case], min_valid_fraction: float = 0.6) -> dict[str, dict]:
    """Per filter: {"ours": {precision, recall, n, positives}, "baseline": {...}}; for the masks
    also the usable/reject verdict (on the missing-data and the large-defect cases, the truth's
    verdict as label) and the mean IoU of the masks on cases with a known truth."""
    report: dict[str, dict] = {}
    mcases = [c for c in cases if c.filter in ("missing_data", "missing_data_large")]
    if mcases:
        ours = [masks.missing_data_mask(c.image) for c in mcases]
        base = [baseline.baseline_missing_data_mask(c.image) for c in mcases]
        detect = [i for i, c in enumerate(mcases) if c.filter == "missing_data"]
        label = [mcases[i].label for i in detect]
        report["missing_data"] = {
            "ours": _pr([ours[i].any() for i in detect], label),
            "baseline": _pr([base[i].any() for i in detect], label),
        }
        truth_reject = [c.truth is not None and not masks.mask_verdict(c.truth, min_valid_fraction)[0] for c in mcases]
        report["missing_data_reject"] = {
            "ours": _pr([not masks.mask_verdict(m, min_valid_fraction)[0] for m in ours], truth_reject),
            "baseline": _pr([not masks.mask_verdict(m, min_valid_fraction)[0] for m in base], truth_reject),
        }
        known = [(i, c) for i, c in enumerate(mcases) if c.truth is not None and c.label]
        report["mask_iou"] = {
            "ours": {"mean": float(np.mean([_iou(ours[i], c.truth) for i, c in known])), "n": len(known)},
            "baseline": {"mean": float(np.mean([_iou(base[i], c.truth) for i, c in known])), "n": len(known)},
        }
    jcases = [c for c in cases if c.filter == "missing_data_jpeg"]
    if jcases:
        ours = [masks.missing_data_mask(c.image) for c in jcases]
        base = [baseline.baseline_missing_data_mask(c.image) for c in jcases]
        label = [c.label for c in jcases]
        report["missing_data_jpeg"] = {
            "ours": _pr([m.any() for m in ours], label),
            "baseline": _pr([m.any() for m in base], label),
        }
        truth_reject = [c.truth is not None and not masks.mask_verdict(c.truth, min_valid_fraction)[0] for c in jcases]
        report["missing_data_reject_jpeg"] = {
            "ours": _pr([not masks.mask_verdict(m, min_valid_fraction)[0] for m in ours], truth_reject),
            "baseline": _pr([not masks.mask_verdict(m, min_valid_fraction)[0] for m in base], truth_reject),
        }
        known = [(i, c) for i, c in enumerate(jcases) if c.truth is not None and c.label]
        report["mask_iou_jpeg"] = {
            "ours": {"mean": float(np.mean([_iou(ours[i], c.truth) for i, c in known])), "n": len(known)},
            "baseline": {"mean": float(np.mean([_iou(base[i], c.truth) for i, c in known])), "n": len(known)},
        }
    gcases = [c for c in cases if c.filter == "grey"]
    if gcases:
        label = [c.label for c in gcases]
        report["grey"] = {
            "ours": _pr([colour.grey_or_single_channel(c.image)[0] for c in gcases], label),
            "baseline": _pr([baseline.baseline_grey_or_single_channel(c.image)[0] for c in gcases], label),
        }
    scases = [c for c in cases if c.filter == "survey"]
    if scases:
        label = [c.label for c in scases]
        report["survey"] = {
            "ours": _pr([not colour.survey_verdict(c.image)[0] for c in scases], label),
            "baseline": _pr([not baseline.baseline_survey_verdict(c.image)[0] for c in scases], label),
        }
    return report


def misses(cases: list[Case], min_valid_fraction: float = 0.6) -> list[str]:
    """Names of the cases our filters get wrong (for debugging the evaluation): detection, the
    usable/reject verdict of the masks, grey, survey."""
    out = []
    for c in cases:
        if c.filter in ("missing_data", "missing_data_large", "missing_data_jpeg"):
            mask = masks.missing_data_mask(c.image)
            if c.filter in ("missing_data", "missing_data_jpeg") and bool(mask.any()) != c.label:
                out.append(f"missing_data:{c.name}:label={c.label}")
            if c.truth is not None:
                want = not masks.mask_verdict(c.truth, min_valid_fraction)[0]
                got = not masks.mask_verdict(mask, min_valid_fraction)[0]
                if got != want:
                    out.append(
                        f"missing_data_reject:{c.name}:label={want}:valid={masks.usable_fraction(mask):.3f}"
                        f"/true {masks.usable_fraction(c.truth):.3f}"
                    )
            continue
        if c.filter == "grey":
            pred = colour.grey_or_single_channel(c.image)[0]
        else:
            pred = not colour.survey_verdict(c.image)[0]
        if pred != c.label:
            out.append(f"{c.filter}:{c.name}:label={c.label}")
    return out


def format_report(report: dict[str, dict]) -> str:
    lines = [f"{'filter':<22}{'ours P':>8}{'ours R':>8}{'base P':>8}{'base R':>8}{'n':>6}{'pos':>6}"]
    for name, r in report.items():
        if name.startswith("mask_iou"):
            label = name.replace("mask_iou", "IoU (mean)")
            lines.append(f"{label:<22}{r['ours']['mean']:>16.3f}{r['baseline']['mean']:>16.3f}{r['ours']['n']:>6}")
            continue
        o, b = r["ours"], r["baseline"]
        lines.append(
            f"{name:<22}{o['precision']:>8.3f}{o['recall']:>8.3f}{b['precision']:>8.3f}{b['recall']:>8.3f}"
            f"{o['n']:>6}{o['positives']:>6}"
        )
    return "\n".join(lines)


def main() -> None:
    """Print the report, ours against the baseline per filter, and the cases ours gets wrong."""
    cases = all_cases()
    print(format_report(evaluate(cases)))
    wrong = misses(cases)
    print(f"\nours wrong on {len(wrong)} case(s)" + "".join(f"\n  {w}" for w in wrong))


if __name__ == "__main__":
    main()
