"""The trainer's Kubernetes launcher (services/trainer/k8s_job.py) against a real HTTP API server:
kmock's in-memory Kubernetes emulator, served on 127.0.0.1 from a background event loop, and the
real `kubernetes` client pointed at it (as in a cluster, but with no controllers: the tests play
the Job controller and the kubelet by writing pods and statuses through a second client).

Checked: the Job as created (GPU limit, node selector, tolerations, ServiceAccount, the run's
command and environment), idempotent launch, status from the Job and its pods, watch, cancel,
logs, refusals of the API server (403, 401, 404, 409, 422, unreachable) becoming clear errors,
and that the requests the launcher makes need exactly the Role's permissions (k8s_job.RBAC_RULES).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s

from services.runtime.config import ConfigError
from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from services.trainer import k8s_job
from services.trainer.k8s_job import (
    JobConflict,
    JobRejected,
    JobTemplate,
    KubernetesForbidden,
    KubernetesLauncher,
    KubernetesUnauthorized,
    KubernetesUnavailable,
    LauncherError,
    RunNotFound,
    TrainingJobSpec,
    job_manifest,
    job_name,
    run_status,
)

T = TypeVar("T")
NS = "prettyspace"
LAUNCHER_TOKEN = "launcher-token"
CONTROLLER_TOKEN = "controller-token"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


# --------------------------------------------------------------------------
# kmock's API server on 127.0.0.1, in a thread of its own


class ApiServer:
    """kmock.KubernetesEmulator + kmock.Server (aiohttp on 127.0.0.1, a free port) on an event loop
    in a daemon thread, so that the synchronous `kubernetes` client can talk to it over HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()

        async def enter() -> tuple[kmock.KubernetesEmulator, kmock.Server]:
            emulator = kmock.KubernetesEmulator()
            await emulator.__aenter__()
            server = kmock.Server(emulator)
            await server.__aenter__()
            # Declared so that LIST/WATCH know them before any object exists.
            emulator.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True)
            emulator.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
            return emulator, server

        self.emulator, self.server = asyncio.run_coroutine_threadsafe(enter(), self.loop).result(10)
        self.url = str(self.server.url).rstrip("/")
        cfg = k8s.Configuration()
        cfg.host = self.url
        cfg.api_key["BearerToken"] = CONTROLLER_TOKEN
        cfg.api_key_prefix["BearerToken"] = "Bearer"
        self._controller_client = k8s.ApiClient(cfg)
        # The test's own client: plays the Job controller and the kubelet.
        self.batch = k8s.BatchV1Api(self._controller_client)
        self.core = k8s.CoreV1Api(self._controller_client)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run fn on the server's loop (to declare reactions without racing a request)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(5)

    def react(self, *criteria: Any, status: int, body: Any) -> None:
        def declare() -> None:
            self.emulator[criteria] << status << body

        self.on_loop(declare)

    def requests(self, token: str = LAUNCHER_TOKEN) -> list[Any]:
        """The requests made with this token (the launcher's, not the test's own)."""
        return [
            r for r in self.on_loop(lambda: list(self.emulator)) if r.headers.get("Authorization") == f"Bearer {token}"
        ]

    def stop(self) -> None:
        self._controller_client.close()

        async def leave() -> None:
            await self.server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(leave(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    # ---- playing the Job controller and the kubelet

    def job(self, name: str) -> dict[str, Any]:
        return json.loads(self.batch.read_namespaced_job(name, NS, _preload_content=False).data)

    def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job_status(name, NS, {"status": status}, _preload_content=False)

    def add_pod(
        self, job: str, pod: str, status: dict[str, Any], created: str = "2026-11-21T18:00:00Z", owner_uid: str = ""
    ) -> None:
        labels = {k8s_job.JOB_NAME_LABEL: job, k8s_job.LABEL_MANAGED_BY: k8s_job.MANAGED_BY}
        meta: dict[str, Any] = {"name": pod, "namespace": NS, "labels": labels, "creationTimestamp": created}
        if owner_uid:
            meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": owner_uid}]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": [{"name": "trainer", "image": "prettyspace:dev"}]},
        }
        self.core.create_namespaced_pod(NS, body, _preload_content=False)
        self.set_pod_status(pod, status)

    def set_pod_status(self, pod: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod, NS, {"status": status}, _preload_content=False)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def launcher(api: ApiServer) -> Iterator[KubernetesLauncher]:
    with KubernetesLauncher.for_host(api.url, NS, token=LAUNCHER_TOKEN, request_timeout_s=5) as launcher:
        yield launcher


def gpu_template(**overrides: Any) -> JobTemplate:
    values: dict[str, Any] = {
        "image": "ghcr.io/prettyspace/prettyspace:0.1.0",
        "namespace": NS,
        "gpus": 2,
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": (GPU_TOLERATION,),
        "cpu_request": "4",
        "cpu_limit": "8",
        "memory_request": "24Gi",
        "memory_limit": "32Gi",
        "shm_size": "8Gi",
        "service_account": "trainer-run",
        "extra_env": {"PSS_TRAIN_AMP": "bf16"},
    }
    values.update(overrides)
    return JobTemplate(**values)


def gpu_spec(run_id: str = "trainer-20261121183000-0a1b2c3d", **overrides: Any) -> TrainingJobSpec:
    return gpu_template(**overrides).spec_for(run_id, dataset="local-universe@3", config="full")


def container_status(state: dict[str, Any]) -> dict[str, Any]:
    """A container's status as the kubelet reports it."""
    image = "ghcr.io/prettyspace/prettyspace:0.1.0"
    return {
        "name": "trainer",
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def running_pod() -> dict[str, Any]:
    return {"phase": "Running", "containerStatuses": [container_status({"running": {}})]}


# --------------------------------------------------------------------------
# The Job as created


def test_launch_creates_the_gpu_job(api: ApiServer, launcher: KubernetesLauncher) -> None:
    spec = gpu_spec()
    launched = launcher.launch(spec)
    assert launched.created and launched.name == spec.job_name == "train-trainer-20261121183000-0a1b2c3d"

    (req,) = api.requests()
    assert req.method == "POST" and str(req.url.path) == f"/apis/batch/v1/namespaces/{NS}/jobs"
    assert req.params.get("fieldManager") == k8s_job.MANAGED_BY
    job = api.job(spec.job_name)  # as the API server stored it
    assert job == job_manifest(spec)
    assert launched.manifest == job

    assert job["metadata"]["labels"][k8s_job.LABEL_RUN_ID] == spec.run_id
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["serviceAccountName"] == "trainer-run" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/prettyspace/prettyspace:0.1.0"
    assert c["command"] == ["python", "-m", "services.trainer.run"]
    assert c["args"] == ["--run-id", spec.run_id]  # a retried pod resumes the same run from its checkpoint
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "24Gi"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["PSS_TRAIN_RUN_ID"] == spec.run_id
    assert env["PSS_TRAIN_DATASET"] == "local-universe@3" and env["PSS_TRAIN_CONFIG"] == "full"
    assert env["PSS_TRAIN_AMP"] == "bf16" and env["OMP_NUM_THREADS"] == "8"
    assert env["PSS_S3_ACCESS_KEY"] == {"secretKeyRef": {"name": "minio-credentials", "key": "access-key"}}
    assert env["PSS_S3_SECRET_KEY"] == {"secretKeyRef": {"name": "minio-credentials", "key": "secret-key"}}
    assert c["envFrom"] == [{"configMapRef": {"name": "prettyspace-config"}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_cpu_job_has_no_gpu_settings() -> None:
    job = job_manifest(JobTemplate(image="prettyspace:dev").spec_for("run-1", "ds@1", "demo"))
    pod = job["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod and "serviceAccountName" not in pod


def test_job_manifests_pass_strict_schema_validation() -> None:
    specs = [
        gpu_spec(runtime_class="nvidia", image_pull_policy="IfNotPresent"),
        JobTemplate(image="prettyspace:dev").spec_for("Run_With.Odd-chars_1", "ds@1", "demo"),
    ]
    for spec in specs:
        kubernetes_validate.validate(job_manifest(spec), "1.33.0", strict=True)


def test_launch_is_idempotent(api: ApiServer, launcher: KubernetesLauncher) -> None:
    spec = gpu_spec()
    first = launcher.launch(spec)
    again = launcher.launch(spec)  # a retried RPC, a restarted service
    assert first.created and not again.created
    assert again.name == first.name and again.manifest == api.job(spec.job_name)
    methods = [(r.method, r.action) for r in api.requests()]
    assert methods == [
        ("POST", kmock.action.CREATE),
        ("POST", kmock.action.CREATE),  # 409 AlreadyExists
        ("GET", kmock.action.FETCH),
    ]
    jobs = api.batch.list_namespaced_job(NS, _preload_content=False)
    assert len(json.loads(jobs.data)["items"]) == 1


def test_launch_refuses_a_job_that_is_not_this_runs(api: ApiServer, launcher: KubernetesLauncher) -> None:
    spec = gpu_spec()
    launcher.launch(spec)
    with pytest.raises(JobConflict, match=r"with dataset 'local-universe@3', not 'other@1'") as info:
        launcher.launch(gpu_template().spec_for(spec.run_id, dataset="other@1", config="full"))
    assert isinstance(info.value, AlreadyExists)

    api.batch.patch_namespaced_job(spec.job_name, NS, {"metadata": {"labels": {k8s_job.LABEL_RUN_ID: "someone"}}})
    with pytest.raises(JobConflict, match=r"belongs to run 'someone'"):
        launcher.launch(spec)

    # Deleted with foreground propagation: the Job stays, marked, until its pods are gone.
    being_deleted = {
        "labels": {k8s_job.LABEL_RUN_ID: spec.run_id},
        "finalizers": ["foregroundDeletion"],
        "deletionTimestamp": "2026-11-21T18:00:00Z",
    }
    api.batch.patch_namespaced_job(spec.job_name, NS, {"metadata": being_deleted})
    with pytest.raises(JobConflict, match="still being deleted"):
        launcher.launch(spec)


def test_a_failed_job_is_replaced_only_when_asked(api: ApiServer, launcher: KubernetesLauncher) -> None:
    spec = gpu_spec(run_id="run-x")
    first = launcher.launch(spec)
    api.batch.patch_namespaced_job(first.name, NS, {"metadata": {"uid": "uid-1"}}, _preload_content=False)
    killed = {"phase": "Failed", "containerStatuses": [container_status({"terminated": {"exitCode": 137}})]}
    api.add_pod(first.name, f"{first.name}-old", killed, owner_uid="uid-1")
    backoff = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}
    api.set_job_status(first.name, {"failed": 4, "conditions": [backoff]})

    again = launcher.launch(spec)  # re-attach: the failed Job, as it is
    assert not again.created and run_status(again.manifest).state == "failed"

    replaced = launcher.launch(spec, replace_failed=True)  # a new Job; the run resumes from its checkpoint
    assert replaced.created and "status" not in api.job(spec.job_name)
    api.batch.patch_namespaced_job(first.name, NS, {"metadata": {"uid": "uid-2"}}, _preload_content=False)
    # The old Job's pod, still terminating, is not taken for the new Job's.
    status = launcher.status("run-x")
    assert status.state == "pending" and "exit 137" not in status.message
    deletes = [r for r in api.requests() if r.action == kmock.action.DELETE]
    assert len(deletes) == 1 and deletes[0].params["propagationPolicy"] == "Background"

    api.set_job_status(first.name, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert not launcher.launch(spec, replace_failed=True).created  # a finished run is never re-run


def test_kubernetes_launch_for_the_trainer_service(api: ApiServer, launcher: KubernetesLauncher) -> None:
    """services/trainer/service.py runs a run through this when PSS_TRAIN_LAUNCHER=kubernetes."""
    from services.trainer.launch import Outcome

    run = {
        "id": "run-20261121-183000-abcdef",
        "dataset": {"name": "local-universe", "version": 3, "digest": "sha256:0"},
        "config_name": "full",
        "config": {"steps": 10},
        "jobs": ["run-20261121-183000-abcdef"],
    }
    launch = k8s_job.kubernetes_launch(run, environ=configmap_env(), launcher=launcher, min_poll_s=0)
    job = api.job(launch.spec.job_name)
    assert job["metadata"]["annotations"][k8s_job.ANNOTATION_DATASET] == "local-universe@3"
    assert job["metadata"]["annotations"][k8s_job.ANNOTATION_CONFIG] == "full"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["args"] == ["--run-id", run["id"]]
    outcome = launch.poll()
    assert outcome.state == "running" and "Job controller" in outcome.message

    # The service restarts: its next process re-attaches to the same Job.
    again = k8s_job.kubernetes_launch(run, environ=configmap_env(), launcher=launcher, min_poll_s=0)
    assert not again.job.created
    launch.stop(cancel=False)  # the service goes away: the Job keeps running
    api.job(launch.spec.job_name)

    api.set_job_status(launch.spec.job_name, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert launch.poll() == Outcome("succeeded", "the run finished")

    again.stop(cancel=True)
    outcome = again.poll()
    assert outcome.state == "failed" and "deleted outside the trainer" in outcome.message


def test_kubernetes_launch_polls_gently_and_reports_refusals(api: ApiServer, launcher: KubernetesLauncher) -> None:
    run = {"id": "run-p", "dataset": {"name": "ds", "version": 1}, "config_name": "demo"}
    launch = k8s_job.kubernetes_launch(run, environ=configmap_env(), launcher=launcher, min_poll_s=60)
    assert launch.poll().state == "running"
    before = len(api.requests())
    for _ in range(5):
        launch.poll()  # every second from the service's loop: the API server is asked once a minute
    assert len(api.requests()) == before

    launch.min_poll_s = 0
    api.react(kmock.action.LIST, kmock.resource("v1/pods"), status=503, body={"code": 503, "message": "overloaded"})
    outcome = launch.poll()
    assert outcome.state == "running" and "HTTP 503" in outcome.message  # transient: keep following the run
    api.react(kmock.action.FETCH, kmock.resource("batch/v1/jobs"), status=403, body=forbidden("get", "jobs", "batch"))
    outcome = launch.poll()
    assert outcome.state == "failed" and "may not get jobs.batch" in outcome.message


# --------------------------------------------------------------------------
# Status, watch, list, logs, cancel


def test_status_follows_the_job_and_its_pods(api: ApiServer, launcher: KubernetesLauncher) -> None:
    spec = gpu_spec(run_id="run-7")
    name = launcher.launch(spec).name
    # Another run's pod in the namespace must never be taken for this run's.
    api.add_pod("train-other", "train-other-x", running_pod())

    status = launcher.status("run-7")
    assert (status.state, status.job_name, status.run_id) == ("pending", name, "run-7")
    assert "Job controller" in status.message

    unschedulable = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    }
    api.set_job_status(name, {"active": 1, "startTime": "2026-11-21T18:00:00Z"})
    api.add_pod(name, f"{name}-a", unschedulable)
    status = launcher.status("run-7")
    assert status.state == "pending"
    assert "cannot be scheduled" in status.message and "Insufficient nvidia.com/gpu" in status.message

    api.set_pod_status(f"{name}-a", running_pod())
    assert launcher.status("run-7").state == "running"

    # The pod is killed (OOM, node lost): the Job retries; the new pod resumes from the checkpoint.
    killed = {
        "phase": "Failed",
        "containerStatuses": [container_status({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
    }
    api.set_pod_status(f"{name}-a", killed)
    api.set_job_status(name, {"active": 1, "failed": 1})
    status = launcher.status("run-7")
    assert status.state == "pending" and "1 failed attempt: exit 137: OOMKilled" in status.message
    api.add_pod(name, f"{name}-b", running_pod(), created="2026-11-21T19:00:00Z")
    status = launcher.status("run-7")
    assert status.state == "running" and "attempt 2" in status.message and status.failed_attempts == 1

    api.set_job_status(
        name,
        {
            "active": 0,
            "succeeded": 1,
            "completionTime": "2026-11-21T21:00:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    )
    status = launcher.status("run-7")
    assert status.state == "succeeded" and status.terminal
    assert status.completion_time == "2026-11-21T21:00:00Z"


def test_a_bad_run_fails_with_the_runners_message(api: ApiServer, launcher: KubernetesLauncher) -> None:
    name = launcher.launch(gpu_spec(run_id="run-bad")).name
    terminated = {
        "exitCode": 2,
        "reason": "Error",
        "message": "loading dataset\ndataset 'local-universe@9' not found in s3://datasets",
    }
    api.add_pod(
        name,
        f"{name}-a",
        {"phase": "Failed", "containerStatuses": [container_status({"terminated": terminated})]},
    )
    condition = {
        "type": "Failed",
        "status": "True",
        "reason": "PodFailurePolicy",
        "message": f"Container trainer for pod {NS}/{name}-a failed with exit code 2 matching FailJob rule at index 0",
    }
    api.set_job_status(name, {"failed": 1, "conditions": [condition]})
    status = launcher.status("run-bad")
    assert status.state == "failed" and status.terminal
    assert "PodFailurePolicy" in status.message
    assert "exit 2: dataset 'local-universe@9' not found in s3://datasets" in status.message


def test_pending_reasons_from_the_kubelet() -> None:
    job = job_manifest(JobTemplate(image="prettyspace:dev").spec_for("run-1", "ds@1", "demo"))
    job["status"] = {"active": 1}

    def waiting(reason: str, message: str) -> dict[str, Any]:
        status = {
            "phase": "Pending",
            "containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}],
        }
        return {"metadata": {"name": "p"}, "status": status}

    status = run_status(job, [waiting("CreateContainerConfigError", 'secret "minio-credentials" not found')])
    assert status.state == "pending" and 'secret "minio-credentials" not found' in status.message
    status = run_status(job, [waiting("ImagePullBackOff", "Back-off pulling image")])
    assert "ImagePullBackOff" in status.message
    assert run_status(job, [waiting("ContainerCreating", "")]).message == "waiting for the pod to start"
    job["spec"]["suspend"] = True
    job["status"] = {}
    assert run_status(job).message == "the Job is suspended"
    job["spec"]["suspend"] = False
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}]}
    assert run_status(job).state == "failed" and "DeadlineExceeded" in run_status(job).message


def test_watch_yields_each_change_until_the_end(api: ApiServer, launcher: KubernetesLauncher) -> None:
    name = launcher.launch(gpu_spec(run_id="run-w")).name

    def controller() -> None:
        time.sleep(0.3)
        api.add_pod(name, f"{name}-a", running_pod())
        api.set_job_status(name, {"active": 1, "ready": 1})
        time.sleep(0.3)
        api.set_job_status(name, {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})

    thread = threading.Thread(target=controller)
    thread.start()
    t0 = time.monotonic()
    states = [s.state for s in launcher.watch("run-w", timeout_s=20)]
    thread.join()
    assert states == ["pending", "running", "succeeded"]
    assert time.monotonic() - t0 < 10
    # Already finished: one status, at once.
    assert [s.state for s in launcher.watch("run-w", timeout_s=20)] == ["succeeded"]


def test_watch_stops_at_its_timeout_and_on_deletion(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-t"))
    t0 = time.monotonic()
    assert [s.state for s in launcher.watch("run-t", timeout_s=0.5)] == ["pending"]
    assert time.monotonic() - t0 < 5

    def cancel_soon() -> None:
        time.sleep(0.3)
        api.batch.delete_namespaced_job(job_name("run-t"), NS)

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    with pytest.raises(RunNotFound, match="deleted"):
        list(launcher.watch("run-t", timeout_s=20))
    thread.join()


def test_watch_error_event_becomes_the_clear_error(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-e"))
    error = {"type": "ERROR", "object": forbidden("watch", "jobs", "batch")}
    api.react(kmock.action.WATCH, kmock.resource("batch/v1/jobs"), status=200, body=(error,))
    with pytest.raises(KubernetesForbidden, match=r"may not watch jobs\.batch"):
        list(launcher.watch("run-e", timeout_s=10))


def test_list_runs_sees_only_training_jobs(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-a"))
    launcher.launch(gpu_spec(run_id="run-b"))
    other = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bootstrap-buckets", "namespace": NS, "labels": {"app.kubernetes.io/name": "x"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
    }
    api.batch.create_namespaced_job(NS, other)
    api.add_pod(job_name("run-b"), "train-run-b-x", running_pod())
    runs = {r.run_id: r.state for r in launcher.list_runs()}
    assert runs == {"run-a": "pending", "run-b": "running"}
    (listing,) = [
        r for r in api.requests() if r.resource == kmock.resource("batch/v1/jobs") and r.action == kmock.action.LIST
    ]
    assert listing.params["labelSelector"] == f"{k8s_job.LABEL_MANAGED_BY}={k8s_job.MANAGED_BY}"


def test_logs_of_the_latest_pod(api: ApiServer, launcher: KubernetesLauncher) -> None:
    name = launcher.launch(gpu_spec(run_id="run-l")).name
    assert launcher.logs("run-l") == ""  # no pod yet
    api.add_pod(name, f"{name}-old", {"phase": "Failed"}, created="2026-11-21T18:00:00Z")
    api.add_pod(name, f"{name}-new", running_pod(), created="2026-11-21T19:00:00Z")
    api.react(
        kmock.action.FETCH, kmock.subresource("log"), status=200, body=b"step 100 loss 0.12\nstep 200 loss 0.10\n"
    )
    assert launcher.logs("run-l", tail_lines=2) == "step 100 loss 0.12\nstep 200 loss 0.10\n"
    (req,) = [r for r in api.requests() if r.subresource == "log"]
    assert req.name == f"{name}-new"
    assert req.params["tailLines"] == "2" and req.params["container"] == "trainer"


def test_cancel_deletes_the_job_in_the_background(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-c"))
    assert launcher.cancel("run-c") is True
    (delete,) = [r for r in api.requests() if r.action == kmock.action.DELETE]
    assert delete.name == job_name("run-c") and delete.params["propagationPolicy"] == "Background"
    with pytest.raises(RunNotFound) as info:
        launcher.status("run-c")
    assert isinstance(info.value, NotFound)
    assert launcher.cancel("run-c") is False  # already gone


# --------------------------------------------------------------------------
# Refusals become clear errors


def forbidden(verb: str, resource: str, group: str) -> dict[str, Any]:
    """The API server's answer to a request RBAC denies (its real wording)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{resource}{"." + group if group else ""} is forbidden: User "system:serviceaccount:{NS}:trainer" '
        f'cannot {verb} resource "{resource}" in API group "{group}" in the namespace "{NS}"',
        "reason": "Forbidden",
        "details": {"group": group, "kind": resource},
        "code": 403,
    }


def test_forbidden_names_the_missing_permission(api: ApiServer, launcher: KubernetesLauncher) -> None:
    api.react(
        kmock.action.CREATE, kmock.resource("batch/v1/jobs"), status=403, body=forbidden("create", "jobs", "batch")
    )
    with pytest.raises(KubernetesForbidden) as info:
        launcher.launch(gpu_spec())
    err = info.value
    assert (err.verb, err.resource, err.status) == ("create", "jobs.batch", 403)
    assert isinstance(err, FailedPrecondition)  # a gRPC FAILED_PRECONDITION for the caller
    text = str(err)
    assert "may not create jobs.batch in namespace 'prettyspace'" in text
    assert "Role 'trainer'" in text and "k8s/base/trainer-rbac.yaml" in text
    assert 'cannot create resource "jobs"' in text  # the server's own words too


def test_forbidden_pod_listing_during_status(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-f"))
    api.react(kmock.action.LIST, kmock.resource("v1/pods"), status=403, body=forbidden("list", "pods", ""))
    with pytest.raises(KubernetesForbidden, match=r"may not list pods .* verb 'list' on 'pods'"):
        launcher.status("run-f")


def test_conflict_on_delete(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec(run_id="run-d"))
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Conflict",
        "code": 409,
        "message": 'Operation cannot be fulfilled on jobs.batch "train-run-d": the object has been modified',
    }
    api.react(kmock.action.DELETE, kmock.resource("batch/v1/jobs"), status=409, body=body)
    with pytest.raises(JobConflict, match=r"cannot delete jobs.batch \(run run-d: Job train-run-d\): conflict"):
        launcher.cancel("run-d")


def test_rejected_job_lists_the_servers_causes(api: ApiServer, launcher: KubernetesLauncher) -> None:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Invalid",
        "code": 422,
        "message": 'Job.batch "train-run-1" is invalid',
        "details": {"causes": [{"field": "spec.template.spec.nodeSelector", "message": "Invalid value"}]},
    }
    api.react(kmock.action.CREATE, kmock.resource("batch/v1/jobs"), status=422, body=body)
    with pytest.raises(JobRejected, match=r"spec.template.spec.nodeSelector: Invalid value"):
        launcher.launch(gpu_spec(run_id="run-1"))


def test_unauthorized_and_server_errors(api: ApiServer, launcher: KubernetesLauncher) -> None:
    unauthorized = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}
    api.react(kmock.action.FETCH, kmock.resource("batch/v1/jobs"), status=401, body=unauthorized)
    with pytest.raises(KubernetesUnauthorized, match="rejected the trainer's credentials"):
        launcher.status("run-1")
    api.react(kmock.action.LIST, kmock.resource("batch/v1/jobs"), status=503, body={"code": 503, "message": "etcd"})
    with pytest.raises(KubernetesUnavailable, match="HTTP 503") as info:
        launcher.list_runs()
    assert isinstance(info.value, Unavailable)


def test_missing_namespace(api: ApiServer) -> None:
    api.react(
        kmock.action.CREATE,
        kmock.resource("batch/v1/jobs"),
        status=404,
        body={"kind": "Status", "code": 404, "reason": "NotFound", "message": 'namespaces "nowhere" not found'},
    )
    with (
        KubernetesLauncher.for_host(api.url, "nowhere", request_timeout_s=5) as launcher,
        pytest.raises(RunNotFound, match="namespace 'nowhere' does not exist"),
    ):
        launcher.launch(gpu_spec(namespace="nowhere"))


def test_unreachable_api_server() -> None:
    with KubernetesLauncher.for_host("http://127.0.0.1:9", NS, request_timeout_s=2) as launcher:
        launcher.api_client.configuration.retries = 0
        with pytest.raises(
            KubernetesUnavailable, match=r"cannot reach the Kubernetes API server at http://127.0.0.1:9"
        ):
            launcher.status("run-1")


# --------------------------------------------------------------------------
# Least privilege: the requests need exactly the Role's permissions

VERBS = {
    kmock.action.CREATE: "create",
    kmock.action.FETCH: "get",
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.DELETE: "delete",
}


def permission(req: Any) -> tuple[str, str, str]:
    resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
    verb = VERBS.get(req.action) or {"PATCH": "patch", "PUT": "update"}[str(req.method).split(".")[-1]]
    return req.resource.group, resource, verb


def test_launcher_needs_exactly_the_roles_permissions(api: ApiServer, launcher: KubernetesLauncher) -> None:
    name = launcher.launch(gpu_spec(run_id="run-r")).name
    launcher.launch(gpu_spec(run_id="run-r"))
    api.add_pod(name, f"{name}-a", running_pod())
    api.react(kmock.action.FETCH, kmock.subresource("log"), status=200, body=b"ok\n")
    launcher.status("run-r")
    launcher.list_runs()
    launcher.logs("run-r")
    assert [s.state for s in launcher.watch("run-r", timeout_s=0.3)] == ["running"]
    api.set_job_status(name, {"conditions": [{"type": "Complete", "status": "True"}]})
    launcher.launch(gpu_spec(run_id="run-s"))

    def finish_soon() -> None:
        time.sleep(0.2)
        api.set_job_status(job_name("run-s"), {"conditions": [{"type": "Complete", "status": "True"}]})

    thread = threading.Thread(target=finish_soon)
    thread.start()
    assert [s.state for s in launcher.watch("run-s", timeout_s=10)][-1] == "succeeded"
    thread.join()
    launcher.cancel("run-r")

    used = {permission(r) for r in api.requests()}
    granted = {(g, r, v) for g, r, verbs in k8s_job.RBAC_RULES for v in verbs}
    assert used == granted, f"used but not granted: {used - granted}; granted but unused: {granted - used}"
    # And the Role in the manifests grants the same (tests/test_k8s.py checks the rendered overlays).
    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[1] / k8s_job.ROLE_FILE).read_text()))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    } == granted


# --------------------------------------------------------------------------
# Credentials: token, kubeconfig, in-cluster ServiceAccount


def test_the_token_is_sent(api: ApiServer, launcher: KubernetesLauncher) -> None:
    launcher.launch(gpu_spec())
    assert api.requests(), "every launcher request carries 'Authorization: Bearer <token>'"


def test_from_kubeconfig(api: ApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": api.url}}],
                "users": [{"name": "trainer", "user": {"token": "kubeconfig-token"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "kmock", "user": "trainer", "namespace": NS}}],
                "current-context": "ctx",
            }
        )
    )
    with KubernetesLauncher.from_kubeconfig(kubeconfig, request_timeout_s=5) as launcher:
        assert launcher.namespace == NS
        assert launcher.launch(gpu_spec()).created
    assert len(api.requests("kubeconfig-token")) == 1
    with pytest.raises(LauncherError, match="cannot load the kubeconfig"):
        KubernetesLauncher.from_kubeconfig(tmp_path / "missing")


def test_in_cluster_uses_the_service_account(tmp_path: Path) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (sa / "namespace").write_text("prettyspace-staging\n")
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    launcher = KubernetesLauncher.in_cluster(token_file=str(sa / "token"), ca_file=str(sa / "ca.crt"), environ=environ)
    cfg = launcher.api_client.configuration
    assert cfg.host == "https://10.96.0.1:443" and cfg.ssl_ca_cert == str(sa / "ca.crt")
    assert cfg.get_api_key_with_prefix("BearerToken") == "bearer sa-token"
    assert launcher.namespace == "prettyspace-staging"
    launcher.close()
    with pytest.raises(LauncherError, match="automountServiceAccountToken: true"):
        KubernetesLauncher.in_cluster(token_file=str(tmp_path / "none"), ca_file=str(sa / "ca.crt"), environ=environ)


# --------------------------------------------------------------------------
# Settings and names


def configmap_env(**overrides: str) -> dict[str, str]:
    env = {
        "PSS_TRAINER_JOB_NAMESPACE": NS,
        "PSS_TRAINER_JOB_IMAGE": "ghcr.io/prettyspace/prettyspace:0.1.0",
        "PSS_TRAINER_JOB_GPUS": "1",
        "PSS_TRAINER_JOB_NODE_SELECTOR": '{"nvidia.com/gpu.present": "true"}',
        "PSS_TRAINER_JOB_TOLERATIONS": json.dumps([GPU_TOLERATION]),
        "PSS_TRAINER_JOB_MEMORY_LIMIT": "32Gi",
        "PSS_TRAINER_JOB_SHM_SIZE": "8Gi",
    }
    env.update(overrides)
    return env


def test_template_from_env() -> None:
    template = JobTemplate.from_env(configmap_env())
    assert template.gpus == 1 and template.tolerations == (GPU_TOLERATION,)
    assert template.node_selector == {"nvidia.com/gpu.present": "true"}
    assert template.memory_limit == "32Gi" and template.cpu_limit == "4"  # default kept
    assert [s.env for s in k8s_job.JOB_SETTINGS if s.env not in configmap_env()]  # the rest have defaults


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PSS_TRAINER_JOB_IMAGE": ""}, "PSS_TRAINER_JOB_IMAGE is not set"),
        ({"PSS_TRAINER_JOB_GPUS": "-1"}, "PSS_TRAINER_JOB_GPUS='-1' is invalid: expected an integer >= 0"),
        ({"PSS_TRAINER_JOB_TOLERATIONS": "{nvidia"}, "PSS_TRAINER_JOB_TOLERATIONS='{nvidia' is invalid"),
        ({"PSS_TRAINER_JOB_NODE_SELECTOR": "[]"}, "expected a JSON object"),
        ({"PSS_TRAINER_JOB_SHM_SIZE": "40Gi"}, "leaves less than 1Gi beside shm_size 40Gi"),
        ({"PSS_TRAINER_JOB_CPU_REQUEST": "16"}, "cpu_request 16 exceeds cpu_limit 4"),
        ({"PSS_TRAINER_JOB_MEMORY_LIMIT": "32 GB"}, "memory quantity '32 GB' is malformed"),
        ({"PSS_TRAINER_JOB_TOLERATIONS": '[{"key": "nvidia.com/gpu", "efect": "NoSchedule"}]'}, "unknown fields"),
        ({"PSS_TRAINER_JOB_BACKOFF_LIMIT": "50"}, "backoff_limit 50 is not 0..10"),
    ],
)
def test_bad_settings_are_named(overrides: dict[str, str], message: str) -> None:
    env = configmap_env(**overrides)
    with pytest.raises(ConfigError) as info:
        JobTemplate.from_env(env)
    assert message in str(info.value)


def test_job_names() -> None:
    assert job_name("trainer-20261121183000-0a1b2c3d") == "train-trainer-20261121183000-0a1b2c3d"
    odd = "Run_With.Odd-chars_" + "x" * 40
    name = job_name(odd)
    assert name == job_name(odd) and len(name) <= 63 and name.startswith("train-run-with-odd-chars-")
    assert job_name("A_1") != job_name("a-1")  # sanitising never merges two runs
    for bad in ("", "-run", "run id", "x" * 64, "run/1"):
        with pytest.raises(ValueError, match="cannot name a Kubernetes Job"):
            job_name(bad)
    with pytest.raises(ValueError, match="dataset is empty"):
        JobTemplate(image="prettyspace:dev").spec_for("run-1", "", "demo")
