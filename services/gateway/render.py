"""A render, as plain functions: the request's bounds, the grids (survey cutout in, rendering
out, both with their WCS), the tiled inference of one or more samples, the products and the
render cache. The gRPC service (service.py) only wires these to its clients.

Geometry: the output is `width` x `height` pixels over `fov` arcmin. The generator multiplies
the pixel count by its scale s (4), so the survey is asked, through the cutouts service, for
ceil(width / s) x ceil(height / s) pixels of s times the output's pixel size, plus a margin of
`margin` survey pixels on every side: tiles at the field's edge then see real sky around them
instead of padding. The output grid is that cutout's WCS refined s times, cropped to the asked
size around the same centre, so the rendering's WCS is exact and matches the sky.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from services.cutouts.geometry import rescaled_wcs
from services.gateway import products
from services.gateway.inference import Batch, Deadline, TileRunner
from services.gateway.tiling import Assembler, Tile, plan_tiles
from services.model import normalise
from services.model.generator import NOISE_CHANNELS
from services.runtime.errors import InvalidArgument, require
from services.runtime.objectstore import ObjectNotFound, ObjectStore

BUCKET = "renders"
RENDER_FORMAT = "pss-render-1"  # bump when a change makes cached renders stale
Progress = Callable[[str, int, int, str], None]  # stage, done, total, message


@dataclass(frozen=True)
class Limits:
    min_side_px: int = 16
    max_side_px: int = 4096
    min_fov_arcmin: float = 0.05
    max_fov_arcmin: float = 600.0  # the cutouts service's 10 degrees
    max_samples: int = 8
    # Samples need running mean and variance of the whole output: bound their memory.
    max_pixels_with_samples: int = 2048 * 2048


@dataclass(frozen=True)
class Target:
    ra_deg: float
    dec_deg: float
    name: str = ""
    resolver: str = ""  # "sesame" | "offline-catalogue" | "" (coordinates)
    size_arcmin: float = 0.0


@dataclass(frozen=True)
class RenderSpec:
    target: Target
    fov_arcmin: float
    width: int
    height: int
    survey: str
    model: str
    version: str  # "" = newest served
    samples: int
    fidelity: float
    north_angle_deg: float
    want_fits: bool
    seed: int
    no_cache: bool = False


DEFAULT_SIZE_PX = 1024
DEFAULT_FOV_ARCMIN = 10.0


def check_position(ra_deg: float, dec_deg: float) -> None:
    require(math.isfinite(dec_deg) and -90.0 <= dec_deg <= 90.0, "position.dec_deg", f"{dec_deg} is outside -90..90")
    require(math.isfinite(ra_deg) and 0.0 <= ra_deg < 360.0, "position.ra_deg", f"{ra_deg} is outside 0..360")


def default_fov(target: Target) -> float:
    """Frame a named object with room around it; a bare position gets DEFAULT_FOV_ARCMIN."""
    return round(target.size_arcmin * 1.6, 2) if target.size_arcmin > 0 else DEFAULT_FOV_ARCMIN


def check_spec(spec: RenderSpec, limits: Limits) -> None:
    """Bounds a person can act on: each error names the field and the bound."""
    check_position(spec.target.ra_deg, spec.target.dec_deg)
    require(
        math.isfinite(spec.fov_arcmin) and limits.min_fov_arcmin <= spec.fov_arcmin <= limits.max_fov_arcmin,
        "fov_arcmin",
        f"{spec.fov_arcmin} is outside {limits.min_fov_arcmin}..{limits.max_fov_arcmin} arcmin",
    )
    for name, side in (("size.width", spec.width), ("size.height", spec.height)):
        require(
            limits.min_side_px <= side <= limits.max_side_px,
            name,
            f"{side} px is outside {limits.min_side_px}..{limits.max_side_px}",
        )
    require(1 <= spec.samples <= limits.max_samples, "samples", f"{spec.samples} is outside 1..{limits.max_samples}")
    if spec.samples > 1:
        require(
            spec.width * spec.height <= limits.max_pixels_with_samples,
            "samples",
            f"{spec.samples} samples of {spec.width} x {spec.height} px: at most {limits.max_pixels_with_samples} "
            "pixels when samples > 1 (render a smaller size, or one sample)",
        )
    require(
        math.isfinite(spec.fidelity) and 0.0 <= spec.fidelity <= 1.0, "fidelity", f"{spec.fidelity} is outside 0..1"
    )
    require(
        math.isfinite(spec.north_angle_deg) and -360.0 <= spec.north_angle_deg <= 360.0,
        "north_angle_deg",
        f"{spec.north_angle_deg} is outside -360..360",
    )


# -- geometry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grids:
    scale: int  # generator's scale s
    margin: int  # survey pixels around the field
    input_width: int  # survey pixels, margin included
    input_height: int
    input_arcsec: float  # survey pixel size asked for
    crop_x: int  # output pixels cut from the left / bottom of the s-times-refined cutout
    crop_y: int

    def footprint(self, spec: RenderSpec) -> dict[str, Any]:
        """The survey cutout's footprint (prettyspace.v1.Footprint fields)."""
        return {
            "ra_deg": spec.target.ra_deg,
            "dec_deg": spec.target.dec_deg,
            "fov_x_arcmin": self.input_width * self.input_arcsec / 60.0,
            "fov_y_arcmin": self.input_height * self.input_arcsec / 60.0,
            "north_angle_deg": spec.north_angle_deg,
            "width": self.input_width,
            "height": self.input_height,
        }

    def output_wcs(self, cutout_wcs: WCS, width: int, height: int) -> WCS:
        out = rescaled_wcs(cutout_wcs, 1.0 / self.scale)
        out.wcs.crpix = np.asarray(out.wcs.crpix, dtype=float) - (self.crop_x, self.crop_y)
        out.wcs.set()
        out.pixel_shape = (width, height)
        return out

    def crop(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        return image[..., self.crop_y : self.crop_y + height, self.crop_x : self.crop_x + width]


def plan_grids(spec: RenderSpec, scale: int, margin: int) -> Grids:
    output_arcsec = spec.fov_arcmin * 60.0 / spec.width
    core_w, core_h = math.ceil(spec.width / scale), math.ceil(spec.height / scale)
    # Odd leftovers are split around the centre so the rendering stays centred on the target.
    return Grids(
        scale=scale,
        margin=margin,
        input_width=core_w + 2 * margin,
        input_height=core_h + 2 * margin,
        input_arcsec=output_arcsec * scale,
        crop_x=scale * margin + (scale * core_w - spec.width) // 2,
        crop_y=scale * margin + (scale * core_h - spec.height) // 2,
    )


# -- inference -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tiling:
    tile_px: int = 192  # survey pixels per tile side
    overlap_px: int = 48  # survey pixels shared by neighbouring tiles
    margin_px: int = 20  # pixels at a shared tile edge given no weight; also the field's margin
    batch_tiles: int = 4  # tiles per Triton request


CROSSFADE_PX = 8


def receptive_radius(generator: dict[str, Any]) -> int:
    """Input pixels an output pixel depends on, each way: 2 per residual block (two 3x3 convs)
    plus the head and tail convs (measured in tests/test_gateway_tiling.py)."""
    return 2 * int(generator.get("blocks", 16)) + 4


def tiling_for(model_provenance: dict[str, Any], tile_px: int, batch_tiles: int) -> Tiling:
    """Tiles whose blended result equals one pass over the whole field: the pixels a tile gets
    wrong at a shared edge (those within the receptive radius) are given no weight, and the
    cross-fade lies beyond them."""
    radius = receptive_radius(model_provenance.get("generator", {}))
    overlap = 2 * radius + CROSSFADE_PX
    return Tiling(tile_px=max(tile_px, 2 * overlap + 2), overlap_px=overlap, margin_px=radius, batch_tiles=batch_tiles)


def noise_field(seed: int, sample: int, height: int, width: int) -> np.ndarray:
    """One sample's noise for the whole input: tiles cut from it agree where they overlap."""
    return np.random.default_rng([seed, sample]).standard_normal((NOISE_CHANNELS, height, width), dtype=np.float32)


def batches(x: np.ndarray, noise: np.ndarray, tiles: list[Tile], size: int, fidelity: float) -> Iterator[Batch]:
    for start in range(0, len(tiles), size):
        group = tiles[start : start + size]
        # Tiles of one plan have one shape (plan_tiles), so they stack into one request.
        yield Batch(
            ids=tuple(range(start, start + len(group))),
            x=np.stack([x[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] for t in group]),
            noise=np.stack([noise[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] for t in group]),
            fidelity=fidelity,
        )


def run_samples(
    x: np.ndarray,
    runner: TileRunner,
    tiling: Tiling,
    scale: int,
    samples: int,
    fidelity: float,
    seed: int,
    deadline: Deadline,
    cancelled: threading.Event,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The generator input (normalise.INPUT_CHANNELS, H, W) -> (mean rendering (3, sH, sW) display
    0..1, per-pixel spread (sH, sW) or None for one sample)."""
    _, height, width = x.shape
    tiles = plan_tiles(height, width, tiling.tile_px, tiling.overlap_px)
    total = len(tiles) * samples
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    done = 0
    for sample in range(samples):
        noise = noise_field(seed, sample, height, width)
        assembler = Assembler(height, width, scale, 3, tiling.overlap_px, tiling.margin_px)
        for batch, out in runner.map(batches(x, noise, tiles, tiling.batch_tiles, fidelity), deadline, cancelled):
            for index, tile_out in zip(batch.ids, out, strict=True):
                assembler.add(tiles[index], tile_out)
            done += len(batch.ids)
            progress("rendering", done, total, f"sample {sample + 1}/{samples}")
        if cancelled.is_set():
            raise Cancelled()
        image = assembler.result()
        # Welford: mean and variance over samples without holding every sample.
        if mean is None:
            mean, m2 = image, np.zeros_like(image) if samples > 1 else None
        else:
            delta = image - mean
            mean += delta / (sample + 1)
            m2 += delta * (image - mean)  # type: ignore[operator]
    assert mean is not None
    spread = None if m2 is None else np.sqrt(m2 / (samples - 1)).mean(axis=0)
    return mean, spread


class Cancelled(Exception):
    """The client went away; the render stopped."""


# -- the whole render --------------------------------------------------------------------


@dataclass
class CutoutPixels:
    cube: np.ndarray  # (3, h, w) 0..255 FITS order, NaN blank
    wcs: WCS
    credit: str
    survey_hips: str
    ref: dict[str, Any]  # the cutout's FITS in the object store (bucket, key, sha256, size)


@dataclass
class Rendered:
    png: bytes
    spread_png: bytes
    side_by_side_png: bytes
    fits: bytes
    provenance: dict[str, Any]
    footprint: dict[str, Any]  # the output's footprint (Footprint fields + the WCS header)
    record: dict[str, Any] = field(default_factory=dict)  # the cache record's ObjectRef
    from_cache: bool = False


def software_version() -> str:
    try:
        return importlib.metadata.version("prettyspace")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def render_key(spec: RenderSpec, model: str, version: int, tiling: Tiling) -> str:
    """The cache key: what the pixels depend on, and nothing else."""
    what = {
        "format": RENDER_FORMAT,
        "ra": round(spec.target.ra_deg, 7),
        "dec": round(spec.target.dec_deg, 7),
        "fov": round(spec.fov_arcmin, 6),
        "size": [spec.width, spec.height],
        "angle": round(spec.north_angle_deg, 4),
        "survey": spec.survey,
        "model": model,
        "version": version,
        "samples": spec.samples,
        "fidelity": round(spec.fidelity, 4),
        "seed": spec.seed,
        "tiling": asdict(tiling),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:40]


def derive_seed(spec: RenderSpec) -> int:
    """A request without a seed gets one from its footprint: the same request, the same picture."""
    what = f"{spec.target.ra_deg:.7f},{spec.target.dec_deg:.7f},{spec.fov_arcmin:.6f},{spec.width}x{spec.height}"
    return int.from_bytes(hashlib.sha256(what.encode()).digest()[:6], "big") or 1


class RenderCache:
    """Renders in the `renders` bucket: `{key}/render.png`, `spread.png`, `side.png`, `render.fits`
    (when asked for once), then `{key}/result.json`, written last: the commit."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def load(self, key: str, want_fits: bool) -> Rendered | None:
        try:
            record = self.store.get_json(BUCKET, f"{key}/result.json")
        except ObjectNotFound:
            return None
        if want_fits and not record.get("fits"):
            return None  # rendered before without FITS: render again
        try:
            parts = {name: self.store.get_bytes(BUCKET, k) if k else b"" for name, k in record["products"].items()}
        except ObjectNotFound:
            return None  # a product was deleted under the record: render again
        return Rendered(
            png=parts.get("png", b""),
            spread_png=parts.get("spread_png", b""),
            side_by_side_png=parts.get("side_by_side_png", b""),
            fits=parts.get("fits", b"") if want_fits else b"",
            provenance=record["provenance"],
            footprint=record["footprint"],
            record=self._ref(key),
            from_cache=True,
        )

    def save(self, key: str, rendered: Rendered) -> dict[str, Any]:
        names = {"png": "render.png", "spread_png": "spread.png", "side_by_side_png": "side.png", "fits": "render.fits"}
        keys: dict[str, str] = {}
        for product, name in names.items():
            data: bytes = getattr(rendered, product)
            if data:
                content = "image/fits" if name.endswith(".fits") else "image/png"
                self.store.put_bytes(BUCKET, f"{key}/{name}", data, content_type=content)
                keys[product] = f"{key}/{name}"
        record = {
            "key": key,
            "products": keys,
            "fits": "fits" in keys,
            "provenance": rendered.provenance,
            "footprint": rendered.footprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.store.put_json(BUCKET, f"{key}/result.json", record)
        return self._ref(key)

    def _ref(self, key: str) -> dict[str, Any]:
        info = self.store.stat(BUCKET, f"{key}/result.json")
        return {"bucket": BUCKET, "key": f"{key}/result.json", "etag": info.etag if info else ""}


def read_cutout_fits(data: bytes) -> np.ndarray:
    with fits.open(io.BytesIO(data)) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)


def output_footprint(spec: RenderSpec, wcs: WCS) -> dict[str, Any]:
    header = {k: v for k, v in wcs.to_header().items()}
    header["NAXIS1"], header["NAXIS2"] = spec.width, spec.height
    return {
        "ra_deg": spec.target.ra_deg,
        "dec_deg": spec.target.dec_deg,
        "fov_x_arcmin": spec.fov_arcmin,
        "fov_y_arcmin": spec.fov_arcmin * spec.height / spec.width,
        "north_angle_deg": spec.north_angle_deg,
        "width": spec.width,
        "height": spec.height,
        "wcs_header_json": json.dumps(header, default=str),
    }


def model_credit(model_provenance: dict[str, Any]) -> str:
    """The generator learnt from ESA/Hubble and ESA/Webb images (CC BY 4.0): say so, and where each
    image's own credit line is (the training dataset's credits.json)."""
    dataset = model_provenance.get("dataset") or {}
    if not isinstance(dataset, dict) or not dataset.get("name"):
        return ""
    where = f"datasets/{dataset['name']}/{dataset.get('version', '')}/credits.json".replace("//", "/")
    return f"Generator trained on ESA/Hubble and ESA/Webb images (CC BY 4.0); their credit lines: {where}"


def make_provenance(
    spec: RenderSpec,
    model: str,
    version: int,
    model_provenance: dict[str, Any],
    cutout: CutoutPixels,
    stats: normalise.NormStats,
    tiling: Tiling,
) -> dict[str, Any]:
    return {
        "target": spec.target.name or f"RA {spec.target.ra_deg:.5f} Dec {spec.target.dec_deg:+.5f}",
        "resolver": spec.target.resolver,
        "inputs": [cutout.ref],
        "survey": cutout.survey_hips,
        "survey_slug": spec.survey,
        "model_name": model,
        "model_version": str(version),
        "model_run": model_provenance.get("run_id", ""),
        "model_dataset": model_provenance.get("dataset", ""),
        "disclaimer": products.DISCLAIMER,
        "credits": [c for c in (cutout.credit, model_credit(model_provenance)) if c],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software_version": software_version(),
        "samples": spec.samples,
        "parameters": {
            "fidelity": spec.fidelity,
            "samples": spec.samples,
            "seed": spec.seed,
            "fov_arcmin": spec.fov_arcmin,
            "size": f"{spec.width}x{spec.height}",
            "north_angle_deg": spec.north_angle_deg,
            "tile_px": tiling.tile_px,
            "overlap_px": tiling.overlap_px,
            "margin_px": tiling.margin_px,
            "normalisation": json.dumps(stats.to_dict()),
        },
    }


def render_pixels(
    spec: RenderSpec,
    grids: Grids,
    cutout: CutoutPixels,
    runner: TileRunner,
    tiling: Tiling,
    deadline: Deadline,
    cancelled: threading.Event,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, normalise.NormStats]:
    """The cutout -> (rendering (3, h, w) 0..1 with NaN where the survey has no data, spread or
    None, the survey pixels under the rendering (3, h/s, w/s) 0..1, the normalisation)."""
    cube = cutout.cube
    if cube.shape != (3, grids.input_height, grids.input_width):
        raise InvalidArgument(
            "survey", f"the cutout came back {cube.shape}, not (3, {grids.input_height}, {grids.input_width})"
        )
    x, valid, stats = normalise.survey_to_input(cube)
    if not valid.any():
        raise InvalidArgument("survey", f"the survey {spec.survey!r} has no data at this position")
    image, spread = run_samples(
        x, runner, tiling, grids.scale, spec.samples, spec.fidelity, spec.seed, deadline, cancelled, progress
    )
    blank = np.kron(~valid, np.ones((grids.scale, grids.scale), dtype=bool))
    image[:, blank] = np.nan  # no survey data there: nothing to render from
    image = grids.crop(image, spec.width, spec.height)
    if spread is not None:
        spread = grids.crop(spread, spec.width, spec.height)
    s, m = grids.scale, grids.margin
    survey01 = cube[:, m : m + math.ceil(spec.height / s), m : m + math.ceil(spec.width / s)] / 255.0
    return image, spread, survey01, stats
