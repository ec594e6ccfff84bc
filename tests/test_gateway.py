"""The gateway end to end: real Triton (Python backend, model repository in the real S3 server),
the real cutouts service over the hips2fits replica of the local sky, the Sesame replica.

The generator served here is the demo architecture with seeded random weights, published by the
trainer's own export code: serving must be right whatever the weights (the trainer's tests judge
quality). Its skip path carries the survey through, so catalogue stars show in the rendering
where the WCS says they are, and its noise-driven residual branch makes samples differ.
"""

from __future__ import annotations

import io
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from deploy.localstack.ports import free_port
from services.api import common_pb2, gateway_pb2
from services.client.cli import main as cli_main
from services.client.clients import GatewayClient
from services.gateway.products import DISCLAIMER
from services.model.generator import Generator, GeneratorConfig
from services.trainer.export import BUCKET, publish_generator, versions
from services.universe.sky import Sky
from tests.support.processes import service_process
from tests.support.stars import centroid_offsets, isolated_bright_stars

pytestmark = pytest.mark.triton

MODEL = "gw_test"
# The generator as it starts training: its bicubic skip path only, which moves no light. The
# geometry is checked with it (random weights in the residual branch shift star centroids).
SKIP_MODEL = "gw_test_skip"
FIELD = (83.82, -5.39)  # 8 isolated catalogue stars brighter than G 18 within 3 arcmin in the local sky
RENDER_TIMEOUT_S = 240.0


def publish(store, seed: int, model: str = MODEL) -> int:
    torch.manual_seed(seed)
    generator = Generator(GeneratorConfig.demo())
    if model == MODEL:
        # A fresh generator's output conv is zero (it is its bicubic skip path); give it weights
        # so the residual branch, and with it the noise, shows in the picture.
        torch.nn.init.normal_(generator.out_conv.weight, std=0.05)
    return publish_generator(store, generator, model, {"run_id": f"seeded-{seed}"})["version"]


@pytest.fixture(scope="module")
def model_v1(store) -> int:
    if not versions(store, MODEL):
        publish(store, 0)
    if not versions(store, SKIP_MODEL):
        publish(store, 0, SKIP_MODEL)
    return versions(store, MODEL)[0]["version"]


@pytest.fixture(scope="module")
def gateway(stack, model_v1, tmp_path_factory):
    """A gateway of its own (fast model polling) on the stack's Triton, cutouts and S3."""
    proc = service_process(
        stack, ["services", "gateway"], tmp_path_factory.mktemp("gw"), "gateway", model_poll_s="0.5"
    ).start(timeout_s=60)
    yield proc
    proc.stop()


def request(**kw) -> gateway_pb2.RenderRequest:
    kw.setdefault("model_name", MODEL)
    kw.setdefault("fov_arcmin", 3.0)
    kw.setdefault("size", common_pb2.PixelGrid(width=256, height=256))
    if "position" not in kw and "name" not in kw:
        kw["position"] = common_pb2.SkyPosition(ra_deg=FIELD[0], dec_deg=FIELD[1])
    return gateway_pb2.RenderRequest(**kw)


def render(address: str, req: gateway_pb2.RenderRequest, timeout_s: float = RENDER_TIMEOUT_S):
    events: list[common_pb2.JobProgress] = []
    with GatewayClient(address, timeout_s=timeout_s) as client:
        result = client.render(req, events.append)
    return result, events


def status_of(address: str, req: gateway_pb2.RenderRequest, timeout_s: float = 60.0) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        render(address, req, timeout_s)
    return info.value.code(), info.value.details()


def fits_image(result) -> tuple[np.ndarray, WCS, fits.HDUList]:
    hdul = fits.open(io.BytesIO(result.fits))
    return np.asarray(hdul[0].data, dtype=np.float64), WCS(hdul[0].header).celestial, hdul


# -- the main path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "resolver", "centre", "tolerance_deg"),
    [
        ({"position": common_pb2.SkyPosition(ra_deg=FIELD[0], dec_deg=FIELD[1])}, "", FIELD, 1e-9),
        # The Orion Nebula, resolved by Sesame (SIMBAD's position): the same field as FIELD.
        ({"name": "M 42"}, "sesame", (83.8221, -5.3911), 0.005),
    ],
    ids=["coordinates", "name"],
)
def test_a_render_puts_catalogue_stars_where_its_wcs_says(gateway, target, resolver, centre, tolerance_deg) -> None:
    result, events = render(
        gateway.address,
        request(
            fov_arcmin=6.0,
            size=common_pb2.PixelGrid(width=384, height=320),
            want_fits=True,
            no_cache=True,
            model_name=SKIP_MODEL,
            **target,
        ),
    )
    asked = (result.footprint.center.ra_deg, result.footprint.center.dec_deg)
    assert result.resolver == resolver and asked == pytest.approx(centre, abs=tolerance_deg)
    assert {"cutout", "rendering", "encoding"} <= {e.stage for e in events}
    image, wcs, hdul = fits_image(result)
    assert image.shape == (3, 320, 384)
    assert hdul[0].header["DISCLAIM"] == DISCLAIMER and hdul[0].header["MODEL"] == SKIP_MODEL
    luminance = np.nan_to_num(image.sum(axis=0))
    sky = Sky()
    stars = isolated_bright_stars(sky, wcs, luminance.shape, *asked, 0.06)
    assert len(stars) >= 3, f"only {len(stars)} usable catalogue stars in the field"
    offsets = centroid_offsets(luminance, wcs, stars["ra"], stars["dec"], box=8)
    # 1 output px = 0.94 arcsec here; a quarter of a survey pixel is 1 output px.
    assert np.median(np.hypot(*offsets.T)) < 0.5, offsets
    # The check can fail: the same stars against a WCS 3 px off miss by about that much.
    shifted = wcs.deepcopy()
    shifted.wcs.crpix = wcs.wcs.crpix + np.array([3.0, 2.0])
    off = centroid_offsets(luminance, shifted, stars["ra"], stars["dec"], box=8)
    assert np.median(np.hypot(*off.T)) > 2.0
    # The footprint and the FITS agree, and the centre is the asked position.
    assert result.footprint.grid.width == 384 and result.footprint.grid.height == 320
    centre = wcs.pixel_to_world((384 - 1) / 2, (320 - 1) / 2)
    assert centre.ra.deg == pytest.approx(asked[0], abs=1e-4) and centre.dec.deg == pytest.approx(asked[1], abs=1e-4)


def test_the_png_says_it_is_an_ai_rendering_and_is_the_fits_upside_down(gateway) -> None:
    result, _ = render(gateway.address, request(want_fits=True))
    png = Image.open(io.BytesIO(result.png))
    assert png.size == (256, 256)
    assert png.text["Disclaimer"] == DISCLAIMER and "Digitized Sky Survey" in png.text["Copyright"]
    image, _, _ = fits_image(result)
    pixels = np.asarray(png.convert("RGB"), dtype=np.float64)[::-1].transpose(2, 0, 1) / 255.0
    top = slice(64, 256)  # away from the visible label in the bottom-left corner
    assert np.abs(pixels[:, top] - np.clip(image[:, top], 0, 1)).max() <= 1 / 255 + 1e-6
    p = result.provenance
    assert p.disclaimer == DISCLAIMER and p.model_name == MODEL and p.model_version
    assert p.inputs[0].bucket == "cutouts" and p.inputs[0].key
    assert float(p.parameters["fidelity"]) == 0.0 and p.parameters["seed"]
    side = Image.open(io.BytesIO(result.side_by_side_png))
    assert side.width > 2 * 256 and side.text["Disclaimer"] == DISCLAIMER


def test_a_named_target_is_resolved_and_framed(gateway) -> None:
    result, _ = render(gateway.address, request(name="M 13", fov_arcmin=0.0))
    assert result.resolver == "sesame"
    assert result.footprint.center.ra_deg == pytest.approx(250.4235, abs=0.01)
    assert result.footprint.center.dec_deg == pytest.approx(36.4613, abs=0.01)
    # No field of view asked: framed on the catalogue size of the cluster (16.6' in OpenNGC).
    assert 10.0 < result.footprint.fov_x_arcmin < 60.0
    assert result.provenance.parameters["fov_arcmin"]


def test_the_same_render_comes_from_the_cache(gateway) -> None:
    req = request(fov_arcmin=2.5, seed=int(time.time()))
    first, _ = render(gateway.address, req)
    second, events = render(gateway.address, req)
    assert not first.from_cache and second.from_cache
    assert second.png == first.png and second.cached.key == first.cached.key
    assert "rendering" not in {e.stage for e in events}


def test_samples_give_a_spread_map_and_fidelity_one_leaves_nothing_to_invent(gateway) -> None:
    vivid, _ = render(gateway.address, request(samples=3, fidelity=0.0, want_fits=True, no_cache=True))
    spread = fits.open(io.BytesIO(vivid.fits))["SPREAD"].data
    assert spread.shape == (256, 256) and np.nanmax(spread) > 1e-3
    overlay = Image.open(io.BytesIO(vivid.spread_png))
    assert overlay.mode == "RGBA" and overlay.size == (256, 256)
    faithful, _ = render(gateway.address, request(samples=3, fidelity=1.0, want_fits=True, no_cache=True))
    # The generator scales its noise by 1 - fidelity: at 1 every sample is the same picture.
    assert np.nanmax(fits.open(io.BytesIO(faithful.fits))["SPREAD"].data) < 1e-4


def test_tiled_render_equals_one_pass_away_from_the_borders(stack, gateway, tmp_path) -> None:
    """The same field through 1 tile (the default tile size) and through many small ones."""
    small = service_process(stack, ["services", "gateway"], tmp_path, "gw-small", render_tile_px="16").start(
        timeout_s=60
    )
    try:
        req = request(
            fov_arcmin=3.0, size=common_pb2.PixelGrid(width=256, height=256), want_fits=True, seed=3, no_cache=True
        )
        one, one_events = render(gateway.address, req)
        many, events = render(small.address, req)
    finally:
        small.stop()
    # One tile (the default 192 px) against four (the smallest tile the overlap allows).
    assert max(e.total for e in one_events if e.stage == "rendering") == 1
    assert max(e.total for e in events if e.stage == "rendering") == 4
    assert one.provenance.parameters["tile_px"] != many.provenance.parameters["tile_px"]
    a, _, _ = fits_image(one)
    b, _, _ = fits_image(many)
    assert np.abs(a - b)[:, 8:-8, 8:-8].max() < 1e-4


def test_a_new_model_version_is_served_without_a_restart(gateway, store) -> None:
    before, _ = render(gateway.address, request(no_cache=True))
    # A torn upload (files of the next version, not yet committed in versions.json) is never loaded.
    torn = max(v["version"] for v in versions(store, MODEL)) + 1
    store.put_bytes(BUCKET, f"{MODEL}/{torn}/model.pt", b"half an upload")
    time.sleep(1.5)
    still, _ = render(gateway.address, request(no_cache=True))
    assert still.provenance.model_version == before.provenance.model_version
    store.delete(BUCKET, f"{MODEL}/{torn}/model.pt")
    new = publish(store, int(torn))
    deadline = time.monotonic() + 60
    while True:
        after, _ = render(gateway.address, request(no_cache=True))
        if after.provenance.model_version == str(new) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after.provenance.model_version == str(new)
    assert after.png != before.png  # other weights, another picture
    # The previous version is still served when asked for by number; an unknown one is NOT_FOUND.
    older, _ = render(gateway.address, request(model_version=before.provenance.model_version))
    assert older.provenance.model_version == before.provenance.model_version
    code, details = status_of(gateway.address, request(model_version="999"))
    assert code == grpc.StatusCode.NOT_FOUND and "served versions" in details


def test_a_render_in_flight_finishes_on_its_version_while_a_new_one_replaces_it(
    stack, store, model_v1, tmp_path
) -> None:
    """One version kept loaded: publishing the next retires the current one, but not under a render."""
    proc = service_process(
        stack,
        ["services", "gateway"],
        tmp_path,
        "gw-keep-one",
        triton_keep_versions="1",
        model_poll_s="0.3",
        render_batch_tiles="1",  # one tile per request, one request at a time: the render spans the swap
        triton_max_in_flight="1",
    ).start(timeout_s=60)
    try:
        current, _ = render(proc.address, request(no_cache=True))
        old = current.provenance.model_version
        long = request(size=common_pb2.PixelGrid(width=2048, height=2048), fov_arcmin=6.0, no_cache=True)
        client = GatewayClient(proc.address, timeout_s=RENDER_TIMEOUT_S)
        stream = client.stub.Render(long, timeout=RENDER_TIMEOUT_S)
        progress = next(e.progress for e in stream if e.progress.stage == "rendering" and e.progress.done >= 1)
        assert progress.total >= 9
        new = publish(store, int(old) + 100)
        events = list(stream)  # the rest of the tiles, on the old version, while the new one loads
        result = events[-1].result
        assert result.provenance.model_version == old and result.png == b""  # the PNG came in chunks
        assert any(e.WhichOneof("event") == "chunk" for e in events)
        deadline = time.monotonic() + 30
        while (after := render(proc.address, request(no_cache=True))[0]).provenance.model_version != str(new):
            assert time.monotonic() < deadline, "the new version was not served"
            time.sleep(0.3)
        code, _ = status_of(proc.address, request(model_version=old))
        assert code == grpc.StatusCode.NOT_FOUND  # retired once no render used it
        assert after.png
    finally:
        proc.stop()


# -- bad input and failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "code", "words"),
    [
        ({"name": "No Such Object 12345"}, grpc.StatusCode.NOT_FOUND, "RA/Dec"),
        ({"position": common_pb2.SkyPosition(ra_deg=10.0, dec_deg=95.0)}, grpc.StatusCode.INVALID_ARGUMENT, "-90..90"),
        ({"fov_arcmin": 0.001}, grpc.StatusCode.INVALID_ARGUMENT, "fov_arcmin"),
        ({"size": common_pb2.PixelGrid(width=100000, height=16)}, grpc.StatusCode.INVALID_ARGUMENT, "4096"),
        ({"samples": 50}, grpc.StatusCode.INVALID_ARGUMENT, "samples"),
        ({"fidelity": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "fidelity"),
        ({"model_version": "latest"}, grpc.StatusCode.INVALID_ARGUMENT, "model_version"),
        ({"model_name": "no_such_model"}, grpc.StatusCode.FAILED_PRECONDITION, "export"),
        ({"survey": "no-such-survey"}, grpc.StatusCode.INVALID_ARGUMENT, "survey"),
    ],
)
def test_bad_input_gets_its_status_and_a_message(gateway, kw, code, words) -> None:
    got, details = status_of(gateway.address, request(**kw))
    assert got == code, details
    assert words in details


def test_a_version_trained_on_another_normalisation_is_refused_with_what_to_do(gateway, store) -> None:
    """A model exported before the input normalisation changed would be fed planes it never saw."""
    old = "gw_old_norm"
    version = publish(store, 3, old)
    key = f"{old}/{version}/provenance.json"
    store.put_json(BUCKET, key, {**store.get_json(BUCKET, key), "normalisation": "pss-norm-1"})
    code, details = status_of(gateway.address, request(model_name=old, no_cache=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "pss-norm-1" in details and "train and export a new version" in details


def test_triton_or_cutouts_down_is_unavailable_quickly(stack, model_v1, tmp_path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    for name, setting in (("gw-no-triton", {"triton_grpc_addr": closed}), ("gw-no-cutouts", {"cutouts_addr": closed})):
        proc = service_process(stack, ["services", "gateway"], tmp_path, name, **setting).start(timeout_s=60)
        try:
            started = time.monotonic()
            code, details = status_of(proc.address, request(no_cache=True, seed=11))
            assert code == grpc.StatusCode.UNAVAILABLE, details
            assert time.monotonic() - started < 15.0
            assert GatewayClient(proc.address).health() == "SERVING"
        finally:
            proc.stop()


def test_a_short_deadline_is_deadline_exceeded_and_the_gateway_stays_healthy(gateway) -> None:
    code, _ = status_of(
        gateway.address, request(size=common_pb2.PixelGrid(width=2048, height=2048), no_cache=True), timeout_s=1.0
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert GatewayClient(gateway.address).health() == "SERVING"


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    # `name` is a metric name, or a name with the start of its labels ('x{model="m"').
    prefixes = (name,) if "{" in name else (name + " ", name + "{")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefixes))


def test_overload_is_resource_exhausted_and_a_cancelled_render_frees_its_slot(stack, model_v1, tmp_path) -> None:
    proc = service_process(
        stack,
        ["services", "gateway"],
        tmp_path,
        "gw-small-queue",
        gateway_max_renders="1",
        gateway_max_queue="1",
        render_batch_tiles="1",
        triton_max_in_flight="2",
    ).start(timeout_s=60)
    try:
        # 64 tiles, one per Triton request, two in flight.
        big = request(size=common_pb2.PixelGrid(width=4096, height=4096), fov_arcmin=6.0, no_cache=True)
        client = GatewayClient(proc.address, timeout_s=RENDER_TIMEOUT_S)
        codes: list[grpc.StatusCode] = []
        before = _metric(stack.layout.triton_metrics, f'nv_inference_request_success{{model="{MODEL}"')
        first = client.stub.Render(big, timeout=RENDER_TIMEOUT_S)
        assert next(first).progress.stage  # the first render is running
        calls = [first, *(client.stub.Render(big, timeout=RENDER_TIMEOUT_S) for _ in range(3))]
        lock = threading.Lock()

        def drain(call) -> None:
            try:
                for _ in call:
                    pass
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=drain, args=(c,)) for c in calls[1:]]
        for t in threads:
            t.start()
        time.sleep(2.0)
        # One runs, one waits, the others are refused at once.
        with lock:
            refused = [c for c in codes if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 2, codes
        # Cancel the running and the waiting render: their slots come back and no more of their
        # tiles reach Triton.
        counted = f'nv_inference_request_success{{model="{MODEL}"'
        at_cancel = _metric(stack.layout.triton_metrics, counted)
        for call in calls:
            call.cancel()
        for t in threads:
            t.join(30)
        # The requests already in flight finish; then nothing more arrives.
        executed, settled_at = -1.0, time.monotonic()
        while time.monotonic() - settled_at < 3.0:
            now = _metric(stack.layout.triton_metrics, counted)
            if now != executed:
                executed, settled_at = now, time.monotonic()
            time.sleep(0.3)
        assert executed - at_cancel <= 3, f"{executed - at_cancel} tiles ran after the render was cancelled"
        assert executed - before < 64
        deadline = time.monotonic() + 15
        while _metric(proc.metrics_port, "pss_gateway_renders_running") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(proc.metrics_port, "pss_gateway_renders_running") == 0
        assert _metric(proc.metrics_port, "pss_gateway_renders_waiting") == 0
        assert client.health() == "SERVING"
        small, _ = render(proc.address, request(seed=21, no_cache=True))
        assert small.png
    finally:
        proc.stop()


def test_the_cli_writes_the_rendering_side_by_side_and_fits(gateway, tmp_path, capsys) -> None:
    out = tmp_path / "m13.png"
    code = cli_main(
        [
            "render",
            "M13",
            "--fov",
            "3",
            "--size",
            "256",
            "--out",
            str(out),
            "--fits",
            "--model",
            MODEL,
            "--address",
            gateway.address,
        ]
    )
    assert code == 0
    assert out.exists() and (tmp_path / "m13-side-by-side.png").exists() and (tmp_path / "m13.fits").exists()
    assert DISCLAIMER in capsys.readouterr().out
    code = cli_main(
        ["render", "--ra", "10", "--dec", "-95", "--model", MODEL, "--address", gateway.address, "--out", str(out)]
    )
    assert code == 1
    assert "-90..90" in capsys.readouterr().err
