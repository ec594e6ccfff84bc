"""Render Triton `config.pbtxt` files for TorchScript models.

The same model is served two ways: by the Python backend on CPU (local stack,
CI) and by the libtorch backend on GPU (Kubernetes). Both configs use the
libtorch tensor naming convention (INPUT__0, OUTPUT__0, ...) so clients never
need to know which backend answers them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Backend = Literal["python", "libtorch"]
InstanceKind = Literal["KIND_CPU", "KIND_GPU"]

# libtorch maps tensors to forward() arguments/results by the `__<index>` suffix.
_LIBTORCH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*__\d+$")
_DATA_TYPES = frozenset(
    {
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_UINT16",
        "TYPE_UINT32",
        "TYPE_UINT64",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
        "TYPE_BF16",
        "TYPE_STRING",
    }
)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. `dims` excludes the batch dimension when
    the model is batched (max_batch_size > 0); -1 marks a dynamic dimension."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.data_type not in _DATA_TYPES:
            raise ValueError(f"tensor {self.name!r}: unknown data_type {self.data_type!r}")
        if any(d < -1 or d == 0 for d in self.dims):
            raise ValueError(f"tensor {self.name!r}: dims must be positive or -1, got {self.dims}")


@dataclass(frozen=True)
class WarmupSample:
    """A warm-up request Triton runs before marking the model ready.

    libtorch's profiling executor specialises on the first calls, so warming
    up with a realistic shape keeps that cost out of the first user request.
    `dims` must be concrete (no -1) and exclude the batch dimension."""

    name: str
    batch_size: int
    dims: Mapping[str, tuple[int, ...]]
    random_data: bool = True
    count: int = 1


@dataclass(frozen=True)
class _Options:
    instance_count: int
    gpus: tuple[int, ...]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_microseconds: int
    warmup: tuple[WarmupSample, ...]
    parameters: dict[str, str]


def input_name(index: int) -> str:
    return f"INPUT__{index}"


def output_name(index: int) -> str:
    return f"OUTPUT__{index}"


def render_config(
    name: str,
    backend: Backend,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    dynamic_batching: bool,
    instance_kind: InstanceKind,
    *,
    instance_count: int = 1,
    gpus: Sequence[int] = (),
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_delay_microseconds: int = 0,
    warmup: Sequence[WarmupSample] = (),
    parameters: Mapping[str, str] | None = None,
) -> str:
    """Return config.pbtxt text for a TorchScript model served by `backend`.

    `parameters` become model `parameters` entries (string values), e.g.
    INFERENCE_MODE for libtorch or TORCH_NUM_THREADS for our Python model.
    `warmup` is honoured by both backends but matters most for libtorch on GPU.
    """
    opts = _Options(
        instance_count,
        tuple(gpus),
        tuple(preferred_batch_sizes),
        max_queue_delay_microseconds,
        tuple(warmup),
        dict(parameters or {}),
    )
    _validate(backend, inputs, outputs, max_batch_size, dynamic_batching, opts)
    lines = [f"name: {_quote(name)}"]
    if backend == "libtorch":
        lines.append('platform: "pytorch_libtorch"')
        lines.append('default_model_filename: "model.pt"')
    else:
        lines.append('backend: "python"')
    lines.append(f"max_batch_size: {max_batch_size}")
    lines.append(_tensor_block("input", inputs))
    lines.append(_tensor_block("output", outputs))
    lines.append(_instance_group(instance_kind, opts))
    if dynamic_batching:
        lines.append(_dynamic_batching(opts))
    if opts.parameters:
        lines.append(_parameters(opts.parameters))
    if opts.warmup:
        lines.append(_warmup(opts.warmup, inputs))
    return "\n".join(lines) + "\n"


def _validate(
    backend: Backend,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    dynamic_batching: bool,
    opts: _Options,
) -> None:
    if not inputs or not outputs:
        raise ValueError("a model needs at least one input and one output")
    if max_batch_size < 0:
        raise ValueError("max_batch_size must be >= 0")
    if dynamic_batching and max_batch_size == 0:
        raise ValueError("dynamic batching needs max_batch_size > 0")
    if opts.instance_count < 1:
        raise ValueError("instance_count must be >= 1")
    names = [t.name for t in (*inputs, *outputs)]
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names must be unique: {names}")
    if backend == "libtorch":
        bad = [n for n in names if not _LIBTORCH_NAME.match(n)]
        if bad:
            raise ValueError(f"libtorch tensor names must look like INPUT__0: {bad}")
    for sample in opts.warmup:
        _validate_warmup(sample, inputs, max_batch_size)


def _validate_warmup(sample: WarmupSample, inputs: Sequence[TensorSpec], max_batch_size: int) -> None:
    if set(sample.dims) != {t.name for t in inputs}:
        raise ValueError(f"warm-up {sample.name!r} must give dims for every input")
    if max_batch_size and not 1 <= sample.batch_size <= max_batch_size:
        raise ValueError(f"warm-up {sample.name!r}: batch_size outside 1..{max_batch_size}")
    for spec in inputs:
        dims = sample.dims[spec.name]
        fits = len(dims) == len(spec.dims) and all(
            d > 0 and (s == -1 or s == d) for d, s in zip(dims, spec.dims, strict=True)
        )
        if not fits:
            raise ValueError(f"warm-up {sample.name!r}: dims {dims} do not fit {spec.name} {spec.dims}")


def _quote(text: str) -> str:
    # Protobuf text format accepts C-style escapes, a superset of JSON's.
    return json.dumps(text)


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(kind: str, tensors: Sequence[TensorSpec]) -> str:
    entries = [
        f"  {{\n    name: {_quote(t.name)}\n    data_type: {t.data_type}\n    dims: {_dims(t.dims)}\n  }}"
        for t in tensors
    ]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def _instance_group(kind: InstanceKind, opts: _Options) -> str:
    body = f"    count: {opts.instance_count}\n    kind: {kind}\n"
    if kind == "KIND_GPU" and opts.gpus:
        body += f"    gpus: {_dims(opts.gpus)}\n"
    return "instance_group [\n  {\n" + body + "  }\n]"


def _dynamic_batching(opts: _Options) -> str:
    body = ""
    if opts.preferred_batch_sizes:
        body += f"  preferred_batch_size: {_dims(opts.preferred_batch_sizes)}\n"
    body += f"  max_queue_delay_microseconds: {opts.max_queue_delay_microseconds}\n"
    return "dynamic_batching {\n" + body + "}"


def _parameters(parameters: Mapping[str, str]) -> str:
    entries = [
        f"parameters {{\n  key: {_quote(k)}\n  value: {{ string_value: {_quote(v)} }}\n}}"
        for k, v in sorted(parameters.items())
    ]
    return "\n".join(entries)


def _warmup(samples: Sequence[WarmupSample], inputs: Sequence[TensorSpec]) -> str:
    rendered = []
    for sample in samples:
        data = "random_data: true" if sample.random_data else "zero_data: true"
        tensors = "".join(
            f"    inputs {{\n      key: {_quote(t.name)}\n      value {{\n"
            f"        data_type: {t.data_type}\n        dims: {_dims(sample.dims[t.name])}\n"
            f"        {data}\n      }}\n    }}\n"
            for t in inputs
        )
        rendered.append(
            f"  {{\n    name: {_quote(sample.name)}\n    batch_size: {sample.batch_size}\n"
            f"    count: {sample.count}\n{tensors}  }}"
        )
    return "model_warmup [\n" + ",\n".join(rendered) + "\n]"


def cpu_python_config(
    name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_batch_size: int
) -> str:
    """The local serving of a TorchScript model: the Python backend on CPU, running exactly the
    batches it is sent. No dynamic batching: on CPU, merging requests in flight into bigger batches
    made the gateway's tiles slower, not faster (``python -m bench gateway``: 0.54-0.84x the tiles/s
    without it, +39 % on a 4096² render's tiles), and the gateway already batches its own tiles."""
    return render_config(
        name,
        "python",
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        dynamic_batching=False,
        instance_kind="KIND_CPU",
    )


def gpu_libtorch_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    warmup: WarmupSample,
    instance_count: int = 1,
) -> str:
    """The same model on GPU nodes: libtorch, dynamic batching (preferred 4 and 8), a warm-up
    request, inference mode. Same tensor names and model.pt as the Python variant; the version
    directory's model.py is simply ignored."""
    return render_config(
        name,
        "libtorch",
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        dynamic_batching=True,
        instance_kind="KIND_GPU",
        instance_count=instance_count,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_microseconds=2000,
        warmup=(warmup,),
        parameters={"INFERENCE_MODE": "true"},
    )
