"""Running batches of tiles through the generator: in Triton (serving) or in-process (the
benchmark's baseline, and a cross-check of what Triton returns).

Both take the same batches and yield (batch, output) as outputs arrive, so the caller blends
each tile as soon as it is back instead of holding every output. Triton requests are sent with
`async_infer` and at most `max_in_flight` outstanding: a big render cannot flood Triton's queue
and starve other renders, and a cancelled render stops sending at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deploy.triton.model_config import input_name, output_name
from services.gateway.models import triton_error
from services.runtime.errors import DeadlineExceeded, Unavailable


@dataclass(frozen=True)
class Batch:
    """Tiles of one shape: ids (the caller's), x [B,3,h,w] normalised survey, noise [B,4,h,w]."""

    ids: tuple[int, ...]
    x: np.ndarray
    noise: np.ndarray
    fidelity: float

    def fidelity_array(self) -> np.ndarray:
        return np.full((len(self.ids), 1), self.fidelity, dtype=np.float32)


class Deadline:
    """Seconds left of a caller's deadline (None: no deadline)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def check(self, what: str) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(f"the render's deadline passed while {what}")


class TileRunner(Protocol):
    def map(
        self, batches: Iterable[Batch], deadline: Deadline, cancelled: threading.Event
    ) -> Iterator[tuple[Batch, np.ndarray]]: ...


class LocalRunner:
    """The TorchScript module called in this process (no Triton): the benchmark's baseline."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def map(
        self, batches: Iterable[Batch], deadline: Deadline, cancelled: threading.Event
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        import torch

        with torch.inference_mode():
            for batch in batches:
                if cancelled.is_set():
                    return
                deadline.check("rendering tiles")
                out = self.module(
                    torch.from_numpy(batch.x), torch.from_numpy(batch.noise), torch.from_numpy(batch.fidelity_array())
                )
                yield batch, out.numpy()


class TritonRunner:
    """Batches sent to a Triton model version through gRPC, a bounded number in flight."""

    def __init__(
        self,
        client: grpcclient.InferenceServerClient,
        url: str,
        model: str,
        version: int,
        max_in_flight: int = 4,
        retries: int = 1,
    ) -> None:
        self.client = client
        self.url = url
        self.model = model
        self.version = str(version)
        self.max_in_flight = max(1, max_in_flight)
        self.retries = retries

    def _inputs(self, batch: Batch) -> list[grpcclient.InferInput]:
        arrays = (batch.x, batch.noise, batch.fidelity_array())
        inputs = []
        for i, array in enumerate(arrays):
            tensor = grpcclient.InferInput(input_name(i), list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            inputs.append(tensor)
        return inputs

    def map(
        self, batches: Iterable[Batch], deadline: Deadline, cancelled: threading.Event
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        done: queue.Queue[tuple[Batch, int, Any, Any]] = queue.Queue()
        in_flight = 0
        pending = iter(batches)
        exhausted = False
        outputs = [grpcclient.InferRequestedOutput(output_name(0))]

        def send(batch: Batch, attempt: int) -> None:
            left = deadline.remaining()
            timeout = None if left is None else max(left, 0.001)
            self.client.async_infer(
                self.model,
                self._inputs(batch),
                callback=lambda result, error: done.put((batch, attempt, result, error)),
                model_version=self.version,
                outputs=outputs,
                client_timeout=timeout,
            )

        try:
            while True:
                while not exhausted and in_flight < self.max_in_flight and not cancelled.is_set():
                    batch = next(pending, None)
                    if batch is None:
                        exhausted = True
                        break
                    deadline.check("sending tiles to Triton")
                    send(batch, 0)
                    in_flight += 1
                if in_flight == 0 or cancelled.is_set():
                    return
                batch, attempt, result, error = done.get()
                in_flight -= 1
                if error is not None:
                    mapped = triton_error(error, self.url, f"render tiles with {self.model} v{self.version}")
                    if isinstance(mapped, Unavailable) and attempt < self.retries and not cancelled.is_set():
                        time.sleep(0.2)  # a bounded retry: a restarting Triton, a dropped connection
                        send(batch, attempt + 1)
                        in_flight += 1
                        continue
                    raise mapped
                yield batch, result.as_numpy(output_name(0))
        except InferenceServerException as exc:  # raised by async_infer itself (e.g. no connection)
            raise triton_error(exc, self.url, f"render tiles with {self.model} v{self.version}") from None
        # On cancel or error, requests still in flight finish in Triton and their results are
        # dropped: nobody reads `done` any more, and no new batch is sent.
