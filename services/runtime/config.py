"""Configuration from environment variables, validated once at start-up.

Every setting is declared with its type, default and a hint; a wrong or missing
value raises ConfigError with one line naming the variable, the value and what is
expected, which the service prints before exiting with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "PSS_"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is meant for a person."""


class _Invalid(ValueError):
    """A parser's own explanation (safe to show: it never contains the value)."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise _Invalid("expected true/false")


def _parse_port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise _Invalid("expected a TCP port 0-65535")
    return port


def _parse_address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise _Invalid("expected host:port")
    return raw


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise _Invalid("expected a number > 0")
    return value


def _parse_non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise _Invalid("expected a number >= 0")
    return value


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise _Invalid("expected an integer > 0")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise _Invalid(f"expected one of {', '.join(allowed)}")
        return value

    return parse


# What each kind expects, for values that fail before a parser can explain
# (int("x") would otherwise put the value, maybe a secret, into the message).
EXPECTED: dict[str, str] = {
    "port": "expected a TCP port 0-65535",
    "positive_float": "expected a number > 0",
    "non_negative_float": "expected a number >= 0",
    "positive_int": "expected an integer > 0",
}

PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "bool": _parse_bool,
    "port": _parse_port,
    "address": _parse_address,
    "positive_float": _parse_positive_float,
    "non_negative_float": _parse_non_negative_float,
    "positive_int": _parse_positive_int,
    "log_level": _choice("debug", "info", "warning", "error"),
    "log_format": _choice("json", "text"),
}


@dataclass(frozen=True)
class Setting:
    """One environment variable: PSS_<NAME>."""

    name: str
    kind: str = "str"
    default: str | None = None  # None: required
    help: str = ""
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name


# Settings every service reads. Service-specific ones are appended by each service.
COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("GRPC_HOST", "str", "127.0.0.1", "interface the gRPC server binds (0.0.0.0 in a pod)"),
    Setting("GRPC_PORT", "port", "50051", "gRPC port"),
    Setting("METRICS_PORT", "port", "9090", "Prometheus /metrics HTTP port (0: none)"),
    Setting("LOG_LEVEL", "log_level", "info"),
    Setting("LOG_FORMAT", "log_format", "json"),
    Setting("S3_ENDPOINT", "address", None, "object store host:port, e.g. minio:9000"),
    Setting("S3_ACCESS_KEY", "str", None, "object store access key (from a Secret)", secret=True),
    Setting("S3_SECRET_KEY", "str", None, "object store secret key (from a Secret)", secret=True),
    Setting("S3_SECURE", "bool", "false", "use HTTPS for the object store"),
    Setting("S3_REGION", "str", "us-east-1"),
    Setting("S3_TIMEOUT_S", "positive_float", "10", "per-request timeout to the object store"),
    Setting("SHUTDOWN_GRACE_S", "non_negative_float", "20", "time in-flight calls get after SIGTERM"),
    Setting("GRPC_WORKERS", "positive_int", "16", "threads serving gRPC calls"),
    Setting("JOB_WORKERS", "positive_int", "2", "jobs run at once by this process"),
    Setting("JOB_LEASE_S", "positive_float", "30", "a job whose owner is silent this long is resumed"),
    Setting("JOB_SCAN_S", "positive_float", "10", "how often orphaned jobs are looked for"),
)


@dataclass(frozen=True)
class Config:
    """Validated settings, by name without the prefix (``cfg.get("GRPC_PORT")``)."""

    values: Mapping[str, Any]
    settings: tuple[Setting, ...] = field(default=())

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def describe(self) -> dict[str, Any]:
        """The settings as they were read, secrets hidden, for the start-up log."""
        return {s.env: ("***" if s.secret else self.values[s.name]) for s in self.settings}


def load_config(
    extra: tuple[Setting, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate COMMON_SETTINGS + extra from the environment."""
    env = os.environ if environ is None else environ
    settings = COMMON_SETTINGS + tuple(extra)
    values: dict[str, Any] = {}
    for setting in settings:
        raw = env.get(setting.env)
        if raw is None or (raw == "" and setting.default is not None):
            raw = setting.default
        if raw is None or raw == "":
            hint = f" ({setting.help})" if setting.help else ""
            raise ConfigError(f"{setting.env} is not set{hint}")
        try:
            values[setting.name] = PARSERS[setting.kind](raw)
        except (ValueError, TypeError) as exc:
            shown = "***" if setting.secret else repr(raw)
            reason = str(exc) if isinstance(exc, _Invalid) else EXPECTED.get(setting.kind, "wrong format")
            raise ConfigError(f"{setting.env}={shown} is invalid: {reason}") from None
    return Config(values=values, settings=settings)
