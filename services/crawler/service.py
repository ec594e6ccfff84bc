"""Crawler gRPC service. The API is defined; the crawl itself arrives with issue #4,
until then its RPCs answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.api import crawler_pb2, crawler_pb2_grpc
from services.runtime.server import ServiceContext, ServiceSpec

SERVICE = crawler_pb2.DESCRIPTOR.services_by_name["Crawler"].full_name


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    crawler_pb2_grpc.add_CrawlerServicer_to_server(crawler_pb2_grpc.CrawlerServicer(), server)
    return [SERVICE]


SPEC = ServiceSpec(name="crawler", register=register)
