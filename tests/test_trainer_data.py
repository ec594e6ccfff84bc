"""Training data from a curated dataset in a real S3 server: targets on the refined survey grid,
reproducible crops and augmentations, synthetic observations, the local cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage.registration import phase_cross_correlation

from services.cutouts.geometry import rescaled_wcs
from services.model import degrade, normalise
from services.model.normalise import INPUT_CHANNELS
from services.runtime.errors import NotFound
from services.trainer import data, pairs
from tests.support import trainer_dataset
from tests.support.private_stack import private_stack_fixtures

stack, store = private_stack_fixtures("trainer-data")
NAME = "tiny"


@pytest.fixture(scope="module")
def published(store) -> str:
    return trainer_dataset.publish(store, NAME)


@pytest.fixture(scope="module")
def prepared(store, published, tmp_path_factory) -> list[pairs.Pair]:
    files = pairs.load_dataset(store, NAME)
    cache = tmp_path_factory.mktemp("pairs")
    return [pairs.prepare_cached(store, line, files.tiles.get(line["pair"]), 4, cache) for line in files.manifest]


def _luminance(cube: np.ndarray) -> np.ndarray:
    return np.nan_to_num(cube).mean(axis=0)


def test_the_target_lies_on_the_survey_grid_refined_four_times(prepared) -> None:
    for p in prepared:
        assert p.target.shape == (3, 4 * p.survey.shape[1], 4 * p.survey.shape[2])
        assert p.target_valid.mean() > 0.98 and p.input_valid.all()
        h, w = p.survey.shape[1:]
        binned = p.target.reshape(3, h, 4, w, 4).mean(axis=(2, 4))
        shift, _, _ = phase_cross_correlation(_luminance(p.survey), _luminance(binned), upsample_factor=20)
        assert np.hypot(*shift) < 0.35, (p.name, shift)


def test_rescaled_wcs_maps_pixel_blocks() -> None:
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, 20.0]
    wcs.wcs.crpix = [24.5, 20.0]
    wcs.wcs.cdelt = [-2e-4, 2e-4]
    wcs.wcs.set()
    fine = rescaled_wcs(wcs, 0.25)
    # Coarse pixel (x, y) is the centre of fine pixels 4x..4x+3: fine coordinate 4x + 1.5.
    for x, y in ((0, 0), (10.0, 7.0), (47.0, 39.0)):
        world = wcs.pixel_to_world_values(x, y)
        fx, fy = fine.world_to_pixel_values(*world)
        assert abs(fx - (4 * x + 1.5)) < 1e-6 and abs(fy - (4 * y + 1.5)) < 1e-6


def test_an_unknown_dataset_is_not_found(store) -> None:
    with pytest.raises(NotFound, match="no dataset 'nope'"):
        pairs.load_dataset(store, "nope")


def test_the_cache_returns_what_was_prepared(store, published, prepared, tmp_path) -> None:
    files = pairs.load_dataset(store, NAME)
    line = files.manifest[0]
    first = pairs.prepare_cached(store, line, files.tiles[line["pair"]], 4, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = pairs.prepare_cached(store, line, files.tiles[line["pair"]], 4, tmp_path)
    np.testing.assert_array_equal(first.target, again.target)
    np.testing.assert_array_equal(first.survey, again.survey)
    (next(tmp_path.glob("*.npz"))).write_bytes(b"torn")
    rebuilt = pairs.prepare_cached(store, line, files.tiles[line["pair"]], 4, tmp_path)
    np.testing.assert_array_equal(first.target, rebuilt.target)


def _stream(prepared: list[pairs.Pair], seed: int = 3, synthetic: float = 0.5) -> data.Stream:
    train = [p for p in prepared if p.split == "train"]
    return data.Stream(train, 4, 16, seed, synthetic, window_px=32)


def test_batches_are_a_pure_function_of_seed_and_position(prepared) -> None:
    stream = _stream(prepared)
    first, after = stream.batch(data.Position(), 6)
    assert after == data.Position(0, 6)
    again, _ = _stream(prepared).batch(data.Position(), 6)
    for k in first:
        assert torch.equal(first[k], again[k]), k
    # Resuming from a position gives what an uninterrupted stream gives there.
    whole, _ = stream.batch(data.Position(), 10)
    _, middle = stream.batch(data.Position(), 4)
    rest, _ = stream.batch(middle, 6)
    for k in whole:
        assert torch.equal(whole[k][4:], rest[k]), k
    other, _ = _stream(prepared, seed=4).batch(data.Position(), 6)
    assert not torch.equal(first["target"], other["target"])


def test_epochs_wrap_and_reshuffle(prepared) -> None:
    stream = _stream(prepared)
    n = len(stream)
    _, pos = stream.batch(data.Position(0, n - 2), 5)
    assert pos == data.Position(1, 3)
    assert not np.array_equal(stream.order(0), stream.order(1))


def test_a_batch_has_the_shapes_and_ranges_the_model_expects(prepared) -> None:
    batch, _ = _stream(prepared).batch(data.Position(), 8)
    assert batch["input"].shape == (8, INPUT_CHANNELS, 16, 16) and batch["target"].shape == (8, 3, 64, 64)
    assert batch["mask"].shape == (8, 1, 64, 64) and batch["input_mask"].shape == (8, 1, 16, 16)
    assert batch["noise_sigma"].shape == (8, 3) and (batch["noise_sigma"] > 0).all()
    assert batch["noise_map"].shape == (8, 3, 16, 16) and (batch["noise_map"] > 0).all()
    # The display planes are the survey's display values (what the consistency term re-observes);
    # a synthetic survey is quantised to 8 bits as a real one is.
    display = batch["input"][:, normalise.DISPLAY_PLANES]
    assert float(display.min()) >= 0.0 and float(display.max()) <= 1.0
    synthetic = display[batch["synthetic"]]
    assert float((synthetic * 255 - torch.round(synthetic * 255)).abs().max()) < 1e-3
    assert batch["psf_fwhm"].shape == (8,) and (batch["psf_fwhm"] > 0.5).all()
    assert float(batch["target"].min()) >= 0.0 and float(batch["target"].max()) <= 1.0
    assert torch.isfinite(batch["input"]).all()
    assert batch["synthetic"].any() and not batch["synthetic"].all()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_augmentation_keeps_input_and_target_in_register(prepared) -> None:
    """Every flip/rotation is applied to both sides alike: the binned target correlates with its
    input better than any other orientation of it does."""
    stream = _stream(prepared, synthetic=0.0)
    batch, _ = stream.batch(data.Position(), 24)
    checked = 0
    for i in range(24):
        x = batch["input"][i].numpy().mean(axis=0)
        t = batch["target"][i].numpy().reshape(3, 16, 4, 16, 4).mean(axis=(2, 4)).mean(axis=0)
        if x.std() < 1e-3 or t.std() < 1e-3:
            continue
        others = [np.rot90(t, k) for k in (1, 2, 3)] + [t[:, ::-1], t[::-1]]
        assert _corr(x, t) > max(_corr(x, o) for o in others), i
        checked += 1
    assert checked >= 12


def test_synthetic_inputs_are_observations_of_the_target(prepared) -> None:
    # A bright, clean family: what is tested is that the input observes its own crop of the target,
    # in the same orientation. (The training family is calibrated to the real surveys, on which a
    # faint nebula is barely above the sky: some of its 16-px crops hardly correlate with anything.)
    clear = dataclasses.replace(degrade.TRAIN, white=(0.5, 1.5), sky_fraction=(0.003, 0.03), noise=(0.003, 0.006))
    train = [p for p in prepared if p.split == "train"]
    stream = data.Stream(train, 4, 16, 3, 1.0, family=clear, window_px=32)
    batch, _ = stream.batch(data.Position(), 8)
    assert batch["synthetic"].all()
    r = []
    for i in range(8):
        x = batch["input"][i].numpy().mean(axis=0)
        t = batch["target"][i].numpy().reshape(3, 16, 4, 16, 4).mean(axis=(2, 4)).mean(axis=0)
        if x.std() < 1e-3 or t.std() < 1e-3:
            continue
        r.append(np.corrcoef(x.ravel(), t.ravel())[0, 1])
    assert r and min(r) > 0.3
