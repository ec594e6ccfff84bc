"""The prettyspace.v1.Jobs gRPC service, served by every service that runs jobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.api import common_pb2, common_pb2_grpc
from services.runtime.errors import InvalidArgument
from services.runtime.jobs import STATES, JobManager, validate_job_id


def _timestamp(epoch: float | None) -> Timestamp | None:
    if not epoch:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def job_to_proto(record: dict[str, Any]) -> common_pb2.Job:
    progress = record.get("progress") or {}
    return common_pb2.Job(
        id=record["id"],
        kind=record["kind"],
        service=record.get("service", ""),
        state=common_pb2.JobState.Value(f"JOB_STATE_{record['state']}"),
        progress=common_pb2.JobProgress(
            done=int(progress.get("done", 0)),
            total=int(progress.get("total", 0)),
            stage=progress.get("stage", ""),
            counters={k: int(v) for k, v in (progress.get("counters") or {}).items()},
            message=progress.get("message", ""),
            metrics={k: float(v) for k, v in (progress.get("metrics") or {}).items()},
        ),
        created=_timestamp(record.get("created")),
        updated=_timestamp(record.get("updated")),
        finished=_timestamp(record.get("finished")),
        error=record.get("error", ""),
        params=record.get("params") or {},
        result=record.get("result") or {},
        attempts=int(record.get("attempts", 0)),
    )


def state_name(state: int) -> str:
    """JOB_STATE_RUNNING -> "RUNNING"; UNSPECIFIED -> "" (any)."""
    if state == common_pb2.JOB_STATE_UNSPECIFIED:
        return ""
    try:
        name = common_pb2.JobState.Name(state).removeprefix("JOB_STATE_")
    except ValueError:
        raise InvalidArgument("state", f"unknown job state {state}") from None
    if name not in STATES:
        raise InvalidArgument("state", f"unknown job state {state}")
    return name


class JobsServicer(common_pb2_grpc.JobsServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def GetJob(self, request: common_pb2.JobRef, context: grpc.ServicerContext) -> common_pb2.Job:
        return job_to_proto(self.manager.get(validate_job_id(request.id)))

    def WatchJob(self, request: common_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[common_pb2.Job]:
        validate_job_id(request.id)
        if request.heartbeat_s < 0:
            raise InvalidArgument("heartbeat_s", "must be >= 0")
        for record in self.manager.watch(request.id, request.heartbeat_s, context.is_active):
            yield job_to_proto(record)

    def ListJobs(
        self, request: common_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> common_pb2.ListJobsResponse:
        if request.limit > 1000:
            raise InvalidArgument("limit", f"{request.limit} is above the maximum of 1000")
        records = self.manager.list(request.kind, state_name(request.state), request.limit or 100)
        return common_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in records])

    def CancelJob(self, request: common_pb2.JobRef, context: grpc.ServicerContext) -> common_pb2.Job:
        return job_to_proto(self.manager.cancel(validate_job_id(request.id)))
