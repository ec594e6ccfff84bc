"""Generic Triton Python-backend model serving a TorchScript `model.pt`.

Copied next to `model.pt` in each version directory. Inputs are passed to the
TorchScript module positionally in config order; its result (a tensor or a
tuple/list of tensors) is returned under the config's output names.

Tensors cross the Triton boundary through DLPack instead of numpy: the
stub's numpy bridge is built against numpy 1 and returns wrong or empty data
when numpy 2 is installed in the model environment.

Config parameters (all optional, string values):
  TORCH_NUM_THREADS          intra-op threads per instance
                             (default: CPU cores / instance count)
  TORCH_NUM_INTEROP_THREADS  inter-op threads per instance (default: 1)
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils  # provided by the stub

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "TYPE_BOOL": torch.bool,
    "TYPE_UINT8": torch.uint8,
    "TYPE_INT8": torch.int8,
    "TYPE_INT16": torch.int16,
    "TYPE_INT32": torch.int32,
    "TYPE_INT64": torch.int64,
    "TYPE_FP16": torch.float16,
    "TYPE_BF16": torch.bfloat16,
    "TYPE_FP32": torch.float32,
    "TYPE_FP64": torch.float64,
}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self._inputs = [t["name"] for t in config["input"]]
        self._outputs = [(t["name"], _TORCH_DTYPES[t["data_type"]]) for t in config["output"]]
        self._batched = int(config.get("max_batch_size", 0)) > 0
        self._device = _device(args)
        _set_threads(config)
        # Triton downloads S3/GCS repositories to a local directory first, so
        # args["model_repository"] is always a local path to this model's dir.
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        with warnings.catch_warnings():  # "TorchScript is deprecated"; it is our format
            warnings.simplefilter("ignore", DeprecationWarning)
            self._module = torch.jit.load(str(path), map_location=self._device)
        self._module.eval()

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, list[torch.Tensor]]]] = {}
        for index, request in enumerate(requests):
            try:
                tensors = self._read_inputs(request)
            except Exception as exc:  # any failure becomes this request's error
                responses[index] = _error(f"bad input: {exc}")
                continue
            groups.setdefault(self._group_key(tensors), []).append((index, tensors))
        for members in groups.values():
            for index, response in self._run_group(members):
                responses[index] = response
        return responses

    def finalize(self) -> None:
        self._module = None

    def _read_inputs(self, request: Any) -> list[torch.Tensor]:
        tensors = []
        for name in self._inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            tensors.append(torch.utils.dlpack.from_dlpack(tensor.to_dlpack()))
        return tensors

    def _group_key(self, tensors: list[torch.Tensor]) -> tuple[Any, ...]:
        # Requests can share one forward pass only when every non-batch
        # dimension matches (images of different sizes cannot be stacked).
        if not self._batched:
            return (id(tensors),)
        return tuple((t.dtype, tuple(t.shape[1:])) for t in tensors)

    def _run_group(self, members: list[tuple[int, list[torch.Tensor]]]) -> list[tuple[int, Any]]:
        try:
            if len(members) == 1:
                index, tensors = members[0]
                return [(index, self._respond(self._forward(tensors)))]
            sizes = [tensors[0].shape[0] for _, tensors in members]
            stacked = [torch.cat(column) for column in zip(*(t for _, t in members), strict=True)]
            outputs = self._forward(stacked)
            parts = [torch.split(out, sizes) for out in outputs]
            return [(index, self._respond([p[i] for p in parts])) for i, (index, _) in enumerate(members)]
        except Exception as exc:  # one bad batch must not kill the instance
            return [(index, _error(f"inference failed: {exc}")) for index, _ in members]

    def _forward(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            result = self._module(*(t.to(self._device) for t in tensors))
        outputs = list(result) if isinstance(result, tuple | list) else [result]
        if len(outputs) != len(self._outputs):
            raise ValueError(f"module returned {len(outputs)} outputs, config declares {len(self._outputs)}")
        if self._batched and tensors:
            batch = tensors[0].shape[0]
            if any(out.dim() == 0 or out.shape[0] != batch for out in outputs):
                raise ValueError("every output must keep the batch dimension")
        return outputs

    def _respond(self, outputs: list[torch.Tensor]) -> Any:
        # from_dlpack needs contiguous memory; .to() also enforces the
        # config's declared dtype so clients always get what it promises.
        tensors = [
            pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(out.to(dtype).contiguous()))
            for (name, dtype), out in zip(self._outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _error(message: str) -> Any:
    # TorchScript errors carry a long traceback: log it whole, but give the
    # client only its last line, which names the actual problem.
    pb_utils.Logger.log_error(message)
    lines = [line for line in message.splitlines() if line.strip()]
    short = lines[0] if len(lines) <= 1 else f"{lines[0].split(':')[0]}: {lines[-1].strip()}"
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(short))


def _device(args: dict[str, str]) -> torch.device:
    if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", int(args.get("model_instance_device_id", "0")))
    return torch.device("cpu")


def _set_threads(config: dict[str, Any]) -> None:
    # Every instance is its own stub process; letting each use all cores
    # oversubscribes the CPU as soon as there is more than one instance.
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    default = max(1, len(os.sched_getaffinity(0)) // instances)
    torch.set_num_threads(int(params.get("TORCH_NUM_THREADS") or default))
    # Raises once the process has run parallel work; keep what it has then.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(int(params.get("TORCH_NUM_INTEROP_THREADS") or 1))
