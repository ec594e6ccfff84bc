"""The job framework: state and progress in the object store, watch, cancel,
idempotent submission, and resumption after the process is killed."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy.localstack.stack import Stack
from services.api import common_pb2
from services.client.clients import JobsClient
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from services.runtime.jobs import JOBS_BUCKET, JobContext, JobManager
from services.runtime.objectstore import ObjectStore
from tests.support import harness_service
from tests.support.processes import service_process


def wait_for(predicate, timeout_s: float = 20.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


def steps_job(ctx: JobContext) -> dict[str, int]:
    n = int(ctx.params["n"])
    ctx.progress(total=n, stage="stepping")
    for i in range(n):
        ctx.check()
        time.sleep(float(ctx.params.get("sleep", "0.01")))
        ctx.progress(done=i + 1)
        ctx.count("items")
    return {"n": n}


def failing_job(ctx: JobContext) -> None:
    raise InvalidArgument("survey", "unknown survey 'dss3'")


def crashing_job(ctx: JobContext) -> None:
    raise ZeroDivisionError("bug")


@pytest.fixture
def manager(store: ObjectStore, request: pytest.FixtureRequest) -> Iterator[JobManager]:
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[:24]
    jm = JobManager(
        f"t{name}",
        store,
        {"steps": steps_job, "fail": failing_job, "crash": crashing_job},
        lease_s=2,
        scan_s=0.3,
        poll_s=0.05,
    )
    jm.start()
    yield jm
    jm.stop(timeout_s=5)


def test_job_runs_to_success_with_progress_and_result(manager: JobManager) -> None:
    job = manager.submit("steps", {"n": 5})
    assert job["state"] in ("PENDING", "RUNNING")
    updates = list(manager.watch(job["id"]))
    final = updates[-1]
    assert final["state"] == "SUCCEEDED" and final["result"] == {"n": "5"}
    assert final["progress"]["done"] == 5 and final["progress"]["total"] == 5
    assert final["progress"]["counters"] == {"items": 5}
    assert len(updates) >= 2  # saw it change, not only the end
    # Persisted: a fresh manager (another process, another replica) sees the same.
    other = JobManager(manager.service, manager.store, {})
    assert other.get(job["id"])["state"] == "SUCCEEDED"
    assert not manager.store.exists(JOBS_BUCKET, f"{manager.service}/active/{job['id']}")


def test_failures_are_recorded_with_a_message(manager: JobManager) -> None:
    failed = list(manager.watch(manager.submit("fail")["id"]))[-1]
    assert failed["state"] == "FAILED" and failed["error"] == "survey: unknown survey 'dss3'"
    crashed = list(manager.watch(manager.submit("crash")["id"]))[-1]
    assert crashed["state"] == "FAILED" and crashed["error"] == "ZeroDivisionError: bug"


def test_request_id_makes_submission_idempotent(manager: JobManager) -> None:
    first = manager.submit("steps", {"n": 2}, request_id="nightly-2026-11-21")
    again = manager.submit("steps", {"n": 2}, request_id="nightly-2026-11-21")
    assert first["id"] == again["id"]
    with pytest.raises(AlreadyExists, match="other parameters"):
        manager.submit("steps", {"n": 3}, request_id="nightly-2026-11-21")
    assert len([j for j in manager.list() if j["request_id"] == "nightly-2026-11-21"]) == 1


def test_cancel_stops_a_running_job(manager: JobManager) -> None:
    job = manager.submit("steps", {"n": 500, "sleep": "0.02"})
    wait_for(lambda: manager.get(job["id"])["progress"]["done"] >= 3)
    manager.cancel(job["id"])
    final = list(manager.watch(job["id"]))[-1]
    assert final["state"] == "CANCELLED"
    assert final["progress"]["done"] < 500


def test_bad_queries(manager: JobManager) -> None:
    with pytest.raises(InvalidArgument):
        manager.get("../../etc/passwd")
    with pytest.raises(NotFound):
        manager.get("steps-20200101000000-00000000")
    with pytest.raises(InvalidArgument, match="runs no 'train' jobs"):
        manager.submit("train")
    with pytest.raises(InvalidArgument):
        manager.list(state="SLEEPING")


def test_orphan_with_expired_lease_on_another_host_is_resumed(manager: JobManager) -> None:
    """A job whose owner vanished elsewhere is picked up once its lease lapses."""
    record = manager.submit("steps", {"n": 1})
    list(manager.watch(record["id"]))
    orphan = dict(manager.get(record["id"]))
    orphan.update(
        id="steps-orphan-" + record["id"][-8:],
        state="RUNNING",
        owner="another-host/1/abc",
        lease_until=time.time() + 1.0,
        attempts=1,
    )
    manager.store.put_json(JOBS_BUCKET, f"{manager.service}/{orphan['id']}/job.json", orphan)
    manager.store.put_bytes(JOBS_BUCKET, f"{manager.service}/active/{orphan['id']}", b"")
    time.sleep(0.5)
    assert manager.get(orphan["id"])["owner"] == "another-host/1/abc"  # lease still valid: left alone
    final = list(manager.watch(orphan["id"]))[-1]
    assert final["state"] == "SUCCEEDED" and final["attempts"] == 2


def test_killed_job_resumes_in_a_new_process_without_loss_or_redo(stack: Stack, log_dir: Path) -> None:
    first = service_process(stack, ["tests.support.harness_service"], log_dir, "harness-1").start()
    try:
        job = harness_service.call(first.channel(), "StartCount", total=40, done=100)  # 40 steps of 100 ms
        jobs = JobsClient(first.channel(), 5)
        wait_for(lambda: jobs.get(job.id).progress.done >= 8)
        first.kill()  # kill -9: no chance to hand the job back
    finally:
        first.stop()

    second = service_process(stack, ["tests.support.harness_service"], log_dir, "harness-2").start()
    try:
        final = JobsClient(second.channel(), 5).follow(job.id, timeout_s=60)
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
        assert final.attempts == 2 and final.progress.done == 40
    finally:
        second.stop()

    store = stack.store()
    prefix = f"{harness_service.STEP_PREFIX}/{job.id}/"
    keys = store.list_keys(JOBS_BUCKET, prefix)
    assert keys == [f"{prefix}{i:04d}" for i in range(40)]  # nothing lost, no duplicates
    attempts = [store.get_json(JOBS_BUCKET, k)["attempt"] for k in keys]
    # Steps checkpointed before the kill were not redone; the rest were done by attempt 2.
    assert attempts == sorted(attempts) and attempts.count(1) >= 8 and attempts[-1] == 2
    assert "resuming job" in second.log()


def test_sigterm_hands_the_job_back_and_a_watcher_follows_it_to_the_end(stack: Stack, log_dir: Path) -> None:
    """Graceful stop: the job is released at once and the client's follow() keeps
    going through the restart on the same address."""
    first = service_process(stack, ["tests.support.harness_service"], log_dir, "harness-a").start()
    port = first.grpc_port
    job = harness_service.call(first.channel(), "StartCount", total=30, done=100)
    seen: list[common_pb2.Job] = []
    outcome: dict[str, common_pb2.Job] = {}
    follower = threading.Thread(
        target=lambda: outcome.setdefault(
            "final", JobsClient(first.channel(), 5).follow(job.id, seen.append, timeout_s=90, reconnect_for_s=30)
        )
    )
    follower.start()
    wait_for(lambda: seen and seen[-1].progress.done >= 5)
    assert first.stop() == 0  # drained and exited cleanly
    released = stack.store().get_json(JOBS_BUCKET, f"harness/{job.id}/job.json")
    assert released["state"] == "PENDING" and released["owner"] == ""

    second = service_process(stack, ["tests.support.harness_service"], log_dir, "harness-b", grpc_port=port).start()
    try:
        follower.join(90)
        assert outcome["final"].state == common_pb2.JOB_STATE_SUCCEEDED
        assert outcome["final"].attempts == 2
    finally:
        second.stop()


def test_watch_over_grpc_streams_until_terminal(stack: Stack, log_dir: Path) -> None:
    service = service_process(stack, ["tests.support.harness_service"], log_dir, "harness-w").start()
    try:
        job = harness_service.call(service.channel(), "StartCount", total=5, done=50)
        updates = list(JobsClient(service.channel(), 5).watch(job.id, timeout_s=30))
        assert updates[-1].state == common_pb2.JOB_STATE_SUCCEEDED
        assert [u.progress.done for u in updates] == sorted(u.progress.done for u in updates)
        with pytest.raises(grpc.RpcError) as info:
            list(JobsClient(service.channel(), 5).watch("no-such-job", timeout_s=5))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        service.stop()
