"""Where the services are: PSS_<SERVICE>_ADDR, defaulting to the local stack's ports."""

from __future__ import annotations

import os
from collections.abc import Mapping

SERVICES: tuple[str, ...] = ("crawler", "cutouts", "curator", "trainer", "gateway")

# The fixed layout of `make up` (tests use free ports instead): the object store's
# S3 API, Triton's HTTP/gRPC/metrics, then each service's gRPC and metrics ports.
S3_LOCAL_PORT = 17006
TRITON_LOCAL_PORTS = {"http": 17020, "grpc": 17021, "metrics": 17022}
LOCAL_PORTS: dict[str, tuple[int, int]] = {name: (17030 + 2 * i, 17031 + 2 * i) for i, name in enumerate(SERVICES)}


def env_name(component: str) -> str:
    return f"PSS_{component.upper().replace('-', '_')}_ADDR"


def local_address(component: str) -> str:
    if component == "triton":
        return f"127.0.0.1:{TRITON_LOCAL_PORTS['grpc']}"
    return f"127.0.0.1:{LOCAL_PORTS[component][0]}"


def address_from_env(component: str, environ: Mapping[str, str] | None = None) -> str:
    """PSS_CRAWLER_ADDR etc. (PSS_TRITON_GRPC_ADDR for Triton), else the local stack's."""
    env = os.environ if environ is None else environ
    name = "PSS_TRITON_GRPC_ADDR" if component == "triton" else env_name(component)
    return env.get(name) or local_address(component)
