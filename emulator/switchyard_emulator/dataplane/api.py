"""The contract between the emulator's control plane (ARM API) and its data plane.

The control plane owns ARM resources and decides *what* should exist; the data plane makes it
real: processes for scale-set instances, sockets and routing for gateways, and the telemetry
Azure Monitor answers from. See docs/architecture.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InstanceSpec(_Frozen):
    """One scale-set instance as the control plane wants it to run."""

    instance_id: str
    vm_name: str  # e.g. "sample-production-blue_3", the VMName dimension of VM metrics
    ip: str  # its own loopback address, e.g. "127.1.0.4"
    port: int  # the service port from the image manifest
    artifact_path: str  # local path of the image artifact (.tar.gz) in the emulator's state dir
    generation: int  # bumped by reimage or a model update applied to this instance
    # The VM size's memory (the emulator's SKU table, resources/quotas.py): what "Available Memory
    # Bytes" is measured against. Not part of the process: a change alone restarts nothing.
    memory_bytes: int | None = None
    # The model's customData (base64) as this instance was provisioned with it: on a Linux VM the
    # provisioning agent saves it as a file (/var/lib/waagent/CustomData); here, a file in the
    # instance's folder named by SWITCHYARD_CUSTOM_DATA.
    custom_data: str | None = None


InstanceState = Literal["creating", "running", "failed", "stopped"]


class InstanceRuntime(_Frozen):
    instance_id: str
    generation: int
    state: InstanceState
    pid: int | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    log_tail: list[str] = Field(default_factory=list)


class InboundRuleSpec(_Frozen):
    """An inbound NSG rule of the gateway's subnet that applies to a listener's flows (TCP, to its
    frontend and port): what is left to match per connection is its source and source port."""

    name: str
    priority: int
    allow: bool
    sources: list[str]  # "*", an IPv4 address or CIDR, or a service tag (see netsec.py)
    source_ports: list[tuple[int, int]]


class ListenerSpec(_Frozen):
    name: str
    port: int  # frontend port; the listener binds <host>:<port>
    host: str = "127.0.0.1"  # the frontend's loopback address: 127.0.0.1 public, an alias private
    # The subnet NSG's inbound rules for this listener, by priority (defaults included); None when
    # the gateway's subnet has no NSG. A connection no rule allows is dropped.
    inbound_rules: list[InboundRuleSpec] | None = None


class ProbeSpec(_Frozen):
    name: str
    path: str
    interval_s: float
    timeout_s: float
    unhealthy_threshold: int
    status_codes: list[str] = Field(default_factory=lambda: ["200-399"])
    host: str | None = None  # the probe's `host`: its Host header
    pick_host_from_settings: bool = False  # pickHostNameFromBackendHttpSettings


class BackendSettingsSpec(_Frozen):
    name: str
    port: int
    request_timeout_s: float
    probe: str | None = None  # ProbeSpec name
    draining_timeout_s: float = 0.0  # connection draining; 0 = disabled
    host_name: str | None = None  # hostName: the host name the gateway presents to backends
    pick_host_from_address: bool = False  # pickHostNameFromBackendAddress


class PoolSpec(_Frozen):
    name: str
    addresses: list[str]  # backend IPs: from scale-set NIC membership or explicit backendAddresses
    fqdns: dict[str, str] = Field(default_factory=dict)  # address -> the backend FQDN it was resolved from


class RuleSpec(_Frozen):
    name: str
    listener: str
    pool: str
    settings: str
    priority: int


class GatewaySpec(_Frozen):
    gateway_id: str  # canonical (lower-case) ARM id
    listeners: list[ListenerSpec]
    pools: list[PoolSpec]
    settings: list[BackendSettingsSpec]
    probes: list[ProbeSpec]
    rules: list[RuleSpec]
    # loopback addresses that carry the VirtualNetwork tag as an NSG source (instances, aliases)
    vnet_addresses: list[str] = Field(default_factory=list)


BackendHealthState = Literal["Up", "Down", "Unknown", "Draining"]


class BackendServerHealth(_Frozen):
    address: str
    health: BackendHealthState
    log: str = ""


LogTable = Literal["AzureDiagnostics", "AGWAccessLogs"]


class LogCollection(_Frozen):
    """A span of time in which a diagnostic setting sent a gateway's access log to the queried
    workspace, and the table it went to. Log Analytics holds only what a setting collected: a
    resource's records from outside every span do not exist in the workspace."""

    resource_id: str  # canonical (lower-case) ARM id of the gateway
    table: LogTable  # AzureDiagnostics (no destination type) or AGWAccessLogs ("Dedicated")
    start: float  # unix seconds: when the setting started collecting
    end: float | None = None  # when it stopped (deleted or changed); None while it collects


class ArmFacade(Protocol):
    """What the data plane may ask of the control plane (autoscale, restarts)."""

    def list_resources(self, resource_type: str) -> list[dict[str, Any]]:
        """All stored resources of an ARM type, e.g. 'microsoft.insights/autoscalesettings'."""
        ...

    def resource(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """One stored resource of an ARM type by its id (any case), or None."""
        ...

    async def set_scale_set_capacity(self, scale_set_id: str, capacity: int, reason: str) -> None:
        """Change sku.capacity through the same path as an ARM update (ETag, instances, LRO)."""
        ...


class DataPlane(Protocol):
    async def start(self, arm: ArmFacade) -> None: ...

    async def stop(self) -> None:
        """Stop every process the data plane started; nothing may be left behind."""
        ...

    async def sync_scale_set(self, scale_set_id: str, instances: list[InstanceSpec]) -> None: ...

    async def remove_scale_set(self, scale_set_id: str) -> None: ...

    def instance_states(self, scale_set_id: str) -> dict[str, InstanceRuntime]: ...

    async def apply_gateway(self, spec: GatewaySpec) -> None: ...

    async def remove_gateway(self, gateway_id: str) -> None: ...

    async def backend_health(self, gateway_id: str) -> dict[str, list[BackendServerHealth]]:
        """Per pool name, the health of each backend address."""
        ...

    async def metrics(self, resource_id: str, resource_type: str, query: dict[str, str]) -> dict[str, Any]:
        """The body of Microsoft.Insights/metrics for a resource; `query` is the raw query string
        (timespan, interval, metricnames, aggregation, $filter, top, orderby, resultType, ...)."""
        ...

    def metric_definitions(self, resource_id: str, resource_type: str) -> dict[str, Any]: ...

    async def query_logs(
        self, workspace_id: str, kql: str, timespan: str | None, collections: list[LogCollection]
    ) -> dict[str, Any]:
        """The body of a Log Analytics query answer (tables / columns / rows), over the access-log
        records the `collections` put into this workspace."""
        ...
