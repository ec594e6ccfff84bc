"""Typed client library over the generated stubs; every gRPC call the project makes
(CLI, CronJobs, service to service) goes through it."""

from services.client.addresses import SERVICES, address_from_env, local_ports
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
    "local_ports",
    "open_channel",
]
