"""The gateway's plain functions, without gRPC: request bounds, grids and WCS, tiling parameters,
samples and spread, products, the Triton version policy, admission and the render cache."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from services.cutouts.geometry import rescaled_wcs
from services.gateway import products
from services.gateway.admission import Admission
from services.gateway.inference import Deadline, LocalRunner
from services.gateway.models import config_with_versions
from services.gateway.render import (
    Limits,
    RenderCache,
    Rendered,
    RenderSpec,
    Target,
    Tiling,
    check_spec,
    derive_seed,
    plan_grids,
    receptive_radius,
    render_key,
    run_samples,
    tiling_for,
)
from services.model.generator import INPUT_CHANNELS, Generator, GeneratorConfig, script
from services.runtime.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from services.trainer.export import python_config

torch.set_num_threads(1)


def spec(**kw) -> RenderSpec:
    base = dict(
        target=Target(83.82, -5.39),
        fov_arcmin=6.0,
        width=384,
        height=320,
        survey="dss2-color",
        model="generator",
        version="",
        samples=1,
        fidelity=0.5,
        north_angle_deg=0.0,
        want_fits=False,
        seed=1,
    )
    return RenderSpec(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"target": Target(10.0, 91.0)}, "dec_deg: 91.0 is outside -90..90"),
        ({"target": Target(360.0, 0.0)}, "ra_deg: 360.0 is outside 0..360"),
        ({"fov_arcmin": 0.0}, "fov_arcmin: 0.0 is outside 0.05..600.0 arcmin"),
        ({"fov_arcmin": float("nan")}, "fov_arcmin"),
        ({"width": 5000}, "size.width: 5000 px is outside 16..4096"),
        ({"height": 8}, "size.height: 8 px is outside 16..4096"),
        ({"samples": 9}, "samples: 9 is outside 1..8"),
        ({"samples": 2, "width": 4096, "height": 4096}, "when samples > 1"),
        ({"fidelity": -0.1}, "fidelity"),
        ({"north_angle_deg": 400.0}, "north_angle_deg"),
    ],
)
def test_each_bound_is_named(kw, words) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_spec(spec(**kw), Limits())
    assert words in str(info.value)


def test_a_good_spec_passes() -> None:
    check_spec(spec(), Limits())


@pytest.mark.parametrize(("width", "height"), [(384, 320), (385, 321), (16, 4096)])
def test_the_output_grid_is_the_cutout_grid_refined_and_centred(width, height) -> None:
    s = spec(width=width, height=height)
    grids = plan_grids(s, scale=4, margin=20)
    fp = grids.footprint(s)
    assert (fp["width"], fp["height"]) == (-(-width // 4) + 40, -(-height // 4) + 40)
    # The cutout's own TAN grid as the cutouts service builds it (reference pixel at the centre).
    cut = WCS(naxis=2)
    cut.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    cut.wcs.crval = [s.target.ra_deg, s.target.dec_deg]
    cut.wcs.crpix = [(fp["width"] + 1) / 2, (fp["height"] + 1) / 2]
    step = grids.input_arcsec / 3600
    cut.wcs.cdelt = [-step, step]
    out = grids.output_wcs(cut, width, height)
    centre = out.pixel_to_world((width - 1) / 2, (height - 1) / 2)
    # Centred to within half a survey pixel split over the odd leftover (at most 1.5 output px).
    assert centre.ra.deg == pytest.approx(s.target.ra_deg, abs=1.6 * step / 4 / np.cos(np.radians(-5.39)))
    assert centre.dec.deg == pytest.approx(s.target.dec_deg, abs=1.6 * step / 4)
    scale = out.proj_plane_pixel_scales()[0].to_value("arcsec")
    assert scale == pytest.approx(s.fov_arcmin * 60 / width, rel=1e-9)
    # Output pixel (crop_x, crop_y) of the refined cutout is output pixel (0, 0).
    refined = rescaled_wcs(cut, 0.25)
    a = refined.pixel_to_world(grids.crop_x, grids.crop_y)
    b = out.pixel_to_world(0, 0)
    assert a.separation(b).arcsec < 1e-6


def test_tiles_overlap_beyond_the_receptive_field() -> None:
    demo = {"generator": GeneratorConfig.demo().to_dict()}
    assert receptive_radius(demo["generator"]) == 20
    t = tiling_for(demo, 128, 4)
    assert t.margin_px == 20 and t.overlap_px > 2 * t.margin_px and t.tile_px >= 2 * t.overlap_px + 2
    full = tiling_for({"generator": GeneratorConfig.full().to_dict()}, 128, 4)
    assert full.margin_px == 36 and full.tile_px == 2 * full.overlap_px + 2  # raised to fit the wider overlap


@pytest.fixture(scope="module")
def module() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=8, blocks=2, hr_channels=8))
    torch.nn.init.normal_(g.out_conv.weight, std=0.05)
    return script(g)


def _run(module, x, tiling, samples, fidelity):
    return run_samples(
        x, LocalRunner(module), tiling, 4, samples, fidelity, 5, Deadline(None), threading.Event(), lambda *a: None
    )


def test_tiled_samples_equal_one_pass_and_fidelity_one_has_no_spread(module) -> None:
    x = np.random.default_rng(0).normal(size=(INPUT_CHANNELS, 70, 90)).astype(np.float32) * 0.3
    radius = receptive_radius({"blocks": 2})
    one = Tiling(tile_px=128, overlap_px=2 * radius + 8, margin_px=radius, batch_tiles=2)
    many = Tiling(tile_px=2 * (2 * radius + 8) + 2, overlap_px=2 * radius + 8, margin_px=radius, batch_tiles=3)
    a, spread_a = _run(module, x, one, 2, 0.0)
    b, spread_b = _run(module, x, many, 2, 0.0)
    assert np.abs(a - b).max() < 1e-5 and np.abs(spread_a - spread_b).max() < 1e-5
    assert spread_a.shape == (280, 360) and spread_a.max() > 1e-3
    _, none = _run(module, x, one, 1, 0.0)
    assert none is None
    _, flat = _run(module, x, one, 3, 1.0)
    assert flat.max() < 1e-6


def test_a_cancelled_render_stops(module) -> None:
    from services.gateway.render import Cancelled

    cancelled = threading.Event()
    cancelled.set()
    x = np.zeros((3, 40, 40), np.float32)
    with pytest.raises(Cancelled):
        run_samples(x, LocalRunner(module), Tiling(), 4, 1, 0.5, 1, Deadline(None), cancelled, lambda *a: None)
    with pytest.raises(DeadlineExceeded):
        run_samples(x, LocalRunner(module), Tiling(), 4, 1, 0.5, 1, Deadline(-1.0), threading.Event(), lambda *a: None)


def test_the_png_and_fits_carry_the_disclaimer_credits_and_wcs() -> None:
    image = np.random.default_rng(1).uniform(size=(3, 64, 80)).astype(np.float32)
    image[:, 0, 0] = np.nan  # no survey data there
    spread = np.full((64, 80), 0.3, np.float32)
    prov = {
        "target": "M 51",
        "credits": ["DSS credit"],
        "model_name": "generator",
        "model_version": "3",
        "samples": 2,
        "parameters": {"fidelity": 0.25},
    }
    png = Image.open(io.BytesIO(products.rendering_png(image, prov)))
    assert png.size == (80, 64) and png.text["Disclaimer"] == products.DISCLAIMER
    assert json.loads(png.text["Provenance"])["model_version"] == "3" and png.text["Copyright"] == "DSS credit"
    # PNG rows run top first: its top row is the FITS array's last row.
    rgb = np.asarray(png.convert("RGB"))
    assert np.array_equal(rgb[0], np.round(image[:, -1].T.clip(0, 1) * 255).astype(np.uint8))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [202.47, 47.2]
    wcs.wcs.crpix = [40.5, 32.5]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    hdul = fits.open(io.BytesIO(products.rendering_fits(image, wcs, prov, spread)))
    header = hdul[0].header
    assert header["DISCLAIM"] == products.DISCLAIMER and header["MODELVER"] == "3" and header["FIDELITY"] == 0.25
    assert "Credit: DSS credit" in str(header["COMMENT"])
    assert WCS(header).celestial.pixel_to_world(39.5, 31.5).ra.deg == pytest.approx(202.47)
    assert np.isnan(hdul[0].data[0, 0, 0]) and hdul["SPREAD"].data.shape == (64, 80)
    overlay = Image.open(io.BytesIO(products.spread_png(spread, prov)))
    assert overlay.mode == "RGBA" and np.asarray(overlay)[..., 3].min() == 255  # 0.3 > full scale 0.15
    side = Image.open(io.BytesIO(products.side_by_side_png(image[:, ::4, ::4], image, prov)))
    assert side.width == 2 * 80 + 8 and side.text["Disclaimer"] == products.DISCLAIMER


def test_only_published_versions_are_loadable() -> None:
    config = json.loads(config_with_versions(python_config("generator"), (2, 3)))
    assert config["name"] == "generator"
    assert [int(v) for v in config["version_policy"]["specific"]["versions"]] == [2, 3]
    assert config["backend"] == "python" and config["max_batch_size"] == 8


def test_admission_runs_waits_and_refuses() -> None:
    admission = Admission(max_running=1, max_waiting=1)
    never = threading.Event()
    with admission.enter() as first:
        first.wait(None, never)
        entered = threading.Event()
        release = threading.Event()

        def second() -> None:
            with admission.enter() as ticket:
                assert ticket.waited_behind == 1
                entered.set()
                ticket.wait(10.0, never)
                release.wait(10)

        t = threading.Thread(target=second)
        t.start()
        assert entered.wait(5)
        with pytest.raises(ResourceExhausted) as info, admission.enter():
            pass
        assert "PSS_GATEWAY_MAX_QUEUE=1" in str(info.value)
        assert admission.load() == (1, 1)
    deadline = time.monotonic() + 5
    while admission.load() != (1, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert admission.load() == (1, 0)  # the waiting render got the slot
    release.set()
    t.join(5)
    assert admission.load() == (0, 0)
    with admission.enter() as busy:
        busy.wait(None, never)
        with admission.enter() as late, pytest.raises(DeadlineExceeded):
            late.wait(0.05, never)
    assert admission.load() == (0, 0)


def test_the_cache_key_changes_with_what_the_pixels_depend_on() -> None:
    s = spec()
    key = render_key(s, "generator", 1, Tiling())
    assert key == render_key(spec(), "generator", 1, Tiling())
    assert key != render_key(s, "generator", 2, Tiling())
    assert key != render_key(spec(fidelity=0.6), "generator", 1, Tiling())
    assert key != render_key(spec(seed=2), "generator", 1, Tiling())
    assert key != render_key(s, "generator", 1, Tiling(tile_px=256))
    assert derive_seed(s) == derive_seed(spec()) != derive_seed(spec(fov_arcmin=7.0))


def test_the_render_cache_round_trips_and_wants_fits_when_asked(store) -> None:
    cache = RenderCache(store)
    key = f"test-{time.time_ns()}"
    rendered = Rendered(b"png", b"", b"side", b"", {"model_version": "1"}, {"width": 4})
    ref = cache.save(key, rendered)
    assert ref["key"] == f"{key}/result.json"
    back = cache.load(key, want_fits=False)
    assert back is not None and back.from_cache and back.png == b"png" and back.side_by_side_png == b"side"
    assert back.provenance == {"model_version": "1"}
    assert cache.load(key, want_fits=True) is None  # rendered without FITS: render again
    assert cache.load("no-such-key", want_fits=False) is None
