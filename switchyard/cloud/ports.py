"""The ports switchyard needs from a cloud. The azure package is the one implementation
(docs/decisions/0001-one-cloud-code-path.md).

Read them like Argo Rollouts' traffic routers: each write has a matching observation, and every
write that could race another writer takes the ETag it decided on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from switchyard.core.capacity import ComputeQuota
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import GatewayObservation, ImageObservation, ScaleSetObservation, ServiceObservation
from switchyard.core.topology import Color, Topology

Progress = Callable[[str], None]


class RequestCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int = 0
    failed: int = 0  # answered 5xx by the backend


class ImageGallery(Protocol):
    """The Azure Compute Gallery: where immutable images live with their history in tags."""

    def ensure_image_definition(self, service: str, base: str) -> None: ...

    def image_version_id(self, service: str, gallery_version: str) -> str: ...

    def image_version(self, service: str, gallery_version: str) -> ImageObservation: ...

    def image_versions(self, service: str) -> list[ImageObservation]: ...

    def publish(
        self,
        service: str,
        gallery_version: str,
        source_uri: str,
        tags: dict[str, str],
        regions: list[str],
        progress: Progress | None = None,
    ) -> ImageObservation:
        """Create the version (excluded from latest) and wait until every region has replicated."""
        ...

    def update_version(
        self,
        service: str,
        gallery_version: str,
        *,
        tags: dict[str, str] | None = None,
        exclude_from_latest: bool | None = None,
    ) -> ImageObservation:
        """Merge `tags` into the version's tags and/or flip excludeFromLatest."""
        ...


class ScaleSets(Protocol):
    """One scale set per color."""

    def observe(self, topology: Topology, color: Color) -> ScaleSetObservation: ...

    def roll_out(
        self,
        topology: Topology,
        color: Color,
        *,
        image_version: str,
        capacity: int,
        progress: Progress | None = None,
    ) -> ScaleSetObservation:
        """Create or update the scale set so that `capacity` instances all run `image_version`."""
        ...

    def scale(self, topology: Topology, color: Color, capacity: int) -> ScaleSetObservation: ...

    def compute_quota(self) -> ComputeQuota:
        """The location's compute usage and limits, for the service's VM size."""
        ...


class TrafficRouter(Protocol):
    """The Application Gateway. Writes are GET-modify-PUT guarded by If-Match."""

    def observe(self, topology: Topology, *, with_health: bool = True) -> GatewayObservation:
        """Routing, pools, tags and ETag; with_health=False skips asking the gateway's probes (a
        slower call), for callers that decide on routing alone."""
        ...

    def set_split(
        self,
        topology: Topology,
        canary_addresses: list[str],
        expect_etag: str,
        tags: dict[str, str] | None = None,
    ) -> list[str]:
        """Serve exactly `canary_addresses` (instances of the idle color) beside the live pool's own;
        returns the canary addresses as the gateway's answer to the write shows them."""
        ...

    def switch(
        self, topology: Topology, to_color: Color, expect_etag: str, tags: dict[str, str] | None = None
    ) -> GatewayObservation:
        """Route production to `to_color` and test to the other color, with no canary addresses left,
        in one write."""
        ...

    def clear_canary(self, topology: Topology, tags: dict[str, str] | None = None) -> list[str]:
        """Remove every canary address from the live pool in one guarded write; what was removed."""
        ...

    def tag(self, topology: Topology, tags: dict[str, str], expect_etag: str) -> GatewayObservation: ...

    def frontend_address(self, topology: Topology) -> str:
        """The address the gateway's listeners answer on (its public IP)."""
        ...


class Telemetry(Protocol):
    """Azure Monitor: metrics for counts and saturation, the access log for latency percentiles."""

    def requests_by_backend(self, topology: Topology, start: datetime, end: datetime) -> dict[str, RequestCounts]:
        """Requests the gateway sent to each backend address in [start, end)."""
        ...

    def latency_by_backend(
        self, topology: Topology, start: datetime, end: datetime, listener: str
    ) -> dict[str, list[float]]:
        """Per backend address, the gateway's time taken (ms) of each request on `listener`."""
        ...

    def cpu_percent(
        self,
        topology: Topology,
        color: Color,
        start: datetime,
        end: datetime,
        vm_names: list[str] | None = None,
    ) -> list[float]:
        """Percentage CPU samples of the color's instances (only `vm_names`, when given)."""
        ...


class Infrastructure(Protocol):
    """What provisioning creates once per service and environment."""

    def ensure_foundation(self, topology: Topology, service: ServiceConfig, progress: Progress) -> None:
        """Resource group, network, public IP and the gallery image definition."""
        ...

    def ensure_gateway(self, topology: Topology, service: ServiceConfig, progress: Progress) -> GatewayObservation:
        """The gateway with both listeners, pools, probe and rules; an existing one keeps its routing."""
        ...

    def ensure_autoscale(self, topology: Topology, service: ServiceConfig, color: Color) -> None:
        """Autoscale settings targeting `color`'s scale set (the live one)."""
        ...


class Cloud(Protocol):
    """One service's cloud in one environment: the ports above. Read-only members, so that an
    adapter's own component types (AzureGallery, ...) satisfy them."""

    @property
    def environment(self) -> AzureEnvironment: ...

    @property
    def gallery(self) -> ImageGallery: ...

    @property
    def scale_sets(self) -> ScaleSets: ...

    @property
    def router(self) -> TrafficRouter: ...

    @property
    def telemetry(self) -> Telemetry: ...

    @property
    def infrastructure(self) -> Infrastructure: ...

    def observe(self, topology: Topology, *, with_health: bool = True) -> ServiceObservation:
        """The gateway and both colors' scale sets, read now (what every planning step starts from)."""
        ...
