"""Alignment filter (#6): known shifts/rotations recovered on the labelled evaluation set, clean
pairs left alone, large or unsolvable misalignment rejected, correct_wcs gives the true WCS back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.curator import evalset_alignment as ev
from services.curator.alignment import alignment_verdict, correct_wcs, measure_alignment
from services.universe.render import render_survey
from services.universe.sky import Sky

STAR_FIELDS = (0, 1, 2, 8)  # Milky Way, Gaia patch, cluster, M13: stars method
POOR_FIELDS = (4, 7)  # nebula, Hubble XDF: cross-correlation


@pytest.fixture(scope="module")
def results() -> list[ev.Result]:
    return ev.run(ev.cases(n_perturbed=2, fields=STAR_FIELDS + POOR_FIELDS))


def test_star_fields_recover_known_offsets_within_goal(results: list[ev.Result]) -> None:
    for r in results:
        if r.case.field not in {ev.FIELDS[i][0] for i in STAR_FIELDS}:
            continue
        assert r.alignment.solved and r.alignment.method == "stars", (r.case.name, r.alignment.detail)
        assert r.offset_error_px <= 0.3, (r.case.name, r.offset_error_px)
        assert r.max_error_px <= 0.4, (r.case.name, r.max_error_px)
        assert r.rotation_error_deg <= 0.1, (r.case.name, r.rotation_error_deg)


def test_star_poor_fields_solved_by_cross_correlation(results: list[ev.Result]) -> None:
    poor = [r for r in results if r.case.field in {ev.FIELDS[i][0] for i in POOR_FIELDS}]
    assert all(r.alignment.solved and r.alignment.method == "xcorr" for r in poor), [r.reason for r in poor]
    assert max(r.offset_error_px for r in poor) <= 0.3
    assert max(r.rotation_error_deg for r in poor) <= 0.3


def test_clean_pairs_are_not_corrected(results: list[ev.Result]) -> None:
    clean = [r for r in results if r.case.clean]
    assert clean
    for r in clean:
        assert r.usable and not r.corrected, (r.case.name, r.reason)
        assert math.hypot(r.alignment.dx, r.alignment.dy) < 0.2
        assert abs(r.alignment.rotation_deg) < 0.1 and abs(r.alignment.scale - 1) < 0.005


def test_small_residuals_are_corrected_and_recorded(results: list[ev.Result]) -> None:
    for r in results:
        if not r.case.clean and r.case.shift_px > 1 and abs(r.case.rotation_deg) < 1.9:
            assert r.usable and r.corrected, (r.case.name, r.reason)
            assert "corrected" in r.reason


def test_large_shift_is_rejected() -> None:
    image, o_wcs, s_wcs, s_shape = ev._field(0)
    wrong = ev.perturbed_wcs(s_wcs, s_shape, 40.0, -5.0, 0.0, 1.0)
    survey = render_survey(Sky(), wrong, (s_shape[1], s_shape[0]), ev.DSS2)
    al = measure_alignment(image, o_wcs, survey, s_wcs)
    usable, corrected, reason = alignment_verdict(al)
    assert al.solved and abs(al.dx - 40.0) < 0.5 and abs(al.dy + 5.0) < 0.5, al
    assert not usable and not corrected and "shift" in reason


def test_blank_survey_is_unsolvable() -> None:
    image, o_wcs, s_wcs, s_shape = ev._field(0)
    blank = np.full((3, s_shape[1], s_shape[0]), np.nan, dtype=np.float32)
    al = measure_alignment(image, o_wcs, blank, s_wcs)
    usable, corrected, reason = alignment_verdict(al)
    assert not al.solved and not usable and not corrected
    assert "unsolved" in reason and "blank" in reason
    with pytest.raises(ValueError):
        correct_wcs(s_wcs, al)


def test_correct_wcs_gives_back_the_true_wcs(results: list[ev.Result]) -> None:
    sky = Sky()
    for r in results:
        if r.case.clean or r.case.field != ev.FIELDS[2][0]:
            continue
        fixed = correct_wcs(r.case.survey_wcs, r.alignment)
        centre = r.case.survey_wcs.pixel_to_world_values(
            (r.case.survey.shape[2] - 1) / 2, (r.case.survey.shape[1] - 1) / 2
        )
        stars = sky.stars(float(centre[0]), float(centre[1]), 0.03)
        x_true, y_true = r.case.render_wcs.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
        x_fix, y_fix = fixed.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
        h, w = r.case.survey.shape[1:]
        inside = (x_true >= 0) & (x_true <= w - 1) & (y_true >= 0) & (y_true <= h - 1)
        assert inside.sum() >= 20
        err = np.hypot(x_fix - x_true, y_fix - y_true)[inside]
        assert err.max() <= 0.3, (r.case.name, float(err.max()))
        x_old, y_old = r.case.survey_wcs.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
        assert np.hypot(x_old - x_true, y_old - y_true)[inside].max() > 1.0  # the wrong WCS really was wrong


def test_evaluation_figures(results: list[ev.Result]) -> None:
    figures = ev.evaluate(results)
    assert figures["solved_fraction"] == 1.0
    assert figures["offset_error_max_px"] <= 0.3
    assert figures["false_corrections"] == 0
