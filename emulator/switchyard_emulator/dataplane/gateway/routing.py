"""A GatewaySpec compiled into the immutable routing table the proxy reads on every request.

Compiling validates the spec (a reference to a missing listener, pool, settings or probe is an
error that names it) and resolves each listener to the one rule that serves it. The proxy swaps a
whole compiled table in one assignment, which is what makes a configuration change apply to every
new request at once and to no request already in flight.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from switchyard_emulator.dataplane.api import BackendSettingsSpec, GatewaySpec, ListenerSpec, ProbeSpec


class GatewaySpecError(ValueError):
    """The spec cannot be served as given; the message names the offending element."""


# Application Gateway's default probe, used for backend settings without a custom probe: GET / on
# the settings' port every 30 s, 30 s timeout, 3 failures to mark a server down, 200-399 healthy.
# Its host is 127.0.0.1 "unless one is specified in the associated Backend Settings"
# (learn.microsoft.com/azure/application-gateway/application-gateway-probe-overview, "Default health
# probe settings").
DEFAULT_PROBE_HOST = "127.0.0.1"
DEFAULT_PROBE = ProbeSpec(
    name="(default probe)",
    path="/",
    interval_s=30.0,
    timeout_s=30.0,
    unhealthy_threshold=3,
    status_codes=["200-399"],
)


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """How one (pool, settings) pair's members are probed; equal plans keep their probe state."""

    path: str
    port: int
    interval_s: float
    timeout_s: float
    unhealthy_threshold: int
    status_ranges: tuple[tuple[int, int], ...]
    status_text: str  # e.g. "200-399", for probe log lines
    host: str = DEFAULT_PROBE_HOST  # the Host header, unless it is taken from each backend's address
    host_from_address: bool = False
    address_hosts: tuple[tuple[str, str], ...] = ()  # backend address -> FQDN it came from

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_ranges)

    def host_for(self, address: str) -> str:
        """The Host header a probe of `address` carries: the plan's host, or (settings that pick the
        host name from the backend address) the backend's FQDN, else its IP."""
        if self.host_from_address:
            return dict(self.address_hosts).get(address, address)
        return self.host


Endpoint = tuple[str, int]  # (loopback host, port) a listener binds


@dataclass(frozen=True, slots=True)
class Route:
    """What a listener does with a request: the rule that serves it and where that rule sends it."""

    listener: str
    port: int
    rule: str
    pool: str
    settings: BackendSettingsSpec


@dataclass(frozen=True, slots=True)
class CompiledGateway:
    spec: GatewaySpec
    listeners_by_endpoint: dict[Endpoint, ListenerSpec]
    routes_by_endpoint: dict[Endpoint, Route | None]  # None: a listener no rule uses
    pool_members: dict[str, tuple[str, ...]]
    settings: dict[str, BackendSettingsSpec]
    # Every (pool, settings) pair some rule uses, and how its members are probed. Azure probes
    # exactly these pairs: a pool no rule references is not probed at all.
    probe_plans: dict[tuple[str, str], ProbePlan] = field(default_factory=dict)


def parse_status_ranges(codes: list[str], where: str) -> tuple[tuple[int, int], ...]:
    if not codes:
        raise GatewaySpecError(f"{where}: status_codes is empty")
    ranges: list[tuple[int, int]] = []
    for code in codes:
        text = code.strip()
        low_text, _, high_text = text.partition("-")
        high_text = high_text or low_text
        if not (low_text.isdigit() and high_text.isdigit()):
            raise GatewaySpecError(f"{where}: status code match {code!r} is not 'NNN' or 'NNN-NNN'")
        low, high = int(low_text), int(high_text)
        if not (100 <= low <= high <= 599):
            raise GatewaySpecError(f"{where}: status code range {code!r} is outside 100-599")
        ranges.append((low, high))
    return tuple(ranges)


def _unique(names: list[str], kind: str, gateway_id: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise GatewaySpecError(f"gateway {gateway_id}: duplicate {kind} name {name!r}")
        seen.add(name)


def _check_port(port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise GatewaySpecError(f"{what}: port {port} is outside 1-65535")


def _probe_host(probe: ProbeSpec, settings: BackendSettingsSpec) -> tuple[str, bool]:
    """(Host header, taken from each backend's address?) for a probe used with these settings.

    A custom probe sends its `host`; with pickHostNameFromBackendHttpSettings it takes the settings'
    hostName, or the backend's address when the settings pick the host name from it (probe
    overview: "Host name to send the probe with"; the spec's pickHostNameFromBackendHttpSettings:
    "Whether the host header should be picked from the backend http settings"). The default probe
    uses 127.0.0.1 unless the settings name a host (see DEFAULT_PROBE_HOST).

    A custom probe with no host to send is refused by the ARM layer (ApplicationGatewayProbeHostIsNull,
    resources/gateway_body.py); a spec built without it (the data plane's own tests) probes with the
    default host."""
    if probe is DEFAULT_PROBE or probe.pick_host_from_settings:
        if settings.host_name:
            return settings.host_name, False
        if settings.pick_host_from_address:
            return DEFAULT_PROBE_HOST, True
        return DEFAULT_PROBE_HOST, False
    return probe.host or DEFAULT_PROBE_HOST, False


def compile_gateway(spec: GatewaySpec) -> CompiledGateway:
    gw = spec.gateway_id
    if not gw:
        raise GatewaySpecError("gateway_id is empty")
    _unique([item.name for item in spec.listeners], "listener", gw)
    _unique([item.name for item in spec.pools], "backend pool", gw)
    _unique([item.name for item in spec.settings], "backend settings", gw)
    _unique([item.name for item in spec.probes], "probe", gw)
    _unique([item.name for item in spec.rules], "rule", gw)

    listeners = {item.name: item for item in spec.listeners}
    listeners_by_endpoint: dict[Endpoint, ListenerSpec] = {}
    for listener in spec.listeners:
        _check_port(listener.port, f"gateway {gw} listener {listener.name!r}")
        try:
            ipaddress.IPv4Address(listener.host)
        except ValueError as error:
            raise GatewaySpecError(f"gateway {gw} listener {listener.name!r}: host {listener.host!r}") from error
        endpoint = (listener.host, listener.port)
        other = listeners_by_endpoint.get(endpoint)
        if other is not None:
            raise GatewaySpecError(
                f"gateway {gw}: listeners {other.name!r} and {listener.name!r} both use {listener.host}:{listener.port}"
            )
        listeners_by_endpoint[endpoint] = listener

    pool_members: dict[str, tuple[str, ...]] = {}
    for pool in spec.pools:
        members: list[str] = []
        for address in pool.addresses:
            try:
                canonical = str(ipaddress.ip_address(address.strip()))
            except ValueError as error:
                raise GatewaySpecError(
                    f"gateway {gw} pool {pool.name!r}: backend address {address!r} is not an IP address"
                ) from error
            if canonical not in members:  # the same NIC listed twice is one server
                members.append(canonical)
        pool_members[pool.name] = tuple(members)

    probes = {item.name: item for item in spec.probes}
    for probe in spec.probes:
        where = f"gateway {gw} probe {probe.name!r}"
        if not probe.path.startswith("/"):
            raise GatewaySpecError(f"{where}: path {probe.path!r} must start with '/'")
        if probe.interval_s <= 0 or probe.timeout_s <= 0:
            raise GatewaySpecError(f"{where}: interval and timeout must be positive")
        if probe.unhealthy_threshold < 1:
            raise GatewaySpecError(f"{where}: unhealthy_threshold must be at least 1")
        parse_status_ranges(probe.status_codes, where)

    settings = {item.name: item for item in spec.settings}
    for item in spec.settings:
        where = f"gateway {gw} backend settings {item.name!r}"
        _check_port(item.port, where)
        if item.request_timeout_s <= 0:
            raise GatewaySpecError(f"{where}: request_timeout_s must be positive")
        if item.draining_timeout_s < 0:
            raise GatewaySpecError(f"{where}: draining_timeout_s must not be negative")
        if item.probe is not None and item.probe not in probes:
            raise GatewaySpecError(f"{where}: probe {item.probe!r} does not exist")

    routes_by_endpoint: dict[Endpoint, Route | None] = dict.fromkeys(listeners_by_endpoint)
    rule_of_listener: dict[str, str] = {}
    probe_plans: dict[tuple[str, str], ProbePlan] = {}
    for rule in sorted(spec.rules, key=lambda r: r.priority):
        where = f"gateway {gw} rule {rule.name!r}"
        rule_listener = listeners.get(rule.listener)
        if rule_listener is None:
            raise GatewaySpecError(f"{where}: listener {rule.listener!r} does not exist")
        if rule.pool not in pool_members:
            raise GatewaySpecError(f"{where}: backend pool {rule.pool!r} does not exist")
        rule_settings = settings.get(rule.settings)
        if rule_settings is None:
            raise GatewaySpecError(f"{where}: backend settings {rule.settings!r} do not exist")
        if rule.listener in rule_of_listener:
            # A basic rule owns its listener outright (path maps are not emulated).
            owner = rule_of_listener[rule.listener]
            raise GatewaySpecError(f"{where}: listener {rule.listener!r} is already used by rule {owner!r}")
        rule_of_listener[rule.listener] = rule.name
        routes_by_endpoint[(rule_listener.host, rule_listener.port)] = Route(
            listener=rule_listener.name,
            port=rule_listener.port,
            rule=rule.name,
            pool=rule.pool,
            settings=rule_settings,
        )
        probe = probes[rule_settings.probe] if rule_settings.probe is not None else DEFAULT_PROBE
        host, host_from_address = _probe_host(probe, rule_settings)
        pool_spec = next(p for p in spec.pools if p.name == rule.pool)
        probe_plans[(rule.pool, rule_settings.name)] = ProbePlan(
            path=probe.path,
            port=rule_settings.port,
            interval_s=probe.interval_s,
            timeout_s=probe.timeout_s,
            unhealthy_threshold=probe.unhealthy_threshold,
            status_ranges=parse_status_ranges(probe.status_codes, f"gateway {gw} probe {probe.name!r}"),
            status_text=",".join(code.strip() for code in probe.status_codes),
            host=host,
            host_from_address=host_from_address,
            address_hosts=tuple(sorted(pool_spec.fqdns.items())) if host_from_address else (),
        )

    return CompiledGateway(
        spec=spec,
        listeners_by_endpoint=listeners_by_endpoint,
        routes_by_endpoint=routes_by_endpoint,
        pool_members=pool_members,
        settings=settings,
        probe_plans=probe_plans,
    )
