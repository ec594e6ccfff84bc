"""Which generator versions Triton serves, and how a newly exported one gets served.

The trainer's export uploads every file of version n, then names n in `{model}/versions.json`
(services/trainer/export.py): that file is the commit point. Triton runs in explicit model-control
mode, so nothing loads until we ask. `sync` asks Triton to load the model with its own
config.pbtxt (read from the repository) overridden by `version_policy: specific` naming only
published versions: a version whose upload is still under way is never loaded, even though its
folder is already in the bucket. Triton swaps versions in place, without a restart and without
failing requests already running on the versions it retires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from services.model import normalise
from services.model.generator import NOISE_CHANNELS
from services.runtime.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.runtime.objectstore import ObjectNotFound, ObjectStore
from services.trainer import export

log = logging.getLogger(__name__)
BUCKET = export.BUCKET


@dataclass(frozen=True)
class ServedVersion:
    model: str
    version: int
    provenance: dict[str, Any]

    @property
    def scale(self) -> int:
        return int(self.provenance.get("scale", 4))


@dataclass
class _Served:
    versions: tuple[int, ...] = ()
    provenance: dict[int, dict[str, Any]] = field(default_factory=dict)
    synced_at: float = 0.0


def published_versions(store: ObjectStore, model: str) -> list[int]:
    return sorted(int(v["version"]) for v in export.versions(store, model))


def config_with_versions(pbtxt: str, versions: tuple[int, ...]) -> str:
    """The repository's config with only `versions` loadable, as the JSON `load_model` takes."""
    config = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(versions)
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def triton_error(exc: InferenceServerException, url: str, action: str) -> Exception:
    """A Triton client error as the gRPC status our callers should see."""
    status = str(exc.status() or "")
    text = exc.message() or str(exc)
    if "DEADLINE" in status or "Deadline" in text:
        return DeadlineExceeded(f"Triton at {url} did not {action} before the deadline")
    if "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower():
        return Unavailable(f"Triton at {url} is unavailable ({action}): {text}")
    return FailedPrecondition(f"Triton at {url} could not {action}: {text}")


class ModelRegistry:
    """The versions of each model that Triton serves, kept in step with the repository."""

    def __init__(
        self,
        store: ObjectStore,
        triton_url: str,
        keep_versions: int = 2,
        config_name: str = "",
        load_timeout_s: float = 120.0,
    ) -> None:
        self.store = store
        self.triton_url = triton_url
        self.keep_versions = max(1, keep_versions)
        # "" = {model}/config.pbtxt (CPU, Python backend); "gpu" = {model}/configs/gpu.pbtxt
        # (must match tritonserver --model-config-name).
        self.config_name = config_name
        self.load_timeout_s = load_timeout_s
        self._lock = threading.RLock()
        self._served: dict[str, _Served] = {}
        self._in_use: dict[tuple[str, int], int] = {}

    def _config_key(self, model: str) -> str:
        return f"{model}/configs/{self.config_name}.pbtxt" if self.config_name else f"{model}/config.pbtxt"

    def sync(self, model: str) -> tuple[int, ...]:
        """Serve the newest `keep_versions` published versions of `model`; returns them."""
        export.validate_model_name(model)
        with self._lock:
            published = published_versions(self.store, model)
            if not published:
                raise FailedPrecondition(
                    f"no version of model {model!r} is published in the {BUCKET} bucket: train and export one "
                    f"(prettyspace train …; prettyspace model export RUN --name {model})"
                )
            # Versions a render is still using stay loaded until it ends (another gateway's renders
            # are not known here: keep_versions >= 2 covers one export landing mid-render).
            busy = {v for (m, v), n in self._in_use.items() if m == model and n > 0 and v in published}
            wanted = tuple(sorted({*published[-self.keep_versions :], *busy}))
            served = self._served.setdefault(model, _Served())
            if wanted != served.versions or not self._ready(model, wanted[-1]):
                self._load(model, wanted)
                served.versions = wanted
                served.provenance = {v: self._provenance(model, v) for v in wanted}
                log.info("model versions served", extra={"model": model, "versions": list(wanted)})
            served.synced_at = time.monotonic()
            return served.versions

    @contextmanager
    def lease(self, served: ServedVersion) -> Iterator[ServedVersion]:
        """Hold `served` loaded while a render uses it (a sync meanwhile keeps it)."""
        key = (served.model, served.version)
        with self._lock:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            yield served
        finally:
            with self._lock:
                self._in_use[key] -= 1

    def known(self) -> list[str]:
        """Models rendered with (or synced) so far."""
        with self._lock:
            return list(self._served)

    def _ready(self, model: str, version: int) -> bool:
        try:
            with grpcclient.InferenceServerClient(self.triton_url) as client:
                return bool(client.is_model_ready(model, str(version), client_timeout=5.0))
        except InferenceServerException:
            return False

    def _load(self, model: str, versions: tuple[int, ...]) -> None:
        try:
            pbtxt = self.store.get_bytes(BUCKET, self._config_key(model)).decode()
        except ObjectNotFound:
            raise FailedPrecondition(
                f"model {model!r} has no {self._config_key(model)} in the {BUCKET} bucket"
            ) from None
        config = config_with_versions(pbtxt, versions)
        try:
            with grpcclient.InferenceServerClient(self.triton_url) as client:
                client.load_model(model, config=config, client_timeout=self.load_timeout_s)
        except InferenceServerException as exc:
            raise triton_error(exc, self.triton_url, f"load {model} versions {list(versions)}") from None

    def _provenance(self, model: str, version: int) -> dict[str, Any]:
        try:
            return self.store.get_json(BUCKET, f"{model}/{version}/provenance.json")
        except ObjectNotFound:
            return {"model": model, "version": version}

    def served(self, model: str, version: str = "", max_age_s: float = 30.0) -> ServedVersion:
        """The version to render with: `version` ("" = the newest served). Syncs when the model is
        not known yet, when a version newer than the served ones is asked for, or when the last
        sync is older than `max_age_s`."""
        state = self._served.get(model)
        want = _parse_version(version)
        stale = state is None or time.monotonic() - state.synced_at > max_age_s
        if stale or (want is not None and want not in state.versions and want > max(state.versions, default=0)):
            self.sync(model)
            state = self._served[model]
        chosen = want if want is not None else state.versions[-1]
        if chosen not in state.versions:
            raise NotFound(
                f"version {chosen} of model {model!r} is not served; served versions: "
                f"{', '.join(map(str, state.versions))} (only the newest {self.keep_versions} stay loaded)"
            )
        provenance = state.provenance.get(chosen, {})
        check_interface(model, chosen, provenance)
        return ServedVersion(model, chosen, provenance)


def check_interface(model: str, version: int, provenance: dict[str, Any]) -> None:
    """A version exported with another input normalisation or noise width would be fed planes it
    never saw (or of the wrong shape): refuse it with what to do, rather than render garbage or
    fail inside Triton."""
    trained = provenance.get("normalisation")
    noise = provenance.get("noise_channels")
    if (trained is not None and trained != normalise.VERSION) or (noise is not None and noise != NOISE_CHANNELS):
        raise FailedPrecondition(
            f"version {version} of model {model!r} was exported for input normalisation {trained!r} with "
            f"{noise} noise channels, and this gateway feeds {normalise.VERSION!r} with {NOISE_CHANNELS}: "
            "train and export a new version (prettyspace train --dataset NAME --config demo; "
            "prettyspace model export RUN)"
        )


def _parse_version(version: str) -> int | None:
    if not version:
        return None
    if not version.isdigit() or int(version) < 1:
        raise InvalidArgument("model_version", f"{version!r} is not a version number (1, 2, …) or empty for the newest")
    return int(version)
