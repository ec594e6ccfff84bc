"""Tiling of large renders: cut the input into overlapping, equal-size tiles, blend the model's outputs back.

The generator is fully convolutional, so it could take a whole field at once, but a large field does not fit
in GPU memory and equal-size tiles batch together in Triton. A tile's output is wrong near its edges (zero
padding stands in for the neighbouring pixels the network never saw), so:

- tiles overlap by `overlap` input pixels (plan_tiles);
- each tile's output is weighted by a separable window: towards a neighbouring tile a raised-cosine cross-fade of
  overlap - 2*margin pixels, centred on the middle of the two tiles' overlap, so the outermost >= `margin` pixels
  of a shared edge get weight 0 (discarded: within the receptive field of the tile edge); towards the image
  border the weight stays 1 up to the edge;
- the weighted outputs and the weights are summed and divided at the end.

Neighbouring windows are complementary (a partition of unity), so the blend is a smooth cross-fade; dividing by
the summed weights keeps it exact in the rare plan where a tile's two cross-fades meet (a last tile shifted far
back next to it). If the model is translation-equivariant with a receptive-field radius <= `margin` (input
pixels), every pixel with a non-zero weight is computed exactly as in a single pass over the whole image, and so
is the blend: tiled == single pass everywhere, the image borders included, because tiles at the border see the
same padding the single pass sees. The plan is made over whatever image the caller sends: if it reflect-pads the
field (to keep the network's own border effects out), it pads the whole field once, tiles the padded field, and
crops the result; padding tiles one by one would bring the seams back.

Noise inputs must be cut from one field-size noise array with the same tiles (Tile.cut), so overlapping tiles
see the same noise where they overlap.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Assembler", "Tile", "boundary_lines", "default_margin", "plan_tiles", "seam_metric"]


@dataclass(frozen=True)
class Tile:
    """A tile in input pixels: rows y0 .. y0+h-1, columns x0 .. x0+w-1."""

    y0: int
    x0: int
    h: int
    w: int

    def cut(self, array: Any) -> Any:
        """The tile of an [..., H, W] array (numpy or torch): the image, or the field's noise."""
        return array[..., self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def output_slices(self, scale: int) -> tuple[slice, slice]:
        """Rows and columns the tile's output covers in the x`scale` output."""
        return (
            slice(scale * self.y0, scale * (self.y0 + self.h)),
            slice(scale * self.x0, scale * (self.x0 + self.w)),
        )


def _axis_starts(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts along one axis and the tile length."""
    if size <= tile:
        return [0], size  # one tile of the image's size: nothing to batch with anyway
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    # The last tile is shifted back inside the image (overlapping its neighbour by more) rather than shrunk:
    # every tile keeps the same shape, so the tiles of a render batch together.
    return [k * stride for k in range(n - 1)] + [size - tile], tile


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major grid of tiles covering a height x width image, neighbours overlapping by >= `overlap`.

    All tiles are tile x tile when the image is at least that big in both axes; along an axis shorter than
    `tile` there is one tile spanning it. overlap = 0 is naive tiling (tiles meet edge to edge).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be >= 1 pixel, got {height} x {width}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    # A tile's two nominal overlaps must not meet: it keeps an area of its own between its two cross-fades.
    if 2 * overlap >= tile:
        raise ValueError(f"overlap must be < tile/2 = {tile / 2:g}, got {overlap}")
    ys, h = _axis_starts(height, tile, overlap)
    xs, w = _axis_starts(width, tile, overlap)
    return [Tile(y0, x0, h, w) for y0 in ys for x0 in xs]


def default_margin(overlap: int) -> int:
    """Discarded pixels at a shared tile edge when none is given: a quarter of the overlap, leaving the middle
    half of the overlap for the cross-fade."""
    return overlap // 4


def _ramp(n: int) -> np.ndarray:
    """Raised cosine 0 -> 1 sampled at pixel centres: strictly inside (0, 1), and ramp + ramp[::-1] == 1."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)


class Assembler:
    """Blends tile outputs into a [channels, scale*height, scale*width] float32 image.

    Memory: two float32 accumulators, the weighted sum [C, sH, sW] and the summed weight [sH, sW] (the window
    is the same for every channel); result() divides in place, so nothing field-sized is allocated beyond them.
    Tiles must come from plan_tiles(height, width, tile, overlap) with the same overlap (any order, any batching):
    a tile's neighbours, hence its window, follow from its position and size.
    """

    def __init__(
        self, height: int, width: int, scale: int, channels: int, overlap: int, margin: int | None = None
    ) -> None:
        if min(height, width, scale, channels) < 1:
            raise ValueError(f"height, width, scale and channels must be >= 1, got {height, width, scale, channels}")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        margin = default_margin(overlap) if margin is None else margin
        if margin < 0 or (overlap > 0 and 2 * margin >= overlap):
            raise ValueError(f"margin must be >= 0 and < overlap/2 = {overlap / 2:g} (room for the ramp), got {margin}")
        self.height, self.width, self.scale, self.channels = height, width, scale, channels
        self.overlap, self.margin = overlap, margin
        self._ramp = _ramp(scale * (overlap - 2 * margin)) if overlap else np.zeros(0, np.float32)
        self._sum = np.zeros((channels, scale * height, scale * width), np.float32)
        self._weight = np.zeros((scale * height, scale * width), np.float32)
        self._grid: dict[tuple[int, int], list[int]] = {}
        self._done = False

    def _starts(self, size: int, length: int) -> list[int]:
        """The plan's tile starts along an axis of `size`, rebuilt from a tile's length (the plan's tile size
        unless the tile spans the axis), so add() needs no plan: the neighbours' positions follow from it."""
        key = (size, length)
        if key not in self._grid:
            if length == size:
                self._grid[key] = [0]
            elif 2 * self.overlap >= length or length > size:
                raise ValueError(f"tile length {length} does not fit a plan with overlap {self.overlap} on {size}")
            else:
                self._grid[key] = _axis_starts(size, length, self.overlap)[0]
        return self._grid[key]

    def _window_1d(self, start: int, length: int, size: int) -> np.ndarray:
        """Weights along one axis of a tile spanning start .. start+length-1 (input pixels) of an axis of `size`."""
        starts = self._starts(size, length)
        if start not in starts:
            raise ValueError(f"tile at {start}, length {length}: not on the grid of plan_tiles(overlap={self.overlap})")
        k = starts.index(start)
        s, ramp = self.scale, self._ramp
        w = np.ones(s * length, np.float32)
        # Each cross-fade is centred on the middle of the two tiles' actual overlap (the shifted last tile overlaps
        # its neighbour by more than `overlap`); both tiles compute the same interval, so the ramps are
        # complementary, and it starts/ends >= margin pixels from either tile's edge. overlap 0: a hard cut there.
        if k > 0:
            shared = starts[k - 1] + length - start
            lo = (s * shared - ramp.size) // 2
            w[:lo] = 0.0
            w[lo : lo + ramp.size] *= ramp
        if k + 1 < len(starts):
            shared = start + length - starts[k + 1]
            lo = s * (starts[k + 1] - start) + (s * shared - ramp.size) // 2
            w[lo + ramp.size :] = 0.0
            w[lo : lo + ramp.size] *= ramp[::-1]
        return w

    def window(self, tile: Tile) -> np.ndarray:
        """The tile's [scale*h, scale*w] weights."""
        wy = self._window_1d(tile.y0, tile.h, self.height)
        wx = self._window_1d(tile.x0, tile.w, self.width)
        return wy[:, None] * wx[None, :]

    def add(self, tile: Tile, output: np.ndarray) -> None:
        """Accumulate one tile's model output [channels, scale*h, scale*w]."""
        if self._done:
            raise RuntimeError("result() was already taken: the accumulators were normalised in place")
        if tile.y0 < 0 or tile.x0 < 0 or tile.y0 + tile.h > self.height or tile.x0 + tile.w > self.width:
            raise ValueError(f"{tile} is not inside the {self.height} x {self.width} image")
        expected = (self.channels, self.scale * tile.h, self.scale * tile.w)
        if tuple(output.shape) != expected:
            raise ValueError(f"output of {tile} must have shape {expected}, got {tuple(output.shape)}")
        win = self.window(tile)
        ys, xs = tile.output_slices(self.scale)
        self._sum[:, ys, xs] += np.asarray(output, np.float32) * win
        self._weight[ys, xs] += win

    def result(self) -> np.ndarray:
        """The blended [channels, scale*height, scale*width] image (normalised in place; no more add())."""
        if not self._done:
            if not np.all(self._weight > 0):
                raise ValueError("some output pixels have no tile with a non-zero weight: tiles are missing")
            np.divide(self._sum, self._weight, out=self._sum)
            self._done = True
        return self._sum


def boundary_lines(tiles: list[Tile], scale: int) -> tuple[list[int], list[int]]:
    """Where a plan's seams lie in the output: (rows, columns) b such that the seam is between output pixel b-1
    and b. For neighbouring tiles it is the middle of their overlap (where the cross-fade is centred), i.e. the
    shared edge for naive tiling. Always a multiple of `scale`, on the upsampled grid's block boundaries."""

    def axis(spans: set[tuple[int, int]]) -> list[int]:
        ordered = sorted(spans)
        return [scale * ((b0 + a0 + an) // 2) for (a0, an), (b0, _) in itertools.pairwise(ordered)]

    return axis({(t.y0, t.h) for t in tiles}), axis({(t.x0, t.w) for t in tiles})


def seam_metric(image: np.ndarray, tiles: list[Tile], scale: int, band: int = 1) -> float:
    """How much the seams of `tiles` stand out in an output image [C, H', W'] ([H', W'] accepted): the mean |jump|
    between neighbouring pixels across the lines near the seams (boundary_lines, +- `band` input pixels) divided
    by the mean |jump| across all other lines of the same phase on the x`scale` grid. ~1: invisible; naive tiling
    of a zero-padded network gives clearly more.

    - The band: zero padding darkens (or brightens) both tiles at their shared edge alike, a thin line with
      little jump across the seam itself but steps on either side of it.
    - The phase: a x`scale` upsampler's output jumps more between input-pixel blocks than within them, and seams
      always lie between blocks, so only block boundaries are compared.
    - To compare plans on the same pixels, evaluate both images with one plan's tiles (e.g. the naive plan's);
      with each plan's own tiles, each is judged where its own seams are. No seams (one tile): 1.0.
    """
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[None]
    rows, cols = boundary_lines(tiles, scale)
    if not rows and not cols:
        return 1.0
    c, h, w = img.shape
    # Summed |jump| per line: dy[i] between rows i and i+1, dx[j] between columns j and j+1.
    dy = np.abs(np.diff(img, axis=1)).sum(axis=(0, 2))
    dx = np.abs(np.diff(img, axis=2)).sum(axis=(0, 1))
    offsets = scale * np.arange(-band, band + 1)

    def split(jumps: np.ndarray, seams: list[int], line_len: int) -> tuple[float, int, float, int]:
        gaps = np.arange(scale - 1, jumps.size, scale)  # jumps across input-pixel block boundaries
        near = (np.asarray(seams, dtype=np.int64)[:, None] + offsets[None, :] - 1).ravel()
        is_seam = np.isin(gaps, near)
        return (
            float(jumps[gaps[is_seam]].sum()),
            int(is_seam.sum()) * line_len,
            float(jumps[gaps[~is_seam]].sum()),
            int((~is_seam).sum()) * line_len,
        )

    sy, ny, by, my = split(dy, rows, c * w)
    sx, nx, bx, mx = split(dx, cols, c * h)
    seam = (sy + sx) / max(ny + nx, 1)
    base = (by + bx) / max(my + mx, 1)
    if base == 0.0:
        return 1.0 if seam == 0.0 else math.inf
    return seam / base
