"""A small service built on the shared runtime, for testing the runtime itself
(graceful drain, job resumption after kill -9) without depending on any one
product service's behaviour.

It serves, besides the standard Jobs/health/reflection, a test-only gRPC service
``prettyspace.test.Harness`` (generic handlers reusing API messages):
- ``Sleep(JobProgress)`` sleeps ``total`` milliseconds, then answers an empty Job;
- ``StartCount(JobProgress)`` submits a ``count`` job of ``total`` steps, each
  ``done`` milliseconds long, and answers the Job.

The ``count`` job writes one object per step (``jobs/harness-steps/{job}/{i}``
with the attempt that wrote it) and checkpoints after every step, so a test can
prove that a resumed job loses nothing and redoes nothing already checkpointed.

Run: ``python -m tests.support.harness_service`` with the usual PSS_* settings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import grpc

from services.api import common_pb2
from services.runtime.jobs import JobContext
from services.runtime.jobs_api import job_to_proto
from services.runtime.server import ServiceContext, ServiceSpec, run_service

HARNESS_SERVICE = "prettyspace.test.Harness"
STEP_PREFIX = "harness-steps"


def count_job(ctx: JobContext) -> dict[str, Any]:
    steps = int(ctx.params["steps"])
    step_ms = int(ctx.params["step_ms"])
    state = ctx.checkpoint() or {"next": 0}
    ctx.progress(total=steps, done=state["next"], stage="counting")
    for i in range(state["next"], steps):
        ctx.check()
        time.sleep(step_ms / 1000)
        ctx.store.put_json("jobs", f"{STEP_PREFIX}/{ctx.job_id}/{i:04d}", {"step": i, "attempt": ctx.attempt})
        ctx.save_checkpoint({"next": i + 1})
        ctx.progress(done=i + 1)
        ctx.count("steps")
    return {"steps": steps}


def register(server: grpc.Server, svc: ServiceContext) -> Iterable[str]:
    def sleep(request: common_pb2.JobProgress, context: grpc.ServicerContext) -> common_pb2.Job:
        time.sleep(request.total / 1000)
        return common_pb2.Job(id="slept")

    def start_count(request: common_pb2.JobProgress, context: grpc.ServicerContext) -> common_pb2.Job:
        record = svc.jobs.submit("count", {"steps": request.total, "step_ms": request.done})
        return job_to_proto(record)

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=common_pb2.JobProgress.FromString,
            response_serializer=common_pb2.Job.SerializeToString,
        )
        for name, fn in (("Sleep", sleep), ("StartCount", start_count))
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HARNESS_SERVICE, handlers),))
    return [HARNESS_SERVICE]


SPEC = ServiceSpec(name="harness", register=register, job_handlers={"count": count_job})


def call(channel: grpc.Channel, method: str, total: int, done: int = 0, timeout: float = 30.0) -> common_pb2.Job:
    """Client side of the harness RPCs."""
    stub = channel.unary_unary(
        f"/{HARNESS_SERVICE}/{method}",
        request_serializer=common_pb2.JobProgress.SerializeToString,
        response_deserializer=common_pb2.Job.FromString,
    )
    return stub(common_pb2.JobProgress(total=total, done=done), timeout=timeout)


if __name__ == "__main__":
    sys.exit(run_service(SPEC))
