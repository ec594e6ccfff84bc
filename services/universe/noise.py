"""Coherent procedural noise for textures defined in an object's own sky frame (nebula gas,
galaxy disks): the same coordinates always give the same value, so every footprint that
crosses an object sees the same structure, and finer grids simply add finer octaves.
Lattice values come from an integer hash, so nothing repeats however far one zooms."""

from __future__ import annotations

import numpy as np

_M1, _M2 = np.uint32(0x27D4EB2D), np.uint32(0x165667B1)
_M3, _M4 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)


def _lattice(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A uniform value in [-1, 1) per integer lattice point (a murmur3-style 32-bit mix)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint32) * _M1 ^ iy.astype(np.uint32) * _M2 ^ np.uint32(seed & 0xFFFFFFFF)
        h ^= h >> np.uint32(15)
        h *= _M3
        h ^= h >> np.uint32(13)
        h *= _M4
        h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 / 2**24) - np.float32(1.0)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about one unit across (smoothstep-interpolated
    random values on the integer lattice)."""
    fx0, fy0 = np.floor(x), np.floor(y)
    fx, fy = (x - fx0).astype(np.float32), (y - fy0).astype(np.float32)
    sx, sy = fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy)
    ix, iy = fx0.astype(np.int64).astype(np.uint32), fy0.astype(np.int64).astype(np.uint32)  # wraps at 2^32 cells
    one = np.uint32(1)
    with np.errstate(over="ignore"):
        v00, v10 = _lattice(ix, iy, seed), _lattice(ix + one, iy, seed)
        v01, v11 = _lattice(ix, iy + one, seed), _lattice(ix + one, iy + one, seed)
    top = v00 + sx * (v10 - v00)
    bottom = v01 + sx * (v11 - v01)
    return top + sy * (bottom - top)


def fbm(x: np.ndarray, y: np.ndarray, seed: int, scale: float, finest: float, max_octaves: int = 8) -> np.ndarray:
    """Fractal noise, roughly in [-1, 1]: octaves from features of size `scale` down to
    `finest` (same units as x and y), each half the size and ~0.55 the amplitude."""
    octaves = int(np.clip(np.ceil(np.log2(max(scale / max(finest, 1e-9), 1.0))), 1, max_octaves))
    total = np.zeros(np.shape(x), dtype=np.float32)
    amp, norm, s = 1.0, 0.0, scale
    for k in range(octaves):
        total += np.float32(amp) * value_noise(x / s + 17.31 * k, y / s - 5.13 * k, seed + 7919 * k)
        norm += amp
        amp *= 0.55
        s /= 2.0
    return total / np.float32(norm)
