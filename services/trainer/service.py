"""Trainer gRPC service. The API is defined; training arrives with issue #7, until
then its RPCs answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.api import trainer_pb2, trainer_pb2_grpc
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    trainer_pb2_grpc.add_TrainerServicer_to_server(trainer_pb2_grpc.TrainerServicer(), server)
    return [SERVICE]


SPEC = ServiceSpec(name="trainer", register=register)
