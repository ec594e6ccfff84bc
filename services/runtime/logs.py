"""Structured logging: one JSON object a line (or plain text for people at a terminal).

Extra fields passed as ``log.info("msg", extra={"fields": {...}})`` are merged into
the record, so logs can be filtered by job id, method, bucket and so on.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SERVICE = "prettyspace"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": _SERVICE,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
        base += record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once per process."""
    global _SERVICE
    _SERVICE = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log every retry; our errors say what finally went wrong.
    for noisy in ("urllib3", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def fields(**kwargs: Any) -> dict[str, Any]:
    """Shorthand for ``extra={"fields": {...}}``."""
    return {"fields": kwargs}
