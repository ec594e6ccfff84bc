"""The generated gRPC stubs of proto/prettyspace/v1, importable as ``services.api``.

protoc writes absolute imports (``from prettyspace.v1 import common_pb2``), so the
folder it writes into is put on ``sys.path`` here, once, instead of editing its
output. The stubs are made by ``make proto``; they are never edited by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

_GENERATED = Path(__file__).resolve().parent / "generated"
if not (_GENERATED / "prettyspace" / "v1" / "common_pb2.py").exists():
    raise ImportError(f"gRPC stubs are missing in {_GENERATED}: run `make proto` first")
if str(_GENERATED) not in sys.path:
    sys.path.insert(0, str(_GENERATED))

from prettyspace.v1 import (  # noqa: E402
    common_pb2,
    common_pb2_grpc,
    crawler_pb2,
    crawler_pb2_grpc,
    curator_pb2,
    curator_pb2_grpc,
    cutouts_pb2,
    cutouts_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

API_PACKAGE = "prettyspace.v1"

__all__ = [
    "API_PACKAGE",
    "common_pb2",
    "common_pb2_grpc",
    "crawler_pb2",
    "crawler_pb2_grpc",
    "curator_pb2",
    "curator_pb2_grpc",
    "cutouts_pb2",
    "cutouts_pb2_grpc",
    "gateway_pb2",
    "gateway_pb2_grpc",
    "trainer_pb2",
    "trainer_pb2_grpc",
]
