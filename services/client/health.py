"""Health of every component of the platform, as `prettyspace status` shows it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.client.addresses import SERVICES, address_from_env
from services.client.clients import client_for


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    address: str
    status: str  # SERVING, NOT_SERVING, UNREACHABLE, ...
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "SERVING"


def service_health(name: str, address: str, timeout_s: float) -> ComponentHealth:
    with client_for(name, address, timeout_s=timeout_s, retries=False) as client:
        return ComponentHealth(name, address, client.health(timeout_s=timeout_s))


def triton_health(address: str, timeout_s: float) -> ComponentHealth:
    import tritonclient.grpc as triton  # heavy import: only when asked
    from tritonclient.utils import InferenceServerException

    try:
        client = triton.InferenceServerClient(address)
        try:
            ready = client.is_server_ready(client_timeout=timeout_s)
            models = [m.name for m in client.get_model_repository_index().models if m.state == "READY"]
        finally:
            client.close()
    except InferenceServerException as exc:
        return ComponentHealth("triton", address, "UNREACHABLE", str(exc.message()).split(";")[0][:80])
    return ComponentHealth("triton", address, "SERVING" if ready else "NOT_SERVING", f"models: {', '.join(models)}")


def store_health(environ: Mapping[str, str], timeout_s: float) -> ComponentHealth:
    from services.runtime.errors import ServiceError
    from services.runtime.objectstore import ObjectStore

    endpoint = environ["PSS_S3_ENDPOINT"]
    store = ObjectStore(
        endpoint,
        environ.get("PSS_S3_ACCESS_KEY", ""),
        environ.get("PSS_S3_SECRET_KEY", ""),
        secure=environ.get("PSS_S3_SECURE", "false").lower() in ("1", "true", "yes"),
        timeout_s=timeout_s,
        retries=0,
    )
    try:
        store.check()
    except ServiceError as exc:
        return ComponentHealth("object-store", endpoint, "UNREACHABLE", str(exc))
    return ComponentHealth("object-store", endpoint, "SERVING")


def platform_health(environ: Mapping[str, str] | None = None, timeout_s: float = 3.0) -> list[ComponentHealth]:
    """Every service, Triton, and the object store when its credentials are known."""
    env = os.environ if environ is None else environ
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(service_health, s, address_from_env(s, env), timeout_s) for s in SERVICES]
        futures.append(pool.submit(triton_health, address_from_env("triton", env), timeout_s))
        if env.get("PSS_S3_ENDPOINT") and env.get("PSS_S3_ACCESS_KEY"):
            futures.append(pool.submit(store_health, env, timeout_s))
        return [f.result() for f in futures]
