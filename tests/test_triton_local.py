"""The real tritonserver (from the nvidia-pytriton wheel) serving bicubic_x4
through the Python backend, exactly as the local stack runs it."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from deploy.localstack import procs
from deploy.localstack.triton import (
    TritonInstall,
    TritonStartError,
    install_triton,
    triton_command,
    triton_env,
    wait_triton_ready,
)
from deploy.triton.model_config import TensorSpec, WarmupSample, render_config
from deploy.triton.placeholder import (
    INPUTS,
    MODEL_NAME,
    OUTPUTS,
    gpu_config,
    python_config,
    write_model_repository,
)

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "triton"
# Same model.pt, but a long queue delay so concurrent requests reliably
# share one execute() call and exercise the batch concatenation path.
BATCHING_MODEL = "bicubic_x4_batching"
READY_TIMEOUT_S = 90.0
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    repository: Path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launch(
    install: TritonInstall, repository: Path, models: list[str], log: Path, request: pytest.FixtureRequest
) -> Server:
    http, grpc, metrics = _free_ports(3)
    cmd = triton_command(install, str(repository), http, grpc, metrics, models)
    proc = procs.spawn(log.stem, cmd, triton_env(install, os.environ), log.parent)
    # Registered before waiting, so a server that never gets ready is stopped too.
    request.addfinalizer(lambda: procs.stop_pid(proc.pid, 15.0))
    return Server(f"127.0.0.1:{grpc}", proc, log, repository)


@pytest.fixture(scope="module")
def install() -> TritonInstall:
    return install_triton(CACHE_DIR)


@pytest.fixture(scope="module")
def server(install: TritonInstall, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Server:
    root = tmp_path_factory.mktemp("models")
    write_model_repository(root)
    _write_batching_variant(root)
    started = _launch(install, root, [MODEL_NAME, BATCHING_MODEL], root.parent / "triton.log", request)
    wait_triton_ready(started.url, READY_TIMEOUT_S, started.proc, started.log)
    return started


@pytest.fixture
def client(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.url) as c:
        yield c


@pytest.fixture(scope="module")
def reference(server: Server) -> torch.jit.ScriptModule:
    # The very file Triton serves; torch.jit.load warns that TorchScript is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(server.repository / MODEL_NAME / "1" / "model.pt"))


def _write_batching_variant(root: Path) -> None:
    source = root / MODEL_NAME / "1"
    target = root / BATCHING_MODEL / "1"
    target.mkdir(parents=True)
    for name in ("model.pt", "model.py"):
        (target / name).write_bytes((source / name).read_bytes())
    config = render_config(
        BATCHING_MODEL,
        "python",
        INPUTS,
        OUTPUTS,
        max_batch_size=8,
        dynamic_batching=True,
        instance_kind="KIND_CPU",
        max_queue_delay_microseconds=300_000,
    )
    (root / BATCHING_MODEL / "config.pbtxt").write_text(config)


def _infer(client: grpcclient.InferenceServerClient, model: str, image: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput(INPUTS[0].name, list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    result = client.infer(model, [tensor], client_timeout=CALL_TIMEOUT_S)
    output = result.as_numpy(OUTPUTS[0].name)
    assert output is not None
    return output


def _expected(module: torch.jit.ScriptModule, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(image)).numpy()


def _random_images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_single_image_matches_torchscript(
    client: grpcclient.InferenceServerClient, reference: torch.jit.ScriptModule
) -> None:
    image = _random_images((1, 3, 32, 40), seed=1)
    output = _infer(client, MODEL_NAME, image)
    assert output.shape == (1, 3, 128, 160)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, _expected(reference, image), rtol=0, atol=1e-5)
    assert output.min() >= 0.0 and output.max() <= 1.0


def test_batch_with_other_size(client: grpcclient.InferenceServerClient, reference: torch.jit.ScriptModule) -> None:
    image = _random_images((2, 3, 24, 17), seed=2)
    output = _infer(client, MODEL_NAME, image)
    assert output.shape == (2, 3, 96, 68)
    np.testing.assert_allclose(output, _expected(reference, image), rtol=0, atol=1e-5)


def test_concurrent_requests_are_batched_and_split_back(
    client: grpcclient.InferenceServerClient, reference: torch.jit.ScriptModule
) -> None:
    # Two image sizes in flight at once: same-size requests get concatenated,
    # different sizes must not be, and every caller gets its own result back.
    shapes = [(1, 3, 8, 8), (2, 3, 8, 8), (1, 3, 6, 10), (1, 3, 8, 8), (1, 3, 6, 10)]
    images = [_random_images(shape, seed=10 + i) for i, shape in enumerate(shapes)]
    done: queue.Queue[tuple[int, grpcclient.InferResult | None, InferenceServerException | None]] = queue.Queue()
    for index, image in enumerate(images):
        tensor = grpcclient.InferInput(INPUTS[0].name, list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        client.async_infer(
            BATCHING_MODEL,
            [tensor],
            callback=lambda result, error, i=index: done.put((i, result, error)),
            client_timeout=CALL_TIMEOUT_S,
        )
    for _ in images:
        index, result, error = done.get(timeout=CALL_TIMEOUT_S)
        assert error is None, error
        assert result is not None
        output = result.as_numpy(OUTPUTS[0].name)
        np.testing.assert_allclose(output, _expected(reference, images[index]), rtol=0, atol=1e-5)
    stats = client.get_inference_statistics(BATCHING_MODEL, as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) < int(stats["inference_count"]), stats


def test_unknown_model_is_a_clear_error(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no_such_model"):
        _infer(client, "no_such_model", _random_images((1, 3, 4, 4), seed=3))


def test_model_error_becomes_response_error(client: grpcclient.InferenceServerClient) -> None:
    # A zero-height image passes Triton's shape checks but fails in torch: the
    # client gets that error and the instance keeps serving.
    with pytest.raises(InferenceServerException, match="inference failed: RuntimeError"):
        _infer(client, MODEL_NAME, np.zeros((1, 3, 0, 5), dtype=np.float32))
    assert _infer(client, MODEL_NAME, _random_images((1, 3, 4, 4), seed=4)).shape == (1, 3, 16, 16)


def test_missing_model_at_start_fails_with_log(
    install: TritonInstall, server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    log = tmp_path / "triton.log"
    started = _launch(install, server.repository, ["no_such_model"], log, request)
    with pytest.raises(TritonStartError, match="no_such_model"):
        wait_triton_ready(started.url, READY_TIMEOUT_S, started.proc, log)
    assert started.proc.poll() is not None


def test_configs_parse_as_triton_model_config() -> None:
    cpu = text_format.Parse(python_config(), model_config_pb2.ModelConfig())
    gpu = text_format.Parse(gpu_config(), model_config_pb2.ModelConfig())
    assert (cpu.backend, gpu.platform) == ("python", "pytorch_libtorch")
    for config in (cpu, gpu):
        assert [t.name for t in config.input] == ["INPUT__0"]
        assert [t.name for t in config.output] == ["OUTPUT__0"]
        assert list(config.input[0].dims) == [3, -1, -1]
    assert gpu.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(gpu.model_warmup[0].inputs["INPUT__0"].dims) == [3, 256, 256]
    assert gpu.parameters["INFERENCE_MODE"].string_value == "true"


def test_render_config_rejects_inconsistent_specs() -> None:
    spec = TensorSpec("image", "TYPE_FP32", (3, -1, -1))
    with pytest.raises(ValueError, match="INPUT__0"):
        render_config("m", "libtorch", [spec], OUTPUTS, 8, True, "KIND_GPU")
    with pytest.raises(ValueError, match="max_batch_size"):
        render_config("m", "python", INPUTS, OUTPUTS, 0, True, "KIND_CPU")
    bad_warmup = WarmupSample("w", 1, {INPUTS[0].name: (3, -1, 64)})
    with pytest.raises(ValueError, match="do not fit"):
        render_config("m", "libtorch", INPUTS, OUTPUTS, 8, True, "KIND_GPU", warmup=[bad_warmup])
