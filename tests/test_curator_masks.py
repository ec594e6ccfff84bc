"""Curator filters (#6) on a labelled evaluation set from the local universe: missing-data
masks, grey/single-channel outreach images, one-colour survey cutouts; ours against the earlier
project's heuristics (baseline) in the same run."""

from __future__ import annotations

import numpy as np
import pytest

from services.curator import colour, evalset_masks, masks
from services.cutouts.coverage import assess


@pytest.fixture(scope="module")
def cases() -> list[evalset_masks.Case]:
    return evalset_masks.all_cases()


@pytest.fixture(scope="module")
def report(cases) -> dict:
    out = evalset_masks.evaluate(cases)
    print("\n" + evalset_masks.format_report(out))
    return out


def test_evalset_is_deterministic_and_covers_the_kinds(cases):
    again = evalset_masks.mask_cases()
    first = [c for c in cases if c.filter == "missing_data"]
    assert [c.name for c in again] == [c.name for c in first]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again[:6], first[:6], strict=True))
    kinds = {c.name.rsplit("/", 1)[-1] for c in first}
    assert set(evalset_masks.DEFECT_KINDS) <= kinds
    by_filter = {f: [c.label for c in cases if c.filter == f] for f in ("missing_data", "grey", "survey_one_colour")}
    assert all(any(v) and not all(v) for v in by_filter.values())


def test_clean_images_have_no_mask_and_inserted_defects_are_found(cases):
    clean = [c for c in cases if c.filter == "missing_data" and not c.label]
    assert all(not masks.missing_data_mask(c.image).any() for c in clean)
    for c in cases:
        if c.filter == "missing_data" and c.label and c.name.endswith(("/border", "/chip_gap", "/box", "/wide_border")):
            found = masks.missing_data_mask(c.image)
            assert (found & c.truth).sum() >= 0.9 * c.truth.sum(), c.name


def test_dark_sky_is_not_missing_data_but_a_thin_border_is():
    img = np.zeros((120, 160, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    img[rng.random((120, 160)) < 0.3] = 6  # black sky with its noise peaks
    assert not masks.missing_data_mask(img).any()
    img[:, :2] = 0  # a 2-px border
    assert masks.missing_data_mask(img)[:, :2].all()


def test_mask_verdict():
    mask = np.zeros((100, 100), dtype=bool)
    assert masks.mask_verdict(mask) == (True, "")
    mask[:30] = True
    ok, reason = masks.mask_verdict(mask)
    assert ok and "30.0%" in reason and masks.usable_fraction(mask) == pytest.approx(0.7)
    mask[:50] = True
    ok, reason = masks.mask_verdict(mask)
    assert not ok and "50%" in reason


def test_colour_filters_on_labelled_cases(cases):
    for c in cases:
        if c.filter == "grey":
            assert colour.grey_or_single_channel(c.image)[0] == c.label, c.name
        elif c.filter == "survey_one_colour":
            assert colour.one_colour_survey(c.image)[0] == c.label, c.name


def test_survey_verdict_reuses_the_cutout_coverage():
    blank = np.full((3, 32, 32), np.nan, dtype=np.float32)
    assert colour.survey_verdict(blank) == assess(blank)
    grey = np.repeat(np.random.default_rng(1).uniform(20, 200, (1, 32, 32)), 3, axis=0).astype(np.float32)
    ok, reason = colour.survey_verdict(grey)
    assert not ok and "one colour" in reason


@pytest.mark.parametrize("name", ["missing_data", "grey", "survey_one_colour"])
def test_precision_and_recall_reach_the_goal_and_beat_the_baseline(report, name):
    ours, base = report[name]["ours"], report[name]["baseline"]
    assert ours["precision"] >= 0.95 and ours["recall"] >= 0.95, report[name]
    assert ours["precision"] + ours["recall"] >= base["precision"] + base["recall"], report[name]
    assert ours["precision"] >= base["precision"] and ours["recall"] >= base["recall"], report[name]


def test_masks_match_the_truth_and_the_reject_verdict(report):
    assert report["mask_iou"]["ours"]["mean"] >= 0.9
    assert report["mask_iou"]["ours"]["mean"] > report["mask_iou"]["baseline"]["mean"]
    reject = report["missing_data_reject"]
    assert reject["ours"]["recall"] >= 0.95 and reject["ours"]["precision"] >= 0.9, reject
