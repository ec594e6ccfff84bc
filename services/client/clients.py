"""One small client per service. Each holds a channel, applies a default deadline
to every call, and exposes the Jobs API with a follow() helper that survives a
service restart mid-watch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import (
    common_pb2,
    common_pb2_grpc,
    crawler_pb2_grpc,
    curator_pb2_grpc,
    cutouts_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    trainer_pb2_grpc,
)
from services.client.addresses import address_from_env
from services.client.channel import open_channel

TERMINAL_STATES = frozenset(
    {common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED}
)


class JobsClient:
    """prettyspace.v1.Jobs on one service."""

    def __init__(self, channel: grpc.Channel, timeout_s: float) -> None:
        self.stub = common_pb2_grpc.JobsStub(channel)
        self.timeout_s = timeout_s

    def get(self, job_id: str) -> common_pb2.Job:
        return self.stub.GetJob(common_pb2.JobRef(id=job_id), timeout=self.timeout_s)

    def list(self, kind: str = "", state: int = 0, limit: int = 100) -> list[common_pb2.Job]:
        request = common_pb2.ListJobsRequest(kind=kind, state=state, limit=limit)
        return list(self.stub.ListJobs(request, timeout=self.timeout_s).jobs)

    def cancel(self, job_id: str) -> common_pb2.Job:
        return self.stub.CancelJob(common_pb2.JobRef(id=job_id), timeout=self.timeout_s)

    def watch(self, job_id: str, heartbeat_s: float = 0.0, timeout_s: float | None = None) -> Iterator[common_pb2.Job]:
        """One watch stream (it ends early if the service shuts down)."""
        request = common_pb2.WatchJobRequest(id=job_id, heartbeat_s=heartbeat_s)
        yield from self.stub.WatchJob(request, timeout=timeout_s)

    def follow(
        self,
        job_id: str,
        on_update: Callable[[common_pb2.Job], Any] | None = None,
        *,
        timeout_s: float = 24 * 3600,
        reconnect_for_s: float = 60.0,
    ) -> common_pb2.Job:
        """Watch until the job is finished, re-watching when a stream ends early or
        the service is briefly unavailable (a restart); returns the final job."""
        deadline = time.monotonic() + timeout_s
        last: common_pb2.Job | None = None
        outage_since: float | None = None
        backoff = 0.2
        while True:
            try:
                for job in self.watch(job_id, timeout_s=max(deadline - time.monotonic(), 0.1)):
                    outage_since, backoff = None, 0.2
                    last = job
                    if on_update is not None:
                        on_update(job)
                    if job.state in TERMINAL_STATES:
                        return job
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > reconnect_for_s:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s (last: {last})")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class ServiceClient:
    """Base of the per-service clients."""

    name: ClassVar[str] = ""
    stub_class: ClassVar[type | None] = None

    def __init__(self, address: str | None = None, *, timeout_s: float = 10.0, retries: bool = True) -> None:
        self.address = address or address_from_env(self.name)
        self.timeout_s = timeout_s
        self.channel = open_channel(self.address, retries=retries)
        self.stub: Any = self.stub_class(self.channel) if self.stub_class else None
        self.jobs = JobsClient(self.channel, timeout_s)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """SERVING, NOT_SERVING, ... or UNREACHABLE / an error code name."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s or self.timeout_s
            )
        except grpc.RpcError as exc:
            code = exc.code()
            return (
                "UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else code.name
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CrawlerClient(ServiceClient):
    name = "crawler"
    stub_class = crawler_pb2_grpc.CrawlerStub


class CutoutsClient(ServiceClient):
    name = "cutouts"
    stub_class = cutouts_pb2_grpc.CutoutsStub


class CuratorClient(ServiceClient):
    name = "curator"
    stub_class = curator_pb2_grpc.CuratorStub


class TrainerClient(ServiceClient):
    name = "trainer"
    stub_class = trainer_pb2_grpc.TrainerStub


class GatewayClient(ServiceClient):
    name = "gateway"
    stub_class = gateway_pb2_grpc.GatewayStub

    def render(
        self,
        request: gateway_pb2.RenderRequest,
        on_progress: Callable[[common_pb2.JobProgress], None] | None = None,
        timeout_s: float | None = None,
    ) -> gateway_pb2.RenderResult:
        """Render, calling `on_progress` on each progress event; returns the result with every
        product whole (those that came in chunks are reassembled into their fields)."""
        parts: dict[str, bytearray] = {}
        for event in self.stub.Render(request, timeout=timeout_s or self.timeout_s):
            kind = event.WhichOneof("event")
            if kind == "progress" and on_progress is not None:
                on_progress(event.progress)
            elif kind == "chunk":
                chunk = event.chunk
                buf = parts.setdefault(chunk.product, bytearray(chunk.total_size))
                buf[chunk.offset : chunk.offset + len(chunk.data)] = chunk.data
            elif kind == "result":
                result = event.result
                for product, data in parts.items():
                    setattr(result, product, bytes(data))
                return result
        raise RuntimeError("the gateway ended the render stream without a result")


CLIENTS: dict[str, type[ServiceClient]] = {
    c.name: c for c in (CrawlerClient, CutoutsClient, CuratorClient, TrainerClient, GatewayClient)
}


def client_for(service: str, address: str | None = None, **kwargs: Any) -> ServiceClient:
    try:
        return CLIENTS[service](address, **kwargs)
    except KeyError:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(CLIENTS)}") from None
