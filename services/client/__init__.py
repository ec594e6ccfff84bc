"""Typed client library over the generated stubs; every gRPC call the project makes
(CLI, CronJobs, service to service) goes through it."""

from services.client.addresses import LOCAL_PORTS, SERVICES, address_from_env
from services.client.channel import open_channel
from services.client.clients import (
    CLIENTS,
    CrawlerClient,
    CuratorClient,
    CutoutsClient,
    GatewayClient,
    JobsClient,
    ServiceClient,
    TrainerClient,
    client_for,
)

__all__ = [
    "CLIENTS",
    "LOCAL_PORTS",
    "SERVICES",
    "CrawlerClient",
    "CuratorClient",
    "CutoutsClient",
    "GatewayClient",
    "JobsClient",
    "ServiceClient",
    "TrainerClient",
    "address_from_env",
    "client_for",
    "open_channel",
]
