"""Curator gRPC service. The API is defined; curation arrives with issue #6, until
then its RPCs answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.api import curator_pb2, curator_pb2_grpc
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = curator_pb2.DESCRIPTOR.services_by_name["Curator"].full_name


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    curator_pb2_grpc.add_CuratorServicer_to_server(curator_pb2_grpc.CuratorServicer(), server)
    return [SERVICE]


SPEC = ServiceSpec(name="curator", register=register)
