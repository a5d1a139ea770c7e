"""The Azure adapter: switchyard's ports on the official azure-mgmt SDKs.

It talks to real Azure and to the emulator alike; only client construction (clients.py) differs.
Bodies are written in ARM's wire shape so what is sent is what the REST reference shows. One
module per port (gallery, storage, scale_sets, router, telemetry, infrastructure); AzureCloud composes them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from switchyard.cloud.azure.clients import AzureClients, ConfigurationError, EmulatorEndpoint
from switchyard.cloud.azure.gallery import AzureGallery
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.infrastructure import AzureInfrastructure
from switchyard.cloud.azure.nics import ScaleSetNics
from switchyard.cloud.azure.pacing import QueryGate
from switchyard.cloud.azure.router import AzureTrafficRouter
from switchyard.cloud.azure.scale_sets import AzureScaleSets
from switchyard.cloud.azure.storage import AzureImageStorage
from switchyard.cloud.azure.telemetry import AzureMonitorTelemetry
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color, Topology

__all__ = [
    "AzureClients",
    "AzureCloud",
    "AzureGallery",
    "AzureIds",
    "AzureImageStorage",
    "AzureInfrastructure",
    "AzureMonitorTelemetry",
    "AzureScaleSets",
    "AzureTrafficRouter",
    "ConfigurationError",
    "EmulatorEndpoint",
]


class AzureCloud:
    """switchyard's ports for one environment and one service, on Azure (or its emulator)."""

    def __init__(
        self,
        environment: AzureEnvironment,
        service: ServiceConfig,
        *,
        shared_query_gate: Callable[[str], QueryGate] | None = None,
    ) -> None:
        self.environment = environment
        self.service = service
        self.clients = AzureClients(environment, shared_query_gate=shared_query_gate)
        ids = AzureIds(self.clients.subscription_id, environment)
        self.ids = ids
        self.gallery = AzureGallery(self.clients, ids, environment)
        self.image_storage = AzureImageStorage(self.clients, environment)
        self.scale_sets = AzureScaleSets(self.clients, ids, environment, service)
        self.router = AzureTrafficRouter(self.clients, ids, environment)
        self.telemetry = AzureMonitorTelemetry(self.clients, ids, environment)
        self.infrastructure = AzureInfrastructure(
            self.clients, ids, environment, self.gallery, self.router, self.telemetry
        )

    def observe(self, topology: Topology, *, with_health: bool = True) -> ServiceObservation:
        # Each scale set's NICs are listed once, by whichever part asks first (the gateway's pool
        # members, read first), and their addresses serve both parts.
        nics = ScaleSetNics(self.clients.network)
        return ServiceObservation(
            topology=topology,
            observed_at=datetime.now(UTC),
            gateway=self.router.observe(topology, with_health=with_health, nics=nics),
            scale_sets={color: self.scale_sets.observe(topology, color, nics=nics) for color in Color},
        )
