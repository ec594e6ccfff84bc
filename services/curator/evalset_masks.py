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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
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


def survey_cases() -> list[Case]:
    out: list[Case] = []
    for name, ra, dec, one in survey_fields():
        out.append(Case(f"{name}/dss2", "survey_one_colour", one, _survey(ra, dec, DSS2, 1.0, 96)))
    # SDSS: never one colour (three filters on one CCD), dark noisy sky; inside its footprint.
    for j, (ra, dec) in enumerate(((180.0, 30.0), (150.0, 10.0), (200.0, 45.0), (230.0, 20.0), (170.0, 55.0))):
        cube = _survey(ra, dec, SDSS9, 0.4, 96)
        if np.isfinite(cube).mean() > 0.9:
            out.append(Case(f"sdss-{j}/sdss9", "survey_one_colour", False, cube))
    return out


def all_cases() -> list[Case]:
    return [*mask_cases(), *grey_cases(), *survey_cases()]


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
    also the usable/reject verdict and the mean IoU of the masks on cases with a known truth."""
    report: dict[str, dict] = {}
    mcases = [c for c in cases if c.filter == "missing_data"]
    if mcases:
        ours = [masks.missing_data_mask(c.image) for c in mcases]
        base = [baseline.baseline_missing_data_mask(c.image) for c in mcases]
        label = [c.label for c in mcases]
        report["missing_data"] = {
            "ours": _pr([m.any() for m in ours], label),
            "baseline": _pr([m.any() for m in base], label),
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
    gcases = [c for c in cases if c.filter == "grey"]
    if gcases:
        label = [c.label for c in gcases]
        report["grey"] = {
            "ours": _pr([colour.grey_or_single_channel(c.image)[0] for c in gcases], label),
            "baseline": _pr([baseline.baseline_grey_or_single_channel(c.image)[0] for c in gcases], label),
        }
    scases = [c for c in cases if c.filter == "survey_one_colour"]
    if scases:
        label = [c.label for c in scases]
        report["survey_one_colour"] = {
            "ours": _pr([colour.one_colour_survey(c.image)[0] for c in scases], label),
            "baseline": _pr([baseline.baseline_one_colour_survey(c.image)[0] for c in scases], label),
        }
    return report


def misses(cases: list[Case]) -> list[str]:
    """Names of the cases our filters get wrong (for debugging the evaluation)."""
    out = []
    for c in cases:
        if c.filter == "missing_data":
            pred = bool(masks.missing_data_mask(c.image).any())
        elif c.filter == "grey":
            pred = colour.grey_or_single_channel(c.image)[0]
        else:
            pred = colour.one_colour_survey(c.image)[0]
        if pred != c.label:
            out.append(f"{c.filter}:{c.name}:label={c.label}")
    return out


def format_report(report: dict[str, dict]) -> str:
    lines = [f"{'filter':<22}{'ours P':>8}{'ours R':>8}{'base P':>8}{'base R':>8}{'n':>6}"]
    for name, r in report.items():
        if name == "mask_iou":
            lines.append(
                f"{'mask IoU (mean)':<22}{r['ours']['mean']:>16.3f}{r['baseline']['mean']:>16.3f}{r['ours']['n']:>6}"
            )
            continue
        o, b = r["ours"], r["baseline"]
        lines.append(
            f"{name:<22}{o['precision']:>8.3f}{o['recall']:>8.3f}{b['precision']:>8.3f}{b['recall']:>8.3f}{o['n']:>6}"
        )
    return "\n".join(lines)
