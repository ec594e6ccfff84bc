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
    by_filter = {f: [c.label for c in cases if c.filter == f] for f in ("missing_data", "grey", "survey")}
    by_filter["missing_data_reject"] = [
        not masks.mask_verdict(c.truth)[0] for c in cases if c.filter.startswith("missing_data") and c.truth is not None
    ]
    # Enough of each side for precision and recall to mean something.
    assert all(sum(v) >= 20 and len(v) - sum(v) >= 20 for v in by_filter.values()), {
        f: (sum(v), len(v) - sum(v)) for f, v in by_filter.items()
    }
    survey_kinds = {c.name.rsplit("/", 1)[-1] for c in cases if c.filter == "survey" and c.label}
    assert set(colour_kinds := ("one_colour", "blank", "mostly_blank", "white", "saturated", "flat")) <= survey_kinds
    assert set(evalset_masks.SURVEY_KINDS) == set(colour_kinds)
    assert {"partial_blank", "normal", "two_plates", "two_plates_faint", "two_plates_edge", "small_saturated_star"} <= {
        c.name.rsplit("/", 1)[-1] for c in cases if c.filter == "survey" and not c.label
    }


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
    want = {"blank": "blank", "mostly_blank": "blank", "white": "white", "saturated": "saturated"}
    want |= {"flat": "one colour", "one_colour": "one colour"}
    for c in cases:
        if c.filter == "grey":
            assert colour.grey_or_single_channel(c.image)[0] == c.label, c.name
        elif c.filter == "survey":
            usable, reason = colour.survey_verdict(c.image)
            assert usable != c.label, (c.name, reason)
            if c.label:  # the reason names the kind
                assert reason.startswith(f"survey: {want[c.name.rsplit('/', 1)[-1]]} ("), (c.name, reason)


def test_survey_verdict_names_the_kind_and_agrees_with_the_cutout_coverage():
    rng = np.random.default_rng(1)
    good = rng.uniform(20, 200, (3, 32, 32)).astype(np.float32)
    assert colour.survey_verdict(good) == (True, "") and assess(good)[0]
    blank = np.full((3, 32, 32), np.nan, dtype=np.float32)
    assert colour.survey_verdict(blank) == (False, "survey: blank (no data)") and not assess(blank)[0]
    white = np.full((3, 32, 32), 255.0, dtype=np.float32)
    assert colour.survey_verdict(white)[1].startswith("survey: white (")
    saturated = good.copy()
    saturated[:, :24] = 255.0
    assert colour.survey_verdict(saturated)[1].startswith("survey: saturated (75%")
    partial = good.copy()
    partial[:, :, :10] = np.nan  # a footprint's edge: still usable
    assert colour.survey_verdict(partial) == (True, "")
    flat = np.full((3, 32, 32), 80.0, dtype=np.float32)
    assert colour.survey_verdict(flat)[1].startswith("survey: one colour (constant")
    grey = np.repeat(rng.uniform(20, 200, (1, 32, 32)), 3, axis=0).astype(np.float32)
    ok, reason = colour.survey_verdict(grey)
    assert not ok and reason.startswith("survey: one colour (") and colour.one_colour_survey(grey)[0]


@pytest.mark.parametrize("name", ["missing_data", "missing_data_reject", "grey", "survey"])
def test_precision_and_recall_reach_the_goal_and_beat_the_baseline(report, name):
    ours, base = report[name]["ours"], report[name]["baseline"]
    assert ours["precision"] >= 0.95 and ours["recall"] >= 0.95, report[name]
    assert ours["precision"] + ours["recall"] >= base["precision"] + base["recall"], report[name]
    assert ours["precision"] >= base["precision"] and ours["recall"] >= base["recall"], report[name]


def test_masks_match_the_truth_and_the_reject_verdict(report):
    assert report["mask_iou"]["ours"]["mean"] >= 0.9
    assert report["mask_iou"]["ours"]["mean"] > report["mask_iou"]["baseline"]["mean"]
    reject = report["missing_data_reject"]
    assert reject["ours"]["recall"] >= 0.95 and reject["ours"]["precision"] >= 0.95, reject


def _dark_sky(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Black sky with its noise peaks: half of the pixels zero, zero runs broken every few px."""
    rng = np.random.default_rng(seed)
    img = np.zeros((*shape, 3), dtype=np.uint8)
    img[rng.random(shape) < 0.5] = 6
    return img


def test_the_mask_does_not_grow_into_the_dark_sky_beside_a_defect():
    img = _dark_sky((192, 256), seed=3)
    truth = np.zeros((192, 256), dtype=bool)
    truth[:30], truth[-30:], truth[:, :30], truth[:, -30:] = True, True, True, True
    truth[80:120, 100:150] = True
    img[truth] = 0
    found = masks.missing_data_mask(img)
    assert (found & truth).sum() >= 0.99 * truth.sum()
    assert (found & ~truth).sum() <= 0.005 * truth.sum(), (found & ~truth).sum()


def test_missing_data_mask_is_fast_at_1024():
    import time

    img = _dark_sky((1024, 1024), seed=4)
    assert not masks.missing_data_mask(img).any()
    img[:, :12] = 0
    img[500:504, :] = 0  # a chip gap
    masks.missing_data_mask(img)
    t0 = time.perf_counter()
    found = masks.missing_data_mask(img)
    elapsed = time.perf_counter() - t0
    truth = 1024 * 12 + 4 * (1024 - 12)
    assert found[:, :12].all() and found[500:504].all() and truth <= found.sum() <= truth + 100, found.sum()
    assert elapsed < 1.0, elapsed  # ~0.05 s on one idle core; generous for shared machines


def test_jpeg_ringing_inside_a_box_is_filled():
    """A black box beside bright stars, through a JPEG round trip at quality 95 (as the crawler
    gets releases): ringing leaves pixels at 2-13 inside it, which must not stay valid holes."""
    img = _dark_sky((256, 256), seed=5)
    yy, xx = np.mgrid[0:256, 0:256]
    for y, x in ((60, 70), (66, 150), (190, 80), (120, 200)):
        img[np.hypot(yy - y, xx - x) < 4] = 255  # bright stars around the box
    truth = np.zeros((256, 256), dtype=bool)
    truth[70:180, 80:190] = True
    img[truth] = 0
    holes = img.copy()
    holes[100, 100], holes[150:152, 120:123] = 9, 5  # ringing islands of 1 and 6 px
    assert masks.missing_data_mask(holes)[truth].all()
    round_trip = evalset_masks.jpeg_round_trip(img, 95)
    found = masks.missing_data_mask(round_trip)
    interior = np.zeros_like(truth)
    interior[74:176, 84:186] = True
    assert found[interior].all(), (~found & interior).sum()
    assert (found & ~truth).sum() <= 0.01 * truth.sum()


def test_jpeg_cases_give_no_false_missing_data(report):
    """JPEG round trips (quality 85-95) of clean renders are never masked; defects are found in
    nearly all of them, also where ringing filled thin gaps and small boxes amid bright content
    (the relaxed maps), and the masks match the truth."""
    jpeg = report["missing_data_jpeg"]["ours"]
    assert jpeg["precision"] == 1.0 and jpeg["recall"] >= 0.95, jpeg
    reject = report["missing_data_reject_jpeg"]["ours"]
    assert reject["precision"] >= 0.95 and reject["recall"] >= 0.95, reject
    assert report["mask_iou_jpeg"]["ours"]["mean"] >= 0.85, report["mask_iou_jpeg"]
    assert report["mask_iou_jpeg"]["ours"]["mean"] > report["mask_iou_jpeg"]["baseline"]["mean"]


def _bright_with_stars(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Dark noisy sky (0-20) with bright stars and a bright band across the middle."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(6, 5, (*shape, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for _ in range(12):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        img[np.hypot(yy - y, xx - x) < rng.uniform(2, 5)] = 255
    img[shape[0] // 3 : 2 * shape[0] // 3] = np.clip(
        rng.normal(200, 30, (2 * shape[0] // 3 - shape[0] // 3, shape[1], 3)), 0, 255
    ).astype(np.uint8)
    return img


def test_jpeg_gap_through_bright_content_is_found_but_dark_sky_is_not():
    """Through a JPEG round trip at quality 85, a 5-px gap across bright content fills with
    ringing (nothing <= ZERO_LEVEL over a line) and is found on the relaxed maps; the dark sky
    with bright stars around it, <= the relaxed levels over whole areas, is not."""
    img = _bright_with_stars((192, 256), seed=7)
    assert not masks.missing_data_mask(evalset_masks.jpeg_round_trip(img, 85)).any()
    truth = np.zeros((192, 256), dtype=bool)
    truth[94:99] = True
    img[truth] = 0
    round_trip = evalset_masks.jpeg_round_trip(img, 85)
    assert not masks.black_pixels(round_trip)[truth].all()  # the ringing broke the solid black
    found = masks.missing_data_mask(round_trip)
    assert (found & truth).sum() >= 0.8 * truth.sum(), (found & truth).sum()
    assert (found & ~truth).sum() <= 0.2 * truth.sum(), (found & ~truth).sum()


def test_one_colour_survey_is_judged_by_colour_noise_not_by_grey_pixels():
    """A faint field on two plates: R and B differ by less than 2 on most pixels (the old "grey
    pixels" test called it one colour), but the difference carries both plates' grain; one
    plate copied into all planes has none."""
    rng = np.random.default_rng(2)
    sky = 38.0 + rng.normal(0, 1.0, (120, 160))
    red, blue = np.rint(sky + rng.normal(0, 1.2, sky.shape)), np.rint(sky + rng.normal(0, 1.2, sky.shape))
    two = np.stack([red, np.rint((red + blue) / 2), blue]).astype(np.float32)
    assert float((np.abs(red - blue) <= 2).mean()) > 0.6
    assert not colour.one_colour_survey(two)[0]
    one = np.stack([red, red, red]).astype(np.float32)
    ok, reason = colour.one_colour_survey(one)
    assert ok and "one usable plate" in reason
    half = two.copy()
    half[:, :, :110] = one[:, :, :110]  # mostly on a one-colour plate
    assert colour.one_colour_survey(half)[0]
    half[:, :, 50:] = two[:, :, 50:]  # mostly on two plates
    assert not colour.one_colour_survey(half)[0]


def test_grey_check_is_fast_at_1024():
    import time

    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)  # every pixel bright: the slowest case
    grey = np.repeat(img[..., :1], 3, axis=-1)
    assert colour.grey_or_single_channel(grey)[0] and not colour.grey_or_single_channel(img)[0]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        colour.grey_or_single_channel(img)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.2, times  # ~0.02-0.04 s on one idle core; generous for shared machines
