"""Baseline `bicubic_x4` super-resolution model and its Triton repository.

It is a real, weight-free model: bicubic x4 upsampling of float32 RGB in
[0, 1]. It lets the whole serving path (repository in S3, Triton, clients)
run before any trained model exists, and is the quality baseline trained
models must beat.

Usage: python -m deploy.triton.placeholder OUT_DIR [--version N]
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deploy.triton.model_config import (
    TensorSpec,
    WarmupSample,
    cpu_python_config,
    gpu_libtorch_config,
    input_name,
    output_name,
)

MODEL_NAME = "bicubic_x4"
SCALE = 4
MAX_BATCH_SIZE = 8
INPUTS = (TensorSpec(input_name(0), "TYPE_FP32", (3, -1, -1)),)
OUTPUTS = (TensorSpec(output_name(0), "TYPE_FP32", (3, -1, -1)),)
GENERIC_MODEL_PY = Path(__file__).resolve().parent / "python_backend" / "model.py"


class BicubicX4(nn.Module):
    """float32 [B, 3, H, W] in [0, 1] -> [B, 3, 4H, 4W] clamped to [0, 1]."""

    # A TorchScript constant; scripted code cannot read module globals.
    __constants__ = ["scale"]

    def __init__(self) -> None:
        super().__init__()
        self.scale = float(SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError("expected a [B, 3, H, W] tensor")
        # Bicubic overshoots near edges; clamping keeps the output a valid image.
        y = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return y.clamp(0.0, 1.0)


def build_module() -> torch.jit.ScriptModule:
    # TorchScript is deprecated in torch but is what Triton's libtorch
    # backend loads, so it stays the exchange format; silence the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(BicubicX4().eval())


def python_config() -> str:
    """CPU config for the Python backend (local stack, CI)."""
    return cpu_python_config(MODEL_NAME, INPUTS, OUTPUTS, MAX_BATCH_SIZE)


def gpu_config(instance_count: int = 1, warmup_size: int = 256) -> str:
    """GPU config for the libtorch backend (Kubernetes)."""
    warmup = WarmupSample(
        name="warmup_rgb", batch_size=1, dims={INPUTS[0].name: (3, warmup_size, warmup_size)}, count=3
    )
    return gpu_libtorch_config(MODEL_NAME, INPUTS, OUTPUTS, MAX_BATCH_SIZE, warmup, instance_count)


def write_model_repository(root: Path, version: int = 1) -> list[Path]:
    """Write bicubic_x4 (Python backend) under `root`; return the written
    files relative to `root`, i.e. the S3 keys for the `models` bucket."""
    if version < 1:
        raise ValueError("Triton model versions start at 1")
    model_dir = root / MODEL_NAME
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(python_config())
    build_module().save(str(version_dir / "model.pt"))
    shutil.copyfile(GENERIC_MODEL_PY, version_dir / "model.py")
    return [
        Path(MODEL_NAME, "config.pbtxt"),
        Path(MODEL_NAME, str(version), "model.pt"),
        Path(MODEL_NAME, str(version), "model.py"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args()
    for key in write_model_repository(args.root, args.version):
        print(key.as_posix())


if __name__ == "__main__":
    main()
