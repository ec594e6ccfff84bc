"""Every check of a pair (outreach image, survey cutout), as plain functions on arrays.

`check_outreach` runs once per observation (the image-level checks: missing data, grey),
`check_pair` once per survey cutout (availability, resolution, the survey's own colour,
alignment) and gives a `PairResult`. No I/O here: the evaluation job (`evaluation.py`) loads
the inputs, asks the cutouts service for corrected cutouts and stores the verdicts.

A reason is ``"{code}: {detail}"``; the code is one of REASON_CODES, stable, and what metrics
and dataset summaries count by.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.wcs import WCS
from reproject import reproject_interp

from services.curator import alignment as align
from services.curator import colour, masks

# Why a pair is rejected (or, for "masked" and "corrected", what was done to keep it).
REASON_CODES = (
    "blacklisted",
    "no-wcs",
    "missing-data",
    "grey",
    "survey-unavailable",
    "survey-colour",
    "too-small",
    "low-resolution",
    "misalignment",
)
FLAG_CODES = ("masked", "corrected")


@dataclass(frozen=True)
class Policy:
    """Limits of an acceptable pair (settings of the curator service, PSS_CURATE_*)."""

    min_valid_fraction: float = 0.6  # of the outreach image left after masking missing data
    min_survey_side_px: int = 32  # a survey cutout smaller than this teaches nothing
    min_resolution_gain: float = 1.0  # survey pixel / outreach pixel: the target must not be blurrier
    max_shift_px: float = 10.0  # residual misalignment corrected up to these; beyond, rejected
    max_rotation_deg: float = 2.0
    max_scale_error: float = 0.02


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


@dataclass
class OutreachChecks:
    """The image-level checks, shared by every survey's pair."""

    missing: np.ndarray  # (H, W) bool, True = missing data (FITS orientation)
    valid_fraction: float
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def has_missing_data(self) -> bool:
        return bool(self.missing.any())


def check_outreach(image: np.ndarray, policy: Policy) -> OutreachChecks:
    """Missing-data mask and the grey / single-channel check of an (H, W, 3) uint8 image."""
    missing = masks.missing_data_mask(image)
    valid = masks.usable_fraction(missing)
    checks = OutreachChecks(missing, valid, scores={"valid_fraction": round(valid, 4)})
    usable, why = masks.mask_verdict(missing, policy.min_valid_fraction)
    if not usable:
        checks.reasons.append(f"missing-data: {why}")
    grey, why = colour.grey_or_single_channel(image)
    if grey:
        checks.reasons.append(f"grey: {why}")
    return checks


@dataclass
class Cutout:
    """A survey cutout as the cutouts service stored it."""

    survey: str
    available: bool
    reason: str = ""  # why not available (e.g. outside the SDSS footprint)
    cube: np.ndarray | None = None  # (3, h, w) float32 0..255, NaN blank, FITS orientation
    wcs: WCS | None = None


@dataclass
class PairResult:
    usable: bool
    reasons: list[str]  # why rejected; empty when usable
    flags: list[str]  # what was done to keep it ("masked: ...", "corrected: ...")
    scores: dict[str, float]
    alignment: align.Alignment | None = None
    survey_valid: np.ndarray | None = None  # (h, w) bool on the survey grid, when some pixel is invalid

    @property
    def needs_correction(self) -> bool:
        return any(reason_code(f) == "corrected" for f in self.flags)


def pixel_scale_arcsec(wcs: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix)))) * 3600.0


def survey_valid_mask(missing: np.ndarray, outreach_wcs: WCS, cube: np.ndarray, survey_wcs: WCS) -> np.ndarray:
    """(h, w) bool on the survey grid: survey data there and every outreach pixel under it valid.

    The outreach's valid map is carried onto the survey grid by bilinear resampling; a survey
    pixel is kept only where it is (almost) wholly valid, so no masked outreach pixel leaks
    into a kept survey pixel. Outside the outreach image is invalid too."""
    h, w = cube.shape[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        carried, _ = reproject_interp(
            ((~missing).astype(np.float32), outreach_wcs.celestial), survey_wcs.celestial, (h, w), order="bilinear"
        )
    return np.isfinite(cube).all(axis=0) & (np.nan_to_num(carried, nan=0.0) > 0.999)


def check_pair(
    image: np.ndarray, outreach_wcs: WCS, checks: OutreachChecks, cutout: Cutout, policy: Policy
) -> PairResult:
    """Every check of one pair; alignment only when nothing cheaper already rejects it."""
    reasons = list(checks.reasons)
    flags: list[str] = []
    scores = dict(checks.scores)
    if not cutout.available or cutout.cube is None or cutout.wcs is None:
        reasons.append(f"survey-unavailable: {cutout.reason or 'no cutout'}")
        return PairResult(False, reasons, flags, scores)
    cube, survey_wcs = cutout.cube, cutout.wcs
    h, w = cube.shape[1:]
    gain = pixel_scale_arcsec(survey_wcs) / pixel_scale_arcsec(outreach_wcs)
    scores["resolution_gain"] = round(gain, 3)
    if min(h, w) < policy.min_survey_side_px:
        reasons.append(f"too-small: the survey cutout is {w}x{h} px, under {policy.min_survey_side_px} px a side")
    if gain < policy.min_resolution_gain:
        reasons.append(
            f"low-resolution: outreach pixels are only {gain:.2f}x finer than the survey's "
            f"(at least {policy.min_resolution_gain:g}x needed)"
        )
    survey_ok, why = colour.survey_verdict(cube)
    if not survey_ok:
        reasons.append(f"survey-colour: {why.removeprefix('survey: ')}")
    if reasons:
        return PairResult(False, reasons, flags, scores)

    result = PairResult(True, [], flags, scores)
    if checks.has_missing_data or not np.isfinite(cube).all():
        valid = survey_valid_mask(checks.missing, outreach_wcs, cube, survey_wcs)
        scores["survey_valid_fraction"] = round(float(valid.mean()), 4)
        result.survey_valid = None if valid.all() else valid
        if valid.mean() < policy.min_valid_fraction:
            result.usable = False
            result.reasons.append(
                f"missing-data: only {valid.mean():.0%} of the survey grid has valid data on both sides "
                f"(needs {policy.min_valid_fraction:.0%})"
            )
            return result
        if checks.has_missing_data:
            flags.append(f"masked: {1 - checks.valid_fraction:.1%} of the outreach image is missing data")

    found = align.measure_alignment(image, outreach_wcs, cube, survey_wcs)
    result.alignment = found
    usable, corrected, why = align.alignment_verdict(
        found, policy.max_shift_px, policy.max_rotation_deg, policy.max_scale_error
    )
    if found.solved:
        scores.update(
            shift_px=round(math.hypot(found.dx, found.dy), 4),
            rotation_deg=round(found.rotation_deg, 4),
            scale=round(found.scale, 6),
            alignment_uncertainty_px=round(found.uncertainty_px, 4),
        )
    if not usable:
        result.usable = False
        result.reasons.append(why)
    elif corrected:
        flags.append(f"corrected: {why.split(': ', 1)[-1]}")
    return result


def alignment_record(found: align.Alignment | None) -> dict[str, Any] | None:
    """JSON-safe (NaN becomes null)."""
    if found is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in found.to_dict().items()}
