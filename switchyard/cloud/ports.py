"""The ports switchyard needs from a cloud. The azure package is the one implementation
(docs/decisions/0001-one-cloud-code-path.md).

Read them like Argo Rollouts' traffic routers: each write has a matching observation, and every
write that could race another writer takes the ETag it decided on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from switchyard.core.analysis import AccessLogEntry
from switchyard.core.capacity import ComputeQuota
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import (
    GatewayObservation,
    GatewayRoutes,
    ImageObservation,
    ScaleSetObservation,
    ServiceObservation,
)
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color, Topology

Progress = Callable[[str], None]


class RequestCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int = 0
    failed: int = 0  # answered 5xx


class InstanceMetrics(BaseModel):
    """One instance's saturation over a window, at the gateway's grain: CPU and memory used per grain,
    bytes sent over the whole window (None when the cloud has no network samples of it)."""

    model_config = ConfigDict(frozen=True)

    cpu_percent: list[float] = []
    memory_used_percent: list[float] = []
    network_out_bytes: float | None = None


class ImageSource(BaseModel):
    """Where a gallery image version's OS disk comes from, as Azure accepts it: a VHD page blob with
    the storage account that holds it, or a managed image (docs/architecture.md, "The image artifact")."""

    model_config = ConfigDict(frozen=True)

    uri: str | None = None
    storage_account_id: str | None = None
    image_id: str | None = None


class ImageStorage(Protocol):
    """Blob storage for images built outside Azure: the environment's storage account."""

    def stage(
        self, artifact: Path, service: str, gallery_version: str, progress: Progress | None = None
    ) -> ImageSource:
        """Make sure the storage account exists and the artifact is in it as a page blob (zero-padded
        to 512 bytes; uploaded once: a blob that is already complete is kept); return it as a source."""
        ...


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
        source: ImageSource,
        tags: dict[str, str],
        regions: list[str],
        progress: Progress | None = None,
    ) -> ImageObservation:
        """Create the version (excluded from latest; never over one that exists) and wait until every
        region has replicated."""
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

    def managed_image_tags(self, image_id: str) -> dict[str, str] | None:
        """A finished managed image's tags (the azure builder's output), or None when there is none."""
        ...

    def delete_managed_image(self, image_id: str) -> None:
        """Delete a managed image once a gallery version holds its own copy; a missing one is fine."""
        ...


class ScaleSets(Protocol):
    """One scale set per color (upgrade policy Manual: an instance changes only when upgraded).

    Every instance of a color is a member of its color's two pools (its own and its own canary
    pool); canary instances of the idle color are also members of the live color's canary pool
    (docs/decisions/0010-canary-pools.md)."""

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
        """Create or update the scale set so that `capacity` instances all run `image_version`, each a
        member of its own color's pools only."""
        ...

    def set_canary(
        self,
        topology: Topology,
        color: Color,
        instance_ids: list[str],
        expect_etag: str,
        progress: Progress | None = None,
    ) -> ScaleSetObservation:
        """Make exactly `instance_ids` of `color` members of the other color's canary pool (upgrading
        the instances that join or leave, no others); If-Match on the scale set's ETag."""
        ...

    def scale(self, topology: Topology, color: Color, capacity: int, expect_etag: str) -> ScaleSetObservation:
        """Change the capacity; If-Match on the scale set's ETag (a rollback may have changed it)."""
        ...

    def compute_quota(self) -> ComputeQuota:
        """The location's compute usage and limits, for the service's VM size."""
        ...


class TrafficRouter(Protocol):
    """The Application Gateway. Writes are GET-modify-PUT guarded by If-Match; every change users can
    see is one such write: the canary on, the canary off, promote, roll back."""

    def observe(self, topology: Topology, *, with_health: bool = True) -> GatewayObservation:
        """The gateway's rules, pools (NIC members), tags and ETag; probe health per member when
        `with_health`."""
        ...

    def routes(self, topology: Topology) -> GatewayRoutes:
        """Only the rules' pools and the tags (one read): for a step that checks where traffic goes."""
        ...

    def route(
        self,
        topology: Topology,
        *,
        production: str,
        test: str,
        expect_etag: str,
        tags: dict[str, str] | None = None,
    ) -> GatewayRoutes:
        """Point the production and test rules at these pools (and merge `tags`) in one write; the
        routes as the write answered them (the pools' members are the scale sets' business: observe)."""
        ...

    def restore_live_pool(self, topology: Topology, tags: dict[str, str] | None = None) -> str | None:
        """The fast way back from a canary, needing no observation first: if production routes to a
        canary pool, route it to that color's own pool in one GET and one guarded PUT. Returns the
        canary pool production left, or None when it was not on one (and nothing was written)."""
        ...

    def tag(self, topology: Topology, tags: dict[str, str], expect_etag: str) -> GatewayRoutes:
        """Merge `tags` into the gateway's in one write; the routes and tags as the write answered them."""
        ...

    def frontend_address(self, topology: Topology) -> str:
        """Where users reach the production listener (the public IP's address)."""
        ...

    def test_address(self, topology: Topology) -> str:
        """Where switchyard reaches the test listener: the private frontend's address (locally, the
        address the emulator serves that private address on)."""
        ...


class Telemetry(Protocol):
    """Azure Monitor: metrics for counts and saturation, the access log for latency percentiles."""

    def timing(self, topology: Topology) -> MetricTiming:
        """The finest metric grain the gateway's metrics offer (from their metric definitions)."""
        ...

    def requests_by_backend(
        self, topology: Topology, start: datetime, end: datetime, pool: str
    ) -> dict[str, RequestCounts]:
        """Responses the backends of `pool` gave in [start, end), per backend address (`failed`: 5xx
        from the backend itself; BackendResponseStatus)."""
        ...

    def pool_requests(self, topology: Topology, start: datetime, end: datetime, pool: str) -> RequestCounts:
        """Every request the gateway served from `pool` in [start, end); `failed` counts every 5xx it
        served, the ones it generated itself (502, 504 when a backend died) included (FailedRequests)."""
        ...

    def access_log(
        self, topology: Topology, start: datetime, end: datetime, listener: str, pool: str
    ) -> list[AccessLogEntry]:
        """The requests on `listener` that `pool`'s backends answered, logged in [start, end): each
        with its backend address and the gateway's time taken, from the access log (which arrives
        after an ingestion delay). switchyard.core.analysis.latency_by_backend splits them."""
        ...

    def instance_metrics(
        self, topology: Topology, color: Color, start: datetime, end: datetime, vm_size: str | None
    ) -> dict[str, InstanceMetrics]:
        """Per VM name of the color's instances, Percentage CPU and memory used (100 x (1 - Available
        Memory Bytes / the memory of `vm_size`, the color's VM size as the caller observed it)) per
        grain, and Network Out Total over [start, end)."""
        ...


class Infrastructure(Protocol):
    """What provisioning creates once per service and environment."""

    def ensure_foundation(self, topology: Topology, service: ServiceConfig, progress: Progress) -> None:
        """Resource group, network (the gateway subnet behind its network security group), public IP
        and the gallery image definition."""
        ...

    def ensure_gateway(self, topology: Topology, service: ServiceConfig, progress: Progress) -> GatewayObservation:
        """The gateway: a public production listener, a private test listener, the four pools, probe
        and rules, and the diagnostic setting that sends its access log to the workspace. An existing
        gateway keeps its routing."""
        ...

    def ensure_autoscale(self, topology: Topology, service: ServiceConfig, live: Color) -> None:
        """One autoscale setting per color whose scale set exists: the live color's enabled, the idle
        color's disabled (a setting's target can never change on Azure)."""
        ...


class Cloud(Protocol):
    """One service's cloud in one environment: the ports above. Read-only members, so that an
    adapter's own component types (AzureGallery, ...) satisfy them."""

    @property
    def environment(self) -> AzureEnvironment: ...

    @property
    def gallery(self) -> ImageGallery: ...

    @property
    def image_storage(self) -> ImageStorage: ...

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
