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
    etag: str | None = None  # writes that could race take it (If-Match)
    capacity: int = 0
    vm_size: str | None = None  # the scale set's VM size (its SKU name), e.g. Standard_B2s
    image_version: str | None = None  # the scale set model's gallery version
    provisioning_state: str | None = None
    instances: list[InstanceObservation] = Field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [i.private_ip for i in self.instances if i.private_ip]

    @property
    def runs_only(self) -> str | None:
        """The gallery version every instance runs (each instance's own model), or None when mixed or
        empty. Not whether each has the latest model: with the Manual upgrade policy, canary instances
        run a newer model (one more pool) than their siblings, with the same image."""
        versions = {i.image_version for i in self.instances}
        if len(versions) == 1 and None not in versions:
            return versions.pop()
        return None


class PoolObservation(_Observed):
    """A backend pool. switchyard's pools hold scale-set NICs only: a pool's members are either NIC IP
    configurations or addresses, never both (docs/decisions/0010-canary-pools.md)."""

    name: str
    member_addresses: list[str] = Field(default_factory=list, description="Addresses of scale-set NICs in the pool")
    member_scale_sets: dict[str, str] = Field(
        default_factory=dict,
        description="Member address -> the scale set its NIC belongs to ('' for a NIC of no scale set)",
    )
    explicit_addresses: list[str] = Field(
        default_factory=list, description="backendAddresses: switchyard never writes them; any here is foreign"
    )
    health: dict[str, BackendHealth] = Field(default_factory=dict)

    def healthy(self, addresses: list[str]) -> bool:
        return bool(addresses) and all(self.health.get(a) == "Up" for a in addresses)


class GatewayRoutes(_Observed):
    """Where the gateway's rules send users and tests, and its tags: what a step that only checks the
    routing needs, read in one GET (the pools' members take the scale sets' NIC lists besides)."""

    name: str
    exists: bool
    etag: str | None = None
    production_pool: str | None = None
    test_pool: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def live_color(self) -> Color | None:
        """The color production serves: the production rule's pool is that color's own, or its own
        with a canary beside it."""
        return Topology.color_of_pool(self.production_pool) if self.production_pool else None

    @property
    def canary_routed(self) -> bool:
        """Production routes to the live color's canary pool: users meet whatever canary it holds."""
        return self.production_pool is not None and Topology.is_canary_pool(self.production_pool)


class GatewayObservation(GatewayRoutes):
    """The routes, and each pool's members and their health by the gateway's own probes."""

    provisioning_state: str | None = None
    pools: dict[str, PoolObservation] = Field(default_factory=dict)

    def pool_of(self, color: Color) -> PoolObservation:
        return self._pool(Topology.pool(color))

    def canary_pool_of(self, color: Color) -> PoolObservation:
        return self._pool(Topology.canary_pool(color))

    def _pool(self, name: str) -> PoolObservation:
        return self.pools.get(name) or PoolObservation(name=name)


class ImageObservation(_Observed):
    gallery_version: str
    exists: bool
    tags: dict[str, str] = Field(default_factory=dict)
    exclude_from_latest: bool | None = None
    provisioning_state: str | None = None
    replication: dict[str, str] = Field(default_factory=dict)  # region -> Completed / Replicating / Failed
    resource_id: str | None = None
    # what it was made from: a VHD blob and its storage account, or a managed image
    source_uri: str | None = None
    source_storage_account_id: str | None = None
    source_id: str | None = None

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
        """Instances of the idle color in the live color's canary pool: a canary, prepared or serving,
        or, after a switch, the last release's canary (it stays until this color is prepared again)."""
        live = self.live_color
        if live is None:
            return []
        idle_addresses = set(self.scale_set(live.other).addresses)
        return [a for a in self.gateway.canary_pool_of(live).member_addresses if a in idle_addresses]

    @property
    def canary_serving(self) -> bool:
        """Users meet the canary: production routes to the canary pool and it holds canary instances."""
        return self.gateway.canary_routed and bool(self.canary_addresses)

    @property
    def stale_canary_addresses(self) -> list[str]:
        """Live instances still in the idle color's canary pool: the canary of the release that made them
        live. Harmless (nothing routes there while this color is live; they are never upgraded while
        they serve users); the next roll-out of this color as the idle one takes them out."""
        live = self.live_color
        if live is None:
            return []
        live_addresses = set(self.scale_set(live).addresses)
        return [a for a in self.gateway.canary_pool_of(live.other).member_addresses if a in live_addresses]

    @property
    def foreign_addresses(self) -> list[str]:
        """What no switchyard step puts in a pool: explicit backendAddresses anywhere, and members of the
        live canary pool that are instances of neither color."""
        explicit = [a for pool in self.gateway.pools.values() for a in pool.explicit_addresses]
        live = self.live_color
        if live is None:
            return explicit
        own_sets = {self.scale_set(color).name.lower() for color in (live, live.other)}
        known = set(self.scale_set(live).addresses) | set(self.scale_set(live.other).addresses)
        # The gateway and the scale sets are read one after the other: an instance that scale-in
        # removed, or autoscale added, in between is a member but not (or not yet) an instance. Its
        # NIC still names its scale set, so ownership, not the instance list, decides.
        canary_pool = self.gateway.canary_pool_of(live)
        strangers = [
            a
            for a in canary_pool.member_addresses
            if a not in known and canary_pool.member_scale_sets.get(a, "").lower() not in own_sets
        ]
        return [*explicit, *strangers]
