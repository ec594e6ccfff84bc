"""Export a training run's generator as a new version of a Triton model in the `models` bucket.

Layout (Triton's model repository, read by Triton straight from S3):
  {model}/config.pbtxt            CPU, Python backend running model.pt (the local stack, CI)
  {model}/configs/gpu.pbtxt       GPU, pytorch_libtorch (Kubernetes: tritonserver --model-config-name=gpu)
  {model}/{n}/model.pt            TorchScript, dynamic height and width
  {model}/{n}/model.py            the generic Python-backend loader (ignored by libtorch)
  {model}/{n}/provenance.json     run, dataset, step, normalisation, check against the eager model
  {model}/versions.json           published versions, newest last: the commit point

A version's files are all uploaded before versions.json names it, and Triton (explicit model control)
loads a version only when told to, after that: a reader never sees half a version. Inputs are
INPUT__0 the normalised survey [B,3,h,w] (services.model.normalise), INPUT__1 noise [B,4,h,w] and
INPUT__2 fidelity [B,1]; OUTPUT__0 the rendering [B,3,scale*h,scale*w] in display values 0..1.
"""

from __future__ import annotations

import io
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from deploy.triton.model_config import (
    TensorSpec,
    WarmupSample,
    cpu_python_config,
    gpu_libtorch_config,
    input_name,
    output_name,
)
from deploy.triton.placeholder import GENERIC_MODEL_PY
from services.model import normalise
from services.model.generator import INPUT_CHANNELS, NOISE_CHANNELS, Generator, GeneratorConfig, script
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.objectstore import ObjectNotFound, ObjectStore
from services.trainer import runs

BUCKET = runs.BUCKET
DEFAULT_MODEL = "generator"
MAX_BATCH_SIZE = 8
MAX_EAGER_DIFFERENCE = 1e-4
MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
INPUTS = (
    TensorSpec(input_name(0), "TYPE_FP32", (INPUT_CHANNELS, -1, -1)),
    TensorSpec(input_name(1), "TYPE_FP32", (NOISE_CHANNELS, -1, -1)),
    TensorSpec(input_name(2), "TYPE_FP32", (1,)),
)
OUTPUTS = (TensorSpec(output_name(0), "TYPE_FP32", (3, -1, -1)),)


def validate_model_name(name: str) -> str:
    if not MODEL_NAME_RE.match(name or ""):
        raise InvalidArgument("model_name", f"{name!r} is not a model name (lower-case letters, digits, '_')")
    return name


def python_config(model: str) -> str:
    return cpu_python_config(model, INPUTS, OUTPUTS, MAX_BATCH_SIZE)


def gpu_config(model: str, warmup_px: int = 64) -> str:
    dims = {
        INPUTS[0].name: (INPUT_CHANNELS, warmup_px, warmup_px),
        INPUTS[1].name: (NOISE_CHANNELS, warmup_px, warmup_px),
        INPUTS[2].name: (1,),
    }
    warmup = WarmupSample(name="warmup_tile", batch_size=1, dims=dims, count=3)
    return gpu_libtorch_config(model, INPUTS, OUTPUTS, MAX_BATCH_SIZE, warmup)


def generator_from_checkpoint(state: dict[str, Any]) -> Generator:
    """The EMA weights: what the run validated and evaluated."""
    generator = Generator(GeneratorConfig.from_dict(state["generator"]))
    generator.load_state_dict(state["trainer"]["ema"])
    return generator.eval()


def check_against_eager(generator: Generator, module: torch.jit.ScriptModule, sizes=((24, 40), (37, 29))) -> float:
    """Max |scripted - eager| over two odd sizes and both fidelity ends (dynamic H/W works)."""
    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for h, w in sizes:
            x = torch.randn(2, INPUT_CHANNELS, h, w, generator=gen) * 0.3
            noise = torch.randn(2, NOISE_CHANNELS, h, w, generator=gen)
            fidelity = torch.tensor([[0.0], [1.0]])
            a, b = generator(x, noise, fidelity), module(x, noise, fidelity)
            worst = max(worst, float((a - b).abs().max()))
    return worst


def versions(store: ObjectStore, model: str) -> list[dict[str, Any]]:
    try:
        return store.get_json(BUCKET, f"{model}/versions.json")["versions"]
    except ObjectNotFound:
        return []


def _next_version(store: ObjectStore, model: str) -> int:
    """One past every version named in versions.json or present as a folder (a torn export's)."""
    taken = {int(v["version"]) for v in versions(store, model)}
    for key in store.list_keys(BUCKET, f"{model}/"):
        part = key[len(model) + 1 :].split("/", 1)[0]
        if part.isdigit():
            taken.add(int(part))
    return max(taken, default=0) + 1


def export_run(store: ObjectStore, run_id: str, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """Publish run_id's last checkpoint as the next version of ``model``; returns its provenance."""
    validate_model_name(model)
    run = runs.load_run(store, run_id)
    restored = runs.load_checkpoint(store, run_id)
    if restored is None:
        raise FailedPrecondition(f"run {run_id} has no checkpoint yet: train it first")
    state, summary = restored
    generator = generator_from_checkpoint(state)
    report = runs.read_json(store, run_id, "report.json") or {}
    about = {
        "run_id": run_id,
        "dataset": run["dataset"],
        "config": run["config_name"],
        "step": int(state["step"]),
        "checkpoint_sha256": summary.get("sha256", ""),
        "test_headline": report.get("headline", {}),
    }
    return publish_generator(store, generator, model, about)


def publish_generator(store: ObjectStore, generator: Generator, model: str, about: dict[str, Any]) -> dict[str, Any]:
    """Script `generator`, check it against the eager model and publish it as the next version of
    `model`; `about` (where it comes from) goes into its provenance.json, which is returned."""
    validate_model_name(model)
    generator = generator.eval()
    module = script(generator)
    difference = check_against_eager(generator, module)
    if difference > MAX_EAGER_DIFFERENCE:
        raise FailedPrecondition(
            f"the TorchScript export differs from the eager model by {difference:.2e} > {MAX_EAGER_DIFFERENCE:g}"
        )
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with tempfile.TemporaryDirectory() as tmp:  # torch.jit.save wants a path for extra files
            path = Path(tmp) / "model.pt"
            module.save(str(path))
            buf.write(path.read_bytes())
    version = _next_version(store, model)
    provenance = {
        "model": model,
        "version": version,
        **about,
        "generator": generator.config.to_dict(),
        "scale": int(generator.config.scale),
        "normalisation": normalise.VERSION,
        "noise_channels": NOISE_CHANNELS,
        "input_channels": INPUT_CHANNELS,
        "eager_max_abs_difference": difference,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    prefix = f"{model}/{version}"
    store.put_bytes(BUCKET, f"{prefix}/model.pt", buf.getvalue())
    store.put_bytes(BUCKET, f"{prefix}/model.py", GENERIC_MODEL_PY.read_bytes(), content_type="text/x-python")
    store.put_json(BUCKET, f"{prefix}/provenance.json", provenance)
    store.put_bytes(BUCKET, f"{model}/config.pbtxt", python_config(model).encode(), content_type="text/plain")
    store.put_bytes(BUCKET, f"{model}/configs/gpu.pbtxt", gpu_config(model).encode(), content_type="text/plain")
    published = [
        *versions(store, model),
        {"version": version, "run_id": about.get("run_id", ""), "exported": provenance["exported"]},
    ]
    store.put_json(BUCKET, f"{model}/versions.json", {"model": model, "versions": published})
    return provenance
