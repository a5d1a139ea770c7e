"""What switchyard observed in the cloud: plain data the planner decides on.

Nothing here is remembered between runs; every value is read back from the cloud
(docs/decisions/0004-truth-lives-in-the-cloud.md), so a re-run after a crash sees what really is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.image_metadata import TAG_ROLLED_BACK
from switchyard.core.topology import Color, Topology

BackendHealth = Literal["Up", "Down", "Unknown", "Draining"]


class _Observed(BaseModel):
    model_config = ConfigDict(frozen=True)


class InstanceObservation(_Observed):
    instance_id: str
    name: str
    private_ip: str | None
    image_version: str | None  # gallery version the instance runs (from its own model)
    latest_model_applied: bool
    provisioning_state: str
    power_state: str | None = None  # e.g. "running", "stopped"
    status_message: str = ""  # e.g. a failed process's exit code and last log lines


class ScaleSetObservation(_Observed):
    name: str
    color: Color
    exists: bool
    capacity: int = 0
    image_version: str | None = None  # the scale set model's gallery version
    provisioning_state: str | None = None
    instances: list[InstanceObservation] = Field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [i.private_ip for i in self.instances if i.private_ip]

    @property
    def runs_only(self) -> str | None:
        """The gallery version every instance runs, or None when mixed or empty."""
        versions = {i.image_version for i in self.instances if i.latest_model_applied}
        if len(versions) == 1 and all(i.latest_model_applied for i in self.instances):
            return versions.pop()
        return None


class PoolObservation(_Observed):
    name: str
    member_addresses: list[str] = Field(default_factory=list, description="Addresses of scale-set NICs in the pool")
    extra_addresses: list[str] = Field(
        default_factory=list, description="Explicit backendAddresses: canary instances of the other color"
    )
    health: dict[str, BackendHealth] = Field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        return [*self.member_addresses, *self.extra_addresses]

    def healthy(self, addresses: list[str]) -> bool:
        return bool(addresses) and all(self.health.get(a) == "Up" for a in addresses)


class GatewayObservation(_Observed):
    name: str
    exists: bool
    etag: str | None = None
    provisioning_state: str | None = None
    production_pool: str | None = None
    test_pool: str | None = None
    pools: dict[str, PoolObservation] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def live_color(self) -> Color | None:
        return Topology.color_of_pool(self.production_pool) if self.production_pool else None

    def pool_of(self, color: Color) -> PoolObservation:
        return self.pools.get(Topology.pool(color)) or PoolObservation(name=Topology.pool(color))


class ImageObservation(_Observed):
    gallery_version: str
    exists: bool
    tags: dict[str, str] = Field(default_factory=dict)
    exclude_from_latest: bool | None = None
    provisioning_state: str | None = None
    replication: dict[str, str] = Field(default_factory=dict)  # region -> Completed / Replicating / Failed
    resource_id: str | None = None

    @property
    def rolled_back(self) -> bool:
        """A person or a release rolled this version back: nothing may put it in front of users again."""
        return self.tags.get(TAG_ROLLED_BACK) == "true"

    @property
    def replicated(self) -> bool:
        return bool(self.replication) and all(state == "Completed" for state in self.replication.values())


class ServiceObservation(_Observed):
    """One service in one environment, as the cloud says it is now."""

    topology: Topology
    observed_at: datetime
    gateway: GatewayObservation
    scale_sets: dict[Color, ScaleSetObservation]

    @property
    def live_color(self) -> Color | None:
        return self.gateway.live_color

    @property
    def idle_color(self) -> Color | None:
        live = self.live_color
        return live.other if live else None

    def scale_set(self, color: Color) -> ScaleSetObservation:
        return self.scale_sets[color]

    @property
    def canary_addresses(self) -> list[str]:
        """Instances of the idle color that the live pool serves beside the live color's own."""
        live = self.live_color
        if live is None:
            return []
        idle_addresses = set(self.scale_set(live.other).addresses)
        return [a for a in self.gateway.pool_of(live).extra_addresses if a in idle_addresses]

    @property
    def foreign_addresses(self) -> list[str]:
        """Explicit addresses in the live pool that belong to no instance of the idle color."""
        live = self.live_color
        if live is None:
            return []
        canary = set(self.canary_addresses)
        return [a for a in self.gateway.pool_of(live).extra_addresses if a not in canary]
