"""Curator gRPC service. The blacklist RPCs are implemented (``blacklist.py``); evaluation,
verdicts and datasets arrive with the rest of issue #6, until then they answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from services.api import crawler_pb2, curator_pb2, curator_pb2_grpc
from services.crawler import catalog
from services.curator import blacklist
from services.runtime.errors import require
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = curator_pb2.DESCRIPTOR.services_by_name["Curator"].full_name


def blacklist_to_proto(document: dict[str, Any]) -> curator_pb2.Blacklist:
    return curator_pb2.Blacklist(
        entries=[
            curator_pb2.BlacklistEntry(
                observation=crawler_pb2.ObservationKey(
                    source=catalog.ENUM_BY_SOURCE[entry["source"]], image_id=entry["image_id"]
                ),
                reason=entry["reason"],
            )
            for entry in blacklist.entries(document)
        ]
    )


def _observation(key: crawler_pb2.ObservationKey, prefix: str = "") -> tuple[str, str]:
    source = catalog.source_name(key.source, f"{prefix}source")
    image_id = blacklist.validate_image_id(key.image_id, f"{prefix}image_id")
    return source, image_id


class CuratorServicer(curator_pb2_grpc.CuratorServicer):
    """Only the blacklist RPCs are overridden; the others keep the generated UNIMPLEMENTED."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def GetBlacklist(self, request: curator_pb2.GetBlacklistRequest, context: grpc.ServicerContext) -> Any:
        return blacklist_to_proto(blacklist.load(self.store))

    def SetBlacklistEntry(self, request: curator_pb2.BlacklistEntry, context: grpc.ServicerContext) -> Any:
        require(request.HasField("observation"), "observation", "is required (source and image_id)")
        source, image_id = _observation(request.observation, "observation.")
        reason = blacklist.validate_reason(request.reason)
        return blacklist_to_proto(blacklist.set_entry(self.store, source, image_id, reason))

    def RemoveBlacklistEntry(self, request: crawler_pb2.ObservationKey, context: grpc.ServicerContext) -> Any:
        source, image_id = _observation(request)
        return blacklist_to_proto(blacklist.remove_entry(self.store, source, image_id))


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    curator_pb2_grpc.add_CuratorServicer_to_server(CuratorServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(name="curator", register=register)
