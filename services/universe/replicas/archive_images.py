"""Image files of the archive replica: rendered from the sky on first request, at the
served size's own WCS (never resampled), written as top-down JPEG with the AVM
embedded as XMP, and cached on disk so each (image, size, content) renders once.

The cache key covers everything that decides the pixels, including the source of
the sky model, so a changed renderer never serves stale files.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pyavm import AVM

from services.universe.replicas.archive_avm import FieldWcs
from services.universe.replicas.archive_catalogue import Observation

if TYPE_CHECKING:
    from services.universe.sky import Sky

FORMATS = ("screen", "large", "publicationjpg", "thumb300y")
UNIVERSE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServedSizes:
    """Widths of the JPEG derivatives (the thumbnail is 300 px high, as on the site).
    The real CDN's screen is ~1280 px and large ~4000 px; smaller defaults keep
    rendering affordable on a laptop."""

    screen: int = 640
    large: int = 1280
    publication: int = 1280
    thumb_height: int = 300

    def width(self, obs: Observation, fmt: str) -> int:
        wanted = {
            "screen": self.screen,
            "large": self.large,
            "publicationjpg": self.publication,
            "thumb300y": max(1, round(self.thumb_height * obs.width / obs.height)),
            "original": obs.width,
        }[fmt]
        return min(wanted, obs.width)

    def size(self, obs: Observation, fmt: str) -> tuple[int, int]:
        width = self.width(obs, fmt)
        return width, max(1, round(obs.height * width / obs.width))

    def wcs(self, obs: Observation, fmt: str) -> FieldWcs | None:
        """The true WCS of the served file (None for images not of the sky)."""
        return obs.wcs.resized(self.width(obs, fmt)) if obs.wcs else None


def _code_fingerprint() -> str:
    """The sky model's and this module's sources: part of every cache key."""
    digest = hashlib.blake2b(digest_size=8)
    for path in [*sorted(UNIVERSE_DIR.glob("*.py")), Path(__file__)]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def embedded_avm(obs: Observation, served: FieldWcs | None) -> AVM:
    """The XMP an image file carries: spatial AVM at the served size (or, for the
    mismatch edge case, at the declared size), plus the descriptive fields."""
    avm = AVM()
    if obs.wcs and obs.avm_quality:
        reference = obs.wcs if obs.embed_original_avm else served
        assert reference is not None
        avm = reference.avm(obs.avm_quality)
    avm.ID = obs.id
    avm.Type = obs.type
    avm.Title = obs.title
    avm.Credit = obs.credit
    avm.Publisher = "ESA/Hubble" if obs.style == "hubble" else "ESA/Webb"
    avm.Subject.Category = [obs.taxonomy[0]]
    return avm


class ImageStore:
    def __init__(self, sky: Sky, cache_dir: Path, sizes: ServedSizes, jpeg_quality: int = 90) -> None:
        self.sky = sky
        self.dir = Path(cache_dir) / "archive"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sizes = sizes
        self.quality = jpeg_quality
        self._fingerprint = _code_fingerprint()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.render_seconds: dict[str, float] = {}  # cache file name -> render time, for benchmarks

    def path(self, obs: Observation, fmt: str) -> Path:
        served = self.sizes.wcs(obs, fmt)
        key = repr(
            (
                self._fingerprint,
                self.sky.seed,
                obs.site,
                obs.id,
                obs.kind,
                obs.style,
                obs.version,
                obs.defects,
                served,
                obs.avm_quality,
                obs.embed_original_avm,
                obs.title,
                obs.credit,
                self.sizes.size(obs, fmt),
                self.quality,
                fmt == "original",
            )
        )
        digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        ext = "tif" if fmt == "original" else "jpg"
        return self.dir / obs.site / f"{obs.file_name}-{fmt}-{digest}.{ext}"

    def is_cached(self, obs: Observation, fmt: str) -> bool:
        return self.path(obs, fmt).exists()

    def get(self, obs: Observation, fmt: str) -> bytes:
        """The file's bytes, rendering it (once, even under concurrent requests) if needed."""
        path = self.path(obs, fmt)
        if path.exists():
            return path.read_bytes()
        with self._guard:
            lock = self._locks.setdefault(str(path), threading.Lock())
        with lock:
            if not path.exists():
                started = time.perf_counter()
                data = self._encode(obs, fmt)
                self.render_seconds[path.name] = time.perf_counter() - started
                _atomic_write(path, data)
        return path.read_bytes()

    # -- pixels -------------------------------------------------------------------

    def pixels(self, obs: Observation, fmt: str) -> np.ndarray:
        """(H, W, 3) uint8 in FITS orientation (row 0 at the bottom)."""
        width, height = self.sizes.size(obs, fmt)
        served = self.sizes.wcs(obs, fmt)
        if served is None:
            return synthetic_image(obs, width, height)
        from services.universe.render import OutreachDefects, render_outreach

        d = obs.defects
        defects = OutreachDefects(
            border_px=round(d.border * width),
            chip_gap=d.chip_gap,
            boxes=tuple(
                (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
                for x0, y0, x1, y1 in d.boxes
            ),
        )
        return render_outreach(self.sky, served.to_wcs(), (served.height, served.width), obs.style, defects)

    def _encode(self, obs: Observation, fmt: str) -> bytes:
        top_down = np.ascontiguousarray(np.flipud(self.pixels(obs, fmt)))
        image = Image.fromarray(top_down, "RGB")
        if fmt == "original":
            buffer = io.BytesIO()
            image.save(buffer, "TIFF")
            return buffer.getvalue()
        avm = embedded_avm(obs, self.sizes.wcs(obs, fmt))
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            plain, tagged = Path(tmp) / "plain.jpg", Path(tmp) / "tagged.jpg"
            image.save(plain, "JPEG", quality=self.quality)
            avm.embed(str(plain), str(tagged))
            return tagged.read_bytes()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def synthetic_image(obs: Observation, width: int, height: int) -> np.ndarray:
    """Planets and artist's impressions are not of the sky model: a banded disc or a
    glowing world on a gradient, deterministic from the id."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(obs.id.encode(), digest_size=4).digest(), "big"))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = width / 2, height / 2, 0.38 * min(width, height)
    d = np.hypot(x - cx, y - cy) / r
    img = np.zeros((height, width, 3), np.float32)
    base = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    if obs.kind == "solar_system":
        bands = 0.75 + 0.25 * np.sin((y - cy) / r * rng.uniform(8, 14) + rng.uniform(0, 6))
        disc = (d < 1) * np.sqrt(np.clip(1 - d**2, 0, 1)) * bands
        img += disc[..., None] * base * 255
    else:
        img += (np.linspace(0.05, 0.35, height, dtype=np.float32)[:, None, None] * base[::-1]) * 255
        glow = np.exp(-((d - 1.0) ** 2) / 0.01) * 0.8 + (d < 1) * 0.6
        img += glow[..., None] * base * 255
    return np.clip(img, 0, 255).astype(np.uint8)
