"""Alignment filter (#6): known shifts/rotations recovered on the labelled evaluation set, clean
pairs left alone, misalignment beyond the limits (or unsolvable) rejected, never a confident wrong
answer, correct_wcs gives the true WCS back, aligned_grid_wcs gives a cutout that lines up."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS
from PIL import Image

from services.curator import evalset_alignment as ev
from services.curator.alignment import (
    _unsaturated_channels,
    aligned_grid_wcs,
    alignment_verdict,
    correct_wcs,
    measure_alignment,
)
from services.cutouts.geometry import FootprintSpec, Limits, outreach_wcs, survey_grid
from services.universe.render import render_outreach, render_survey
from services.universe.sky import Sky

STAR_FIELDS = (0, 1, 2, 8)  # Milky Way, Gaia patch, cluster, M13: stars method
POOR_FIELDS = (4, 6)  # nebula, faint galaxy: cross-correlation
HARD_FIELDS = (3,)  # ring nebula, blue burnt out over its disc: its coarse structure differs between the images


@pytest.fixture(scope="module")
def results() -> list[ev.Result]:
    return ev.run(ev.cases(n_perturbed=2, fields=STAR_FIELDS + POOR_FIELDS + HARD_FIELDS))


def _names(fields: tuple[int, ...]) -> set[str]:
    return {ev.FIELDS[i][0] for i in fields}


def test_star_fields_recover_known_offsets_within_goal(results: list[ev.Result]) -> None:
    checked = 0
    for r in results:
        if r.case.field not in _names(STAR_FIELDS):
            continue
        if r.case.should_reject and r.alignment.method != "stars":  # a 5 % scale error defeats star voting
            continue
        assert r.alignment.solved and r.alignment.method == "stars", (r.case.name, r.alignment.detail)
        assert r.offset_error_px <= 0.3, (r.case.name, r.offset_error_px)
        assert r.max_error_px <= 0.4, (r.case.name, r.max_error_px)
        assert r.rotation_error_deg <= 0.1, (r.case.name, r.rotation_error_deg)
        checked += 1
    assert checked >= 20


def test_star_poor_fields_solved_by_cross_correlation(results: list[ev.Result]) -> None:
    poor = [r for r in results if r.case.field in _names(POOR_FIELDS) and not r.case.should_reject]
    assert len(poor) == 6
    assert all(r.alignment.solved and r.alignment.method == "xcorr" for r in poor), [r.reason for r in poor]
    assert max(r.offset_error_px for r in poor) <= 0.35
    assert max(r.rotation_error_deg for r in poor) <= 0.2


def test_never_confidently_wrong(results: list[ev.Result]) -> None:
    # Every solved answer is right (centre within the goal, corners within 1 px), however hard the
    # field; the burnt-out ring nebula once gave a confident 2.4 px error.
    for r in results:
        if r.alignment.solved:
            assert r.offset_error_px <= 0.35 and r.max_error_px <= 1.0, (r.case.name, r.offset_error_px)
    hard = [r for r in results if r.case.field in _names(HARD_FIELDS)]
    assert hard and all(not r.usable for r in hard if not r.alignment.solved)


def test_burnt_out_channel_leaves_the_ring_knots_to_align_on(results: list[ev.Result]) -> None:
    # Blue is saturated over the whole ring (17 % of the image). Averaged in and masked, it hid
    # every feature (correlation 0.33, unsolved); left out, red and green show the knots the survey
    # shows too, and the clean pair is accepted untouched.
    clean = next(r for r in results if r.case.field in _names(HARD_FIELDS) and r.case.clean)
    assert clean.alignment.solved and clean.usable and not clean.corrected, clean.reason
    assert clean.alignment.quality >= 0.7, clean.alignment.detail
    assert clean.offset_error_px <= 0.3


def test_ring_nebula_is_never_confidently_wrong_over_many_offsets() -> None:
    # The ring's coarse structure (a filled disc in the outreach image, a rim in the survey) pulls
    # every band-pass the same way in scale and rotation, 0.8-1.6 px at the corners. Averaging two
    # band-passes 0.8-0.9 px apart used to accept three of these nine with 1.4-1.85 px corner
    # errors; now they are unsolved (rejected) or right.
    results = ev.run(ev.cases(n_perturbed=8, fields=HARD_FIELDS, beyond=False))
    assert len(results) == 9
    for r in results:
        if r.usable:
            assert r.offset_error_px <= 0.3 and r.max_error_px <= 1.0, (r.case.name, r.alignment.detail)


def test_a_burnt_out_channel_is_left_out_of_the_alignment_plane() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, size=(256, 256, 3), dtype=np.uint8)
    image[60:200, 50:210, 2] = 255  # a plateau over a third of the blue channel
    for y, x in rng.integers(10, 246, size=(40, 2)):  # star cores, saturated in red: a few px each
        image[y - 1 : y + 2, x - 1 : x + 2, 0] = 255
    assert _unsaturated_channels(image) == [0, 1]
    image[..., :2] = 255  # every channel burnt out: the least burnt one is kept
    assert _unsaturated_channels(image) == [2]


def test_clean_pairs_are_not_corrected(results: list[ev.Result]) -> None:
    clean = [r for r in results if r.case.clean and r.case.field not in _names(HARD_FIELDS)]
    assert len(clean) == 6
    for r in clean:
        assert r.usable and not r.corrected, (r.case.name, r.reason)
        assert math.hypot(r.alignment.dx, r.alignment.dy) < 0.3
        assert abs(r.alignment.rotation_deg) < 0.1 and abs(r.alignment.scale - 1) < 0.005


def test_small_residuals_are_corrected_and_recorded(results: list[ev.Result]) -> None:
    within = [r for r in results if not r.case.clean and not r.case.should_reject and r.alignment.solved]
    assert len(within) >= 12
    for r in within:
        if r.case.shift_px > 1 or abs(r.case.rotation_deg) > 0.5:
            assert r.usable and r.corrected, (r.case.name, r.reason)
            assert "corrected" in r.reason


def test_beyond_limits_are_rejected(results: list[ev.Result]) -> None:
    beyond = [r for r in results if r.case.should_reject]
    assert len(beyond) == 3 * 7
    for r in beyond:
        assert not r.usable and not r.corrected, (r.case.name, r.reason)
    # Where the stars see it, the reason names what is off.
    reasons = [r.reason for r in beyond if r.case.field in _names(STAR_FIELDS) and r.alignment.solved]
    assert sum("shift" in x for x in reasons) >= 3 and sum("rotation" in x for x in reasons) >= 3
    assert sum("scale" in x for x in reasons) >= 3


def test_rotation_at_the_limit_is_accepted_and_corrected() -> None:
    image, o_wcs, s_wcs, s_shape = ev._field(2)
    wrong = ev.perturbed_wcs(s_wcs, s_shape, 3.0, -2.0, 2.0, 1.0)
    survey = render_survey(Sky(), wrong, (s_shape[1], s_shape[0]), ev.DSS2)
    al = measure_alignment(image, o_wcs, survey, s_wcs)
    usable, corrected, reason = alignment_verdict(al)
    assert al.solved and abs(al.rotation_deg - 2.0) < 0.1, al
    assert usable and corrected, reason


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
    with pytest.raises(ValueError):
        aligned_grid_wcs(s_wcs, al)


def test_correct_wcs_gives_back_the_true_wcs(results: list[ev.Result]) -> None:
    sky = Sky()
    checked = 0
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
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("field", [2, 4])  # stars, cross-correlation
def test_aligned_grid_wcs_gives_a_cutout_that_lines_up(field: int) -> None:
    # The service's world: the survey's astrometry is right, the outreach WCS is off by a known
    # similarity (in outreach pixels). A new cutout asked for on aligned_grid_wcs must line up.
    image, o_true, s_wcs, s_shape = ev._field(field)
    o_claimed = ev.perturbed_wcs(o_true, ev.OUTREACH_SHAPE, 11.0, -7.0, 1.5, 1.006)
    sky, shape = Sky(), (s_shape[1], s_shape[0])
    first = measure_alignment(image, o_claimed, render_survey(sky, s_wcs, shape, ev.DSS2), s_wcs)
    assert first.solved and first.max_displacement_px > 5, first
    grid = aligned_grid_wcs(s_wcs, first)
    again = measure_alignment(image, o_claimed, render_survey(sky, grid, shape, ev.DSS2), s_wcs)
    assert again.solved, again.detail
    assert math.hypot(again.dx, again.dy) <= 0.3, again
    # Stars: within the goal everywhere; cross-correlation: within its own noise (left uncorrected).
    limit = 0.3 if again.method == "stars" else max(0.3, 3 * again.max_uncertainty_px)
    assert again.max_displacement_px <= limit, again
    assert alignment_verdict(again)[:2] == (True, False)
    assert abs(again.rotation_deg) < 0.1 and abs(again.scale - 1) < 0.003
    # and the formula: G(p) = W(A p + t) on 0-based pixels.
    a, t = np.array(first.matrix), np.array(first.translation)
    p = np.array([[0.0, 0.0], [200.0, 50.0], [17.5, 150.25]])
    q = p @ a.T + t
    np.testing.assert_allclose(
        np.column_stack(grid.pixel_to_world_values(p[:, 0], p[:, 1])),
        np.column_stack(s_wcs.pixel_to_world_values(q[:, 0], q[:, 1])),
        atol=1e-9,
    )


def test_evaluation_figures(results: list[ev.Result]) -> None:
    figures = ev.evaluate(results)
    assert figures["reject_recall"] == 1.0
    assert figures["accept_precision"] == 1.0
    assert figures["offset_error_max_px"] <= 0.35
    assert figures["false_corrections"] == 0
    assert figures["seconds_per_pair"] < 1.0


# -- real-style pairs: a screen-size JPEG at a resolution gain near 1 -----------------------------


def _screen_pair(field: int, gain: float = 1.1, size: tuple[int, int] = (320, 240)) -> tuple:
    """A truly aligned pair in the style of the crawled ones: the outreach image downsized to
    about the survey's pixel scale (resolution gain ~1.1) and round-tripped through JPEG."""
    name, ra, dec, angle, style, _ = ev.FIELDS[field]
    w, h = size
    scale = ev.DSS2_SCALE_ARCSEC / gain
    o_wcs, shape = outreach_wcs(FootprintSpec(ra, dec, w * scale / 60, h * scale / 60, angle, w, h))
    s_wcs, s_shape = survey_grid(o_wcs, shape, ev.DSS2_SCALE_ARCSEC, Limits())
    sky = Sky()
    buf = io.BytesIO()
    image = render_outreach(sky, o_wcs, (h, w), style)
    Image.fromarray(np.ascontiguousarray(image[::-1])).save(buf, "JPEG", quality=80)  # files are top-down
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[::-1]
    return name, jpeg, o_wcs, render_survey(sky, s_wcs, (s_shape[1], s_shape[0]), ev.DSS2), s_wcs


# cluster: stars; nebula: cross-correlation; Hubble deep field: faint galaxies, whose low-gain
# cross-correlation used to claim a 0.28 deg rotation (a 1 px false correction).
@pytest.mark.parametrize("field", [2, 4, 7])
def test_screen_size_jpeg_pairs_are_accepted_without_correction(field: int) -> None:
    name, image, o_wcs, survey, s_wcs = _screen_pair(field)
    al = measure_alignment(image, o_wcs, survey, s_wcs)
    usable, corrected, reason = alignment_verdict(al)
    assert al.solved and usable and not corrected, (name, reason, al.detail)
    assert math.hypot(al.dx, al.dy) <= 0.3, (name, al)


def test_real_pair_directory_runner(tmp_path: Path) -> None:
    # The --real runner reads pairs as the local stack stores them: JSON FITS headers, FITS orientation.
    _, image, o_wcs, survey, s_wcs = _screen_pair(2)

    def header(wcs: WCS, shape: tuple[int, ...]) -> str:
        hdr = {k: v for k, v in wcs.to_header().items() if isinstance(v, int | float | str)}
        return json.dumps({**hdr, "NAXIS1": shape[1], "NAXIS2": shape[0]})

    np.savez(
        tmp_path / "pair__dss2-color.npz",
        outreach=image,
        outreach_wcs=header(o_wcs, image.shape),
        survey=survey,
        survey_wcs=header(s_wcs, survey.shape[1:]),
    )
    results = ev.run_real(tmp_path)
    assert [r.name for r in results] == ["pair__dss2-color"]
    assert abs(results[0].gain - 1.1) < 0.01 and results[0].outcome == "accepted", results[0].reason
    totals = ev.summarise_real(results)
    assert totals["pairs"] == 1 and totals["accepted"] == 1 and totals["unsolved"] == 0
