"""Object references in messages: the record form (ObjectInfo.ref()) to prettyspace.v1.ObjectRef."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.api import common_pb2


def ref_to_proto(value: Mapping[str, Any] | None) -> common_pb2.ObjectRef | None:
    """None for no object (an unset message field)."""
    if not value:
        return None
    return common_pb2.ObjectRef(
        bucket=value["bucket"], key=value["key"], sha256=value.get("sha256", ""), size=value.get("size", 0)
    )
