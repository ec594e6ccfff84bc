"""The model shared by trainer and serving: generator, discriminator, normalisation, observation
model, degradations, losses and the GAN trainer (services/model). Small networks, no I/O."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from services.model import degrade, losses, normalise, observe
from services.model.discriminator import DiscriminatorConfig, PatchDiscriminator
from services.model.generator import (
    INPUT_CHANNELS,
    NOISE_CHANNELS,
    Generator,
    GeneratorConfig,
    Upsample2,
    parameter_count,
    script,
)
from services.model.training import GanTrainer, TrainConfig
from services.trainer import metrics

TINY = GeneratorConfig(channels=16, blocks=2, hr_channels=8, film_dim=8)
TINY_D = DiscriminatorConfig(channels=8, downsamplings=2, max_multiplier=2)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _lively(config: GeneratorConfig, seed: int = 0) -> Generator:
    """A generator whose zero-initialised layers (output, FiLM) are randomised, as after training,
    so that every path (noise, fidelity) reaches the output."""
    torch.manual_seed(seed)
    g = Generator(config)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.startswith("out_conv") or ".film." in name:
                p.normal_(0.0, 0.05)
    return g.eval()


def _scene(size: int, seed: int) -> np.ndarray:
    """A target-like display image (3, size, size): a few galaxies and stars on black, asinh-stretched."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    flux = np.zeros((3, size, size), np.float32)
    for _ in range(6):
        x0, y0 = rng.uniform(0, size, 2)
        r = rng.uniform(2, size / 6)
        colour = rng.uniform(0.3, 1.0, 3)[:, None, None]
        flux += colour * rng.uniform(0.05, 0.6) * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / r**2)
    for _ in range(15):
        x0, y0 = rng.uniform(0, size, 2)
        flux += rng.uniform(0.02, 1.0) * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 0.8**2)
    return observe.stretch(torch.from_numpy(flux)).clamp(0, 1).numpy()


# Sharp seeing keeps a tiny tile's interior (where chi^2 is defined) large enough.
# Sharp, bright inputs, pinned here: these tests are about the trainer's mechanics, and must not move
# when the training family's calibration to the real surveys does.
SHARP = dataclasses.replace(degrade.TRAIN, fwhm_px=(0.9, 1.4), white=(0.3, 1.5), sky_fraction=(0.003, 0.03))


def _batch(b: int, h: int, seed: int, scale: int = 4) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(b):
        t = _scene(h * scale, seed * 100 + i)
        d = degrade.degrade(t, scale, SHARP, rng)
        x, valid, _ = normalise.survey_to_input(d.cube_0_255, d.valid)
        items.append(
            {
                "input": x,
                "input_mask": valid[None].astype(np.float32),
                "target": t,
                "mask": np.ones((1, h * scale, h * scale), np.float32),
                "noise_sigma": d.noise_sigma,
                "psf_fwhm": np.float32(d.psf_fwhm),
                "synthetic": np.bool_(True),
            }
        )
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


# -- generator --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(5, 9), (16, 16)])
def test_generator_any_tile_size_and_scale(scale: int, size: tuple[int, int]) -> None:
    g = _lively(GeneratorConfig(**{**TINY.to_dict(), "scale": scale}))
    h, w = size
    with torch.no_grad():
        y = g(
            torch.randn(2, INPUT_CHANNELS, h, w) * 2, torch.randn(2, NOISE_CHANNELS, h, w), torch.tensor([[0.0], [1.0]])
        )
    assert y.shape == (2, 3, scale * h, scale * w)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_presets_parameter_counts() -> None:
    demo, full = (parameter_count(Generator(GeneratorConfig.preset(n))) for n in ("demo", "full"))
    assert 300_000 <= demo <= 600_000
    assert demo < full <= 4_000_000
    with pytest.raises(ValueError):
        GeneratorConfig.preset("huge")
    assert GeneratorConfig.from_dict(GeneratorConfig.full().to_dict()) == GeneratorConfig.full()


def test_noise_changes_output_only_below_full_fidelity() -> None:
    g = _lively(TINY)
    x = torch.randn(1, INPUT_CHANNELS, 12, 12)
    n1, n2 = torch.randn(1, NOISE_CHANNELS, 12, 12), torch.randn(1, NOISE_CHANNELS, 12, 12)

    def spread(f: float) -> float:
        fid = torch.tensor([[f]])
        with torch.no_grad():
            return float((g(x, n1, fid) - g(x, n2, fid)).abs().mean())

    assert spread(1.0) == 0.0  # faithful: deterministic
    assert spread(0.0) > 1e-3  # vivid: samples differ
    assert spread(0.9) < 0.5 * spread(0.0)  # the noise fades as fidelity rises


def test_straight_through_clamp_passes_gradients_back_into_range() -> None:
    g = Generator(TINY)
    with torch.no_grad():
        g.skip.bias.fill_(-5.0)  # every pixel far below 0: a plain clamp would have no gradient
    x = torch.randn(1, INPUT_CHANNELS, 6, 6)
    y = g(x, torch.zeros(1, NOISE_CHANNELS, 6, 6), torch.ones(1, 1))
    assert float(y.detach().max()) == 0.0
    (y - 0.5).pow(2).mean().backward()
    assert g.skip.bias.grad is not None and float(g.skip.bias.grad.abs().sum()) > 0


def _periodic_power(image: np.ndarray, scale: int) -> float:
    """Power at the upsampler's periodic frequencies over the spectrum's local level, mean over channels
    (1: none beyond the local level), away from the borders."""
    ratios = [np.divide(*metrics.checkerboard_sums(c[16:-16, 16:-16], scale)) for c in image]
    return float(np.mean(ratios))


def test_upsampling_cannot_make_a_checkerboard_whatever_its_weights() -> None:
    """Resize-convolution turns a smooth field into a smooth field for any weights; a sub-pixel
    convolution with random sub-pixel kernels (what training drifts towards) does not."""
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((8, 48, 48)), (0, 3, 3))
    x = torch.from_numpy(5 * field.astype(np.float32))[None]
    torch.manual_seed(0)
    resize = Upsample2(8, 4)
    subpixel = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.PixelShuffle(2))
    with torch.no_grad():
        assert _periodic_power(resize(x)[0].numpy(), 2) < 3.0  # measured 1.6
        assert _periodic_power(subpixel(x)[0].numpy(), 2) > 1000.0  # measured ~1e5


def test_vivid_noise_is_white_at_the_output_resolution() -> None:
    """On a flat field the vivid rendering's texture is the noise alone: no pattern repeating every
    `scale` output pixels (as a learned projection of a few noise values per input pixel makes)."""
    g = _lively(TINY)
    x = torch.zeros(1, INPUT_CHANNELS, 32, 32)
    x[:, normalise.DISPLAY_PLANES] = 0.3
    ratios = []
    for seed in range(3):
        noise = torch.randn(1, NOISE_CHANNELS, 32, 32, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            y = g(x, noise, torch.zeros(1, 1))[0].numpy()
        assert y.std() > 1e-3  # the noise shows
        ratios.append(_periodic_power(y, 4))
    assert np.mean(ratios) < 1.5  # measured 1.1-1.2; the per-input-pixel projection: 2.4


def test_torchscript_matches_eager_on_two_sizes() -> None:
    g = _lively(TINY)
    scripted = script(g)
    for h, w in ((11, 17), (24, 20)):
        x, n = torch.randn(2, INPUT_CHANNELS, h, w), torch.randn(2, NOISE_CHANNELS, h, w)
        f = torch.tensor([[0.0], [0.7]])
        with torch.no_grad():
            diff = (g(x, n, f) - scripted(x, n, f)).abs().max()
        assert float(diff) < 1e-4
    buf = io.BytesIO()
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is what Triton's libtorch loads
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
    x, n, f = torch.randn(1, INPUT_CHANNELS, 9, 13), torch.randn(1, NOISE_CHANNELS, 9, 13), torch.ones(1, 1)
    with torch.no_grad():
        assert float((loaded(x, n, f) - g(x, n, f)).abs().max()) < 1e-4
    with pytest.raises(torch.jit.Error):
        loaded(x, torch.randn(1, NOISE_CHANNELS, 4, 4), f)  # noise not on the input grid


# -- discriminator and losses -----------------------------------------------------------------


def test_discriminator_is_spectrally_normalised_and_blind_to_masked_pixels() -> None:
    d = PatchDiscriminator(TINY_D).eval()
    assert any("parametrizations" in name for name, _ in d.named_parameters())
    img, cond = torch.rand(1, 3, 32, 32), torch.randn(1, INPUT_CHANNELS, 8, 8)
    mask = torch.ones(1, 1, 32, 32)
    mask[..., :, :10] = 0
    other = img.clone()
    other[..., :, :10] = torch.rand(1, 3, 32, 10)
    with torch.no_grad():
        assert torch.equal(d(img, cond, mask), d(other, cond, mask))


def test_losses_ignore_masked_pixels() -> None:
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = torch.ones(2, 1, 32, 32)
    mask[:, :, 5:15, 8:20] = 0
    pred2, target2 = pred.clone(), target.clone()
    hole = mask.expand_as(pred) == 0
    pred2[hole], target2[hole] = torch.rand(int(hole.sum())), torch.rand(int(hole.sum()))
    assert torch.allclose(losses.charbonnier(pred, target, mask), losses.charbonnier(pred2, target2, mask))
    assert torch.allclose(losses.structure(pred, target, mask), losses.structure(pred2, target2, mask))
    assert float(losses.charbonnier(target, target, mask).max()) < 1e-6
    c = torch.tensor([0.5, 0.9, 1.0, 1.2, 3.0])
    penalty = losses.consistency_loss(c)
    assert penalty[1] == penalty[2] == penalty[3] == 0  # inside the band
    assert penalty[0] > 0 and penalty[4] > 0  # both sides penalised


# -- normalisation ----------------------------------------------------------------------------


def test_normalisation_is_robust_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    cube = (0.15 + 0.01 * rng.standard_normal((3, 64, 64))).astype(np.float32)
    cube[:, 30:33, 30:33] = 1.0  # a saturated star
    cube[:, :8, :] = np.nan  # blank strip (outside the survey)
    s = normalise.stats(cube)
    assert np.allclose(s.sky, 0.15, atol=0.003)
    assert np.allclose(s.noise, 0.01, rtol=0.15)
    assert min(s.scale) >= 10 * min(s.noise) * 0.99
    assert s.valid_fraction == pytest.approx(56 / 64)
    assert normalise.NormStats.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        normalise.NormStats.from_dict({**s.to_dict(), "version": "other"})

    x, valid, s2 = normalise.survey_to_input(cube * 255.0)
    assert x.shape == (normalise.INPUT_CHANNELS, 64, 64)
    assert s2 == pytest.approx(s) or np.allclose(s2.sky, s.sky, atol=1e-6)
    assert not valid[:8].any() and valid[8:].all()
    assert np.all(x[:, :8] == 0) and np.isfinite(x).all()
    # The display planes carry the absolute level the normalised ones strip.
    assert np.allclose(x[normalise.DISPLAY_PLANES, 8:], np.clip(cube[:, 8:], 0, 1), atol=1e-6)
    xt = normalise.apply(torch.from_numpy(np.nan_to_num(cube)), s)
    assert np.allclose(xt.numpy()[:, 8:], x[:3, 8:], atol=1e-6)
    back = normalise.invert(x[:3], s)
    assert np.allclose(back[:, 8:][:, 30 - 8 : 33 - 8, 30:33], 1.0, atol=1e-5)


# -- observation model ------------------------------------------------------------------------


def test_stretch_linearisation_and_psf() -> None:
    f = torch.linspace(0, 1, 101)
    assert torch.allclose(observe.linearise(observe.stretch(f)), f, atol=1e-5)
    d = torch.tensor([0.3])
    eps = 1e-3
    numeric = (observe.linearise(d + eps) - observe.linearise(d - eps)) / (2 * eps)
    assert torch.allclose(observe.linearise_slope(d), numeric, rtol=1e-3)
    for beta in (observe.PSF_BETA, math.inf):
        k = observe.moffat_kernel(torch.tensor([6.0, 3.0]), 20, beta)
        assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(2))
        assert float(k[0, 20, 23] / k[0, 20, 20]) == pytest.approx(0.5, abs=1e-4)  # half maximum at FWHM / 2
    point = torch.zeros(1, 3, 40, 40)
    point[..., 20, 20] = 1.0
    blurred = observe.blur(point, torch.tensor([4.0]))
    assert float(blurred.sum()) == pytest.approx(3.0, rel=0.02)


def _observe_truth(t: np.ndarray, fwhm: float, sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented observation: re-observe, a survey asinh stretch with a sky, display noise."""
    truth = torch.from_numpy(t)[None]
    flux = observe.reobserve(truth, torch.tensor([fwhm]), 4)
    display = observe.stretch(0.8 * flux + 0.01, 0.06)
    gen = torch.Generator().manual_seed(seed)
    noisy = display + sigma * torch.randn(display.shape, generator=gen)
    return truth, noisy.clamp(0, 1)


def test_consistency_chi2_is_one_for_the_truth_and_large_for_a_wrong_output() -> None:
    sigma = 0.01
    chi2_true, chi2_wrong = [], []
    for seed in range(3):
        t = _scene(128, seed)
        truth, inp = _observe_truth(t, 2.0, sigma, seed)
        noise = torch.full((1, 3), sigma)
        fwhm = torch.tensor([2.0])
        chi2_true.append(float(observe.observation_chi2(truth, inp, noise, fwhm, None, 4)))
        wrong = torch.roll(truth, shifts=(6, -6), dims=(-2, -1))
        chi2_wrong.append(float(observe.observation_chi2(wrong, inp, noise, fwhm, None, 4)))
    assert 0.85 < np.mean(chi2_true) < 1.15, chi2_true
    assert min(chi2_wrong) > 5.0, chi2_wrong
    # A sharpened copy that reproduces the noise itself is "too good": chi^2 well below 1.
    assert float(observe.consistency_chi2(observe.linearise(inp), inp, noise, stretches=[("asinh", 0.02)])) < 0.1


def test_consistency_chi2_of_synthetic_pairs_and_noise_estimate() -> None:
    rng = np.random.default_rng(3)
    chi2 = []
    for seed in range(6):
        t = _scene(128, 10 + seed)
        d = degrade.degrade(t, 4, degrade.TRAIN, rng)
        inp = torch.from_numpy(d.display)[None]
        chi2.append(
            float(
                observe.observation_chi2(
                    torch.from_numpy(t)[None],
                    inp,
                    torch.from_numpy(d.noise_map)[None],
                    torch.tensor([d.psf_fwhm]),
                    None,
                    4,
                )
            )
        )
    assert 0.8 < np.median(chi2) < 1.25, chi2
    # Background noise: from flat regions, robust to sources and to a sky gradient.
    g = torch.Generator().manual_seed(0)
    yy = torch.linspace(0, 0.05, 48)[:, None].expand(48, 48)
    img = (0.2 + yy + 0.02 * torch.randn(1, 3, 48, 48, generator=g)).clamp(0, 1)
    img[..., 10:14, 10:14] = 0.9
    est = observe.estimate_noise(img)
    assert torch.allclose(est, torch.full((1, 3), 0.02), rtol=0.2), est


def test_consistency_mask_leaves_masked_input_out() -> None:
    t = _scene(64, 1)
    truth, inp = _observe_truth(t, 1.5, 0.01, 0)
    mask = torch.ones(1, 1, 16, 16)
    mask[..., :6, :] = 0
    noise = torch.full((1, 3), 0.01)
    other = inp.clone()
    other[..., :6, :] = torch.rand(1, 3, 6, 16)
    a = observe.observation_chi2(truth, inp, noise, torch.tensor([1.5]), mask, 4)
    b = observe.observation_chi2(truth, other, noise, torch.tensor([1.5]), mask, 4)
    assert torch.equal(a, b)


# -- degradations -----------------------------------------------------------------------------


def test_degrade_families_differ_and_are_reproducible() -> None:
    t = _scene(64, 2)
    a = degrade.degrade(t, 4, degrade.TRAIN, np.random.default_rng(7))
    b = degrade.degrade(t, 4, degrade.TRAIN, np.random.default_rng(7))
    c = degrade.degrade(t, 4, degrade.HELDOUT, np.random.default_rng(7))
    assert np.array_equal(a.display, b.display) and a.params == b.params
    assert a.display.shape == (3, 16, 16) and a.noise_sigma.shape == (3,) and a.noise_map.shape == (3, 16, 16)
    assert np.allclose(a.display * 255, np.round(a.display * 255), atol=1e-3)  # 8-bit quantised
    assert not np.array_equal(a.display, c.display)
    tr, ho = degrade.TRAIN, degrade.HELDOUT
    assert tr.fwhm_px[1] < ho.fwhm_px[0] and tr.noise[1] < ho.noise[0]  # disjoint seeing and noise
    assert not set(tr.stretches) & set(ho.stretches)  # and a stretch never trained on
    rng = np.random.default_rng(0)
    for family in (tr, ho):
        for _ in range(20):
            p = degrade.sample_params(family, rng)
            assert family.fwhm_px[0] <= p["fwhm_px"] <= family.fwhm_px[1]
            assert family.noise[0] <= p["noise"] <= family.noise[1]
            assert p["stretch"] in family.stretches
    mask = np.ones((64, 64), bool)
    mask[:8] = False
    m = degrade.degrade(t, 4, tr, np.random.default_rng(1), mask)
    edge = 2 + math.ceil(observe.EDGE_FWHM * m.psf_fwhm)  # missing rows, and those their blur reaches
    assert not m.valid[:edge].any() and m.valid[edge:].all() and np.isnan(m.display[:, :edge]).all()


# -- trainer ----------------------------------------------------------------------------------


def _config(**kw) -> TrainConfig:
    return TrainConfig(generator=TINY, discriminator=TINY_D, **kw)


def test_the_colour_map_learns_the_outreach_level_fast() -> None:
    """An outreach image is brighter than its survey: the base's colour map (a few global numbers)
    learns the gain at `skip_lr_multiplier` times the network's rate, well within a short run."""
    batch = _batch(2, 12, seed=3)
    batch["target"] = (batch["target"] * 1.8 + 0.1).clamp(0, 1)
    batch["synthetic"][:] = False  # the level is learned from real pairs (synthetic ones are level-free)
    levels = {}
    for multiplier in (1.0, 10.0):
        tr = GanTrainer(_config(warmup_steps=1000, skip_lr_multiplier=multiplier, consistency_weight=0.0))
        before = float(tr.generate(batch["input"]).mean())
        for _ in range(20):
            tr.step(batch)
        with torch.no_grad():
            after = tr.generator(batch["input"], torch.zeros(2, NOISE_CHANNELS, 12, 12), torch.ones(2, 1))
        levels[multiplier] = float(after.mean()) - before
    target_gap = float(batch["target"].mean()) - before
    # Measured: gap 0.21; in 20 steps the level moves 0.13 with the multiplier, 0.05 without.
    assert levels[10.0] > 0.5 * target_gap > 0
    assert levels[10.0] > 1.8 * levels[1.0]


def test_synthetic_crops_teach_structure_not_level() -> None:
    """A synthetic input's target brightness is not determined by it (degrade draws the stretch):
    its losses are level-free, so a brighter target moves the output's level only for real crops."""
    batch = _batch(2, 12, seed=3)
    batch["target"] = (batch["target"] * 1.8 + 0.1).clamp(0, 1)
    moved = {}
    for synthetic in (False, True):
        b = {**batch, "synthetic": torch.full_like(batch["synthetic"], synthetic)}
        tr = GanTrainer(_config(warmup_steps=1000, consistency_weight=0.0))
        zeros, ones = torch.zeros(2, NOISE_CHANNELS, 12, 12), torch.ones(2, 1)
        with torch.no_grad():
            before = float(tr.generator(b["input"], zeros, ones).mean())
        for _ in range(20):
            tr.step(b)
        with torch.no_grad():
            moved[synthetic] = float(tr.generator(b["input"], zeros, ones).mean()) - before
    assert moved[False] > 0.1
    assert abs(moved[True]) < 0.25 * moved[False]


def test_level_matching_leaves_the_level_free_and_judges_structure() -> None:
    torch.manual_seed(1)
    pred = torch.rand(2, 3, 16, 16)
    target = pred * torch.tensor([0.5, 0.8, 1.3])[None, :, None, None] + 0.1
    mask = torch.ones(2, 1, 16, 16)
    mask[:, :, :4] = 0
    target[:, :, :4] = 5.0  # masked: must not enter the fit
    matched = losses.level_matched(pred, target, mask, torch.tensor([True, False]))
    error = losses.charbonnier(matched, target, mask)
    assert float(error[0]) < 1e-4 and float(error[1]) > 0.05  # fitted / left as it was
    assert torch.equal(matched[1], pred[1])
    # A shift of the prediction's level has (almost) no gradient under the L1-like pixel loss: the fit
    # absorbs it. Without the fit it has the full one.
    noisy = target[:1] + 0.05 * torch.randn(1, 3, 16, 16) ** 3  # skewed residuals
    grads = []
    for which in (True, False):
        shift = torch.zeros(1, 3, 1, 1, requires_grad=True)
        m = losses.level_matched(pred[:1] + shift, noisy, mask[:1], torch.tensor([which]))
        losses.charbonnier(m, noisy, mask[:1]).sum().backward()
        grads.append(float(shift.grad.abs().max()))
    assert grads[0] < 0.05 * grads[1]


def test_relative_chi2_judges_real_crops_against_the_targets_own_chi2() -> None:
    chi2 = torch.tensor([3.0, 3.0, 20.0, 0.5, 0.5, 0.5, float("nan")])
    target = torch.tensor([9.0, 9.0, 9.0, 0.7, 9.0, float("nan"), 9.0])
    synthetic = torch.tensor([False, True, False, False, False, False, False])
    rel = losses.relative_chi2(chi2, target, synthetic)
    assert float(rel[0]) == 1.0  # more consistent than the truth on a real crop: no penalty either way
    assert float(rel[1]) == 3.0  # synthetic: the model made the input, judged as it is
    assert abs(float(rel[2]) - 20.0 / 9.0) < 1e-6  # contradicts the survey beyond what the truth does
    assert float(rel[3]) == 0.5  # the truth within noise (chi^2 < 1): fitting noise is still penalised
    assert float(rel[4]) == 1.0
    assert float(rel[5]) == 0.5  # no reference: as it is
    assert math.isnan(float(rel[6]))
    pen = losses.consistency_loss(rel)
    assert float(pen[0]) == 0.0 and float(pen[2]) > 0.0 and float(pen[3]) > 0.0 and float(pen[6]) == 0.0


def test_training_judges_real_crops_consistency_against_the_target() -> None:
    """A real crop whose survey input the true target does not explain (another scene): the trainer
    measures the target's own chi^2 and reports it; with consistency_relative off it does not."""
    batch = _batch(2, 12, seed=6)
    other = _batch(2, 12, seed=7)
    batch["synthetic"][:] = False
    batch["target"] = other["target"]  # the survey shows one scene, the "outreach image" another
    on = GanTrainer(_config(warmup_steps=1000, seed=3)).step(batch)
    off = GanTrainer(_config(warmup_steps=1000, seed=3, consistency_relative=False)).step(batch)
    assert on["chi2_target_real"] > 5.0, on
    assert off["chi2_target_real"] == 0.0
    assert on["chi2"] == off["chi2"]  # the output's own chi^2 is reported as measured, either way
    batch["synthetic"][:] = True
    assert GanTrainer(_config(warmup_steps=1000, seed=3)).step(batch)["chi2_target_real"] == 0.0


def test_training_steps_reduce_the_pixel_loss() -> None:
    batch = _batch(2, 12, seed=1)
    batch["synthetic"][:] = False  # real pairs: the whole pixel loss, level included
    tr = GanTrainer(_config(warmup_steps=1000, adv_ramp_steps=1, lr_generator=1e-3))
    first = [tr.step(batch) for _ in range(2)]
    for _ in range(28):  # from the bicubic start (the display planes), the loss falls more slowly at first
        last = tr.step(batch)
    assert last["pixel"] < 0.8 * np.mean([f["pixel"] for f in first])
    assert first[0]["chi2"] > 0 and last["consistency_scale"] > 0  # the consistency term is live from the start
    assert last["d_loss"] == 0.0 and last["adversarial_scale"] == 0.0  # warm-up: no adversarial term yet
    assert all(math.isfinite(v) for v in last.values())


def test_adversarial_phase_runs_and_state_round_trip_resumes_bit_identically() -> None:
    b1, b2, b3 = _batch(2, 12, seed=2), _batch(2, 12, seed=3), _batch(2, 12, seed=4)
    a = GanTrainer(_config(warmup_steps=1, adv_ramp_steps=2, seed=5))
    a.step(b1)
    a.step(b2)
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)
    expected = [a.step(b3), a.step(b1)]
    assert expected[0]["d_loss"] > 0 and expected[0]["adversarial_scale"] > 0

    saved.seek(0)
    b = GanTrainer(_config(warmup_steps=1, adv_ramp_steps=2, seed=5))
    b.load_state_dict(torch.load(saved, weights_only=False))
    assert [b.step(b3), b.step(b1)] == expected
    for pa, pb in zip(a.ema.parameters(), b.ema.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError):
        GanTrainer(_config(warmup_steps=2)).load_state_dict(a.state_dict())


def test_trainer_honours_masks() -> None:
    batch = _batch(2, 12, seed=6)
    batch["mask"][:, :, :12, :] = 0
    batch["input_mask"][:, :, :3, :] = 0
    other = copy.deepcopy(batch)
    other["target"][:, :, :12, :] = torch.rand(2, 3, 12, 48)
    other["input"][:, :, :3, :] = torch.randn(2, INPUT_CHANNELS, 3, 12) * 3
    runs = []
    for b in (batch, other):
        tr = GanTrainer(_config(warmup_steps=1, adv_ramp_steps=1, seed=2))
        runs.append([tr.step(b) for _ in range(3)])
    assert runs[0] == runs[1]


def test_trainer_reads_the_display_input_from_the_input_planes() -> None:
    """The consistency term re-observes the output against the input's display planes: at the first
    step the generator is bicubic upsampling of those planes, so its chi^2 is that of bicubic."""
    batch = _batch(1, 12, seed=7)
    display = batch["input"][:, normalise.DISPLAY_PLANES]
    bicubic = F.interpolate(display, scale_factor=4.0, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    expected = observe.observation_chi2(
        bicubic, display, batch["noise_sigma"], batch["psf_fwhm"], batch["input_mask"], 4
    )
    assert float(expected.mean()) > 0
    assert GanTrainer(_config()).step(batch)["chi2"] == pytest.approx(float(expected.mean()), rel=1e-4)
    tr = GanTrainer(_config(consistency_weight=0.0))
    assert tr.step(batch)["chi2"] == 0.0
    v = GanTrainer(_config()).validate(_batch(2, 12, seed=8))
    assert {"psnr_faithful", "psnr_vivid", "psnr_bicubic", "chi2_faithful"} <= set(v)
