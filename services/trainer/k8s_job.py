"""Training runs as Kubernetes Jobs (on GPU nodes), created through the API server.

In a cluster the trainer service does not train in its own pod: for each run it creates a
``batch/v1`` Job that runs ``python -m services.trainer.run --run-id ID`` in the platform image,
with the GPU, node selector and tolerations of the cluster's GPU nodes. The service talks to the
API server with its pod's ServiceAccount token; the Role ``trainer`` (k8s/base/trainer-rbac.yaml)
grants exactly :data:`RBAC_RULES`, what :class:`KubernetesLauncher` uses.

- :class:`JobTemplate`: what every run's Job gets (image, GPUs, node selector, tolerations,
  resources, ...), read from the ``PSS_TRAINER_JOB_*`` settings (:data:`JOB_SETTINGS`, the
  ConfigMap ``trainer-job``) with :meth:`JobTemplate.from_env`; ``template.spec_for(run_id,
  dataset, config)`` gives a :class:`TrainingJobSpec`.
- :func:`job_manifest`: the Job as a dict (pure, no cluster needed).
- :class:`KubernetesLauncher`: ``launch`` (idempotent), ``status``, ``watch``, ``cancel``,
  ``logs``, ``list_runs``; every refusal of the API server becomes a :class:`LauncherError`
  whose message says what to do (a 403 names the verb and resource the Role lacks).
- :func:`kubernetes_launch`: a run's Job as the trainer service's ``Launch``
  (services/trainer/launch.py) when ``PSS_TRAIN_LAUNCHER=kubernetes``.

A killed run resumes: a retried pod runs the same command with the same run id, and the
runner resumes from the run's last checkpoint. A pod evicted or preempted (node drain, spot
GPU node reclaimed) does not count against ``backoffLimit`` (``podFailurePolicy``), and the
runner's exit status 2 (bad config, missing dataset) fails the Job at once instead of being
retried. The container's termination message (``FallbackToLogsOnError``: the last lines of its
log when it wrote none) is what :meth:`KubernetesLauncher.status` reports for a failed attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)
from kubernetes.watch.watch import iter_resp_lines

from services.runtime.config import ConfigError, Setting
from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound, ServiceError, Unavailable
from services.trainer.launch import Outcome

T = TypeVar("T")

# --------------------------------------------------------------------------
# Constants shared with the manifests (k8s/base/trainer*.yaml) and their tests.

DEFAULT_NAMESPACE = "prettyspace"
CONFIG_MAP = "prettyspace-config"  # the platform's settings (PSS_*), envFrom
S3_SECRET = "minio-credentials"  # keys access-key / secret-key
CONTAINER = "trainer"
RUN_MODULE = "services.trainer.run"
UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
#: Exit status of the runner for a run that cannot succeed (bad config, missing dataset): not retried.
EXIT_BAD_RUN = 2

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_RUN_ID = "prettyspace.io/run-id"
LABEL_OBJECT_STORE = "prettyspace.io/object-store"  # "client": MinIO admits the pod (k8s/base/network-policies.yaml)
ANNOTATION_DATASET = "prettyspace.io/dataset"
ANNOTATION_CONFIG = "prettyspace.io/config"
JOB_APP_NAME = "trainer-run"
MANAGED_BY = "prettyspace-trainer"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods (1.27+)
LEGACY_JOB_NAME_LABEL = "job-name"

#: What the launcher does through the API server, as RBAC rules (apiGroup, resource, verbs): the Role
#: ``trainer`` grants exactly this (tests/test_k8s.py), and tests/test_trainer_k8s.py checks that the
#: launcher's requests need exactly this.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("create", "delete", "get", "list", "watch")),
    ("", "pods", ("list",)),
    ("", "pods/log", ("get",)),
)
ROLE_FILE = "k8s/base/trainer-rbac.yaml"

_RUN_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")  # a valid label value
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_MEM_UNITS = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_MEM_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60})
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_PULL_POLICIES = {"", "Always", "IfNotPresent", "Never"}


# --------------------------------------------------------------------------
# Settings (PSS_TRAINER_*): the ConfigMap `trainer-job`, envFrom in the trainer Deployment.

#: The trainer's Kubernetes settings. All are plain strings for services.runtime.config (so they may be
#: appended to the service's settings); :meth:`JobTemplate.from_env` parses and checks them.
JOB_SETTINGS: tuple[Setting, ...] = (
    Setting("TRAINER_JOB_NAMESPACE", "str", "", "namespace of the Jobs (default: the pod's own, else prettyspace)"),
    Setting("TRAINER_JOB_IMAGE", "str", "", "image of the training Jobs (the platform image, pinned)"),
    Setting("TRAINER_JOB_IMAGE_PULL_POLICY", "str", "", "Always, IfNotPresent or Never (empty: cluster default)"),
    Setting("TRAINER_JOB_GPUS", "str", "0", "nvidia.com/gpu limit per run (0: CPU only)"),
    Setting("TRAINER_JOB_NODE_SELECTOR", "str", "{}", 'JSON object, e.g. {"nvidia.com/gpu.present": "true"}'),
    Setting("TRAINER_JOB_TOLERATIONS", "str", "[]", "JSON list of tolerations (GPU node taints)"),
    Setting("TRAINER_JOB_RUNTIME_CLASS", "str", "", "runtimeClassName (e.g. nvidia), empty: none"),
    Setting("TRAINER_JOB_CPU_REQUEST", "str", "1", "CPU request of a run"),
    Setting("TRAINER_JOB_CPU_LIMIT", "str", "4", "CPU limit of a run"),
    Setting("TRAINER_JOB_MEMORY_REQUEST", "str", "4Gi", "memory request of a run"),
    Setting("TRAINER_JOB_MEMORY_LIMIT", "str", "8Gi", "memory limit of a run (covers /dev/shm)"),
    Setting("TRAINER_JOB_SHM_SIZE", "str", "1Gi", "memory-backed /dev/shm for DataLoader workers"),
    Setting("TRAINER_JOB_TMP_SIZE", "str", "8Gi", "emptyDir /tmp (the root filesystem is read-only)"),
    Setting("TRAINER_JOB_SERVICE_ACCOUNT", "str", "", "ServiceAccount of the run pods (no API token mounted)"),
    Setting("TRAINER_JOB_BACKOFF_LIMIT", "str", "3", "failed attempts retried (each resumes from its checkpoint)"),
    Setting("TRAINER_JOB_DEADLINE_S", "str", "172800", "a run not done after this long fails (retries included)"),
    Setting("TRAINER_JOB_TTL_S", "str", "86400", "a finished Job (and its pods' logs) is deleted after this"),
)
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# --------------------------------------------------------------------------
# Quantities and names


def parse_quantity(value: str, resource: str = "memory") -> float:
    """A Kubernetes quantity as a number (cores for cpu, bytes otherwise); ValueError if malformed."""
    text = str(value).strip()
    m = (_CPU if resource == "cpu" else _MEM).match(text)
    if not m:
        raise ValueError(
            f"{resource} quantity {value!r} is malformed (e.g. {'500m or 2' if resource == 'cpu' else '8Gi'})"
        )
    if resource == "cpu":
        return float(m.group(1)) / (1000 if m.group(2) else 1)
    return float(m.group(1)) * _MEM_UNITS[m.group(2)]


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(
            f"run id {run_id!r} cannot name a Kubernetes Job: expected 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return run_id


def job_name(run_id: str) -> str:
    """The Job's name for a run: ``train-<run id>`` when that is a DNS label, else a sanitised,
    hashed form (stable, so a run always maps to the same Job)."""
    check_run_id(run_id)
    simple = f"train-{run_id}"
    if _DNS_LABEL.match(simple):
        return simple
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[: 63 - len("train--") - len(digest)].strip("-")
    return f"train-{stem}-{digest}" if stem else f"train-{digest}"


# --------------------------------------------------------------------------
# The Job


@dataclass(frozen=True, kw_only=True)
class JobTemplate:
    """What every training Job of this deployment gets."""

    image: str
    namespace: str = DEFAULT_NAMESPACE
    gpus: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    runtime_class: str | None = None
    cpu_request: str = "1"
    cpu_limit: str = "4"
    memory_request: str = "4Gi"
    memory_limit: str = "8Gi"
    shm_size: str = "1Gi"
    tmp_size: str = "8Gi"
    service_account: str | None = None
    image_pull_policy: str | None = None
    config_map: str = CONFIG_MAP
    s3_secret: str = S3_SECRET
    backoff_limit: int = 3
    active_deadline_s: int = 2 * 24 * 3600
    ttl_after_finished_s: int = 24 * 3600
    termination_grace_s: int = 60
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_selector", dict(self.node_selector))
        object.__setattr__(self, "tolerations", tuple(dict(t) for t in self.tolerations))
        object.__setattr__(self, "extra_env", dict(self.extra_env))
        problems = _template_problems(self)
        if problems:
            raise ValueError("training Job settings: " + "; ".join(problems))

    def spec_for(self, run_id: str, dataset: str, config: str) -> TrainingJobSpec:
        """The spec of one run's Job."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(JobTemplate)}
        return TrainingJobSpec(run_id=run_id, dataset=dataset, config=config, **values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobTemplate:
        """Read the ``PSS_TRAINER_JOB_*`` settings; ConfigError (one line per problem) if wrong."""
        env = os.environ if environ is None else environ
        raw = {s.name: (env.get(s.env) or s.default or "").strip() for s in JOB_SETTINGS}
        problems: list[str] = []

        def parse(name: str, fn: Callable[[str], T], expected: str) -> T | None:
            try:
                return fn(raw[name])
            except (ValueError, TypeError, json.JSONDecodeError):
                problems.append(f"PSS_{name}={raw[name]!r} is invalid: expected {expected}")
                return None

        def non_negative_int(text: str) -> int:
            value = int(text)
            if value < 0:
                raise ValueError(text)
            return value

        def json_of(kind: type) -> Callable[[str], Any]:
            def load(text: str) -> Any:
                value = json.loads(text or ("{}" if kind is dict else "[]"))
                if not isinstance(value, kind):
                    raise TypeError(text)
                return value

            return load

        if not raw["TRAINER_JOB_IMAGE"]:
            problems.append("PSS_TRAINER_JOB_IMAGE is not set (the image of the training Jobs)")
        values: dict[str, Any] = {
            "image": raw["TRAINER_JOB_IMAGE"],
            "namespace": raw["TRAINER_JOB_NAMESPACE"] or in_cluster_namespace() or DEFAULT_NAMESPACE,
            "gpus": parse("TRAINER_JOB_GPUS", non_negative_int, "an integer >= 0"),
            "node_selector": parse("TRAINER_JOB_NODE_SELECTOR", json_of(dict), "a JSON object of label: value"),
            "tolerations": parse("TRAINER_JOB_TOLERATIONS", json_of(list), "a JSON list of tolerations"),
            "runtime_class": raw["TRAINER_JOB_RUNTIME_CLASS"] or None,
            "cpu_request": raw["TRAINER_JOB_CPU_REQUEST"],
            "cpu_limit": raw["TRAINER_JOB_CPU_LIMIT"],
            "memory_request": raw["TRAINER_JOB_MEMORY_REQUEST"],
            "memory_limit": raw["TRAINER_JOB_MEMORY_LIMIT"],
            "shm_size": raw["TRAINER_JOB_SHM_SIZE"],
            "tmp_size": raw["TRAINER_JOB_TMP_SIZE"],
            "service_account": raw["TRAINER_JOB_SERVICE_ACCOUNT"] or None,
            "image_pull_policy": raw["TRAINER_JOB_IMAGE_PULL_POLICY"] or None,
            "backoff_limit": parse("TRAINER_JOB_BACKOFF_LIMIT", non_negative_int, "an integer >= 0"),
            "active_deadline_s": parse("TRAINER_JOB_DEADLINE_S", int, "a number of seconds > 0"),
            "ttl_after_finished_s": parse("TRAINER_JOB_TTL_S", non_negative_int, "a number of seconds >= 0"),
        }
        if problems:
            raise ConfigError("; ".join(problems))
        values["tolerations"] = tuple(values["tolerations"])
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class TrainingJobSpec(JobTemplate):
    """One run's Job: the run (id, dataset reference ``NAME@VERSION``, config name) and the
    deployment's :class:`JobTemplate` fields."""

    run_id: str
    dataset: str
    config: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_run_id(self.run_id)
        for name in ("dataset", "config"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"training Job spec: {name} is empty")

    @property
    def job_name(self) -> str:
        return job_name(self.run_id)


def _template_problems(t: JobTemplate) -> list[str]:
    problems = []
    if not t.image:
        problems.append("image is empty")
    if not _DNS_LABEL.match(t.namespace or ""):
        problems.append(f"namespace {t.namespace!r} is not a DNS label")
    if not isinstance(t.gpus, int) or isinstance(t.gpus, bool) or t.gpus < 0:
        problems.append(f"gpus {t.gpus!r} is not an integer >= 0")
    quantities: dict[str, float] = {}
    for name, resource in (
        ("cpu_request", "cpu"),
        ("cpu_limit", "cpu"),
        ("memory_request", "memory"),
        ("memory_limit", "memory"),
        ("shm_size", "memory"),
        ("tmp_size", "memory"),
    ):
        try:
            quantities[name] = parse_quantity(getattr(t, name), resource)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    for req, lim in (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit")):
        if req in quantities and lim in quantities and quantities[req] > quantities[lim]:
            problems.append(f"{req} {getattr(t, req)} exceeds {lim} {getattr(t, lim)}")
    # /dev/shm is memory: what the DataLoader workers put there counts against the memory limit.
    if (
        "shm_size" in quantities
        and "memory_limit" in quantities
        and quantities["shm_size"] + 2**30 > quantities["memory_limit"]
    ):
        problems.append(f"memory_limit {t.memory_limit} leaves less than 1Gi beside shm_size {t.shm_size}")
    for key, value in t.node_selector.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append(f"node selector {key!r}: {value!r} must map strings to strings")
    for tol in t.tolerations:
        unknown = set(tol) - _TOLERATION_KEYS
        if unknown:
            problems.append(f"toleration {tol} has unknown fields {sorted(unknown)}")
        if tol.get("operator", "Equal") not in ("Equal", "Exists"):
            problems.append(f"toleration {tol}: operator must be Equal or Exists")
        if tol.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            problems.append(f"toleration {tol}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
    if t.image_pull_policy not in (None, *_PULL_POLICIES):
        problems.append(f"image pull policy {t.image_pull_policy!r} is not Always, IfNotPresent or Never")
    if not isinstance(t.backoff_limit, int) or not 0 <= t.backoff_limit <= 10:
        problems.append(f"backoff_limit {t.backoff_limit!r} is not 0..10")
    if not isinstance(t.active_deadline_s, int) or t.active_deadline_s < 1:
        problems.append(f"active_deadline_s {t.active_deadline_s!r} is not a positive number of seconds")
    if not isinstance(t.ttl_after_finished_s, int) or t.ttl_after_finished_s < 0:
        problems.append(f"ttl_after_finished_s {t.ttl_after_finished_s!r} is negative")
    return problems


def run_labels(run_id: str) -> dict[str, str]:
    return {
        LABEL_NAME: JOB_APP_NAME,
        LABEL_COMPONENT: "training",
        LABEL_PART_OF: DEFAULT_NAMESPACE,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_INSTANCE: job_name(run_id),
        LABEL_RUN_ID: run_id,
    }


def default_command(run_id: str) -> tuple[list[str], list[str]]:
    """(command, args) of the run's container: the image's Python, not its ENTRYPOINT (a service)."""
    return ["python", "-m", RUN_MODULE], ["--run-id", run_id]


def job_manifest(spec: TrainingJobSpec) -> dict[str, Any]:
    """The ``batch/v1`` Job of one training run (a plain dict, as the API server takes it)."""
    name = spec.job_name
    labels = run_labels(spec.run_id)
    command, args = default_command(spec.run_id)
    threads = max(1, math.floor(parse_quantity(spec.cpu_limit, "cpu")))
    env: list[dict[str, Any]] = [
        {"name": "PSS_TRAIN_RUN_ID", "value": spec.run_id},
        {"name": "PSS_TRAIN_DATASET", "value": spec.dataset},
        {"name": "PSS_TRAIN_CONFIG", "value": spec.config},
        {"name": "PSS_TRAIN_GPUS", "value": str(spec.gpus)},
        # torch sizes its thread pools from the node's cores, not the container's CPU limit.
        {"name": "OMP_NUM_THREADS", "value": str(threads)},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},  # report plots; the root filesystem is read-only
        {"name": "PSS_S3_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": "access-key"}}},
        {"name": "PSS_S3_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": "secret-key"}}},
    ]
    fixed = {e["name"] for e in env}
    env += [{"name": k, "value": str(v)} for k, v in sorted(spec.extra_env.items()) if k not in fixed]
    limits: dict[str, str] = {"cpu": spec.cpu_limit, "memory": spec.memory_limit}
    if spec.gpus:
        limits[GPU_RESOURCE] = str(spec.gpus)  # extended resources: the request defaults to the limit
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": command,
        "args": args,
        "envFrom": [{"configMapRef": {"name": spec.config_map}}],
        "env": env,
        "resources": {"requests": {"cpu": spec.cpu_request, "memory": spec.memory_request}, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
        # A failed attempt explains itself in the Job's pod status: the runner's message, else its last log lines.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod: dict[str, Any] = {
        "restartPolicy": "Never",  # each attempt is its own pod (and log); podFailurePolicy requires it
        "automountServiceAccountToken": False,  # the run never talks to the API server
        "enableServiceLinks": False,
        # SIGTERM (drain, cancel, deadline) leaves the runner this long to write a checkpoint.
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}},
            # DataLoader workers pass batches through shared memory; the runtime's default /dev/shm is 64Mi.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        ],
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.runtime_class:
        pod["runtimeClassName"] = spec.runtime_class
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {
                LABEL_RUN_ID: spec.run_id,
                ANNOTATION_DATASET: spec.dataset,
                ANNOTATION_CONFIG: spec.config,
            },
        },
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_s,
            "ttlSecondsAfterFinished": spec.ttl_after_finished_s,
            "podFailurePolicy": {
                "rules": [
                    # A run that cannot succeed (bad config, missing dataset) is not retried.
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_RUN]},
                    },
                    # Evicted or preempted (node drain, reclaimed spot node): retried without counting.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": {"labels": {**labels, LABEL_OBJECT_STORE: "client"}}, "spec": pod},
        },
    }


# --------------------------------------------------------------------------
# Status of a run, from its Job and pods


PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: str  # pending | running | succeeded | failed
    message: str
    job_name: str
    failed_attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in (SUCCEEDED, FAILED)


def _conditions(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    status = job.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or [] if c.get("status") == "True"}


def _pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a pod is not running yet (unschedulable, image pull, missing Secret, ...)."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            msg = waiting.get("message")
            return f"pod {name}: {reason}" + (f": {msg}" if msg else "")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            msg = cond.get("message") or cond.get("reason") or "not scheduled"
            return f"pod {name} cannot be scheduled: {msg}"
    return None


def _termination(pod: Mapping[str, Any]) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            text = (term.get("message") or "").strip()
            tail = text.splitlines()[-1] if text else (term.get("reason") or "")
            return f"exit {term.get('exitCode')}" + (f": {tail}" if tail else "")
    return None


def _created(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def run_status(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> RunStatus:
    """pending / running / succeeded / failed, with a message a person can act on, from a Job and its pods."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    name = meta.get("name", "")
    run_id = (meta.get("labels") or {}).get(LABEL_RUN_ID) or (meta.get("annotations") or {}).get(LABEL_RUN_ID, "")
    failed = int(status.get("failed") or 0)
    conds = _conditions(job)
    pods = sorted(pods, key=_created)
    last_failure = next((t for t in (_termination(p) for p in reversed(pods)) if t), None)
    common = {
        "run_id": run_id,
        "job_name": name,
        "failed_attempts": failed,
        "start_time": status.get("startTime"),
        "completion_time": status.get("completionTime"),
    }

    def make(state: str, message: str) -> RunStatus:
        return RunStatus(state=state, message=message, **common)

    for ctype in ("Failed", "FailureTarget"):
        if ctype in conds:
            c = conds[ctype]
            text = f"{c.get('reason') or 'Failed'}: {c.get('message') or 'the Job failed'}"
            if last_failure:
                text += f" (last attempt: {last_failure})"
            return make(FAILED, text)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return make(SUCCEEDED, "the run finished")
    if meta.get("deletionTimestamp"):
        return make(FAILED, "the Job is being deleted (cancelled)")
    if (job.get("spec") or {}).get("suspend"):
        return make(PENDING, "the Job is suspended")
    retry = f" (retry after {failed} failed attempt{'s' if failed != 1 else ''}: {last_failure})" if failed else ""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running", None)]
    if any((p.get("status") or {}).get("phase") == "Running" for p in live) or int(status.get("ready") or 0) > 0:
        if failed:
            return make(RUNNING, f"running, attempt {failed + 1} (resumed from the last checkpoint){retry}")
        return make(RUNNING, "running")
    problem = next((m for m in (_pod_problem(p) for p in reversed(live)) if m), None)
    if problem:
        return make(PENDING, problem + retry)
    if live or int(status.get("active") or 0) > 0:
        return make(PENDING, "waiting for the pod to start" + retry)
    return make(PENDING, "waiting for the Job controller to create a pod" + retry)


# --------------------------------------------------------------------------
# Errors


class LauncherError(ServiceError):
    """The API server refused or could not be reached; the message says what to do."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubernetesForbidden(LauncherError, FailedPrecondition):
    """403: the ServiceAccount lacks a permission (RBAC)."""

    def __init__(self, message: str, *, verb: str, resource: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.verb = verb
        self.resource = resource


class KubernetesUnauthorized(LauncherError, FailedPrecondition):
    """401: no or a rejected token."""


class RunNotFound(LauncherError, NotFound):
    """No Job for this run (never launched, cancelled, or deleted after ttlSecondsAfterFinished)."""


class JobConflict(LauncherError, AlreadyExists):
    """A Job of that name exists but is not this run's Job, or is still being deleted."""


class JobRejected(LauncherError, FailedPrecondition):
    """400/422: the API server (or an admission webhook) rejected the Job."""


class KubernetesUnavailable(LauncherError, Unavailable):
    """Connection refused, timeout, 429 or 5xx: worth retrying later."""


def _status_body(exc: k8s.ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


# --------------------------------------------------------------------------
# The launcher


def in_cluster_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE_FILE) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class LaunchedJob:
    run_id: str
    name: str
    namespace: str
    created: bool  # False: the run's Job already existed (launch is idempotent)
    manifest: dict[str, Any]


class KubernetesLauncher:
    """Creates, follows and cancels training Jobs through the API server.

    Build one with :meth:`in_cluster` (the pod's ServiceAccount token), :meth:`from_kubeconfig`,
    :meth:`for_host` (tests), or :meth:`connect` (in-cluster when in a pod, else kubeconfig).
    Thread-safe for concurrent calls (one urllib3 pool per launcher).
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        request_timeout_s: float = 30.0,
        field_manager: str = MANAGED_BY,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.request_timeout_s = request_timeout_s
        self.field_manager = field_manager
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    # ---- construction

    @classmethod
    def in_cluster(
        cls,
        namespace: str | None = None,
        *,
        token_file: str = SERVICE_TOKEN_FILENAME,
        ca_file: str = SERVICE_CERT_FILENAME,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> KubernetesLauncher:
        """The pod's ServiceAccount: token (re-read as the kubelet rotates it) and CA from the
        projected volume, the API server from KUBERNETES_SERVICE_HOST/PORT."""
        cfg = k8s.Configuration()
        try:
            InClusterConfigLoader(
                token_filename=token_file, cert_filename=ca_file, environ=os.environ if environ is None else environ
            ).load_and_set(cfg)
        except k8s_config.ConfigException as exc:
            raise LauncherError(
                f"cannot use the pod's ServiceAccount to reach the Kubernetes API ({exc}): the trainer Deployment "
                "needs serviceAccountName: trainer and automountServiceAccountToken: true"
            ) from None
        ns = namespace or in_cluster_namespace(Path(token_file).with_name("namespace")) or DEFAULT_NAMESPACE
        return cls(k8s.ApiClient(cfg), ns, **kwargs)

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> KubernetesLauncher:
        """A kubeconfig file (default: $KUBECONFIG or ~/.kube/config), its current or the given context."""
        cfg = k8s.Configuration()
        config_file = str(path) if path is not None else None
        try:
            k8s_config.load_kube_config(config_file=config_file, context=context, client_configuration=cfg)
            _, active = k8s_config.list_kube_config_contexts(config_file=config_file)
        except (k8s_config.ConfigException, OSError) as exc:
            raise LauncherError(f"cannot load the kubeconfig {config_file or '(default)'}: {exc}") from None
        if context is None:
            ctx_namespace = (active or {}).get("context", {}).get("namespace")
        else:
            contexts, _ = k8s_config.list_kube_config_contexts(config_file=config_file)
            ctx_namespace = next((c["context"].get("namespace") for c in contexts if c["name"] == context), None)
        return cls(k8s.ApiClient(cfg), namespace or ctx_namespace or DEFAULT_NAMESPACE, **kwargs)

    @classmethod
    def for_host(
        cls,
        host: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        token: str | None = None,
        verify_ssl: bool = True,
        ca_file: str | None = None,
        **kwargs: Any,
    ) -> KubernetesLauncher:
        """An API server at ``host`` (``https://...`` or, for tests, ``http://127.0.0.1:PORT``)."""
        cfg = k8s.Configuration()
        cfg.host = host.rstrip("/")
        cfg.verify_ssl = verify_ssl
        cfg.ssl_ca_cert = ca_file
        if token:
            cfg.api_key["BearerToken"] = token
            cfg.api_key_prefix["BearerToken"] = "Bearer"
        return cls(k8s.ApiClient(cfg), namespace, **kwargs)

    @classmethod
    def connect(
        cls, namespace: str | None = None, *, kubeconfig: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> KubernetesLauncher:
        """In a pod (KUBERNETES_SERVICE_HOST set, no kubeconfig given): the ServiceAccount; else the kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(namespace, **kwargs)
        return cls.from_kubeconfig(kubeconfig, namespace=namespace, **kwargs)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> KubernetesLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- API calls

    def _call(self, verb: str, resource: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API request; its JSON body as a dict. Errors become LauncherError subclasses."""
        kwargs.setdefault("_request_timeout", self.request_timeout_s)
        stream = kwargs.pop("_stream", False)
        kwargs["_preload_content"] = False
        try:
            resp = fn(*args, **kwargs)
        except k8s.ApiException as exc:
            raise self._translate(exc, verb, resource, what) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailable(
                f"cannot reach the Kubernetes API server at {self.api_client.configuration.host} to {verb} "
                f"{resource} ({what}): {exc}"
            ) from None
        if stream:
            return resp  # the caller reads it as it comes, then closes it
        data = resp.data
        return json.loads(data) if data and resource != "pods/log" else data

    def _translate(self, exc: k8s.ApiException, verb: str, resource: str, what: str) -> LauncherError:
        body = _status_body(exc)
        body.setdefault("code", exc.status)
        body.setdefault("reason", exc.reason)
        return self._refusal(body, verb, resource, what)

    def _refusal(self, body: Mapping[str, Any], verb: str, resource: str, what: str) -> LauncherError:
        """The LauncherError for a Status the API server answered (code, reason, message, details)."""
        status = int(body.get("code") or 0)
        reason = str(body.get("reason") or "")
        server = str(body.get("message") or reason).strip()
        kw = {"status": status, "reason": reason}
        ns = self.namespace
        said = f" (API server: {server})" if server else ""
        if status == 403:
            return KubernetesForbidden(
                f"the trainer's ServiceAccount may not {verb} {resource} in namespace {ns!r} ({what}): the Role "
                f"'trainer' ({ROLE_FILE}) must grant verb {verb!r} on {resource!r}, bound to the ServiceAccount "
                f"'trainer'{said}",
                verb=verb,
                resource=resource,
                **kw,
            )
        if status == 401:
            return KubernetesUnauthorized(
                f"the Kubernetes API server rejected the trainer's credentials while trying to {verb} {resource} "
                f"({what}): check the ServiceAccount token (automountServiceAccountToken) or the kubeconfig{said}",
                **kw,
            )
        if status == 404:
            if verb == "create":
                return RunNotFound(f"cannot {verb} {resource} ({what}): namespace {ns!r} does not exist{said}", **kw)
            return RunNotFound(f"{what}: not found in namespace {ns!r}{said}", **kw)
        if status == 409:
            return JobConflict(f"cannot {verb} {resource} ({what}): conflict{said}", **kw)
        if status in (400, 422):
            causes = "; ".join(
                f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
                for c in (body.get("details") or {}).get("causes") or []
            )
            detail = f": {causes}" if causes else ""
            return JobRejected(f"the API server rejected {verb} {resource} ({what}){detail}{said}", **kw)
        if status == 429 or status >= 500 or status == 0:
            return KubernetesUnavailable(
                f"the Kubernetes API server could not {verb} {resource} now ({what}), HTTP {status}{said}", **kw
            )
        return LauncherError(f"cannot {verb} {resource} ({what}): HTTP {status}{said}", **kw)

    def _read_job(self, run_id: str) -> dict[str, Any]:
        name = job_name(run_id)
        return self._call(
            "get", "jobs.batch", f"run {run_id}: Job {name}", self._batch.read_namespaced_job, name, self.namespace
        )

    def _pods(self, selector: str, what: str, accept: Callable[[Mapping[str, Any]], bool]) -> list[dict[str, Any]]:
        body = self._call("list", "pods", what, self._core.list_namespaced_pod, self.namespace, label_selector=selector)
        # Filter here too: the selector is the server's job, but a wrong answer must not mix runs.
        return [p for p in body.get("items") or [] if accept(p)]

    def _job_pods(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        name = (job.get("metadata") or {}).get("name", "")

        uid = (job.get("metadata") or {}).get("uid")

        def mine(pod: Mapping[str, Any]) -> bool:
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            if name not in (labels.get(JOB_NAME_LABEL), labels.get(LEGACY_JOB_NAME_LABEL)):
                return False
            # Pods of an earlier Job of the same name (replaced after it failed) may still be terminating.
            owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
            return not (uid and owners) or uid in owners

        return self._pods(f"{JOB_NAME_LABEL}={name}", f"pods of Job {name}", mine)

    # ---- public operations

    def launch(
        self, spec: TrainingJobSpec, *, replace_failed: bool = False, gone_timeout_s: float = 30.0
    ) -> LaunchedJob:
        """Create the run's Job. Idempotent: if it exists already (a retried call, a restarted service),
        the existing Job is returned (``created=False``), whatever its state, unless ``replace_failed``
        and it failed: then it is deleted and a new one created (the run resumes from its checkpoint).
        A different run's Job of that name, or one still being deleted, raises JobConflict."""
        if spec.namespace != self.namespace:
            raise ValueError(f"spec namespace {spec.namespace!r} is not the launcher's {self.namespace!r}")
        manifest = job_manifest(spec)
        what = f"run {spec.run_id}: Job {spec.job_name}"
        for attempt in range(3):
            try:
                created = self._call(
                    "create",
                    "jobs.batch",
                    what,
                    self._batch.create_namespaced_job,
                    self.namespace,
                    manifest,
                    field_manager=self.field_manager,
                )
                return LaunchedJob(spec.run_id, spec.job_name, self.namespace, True, created)
            except JobConflict:
                try:
                    existing = self._read_job(spec.run_id)
                except RunNotFound:
                    continue  # deleted in between: create it again
            self._check_existing(spec, existing)
            if replace_failed and attempt == 0 and run_status(existing).state == FAILED:
                self.cancel(spec.run_id)
                self._wait_gone(spec.run_id, gone_timeout_s)
                continue
            return LaunchedJob(spec.run_id, spec.job_name, self.namespace, False, existing)
        raise JobConflict(f"{what}: the Job keeps appearing and disappearing; launch again later", status=409)

    def _check_existing(self, spec: TrainingJobSpec, existing: Mapping[str, Any]) -> None:
        meta = existing.get("metadata") or {}
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        if labels.get(LABEL_RUN_ID) != spec.run_id:
            raise JobConflict(
                f"Job {spec.job_name} exists in namespace {self.namespace!r} but belongs to run "
                f"{labels.get(LABEL_RUN_ID)!r}, not {spec.run_id!r}: delete it or use another run id",
                status=409,
            )
        if meta.get("deletionTimestamp"):
            raise JobConflict(
                f"the previous Job {spec.job_name} of run {spec.run_id} is still being deleted: "
                "launch again once it is gone",
                status=409,
            )
        for key, wanted in ((ANNOTATION_DATASET, spec.dataset), (ANNOTATION_CONFIG, spec.config)):
            if notes.get(key, wanted) != wanted:
                raise JobConflict(
                    f"run {spec.run_id} already has Job {spec.job_name} with {key.split('/')[-1]} "
                    f"{notes.get(key)!r}, not {wanted!r}",
                    status=409,
                )

    def _wait_gone(self, run_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._read_job(run_id)
            except RunNotFound:
                return
            if time.monotonic() >= deadline:
                raise JobConflict(
                    f"run {run_id}: the failed Job {job_name(run_id)} is still being deleted after {timeout_s:.0f} s; "
                    "launch again once it is gone",
                    status=409,
                )
            time.sleep(0.5)

    def status(self, run_id: str) -> RunStatus:
        """The run's state (RunNotFound if it has no Job: never launched, cancelled, or expired)."""
        job = self._read_job(run_id)
        return run_status(job, self._job_pods(job))

    def list_runs(self) -> list[RunStatus]:
        """Every training Job in the namespace (e.g. to re-attach after a restart), oldest first."""
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        body = self._call(
            "list",
            "jobs.batch",
            "training Jobs",
            self._batch.list_namespaced_job,
            self.namespace,
            label_selector=selector,
        )
        jobs = [
            j
            for j in body.get("items") or []
            if ((j.get("metadata") or {}).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        ]
        names = {(j.get("metadata") or {}).get("name") for j in jobs}

        def ours(pod: Mapping[str, Any]) -> bool:
            return ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL) in names

        pods = self._pods(f"{LABEL_MANAGED_BY}={MANAGED_BY}", "pods of the training Jobs", ours) if jobs else []
        by_job: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            by_job.setdefault(p["metadata"]["labels"][JOB_NAME_LABEL], []).append(p)
        return [run_status(j, by_job.get(j["metadata"]["name"], [])) for j in sorted(jobs, key=_created)]

    def watch(self, run_id: str, timeout_s: float = 300.0) -> Iterator[RunStatus]:
        """The run's status now, then each time it changes, until it is terminal or ``timeout_s`` passes.
        RunNotFound if the Job does not exist or is deleted meanwhile."""
        deadline = time.monotonic() + timeout_s
        last = self.status(run_id)
        yield last
        if last.terminal:
            return
        name = job_name(run_id)
        what = f"run {run_id}: Job {name}"
        while (remaining := deadline - time.monotonic()) > 0:
            # No resourceVersion: each (re)start begins with the Job's current state (an ADDED event).
            resp = self._call(
                "watch",
                "jobs.batch",
                what,
                self._batch.list_namespaced_job,
                self.namespace,
                field_selector=f"metadata.name={name}",
                watch=True,
                timeout_seconds=max(1, math.ceil(remaining)),
                _request_timeout=(self.request_timeout_s, remaining + 1),
                _stream=True,
            )
            try:
                for line in iter_resp_lines(resp):
                    event = json.loads(line) if line.strip() else {}
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # e.g. 410 Gone: the stream expired; watch again
                        if obj.get("code") == 410:
                            break
                        raise self._refusal(obj, "watch", "jobs.batch", what)
                    if (obj.get("metadata") or {}).get("name") != name:
                        continue  # a BOOKMARK, or another Job (the selector is the server's job; check anyway)
                    if kind == "DELETED":
                        raise RunNotFound(f"{what}: the Job was deleted (cancelled, or expired after it finished)")
                    current = run_status(obj, self._job_pods(obj))
                    if current != last:
                        last = current
                        yield current
                    if current.terminal or time.monotonic() >= deadline:
                        return
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                pass  # the stream ended or went silent: watch again until the deadline
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise KubernetesUnavailable(
                    f"cannot reach the Kubernetes API server at {self.api_client.configuration.host} to watch "
                    f"jobs.batch ({what}): {exc}"
                ) from None
            finally:
                resp.close()
                resp.release_conn()

    def cancel(self, run_id: str) -> bool:
        """Delete the run's Job and (in the background) its pods, which get SIGTERM and their grace period
        to checkpoint. False if there was no Job (already gone)."""
        name = job_name(run_id)
        try:
            self._call(
                "delete",
                "jobs.batch",
                f"run {run_id}: Job {name}",
                self._batch.delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy="Background",
            )
        except RunNotFound:
            return False
        return True

    def logs(self, run_id: str, tail_lines: int = 200) -> str:
        """The last lines of the log of the run's latest pod ("" if none has started)."""
        job = self._read_job(run_id)
        pods = sorted(self._job_pods(job), key=_created)
        if not pods:
            return ""
        pod = pods[-1]["metadata"]["name"]
        data = self._call(
            "get",
            "pods/log",
            f"run {run_id}: log of pod {pod}",
            self._core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=CONTAINER,
            tail_lines=tail_lines,
        )
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")


# --------------------------------------------------------------------------
# The trainer service's side: a run's Job as a services.trainer.launch.Launch

_default_launcher: KubernetesLauncher | None = None
_default_lock = threading.Lock()


def default_launcher(namespace: str) -> KubernetesLauncher:
    """One launcher per process: in a pod its ServiceAccount, elsewhere the kubeconfig."""
    global _default_launcher
    with _default_lock:
        if _default_launcher is None or _default_launcher.namespace != namespace:
            _default_launcher = KubernetesLauncher.connect(namespace)
        return _default_launcher


class KubernetesLaunch:
    """A run's Job, created or re-attached to at construction (a failed earlier Job of the run is
    replaced: the run resumes from its checkpoint); ``poll()`` gives the service's Outcome (asking the
    API server at most every ``min_poll_s``), ``stop(cancel=True)`` deletes the Job, ``stop(cancel=False)``
    leaves it running for the next service process to re-attach to."""

    def __init__(self, launcher: KubernetesLauncher, spec: TrainingJobSpec, *, min_poll_s: float = 5.0) -> None:
        self.launcher = launcher
        self.spec = spec
        self.min_poll_s = min_poll_s
        self.job = launcher.launch(spec, replace_failed=True)
        self._last: tuple[float, Outcome] | None = None

    def poll(self) -> Outcome:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.min_poll_s:
            return self._last[1]
        outcome = self._outcome()
        self._last = (now, outcome)
        return outcome

    def _outcome(self) -> Outcome:
        try:
            status = self.launcher.status(self.spec.run_id)
        except RunNotFound:
            return Outcome(
                "failed",
                f"the Job {self.spec.job_name} of run {self.spec.run_id} was deleted outside the trainer (or expired)",
            )
        except KubernetesUnavailable as exc:
            return Outcome("running", f"{exc}; asking again")
        except LauncherError as exc:
            return Outcome("failed", str(exc))
        if status.state in (PENDING, RUNNING):
            return Outcome("running", status.message)
        return Outcome(status.state, status.message)

    def stop(self, cancel: bool) -> None:
        if cancel:
            self.launcher.cancel(self.spec.run_id)


def kubernetes_launch(
    run: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    launcher: KubernetesLauncher | None = None,
    min_poll_s: float = 5.0,
) -> KubernetesLaunch:
    """The Job of a run record (services/trainer/runs.py: ``id``, ``dataset`` {name, version},
    ``config_name``) with this deployment's PSS_TRAINER_JOB_* settings (ConfigError if wrong)."""
    template = JobTemplate.from_env(environ)
    ds = run.get("dataset") or {}
    dataset = f"{ds.get('name')}@{ds.get('version')}" if isinstance(ds, Mapping) else str(ds)
    spec = template.spec_for(str(run["id"]), dataset=dataset, config=str(run.get("config_name") or "demo"))
    return KubernetesLaunch(launcher or default_launcher(template.namespace), spec, min_poll_s=min_poll_s)
