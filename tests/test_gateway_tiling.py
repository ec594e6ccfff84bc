"""Tiling of large renders (services/gateway/tiling.py): the plan, the blending, the seam metric, and that tiled
rendering reproduces a single pass, for a small zero-padded conv net and for the real generator architecture."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from services.gateway.tiling import Assembler, Tile, boundary_lines, default_margin, plan_tiles, seam_metric
from services.model.generator import INPUT_CHANNELS, NOISE_CHANNELS, Generator, GeneratorConfig

SCALE = 4


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (96, 128, 32, 0),  # naive, multiples of the tile
        (100, 130, 32, 8),  # neither a multiple: last row and column shifted back
        (97, 64, 32, 15),  # largest overlap allowed
        (32, 32, 32, 8),  # exactly one tile
        (20, 50, 32, 8),  # shorter than a tile in one axis
        (5, 7, 32, 0),  # smaller than a tile
        (33, 1, 32, 1),
    ],
)
def test_plan_covers_the_image_with_equal_tiles(height: int, width: int, tile: int, overlap: int) -> None:
    tiles = plan_tiles(height, width, tile, overlap)
    count = np.zeros((height, width), int)
    for t in tiles:
        assert t.y0 >= 0 and t.x0 >= 0 and t.y0 + t.h <= height and t.x0 + t.w <= width
        count[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] += 1
    assert count.min() >= 1
    # One shape for all, so the tiles batch together: the tile size, or the image's size along a shorter axis.
    assert {(t.h, t.w) for t in tiles} == {(min(height, tile), min(width, tile))}
    for axis in ("y0", "x0"):
        starts = sorted({getattr(t, axis) for t in tiles})
        length = tiles[0].h if axis == "y0" else tiles[0].w
        assert all(length - (b - a) >= overlap for a, b in itertools.pairwise(starts))
    if overlap == 0 and height % tile == 0 and width % tile == 0:
        assert count.max() == 1  # naive tiling: edge to edge


def test_plan_shapes_and_positions() -> None:
    assert plan_tiles(32, 32, 32, 8) == [Tile(0, 0, 32, 32)]
    assert plan_tiles(5, 7, 32, 4) == [Tile(0, 0, 5, 7)]
    assert [t.x0 for t in plan_tiles(10, 70, 32, 8)] == [0, 24, 38]  # stride 24, last shifted back to 70 - 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((64, 64, 32, 16), "tile/2"),
        ((64, 64, 32, 40), "tile/2"),
        ((64, 64, 32, -1), ">= 0"),
        ((64, 64, 0, 0), "tile must be >= 1"),
        ((0, 64, 32, 8), ">= 1 pixel"),
        ((64, -3, 32, 8), ">= 1 pixel"),
    ],
)
def test_plan_rejects_bad_arguments(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def test_tile_cuts_numpy_and_torch_arrays() -> None:
    t = Tile(2, 3, 4, 5)
    a = np.arange(2 * 10 * 12).reshape(2, 10, 12)
    assert np.array_equal(t.cut(a), a[:, 2:6, 3:8])
    assert torch.equal(t.cut(torch.from_numpy(a)[None]), torch.from_numpy(a)[None, :, 2:6, 3:8])
    assert t.output_slices(4) == (slice(8, 24), slice(12, 32))


# ---------------------------------------------------------------- the windows and the assembler


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [(64, 96, 32, 12), (70, 53, 32, 15), (40, 40, 32, 8)])
def test_windows_are_a_partition_of_unity_with_discarded_margins(
    height: int, width: int, tile: int, overlap: int
) -> None:
    asm = Assembler(height, width, SCALE, 1, overlap)
    margin = SCALE * default_margin(overlap)
    total = np.zeros((SCALE * height, SCALE * width))
    for t in plan_tiles(height, width, tile, overlap):
        win = asm.window(t)
        ys, xs = t.output_slices(SCALE)
        total[ys, xs] += win
        # Weight 0 next to an edge shared with a neighbour, 1 up to an image border.
        if t.y0 > 0:
            assert np.all(win[:margin] == 0)
        else:
            np.testing.assert_array_equal(win[0], win.max(axis=0))  # the top row has the full weight
        if t.x0 + t.w < width:
            assert np.all(win[:, -margin:] == 0)
        else:
            np.testing.assert_array_equal(win[:, -1], win.max(axis=1))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_assembler_blends_constant_tiles_to_the_constant() -> None:
    asm = Assembler(50, 70, 2, 3, 10)
    for t in plan_tiles(50, 70, 24, 10):
        asm.add(t, np.full((3, 2 * t.h, 2 * t.w), 0.25, np.float32))
    out = asm.result()
    assert out.shape == (3, 100, 140) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)
    assert asm.result() is out  # idempotent


def test_assembler_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="overlap/2"):
        Assembler(64, 64, 4, 3, 8, margin=4)
    with pytest.raises(ValueError, match=">= 0"):
        Assembler(64, 64, 4, 3, -1)
    asm = Assembler(64, 64, 4, 3, 8)
    tiles = plan_tiles(64, 64, 32, 8)
    with pytest.raises(ValueError, match="shape"):
        asm.add(tiles[0], np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="not inside"):
        asm.add(Tile(40, 40, 32, 32), np.zeros((3, 128, 128), np.float32))
    with pytest.raises(ValueError, match="grid"):
        asm.add(Tile(5, 0, 32, 32), np.zeros((3, 128, 128), np.float32))
    asm.add(tiles[0], np.zeros((3, 128, 128), np.float32))
    with pytest.raises(ValueError, match="missing"):
        asm.result()
    for t in tiles[1:]:
        asm.add(t, np.zeros((3, 128, 128), np.float32))
    asm.result()
    with pytest.raises(RuntimeError):
        asm.add(tiles[0], np.zeros((3, 128, 128), np.float32))


def test_assembler_holds_only_two_float32_accumulators() -> None:
    # A 4096^2 output: the weighted sum [3, 4096, 4096] and one weight plane (np.zeros leaves the pages untouched).
    asm = Assembler(1024, 1024, 4, 3, 32)
    held = sum(v.nbytes for v in vars(asm).values() if isinstance(v, np.ndarray))
    assert held <= (3 + 1) * 4096 * 4096 * 4 + 2**16  # + the ramp


# ---------------------------------------------------------------- tiled vs single pass


def _conv_net(seed: int = 0) -> nn.Module:
    """Three zero-padded 3x3 convs (receptive-field radius 3 input pixels), tanh between, then nearest x4: random
    channel mixing of a smoothing kernel, fixed by the seed. Smooth output, so edge effects show as seams (zero
    padding darkens a tile's edge); a random pixel-shuffle net's output is too rough for any seam to stand out."""
    torch.manual_seed(seed)
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = k[:, None] * k[None, :] / 16
    layers: list[nn.Module] = []
    for i in range(3):
        conv = nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            mix = torch.eye(3) + 0.3 * torch.randn(3, 3)
            conv.weight.copy_(mix[:, :, None, None] * kernel)
            conv.bias.normal_(0.0, 0.05)
        layers += [conv, nn.Tanh()] if i < 2 else [conv]
    layers.append(nn.Upsample(scale_factor=SCALE, mode="nearest"))
    return nn.Sequential(*layers).eval()


CONV_NET_RF = 3


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blurred noise on a bright background: zero padding at a tile edge is a large step for the network."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((3, height, width)), (0, 3, 3))
    return (0.5 + 2.0 * noise).astype(np.float32)


def _generator_input(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The smooth image as the generator's planes (services.model.normalise): normalised, then the display
    values they came from (sky 0.1, scale 0.15)."""
    normalised = _smooth_image(height, width, seed)
    return np.concatenate([normalised, np.clip(0.1 + 0.15 * normalised, 0.0, 1.0)]).astype(np.float32)


def _single(model: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image)[None])[0].numpy()


def _tiled(model: nn.Module, image: np.ndarray, tile: int, overlap: int, margin: int | None = None) -> np.ndarray:
    _, height, width = image.shape
    tiles = plan_tiles(height, width, tile, overlap)
    asm = Assembler(height, width, SCALE, 3, overlap, margin)
    with torch.no_grad():  # all tiles in one batch: they share a shape
        outputs = model(torch.stack([t.cut(torch.from_numpy(image)) for t in tiles])).numpy()
    for t, out in zip(tiles, outputs, strict=True):
        asm.add(t, out)
    return asm.result()


@pytest.mark.parametrize(("height", "width"), [(96, 128), (90, 117)])
def test_tiled_equals_single_pass_when_the_margin_covers_the_receptive_field(height: int, width: int) -> None:
    model, image = _conv_net(), _smooth_image(height, width)
    single = _single(model, image)
    overlap = 12
    assert default_margin(overlap) >= CONV_NET_RF
    tiled = _tiled(model, image, 32, overlap)
    # Everywhere, the image borders too: border tiles see the same zero padding as the single pass.
    np.testing.assert_allclose(tiled, single, atol=1e-5, rtol=0)
    naive = _tiled(model, image, 32, 0)
    assert np.abs(naive - single).max() > 1e-2  # the edge effects of naive tiling


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seam_metric_sees_naive_seams_and_not_blended_ones(seed: int) -> None:
    model, image = _conv_net(seed), _smooth_image(96, 128, seed)
    naive_tiles = plan_tiles(96, 128, 32, 0)
    blended_tiles = plan_tiles(96, 128, 32, 12)
    single = _single(model, image)
    naive = _tiled(model, image, 32, 0)
    blended = _tiled(model, image, 32, 12)
    m_single = seam_metric(single, naive_tiles, SCALE)
    m_naive = seam_metric(naive, naive_tiles, SCALE)
    m_blended_same_lines = seam_metric(blended, naive_tiles, SCALE)
    m_blended_own_lines = seam_metric(blended, blended_tiles, SCALE)
    assert 0.7 < m_single < 1.3
    assert 0.7 < m_blended_same_lines < 1.3 and 0.7 < m_blended_own_lines < 1.3
    assert m_naive > 2 * max(m_blended_same_lines, m_blended_own_lines)


def test_boundary_lines_and_seam_metric_edge_cases() -> None:
    assert boundary_lines(plan_tiles(64, 96, 32, 0), 4) == ([128], [128, 256])
    # Overlapping tiles: the middle of the overlap, on the x`scale` block grid. x starts 0, 24, 38 (tile 32).
    assert boundary_lines(plan_tiles(10, 70, 32, 8), 4) == ([], [4 * 28, 4 * 47])
    flat = np.ones((3, 40, 40))
    assert seam_metric(flat, plan_tiles(10, 10, 5, 0), 4) == 1.0  # no jumps at all
    assert seam_metric(np.random.default_rng(0).random((3, 40, 40)), plan_tiles(10, 10, 32, 0), 4) == 1.0  # no seams
    step = np.zeros((1, 8, 32))
    step[:, :, 16:] = 1.0  # a seam on a flat image: infinitely visible
    assert seam_metric(step, plan_tiles(2, 8, 4, 0), 4) == float("inf")
    assert seam_metric(step, plan_tiles(2, 8, 4, 0), 4, band=0) == float("inf")


# ---------------------------------------------------------------- the real generator architecture

# Narrow but as deep as the demo generator: the receptive field depends on depth only, and the test stays fast.
DEMO_DEPTH = GeneratorConfig(channels=16, blocks=GeneratorConfig.demo().blocks, hr_channels=8, film_dim=8)


def _lively_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    """Random init with the zero-initialised output and FiLM layers randomised too (as after training), so that
    the network's residual, not only its bicubic skip path, reaches the output - as strongly as the display
    planes' own structure (out_conv std 0.3), or a tiling fault in the residual would hide under the base."""
    torch.manual_seed(seed)
    g = Generator(config)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.startswith("out_conv"):
                p.normal_(0.0, 0.3)
            elif ".film." in name:
                p.normal_(0.0, 0.05)
    return g.eval()


def _receptive_radius(g: Generator, size: int) -> int:
    """Input pixels (image or noise) on which the centre output pixel depends, as a radius."""
    x = torch.randn(1, INPUT_CHANNELS, size, size, requires_grad=True)
    noise = torch.randn(1, NOISE_CHANNELS, size, size, requires_grad=True)
    out = g(x, noise, torch.full((1, 1), 0.5))
    c = size // 2
    out[0, :, SCALE * c, SCALE * c].sum().backward()
    grad = x.grad[0].abs().sum(0) + noise.grad[0].abs().sum(0)
    return int(np.abs(np.argwhere(grad.numpy() > 0) - c).max())


@pytest.mark.parametrize("blocks", [GeneratorConfig.demo().blocks, GeneratorConfig.full().blocks])
def test_generator_receptive_field(blocks: int) -> None:
    # head + 2 per block + body tail + first x2 conv at the input grid, 1/2 + 1/4 + 1/4 for the finer convs:
    # 2 * blocks + 4 input pixels (20 demo, 36 full). The gateway's margin must cover it for exact tiling.
    g = _lively_generator(GeneratorConfig(channels=8, blocks=blocks, hr_channels=4, film_dim=4))
    assert _receptive_radius(g, 2 * (2 * blocks + 4) + 8) == 2 * blocks + 4


def _generator_tiled(
    g: Generator, image: np.ndarray, noise: np.ndarray, fidelity: float, tile: int, overlap: int, margin: int
) -> np.ndarray:
    _, height, width = image.shape
    tiles = plan_tiles(height, width, tile, overlap)
    asm = Assembler(height, width, SCALE, 3, overlap, margin)
    x = torch.stack([t.cut(torch.from_numpy(image)) for t in tiles])
    n = torch.stack([t.cut(torch.from_numpy(noise)) for t in tiles])  # one field-size noise array, cut alike
    with torch.no_grad():
        outputs = g(x, n, torch.full((len(tiles), 1), fidelity)).numpy()
    for t, out in zip(tiles, outputs, strict=True):
        asm.add(t, out)
    return asm.result()


def test_generator_tiled_equals_single_pass() -> None:
    g = _lively_generator(DEMO_DEPTH)
    height, width = 100, 140
    image = _generator_input(height, width, seed=1)
    noise = np.random.default_rng(2).standard_normal((NOISE_CHANNELS, height, width)).astype(np.float32)
    with torch.no_grad():
        single = g(torch.from_numpy(image)[None], torch.from_numpy(noise)[None], torch.full((1, 1), 0.5))[0].numpy()
    # Margin 20 = the receptive-field radius: exact up to float32 rounding (2x2 tiles of 96, overlaps 92 and 52).
    exact = _generator_tiled(g, image, noise, 0.5, tile=96, overlap=44, margin=20)
    np.testing.assert_allclose(exact, single, atol=1e-5, rtol=0)
    # A smaller margin (8 of 20) is not exact by construction, but the dependence on far pixels decays fast
    # (residual branches scaled by 0.2): measured ~2e-7 at this random init. Trained weights may reach further.
    close = _generator_tiled(g, image, noise, 0.5, tile=64, overlap=24, margin=8)
    np.testing.assert_allclose(close, single, atol=1e-4, rtol=0)


FAITHFUL = 1.0


def test_generator_seams_naive_vs_blended() -> None:
    # Faithful: the white noise of a vivid render is texture at every pixel, which this metric (jumps at
    # the tile lines against jumps elsewhere) would count as a seamless background.
    g = _lively_generator(DEMO_DEPTH)
    size = 128
    image = _generator_input(size, size, seed=1)
    noise = np.random.default_rng(2).standard_normal((NOISE_CHANNELS, size, size)).astype(np.float32)
    with torch.no_grad():
        x, n, f = torch.from_numpy(image)[None], torch.from_numpy(noise)[None], torch.full((1, 1), FAITHFUL)
        single = g(x, n, f)[0].numpy()
    naive_tiles = plan_tiles(size, size, 32, 0)
    naive = _generator_tiled(g, image, noise, FAITHFUL, tile=32, overlap=0, margin=0)
    blended = _generator_tiled(g, image, noise, FAITHFUL, tile=32, overlap=12, margin=3)
    # Measured: single pass 0.93, naive 19.2, blended 0.93 (same lines) / 0.94 (its own).
    m_single, m_naive = seam_metric(single, naive_tiles, SCALE), seam_metric(naive, naive_tiles, SCALE)
    m_blended = seam_metric(blended, naive_tiles, SCALE)
    assert 0.8 < m_single < 1.2 and 0.8 < m_blended < 1.2
    assert m_naive > 1.8 * m_blended
    assert 0.8 < seam_metric(blended, plan_tiles(size, size, 32, 12), SCALE) < 1.2
