"""Gateway gRPC service. The API is defined; rendering arrives with issue #8, until
then its RPCs answer UNIMPLEMENTED. The Triton and cutouts addresses are already
part of its configuration so a wrong one is caught at start."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.api import gateway_pb2, gateway_pb2_grpc
from services.client.addresses import local_address
from services.runtime.config import Setting
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name

SETTINGS = (
    Setting("TRITON_GRPC_ADDR", "address", local_address("triton"), "Triton gRPC endpoint host:port"),
    Setting("CUTOUTS_ADDR", "address", local_address("cutouts"), "cutouts service host:port"),
)


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway_pb2_grpc.GatewayServicer(), server)
    return [SERVICE]


SPEC = ServiceSpec(name="gateway", register=register, settings=SETTINGS)
