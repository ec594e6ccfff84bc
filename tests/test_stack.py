"""The local stack comes up from nothing and every component is healthy, observable
and reachable the way production reaches it (real S3, real Triton, real services)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as tritonclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from deploy.localstack.stack import PLACEHOLDER_MODEL, Stack
from deploy.triton import placeholder
from services.api import common_pb2, gateway_pb2, trainer_pb2
from services.client import SERVICES, client_for
from services.client.addresses import REPLICAS
from services.client.channel import open_channel

pytestmark = pytest.mark.stack


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_component_is_healthy(stack: Stack) -> None:
    health = {h.name: h for h in stack.health()}
    assert set(health) == {*SERVICES, "triton", "object-store", *(f"replica:{r}" for r in REPLICAS)}
    assert all(h.ok for h in health.values()), health
    assert PLACEHOLDER_MODEL in health["triton"].detail


@pytest.mark.parametrize("service", SERVICES)
def test_service_answers_standard_health_and_reflection(stack: Stack, service: str) -> None:
    channel = open_channel(stack.env()[f"PSS_{service.upper()}_ADDR"])
    health = health_pb2_grpc.HealthStub(channel)
    own = f"prettyspace.v1.{service.capitalize()}"
    for name in ("", own, "prettyspace.v1.Jobs"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = {s.name for s in next(responses).list_services_response.service}
    assert {own, "prettyspace.v1.Jobs", "grpc.health.v1.Health"} <= listed
    channel.close()


def test_metrics_endpoint_moves_after_a_call(stack: Stack) -> None:
    _, metrics_port = stack.layout.services["crawler"]
    labels = {"grpc_service": "prettyspace.v1.Jobs", "grpc_method": "ListJobs", "grpc_code": "OK"}
    before = metric_value(metrics_text(metrics_port), "grpc_server_handled_total", **labels)
    with client_for("crawler", stack.env()["PSS_CRAWLER_ADDR"]) as client:
        client.jobs.list()
        client.jobs.list()
    text = metrics_text(metrics_port)
    assert metric_value(text, "grpc_server_handled_total", **labels) == before + 2
    assert metric_value(text, "grpc_server_handling_seconds_count", grpc_method="ListJobs") >= 2
    assert "# TYPE prettyspace_jobs_finished_total counter" in text


def test_malformed_request_is_invalid_argument_not_internal(stack: Stack) -> None:
    channel = open_channel(stack.env()["PSS_CRAWLER_ADDR"])
    raw = channel.unary_unary("/prettyspace.v1.Jobs/GetJob")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in info.value.details()
    # The server is unharmed.
    with client_for("crawler", stack.env()["PSS_CRAWLER_ADDR"]) as client:
        assert client.health() == "SERVING"
    channel.close()


def test_bad_job_queries_get_clear_statuses(stack: Stack) -> None:
    with client_for("cutouts", stack.env()["PSS_CUTOUTS_ADDR"]) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.jobs.get("NOT A JOB ID")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a job id" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            client.jobs.get("crawl-20260101000000-deadbeef")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            client.jobs.stub.ListJobs(common_pb2.ListJobsRequest(limit=5000), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "1000" in info.value.details()


def test_the_stacks_gateway_resolves_names_through_the_sesame_replica(stack: Stack) -> None:
    with client_for("gateway", stack.env()["PSS_GATEWAY_ADDR"]) as client:
        found = client.stub.ResolveName(gateway_pb2.ResolveNameRequest(name="M51"), timeout=10)
    assert found.resolver == "sesame"
    assert (found.position.ra_deg, found.position.dec_deg) == pytest.approx((202.4696, 47.1952), abs=0.01)


def test_the_trainer_answers_a_bad_run_id_clearly(stack: Stack) -> None:
    with client_for("trainer", stack.env()["PSS_TRAINER_ADDR"]) as client, pytest.raises(grpc.RpcError) as info:
        client.stub.GetRun(trainer_pb2.RunRef(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_triton_serves_the_model_repository_in_s3(stack: Stack) -> None:
    """Triton reads its repository from the `models` bucket and serves the baseline."""
    image = np.random.default_rng(1).random((1, 3, 16, 20), dtype=np.float32)
    client = tritonclient.InferenceServerClient(stack.env()["PSS_TRITON_GRPC_ADDR"])
    try:
        assert client.is_model_ready(PLACEHOLDER_MODEL)
        inputs = [tritonclient.InferInput("INPUT__0", list(image.shape), "FP32")]
        inputs[0].set_data_from_numpy(image)
        result = client.infer(PLACEHOLDER_MODEL, inputs).as_numpy("OUTPUT__0")
    finally:
        client.close()
    expected = placeholder.build_module()(torch.from_numpy(image)).numpy()
    assert result.shape == (1, 3, 64, 80)
    np.testing.assert_allclose(result, expected, atol=1e-5)
    stored = stack.store().list_keys("models", f"{PLACEHOLDER_MODEL}/")
    assert f"{PLACEHOLDER_MODEL}/config.pbtxt" in stored and f"{PLACEHOLDER_MODEL}/1/model.pt" in stored


def test_cli_status_reports_every_component(stack: Stack) -> None:
    env = {**os.environ, **stack.env()}
    out = subprocess.run(
        [sys.executable, "-m", "services.client.cli", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in (*SERVICES, "triton", "object-store"):
        assert any(line.startswith("ok ") and f" {name} " in line + " " for line in out.stdout.splitlines()), name


def test_cli_status_fails_when_a_service_is_down(stack: Stack) -> None:
    env = {**os.environ, **stack.env(), "PSS_GATEWAY_ADDR": "127.0.0.1:1"}
    out = subprocess.run(
        [sys.executable, "-m", "services.client.cli", "status", "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert any(line.startswith("!! gateway") and "UNREACHABLE" in line for line in out.stdout.splitlines())


def test_replicas_of_the_real_sites_are_reachable_through_the_stack_settings(stack: Stack) -> None:
    """The settings the platform will read (PSS_*_URL) lead to working replicas."""
    from astropy import units as u
    from astropy.coordinates import Angle, Latitude, Longitude
    from astropy.io import fits
    from astroquery.hips2fits import hips2fitsClass

    env = stack.env()
    with urllib.request.urlopen(env["PSS_ESAHUBBLE_URL"] + "/robots.txt", timeout=10) as response:
        assert "Disallow: /admin/" in response.read().decode()
    hips2fits = hips2fitsClass()
    hips2fits.server = env["PSS_HIPS2FITS_URL"]
    hdul = hips2fits.query(
        hips="CDS/P/DSS2/color",
        width=64,
        height=48,
        ra=Longitude(10 * u.deg),
        dec=Latitude(20 * u.deg),
        fov=Angle(0.02 * u.deg),
        projection="TAN",
        format="fits",
    )
    assert isinstance(hdul, fits.HDUList) and hdul[0].data.shape == (3, 48, 64)
    with urllib.request.urlopen(env["PSS_GAIA_TAP_URL"] + "/availability", timeout=10) as response:
        assert response.status == 200


def test_demo_preview_shows_both_views_of_the_same_fields(stack: Stack, tmp_path) -> None:
    from PIL import Image

    from deploy.localstack.demo import crawl_archives, cut_surveys, preview_embedded_sky

    # The demo's main job: the stack's crawler crawls the archive replica (one listing page here).
    job = crawl_archives(stack, max_pages=1, sources=("esahubble",))
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert job.progress.counters["new"] > 10 and job.progress.counters["images"] > 10
    # ... and the cutouts service cuts the surveys for what was crawled.
    cut = cut_surveys(stack, sources=("esahubble",))
    assert cut.state == common_pb2.JOB_STATE_SUCCEEDED, cut
    assert cut.progress.counters["fetched"] >= 2 * job.progress.counters["new"]
    assert cut.progress.counters.get("errors", 0) == 0
    paths = preview_embedded_sky(stack, tmp_path, count=2)
    assert len(paths) == 2
    for path in paths:
        image = np.asarray(Image.open(path).convert("L"), dtype=float)
        half = image.shape[1] // 2
        # Neither view is blank: the survey (left) and the outreach image (right) both show the field.
        assert image[30:, : half - 10].std() > 3 and image[30:, half + 10 :].std() > 3
