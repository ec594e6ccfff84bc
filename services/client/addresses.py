"""Where the services are: PSS_<SERVICE>_ADDR, defaulting to the local stack's ports.

The local stack (`make up`) lays its ports out from one base, PSS_LOCAL_PORT_BASE
(default 17000): the object store's S3 API at base+6 (SeaweedFS uses base..base+10
and base+10009 internally), Triton's HTTP/gRPC/metrics at base+20..22, and each
service's gRPC and metrics ports from base+30 on, the replicas of the real sites
at base+40..44. Tests use free ports instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SERVICES: tuple[str, ...] = ("crawler", "cutouts", "curator", "trainer", "gateway")
# The local stand-ins of the real sites (services/universe/replicas), and the setting
# through which the platform reaches each (the real site's URL in production).
REPLICAS: tuple[str, ...] = ("esahubble", "esawebb", "hips2fits", "gaia", "sesame")
REPLICA_URL_SETTINGS = {
    "esahubble": "PSS_ESAHUBBLE_URL",
    "esawebb": "PSS_ESAWEBB_URL",
    "hips2fits": "PSS_HIPS2FITS_URL",
    "gaia": "PSS_GAIA_TAP_URL",
    "sesame": "PSS_SESAME_URL",
}
DEFAULT_LOCAL_PORT_BASE = 17000


def local_port_base(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    raw = env.get("PSS_LOCAL_PORT_BASE") or str(DEFAULT_LOCAL_PORT_BASE)
    if not raw.isdigit() or not 1024 <= int(raw) <= 54000:
        raise ValueError(f"PSS_LOCAL_PORT_BASE={raw!r} is invalid: expected a port between 1024 and 54000")
    return int(raw)


def local_ports(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The `make up` layout: {"seaweed_base", "s3", "triton": {...}, "services": {name: (grpc, metrics)}}."""
    base = local_port_base(environ)
    return {
        "seaweed_base": base,
        "s3": base + 6,
        "triton": {"http": base + 20, "grpc": base + 21, "metrics": base + 22},
        "services": {name: (base + 30 + 2 * i, base + 31 + 2 * i) for i, name in enumerate(SERVICES)},
        "replicas": {name: base + 40 + i for i, name in enumerate(REPLICAS)},
    }


def env_name(component: str) -> str:
    return f"PSS_{component.upper().replace('-', '_')}_ADDR"


def local_address(component: str, environ: Mapping[str, str] | None = None) -> str:
    ports = local_ports(environ)
    if component == "triton":
        return f"127.0.0.1:{ports['triton']['grpc']}"  # type: ignore[index]
    return f"127.0.0.1:{ports['services'][component][0]}"  # type: ignore[index]


def address_from_env(component: str, environ: Mapping[str, str] | None = None) -> str:
    """PSS_CRAWLER_ADDR etc. (PSS_TRITON_GRPC_ADDR for Triton), else the local stack's."""
    env = os.environ if environ is None else environ
    name = "PSS_TRITON_GRPC_ADDR" if component == "triton" else env_name(component)
    return env.get(name) or local_address(component, env)
