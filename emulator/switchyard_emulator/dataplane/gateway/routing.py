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

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_ranges)


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
    listeners_by_port: dict[int, ListenerSpec]
    routes_by_port: dict[int, Route | None]  # None: a listener no rule uses
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
    listeners_by_port: dict[int, ListenerSpec] = {}
    for listener in spec.listeners:
        _check_port(listener.port, f"gateway {gw} listener {listener.name!r}")
        other = listeners_by_port.get(listener.port)
        if other is not None:
            raise GatewaySpecError(
                f"gateway {gw}: listeners {other.name!r} and {listener.name!r} both use port {listener.port}"
            )
        listeners_by_port[listener.port] = listener

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

    routes_by_port: dict[int, Route | None] = dict.fromkeys(listeners_by_port)
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
        routes_by_port[rule_listener.port] = Route(
            listener=rule_listener.name,
            port=rule_listener.port,
            rule=rule.name,
            pool=rule.pool,
            settings=rule_settings,
        )
        probe = probes[rule_settings.probe] if rule_settings.probe is not None else DEFAULT_PROBE
        probe_plans[(rule.pool, rule_settings.name)] = ProbePlan(
            path=probe.path,
            port=rule_settings.port,
            interval_s=probe.interval_s,
            timeout_s=probe.timeout_s,
            unhealthy_threshold=probe.unhealthy_threshold,
            status_ranges=parse_status_ranges(probe.status_codes, f"gateway {gw} probe {probe.name!r}"),
            status_text=",".join(code.strip() for code in probe.status_codes),
        )

    return CompiledGateway(
        spec=spec,
        listeners_by_port=listeners_by_port,
        routes_by_port=routes_by_port,
        pool_members=pool_members,
        settings=settings,
        probe_plans=probe_plans,
    )
