"""Cutouts gRPC service. The API is defined; cutouts arrive with issue #5, until
then its RPCs answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.api import cutouts_pb2, cutouts_pb2_grpc
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = cutouts_pb2.DESCRIPTOR.services_by_name["Cutouts"].full_name


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    cutouts_pb2_grpc.add_CutoutsServicer_to_server(cutouts_pb2_grpc.CutoutsServicer(), server)
    return [SERVICE]


SPEC = ServiceSpec(name="cutouts", register=register)
