"""A stored Application Gateway as the data plane's GatewaySpec: listeners on their frontends'
loopback addresses with the subnet NSG's inbound rules that apply to each, pools resolved to
addresses (explicit ones, FQDNs resolved, and the scale-set instances whose NICs are members),
backend settings, probes and rules.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchyard_emulator import netsec
from switchyard_emulator.addresses import PUBLIC_FRONTEND_HOST, loopback_alias
from switchyard_emulator.dataplane.api import (
    BackendSettingsSpec,
    GatewaySpec,
    InboundRuleSpec,
    ListenerSpec,
    PoolSpec,
    ProbeSpec,
    RuleSpec,
)
from switchyard_emulator.ids import key_of, vnet_key_of
from switchyard_emulator.resources.gateway_rules import TYPE_KEY, frontend_host, is_public, ref_name
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.gateways")


class FleetView:
    """What a gateway's spec reads beyond the gateway itself: the instances in each backend pool and
    the addresses in each virtual network, read once, in one pass over the scale sets and one over
    the gateways. Refreshing every gateway (after each scale-set change) shares one view: read per
    gateway, or per network, the work of a refresh grew with the number of gateways times the
    number of scale sets, so a fleet's patch grew with the square of its size, or worse."""

    def __init__(self, em: Emulator) -> None:
        membership = em.scale_sets.network_membership()
        self.members = membership.pools
        self._instances_in_vnet = membership.vnets
        self._frontends_in_vnet: dict[str, set[str]] = {}
        for gateway in em.store.of_type(TYPE_KEY):
            for frontend in gateway.body["properties"].get("frontendIPConfigurations", []):
                fp = frontend.get("properties", {})
                subnet = (fp.get("subnet") or {}).get("id")
                if subnet and fp.get("privateIPAddress"):
                    address = loopback_alias(fp["privateIPAddress"])
                    self._frontends_in_vnet.setdefault(vnet_key_of(subnet), set()).add(address)

    def vnet_addresses(self, vnet_key: str) -> list[str]:
        """The loopback addresses that stand for addresses of a virtual network, so carry the
        VirtualNetwork tag as an NSG source: the instances whose NICs (in the model each runs) are
        in that network, and the private frontends of its gateways."""
        found = set(self._instances_in_vnet.get(vnet_key, ()))
        return sorted(found | self._frontends_in_vnet.get(vnet_key, set()))


def build_spec(em: Emulator, resource: StoredResource, view: FleetView | None = None) -> GatewaySpec:
    """The gateway as the data plane serves it; `view`: the rest of the emulator as read for several
    gateways at once (a fresh read when none)."""
    view = view or FleetView(em)
    props = resource.body["properties"]
    members = view.members
    ports = {p["name"].lower(): p["properties"]["port"] for p in props.get("frontendPorts", [])}

    def name_of(ref: dict[str, Any]) -> str:
        return ref["id"].rsplit("/", 1)[-1]

    listeners = _listener_specs(em, props, ports)
    pools = []
    for pool in props.get("backendAddressPools", []):
        addresses: list[str] = []
        fqdns: dict[str, str] = {}
        for address in pool["properties"].get("backendAddresses", []):
            if address.get("ipAddress"):
                addresses.append(address["ipAddress"])
            elif address.get("fqdn"):
                try:
                    resolved = socket.gethostbyname(address["fqdn"])
                except OSError:
                    log.warning("backend fqdn %s does not resolve; left out", address["fqdn"])
                    continue
                addresses.append(resolved)
                fqdns.setdefault(resolved, address["fqdn"])
        addresses += [m.ip for m in members.get(key_of(pool["id"]), [])]
        pools.append(PoolSpec(name=pool["name"], addresses=list(dict.fromkeys(addresses)), fqdns=fqdns))
    settings = []
    for item in props.get("backendHttpSettingsCollection", []):
        sp = item["properties"]
        draining = sp.get("connectionDraining") or {}
        settings.append(
            BackendSettingsSpec(
                name=item["name"],
                port=sp["port"],
                request_timeout_s=float(sp.get("requestTimeout", 30)),
                probe=name_of(sp["probe"]) if sp.get("probe") else None,
                draining_timeout_s=float(draining.get("drainTimeoutInSec", 0)) if draining.get("enabled") else 0.0,
                host_name=sp.get("hostName") or None,
                pick_host_from_address=bool(sp.get("pickHostNameFromBackendAddress")),
            )
        )
    probes = []
    for item in props.get("probes", []):
        pp = item["properties"]
        codes = (pp.get("match") or {}).get("statusCodes") or ["200-399"]
        probes.append(
            ProbeSpec(
                name=item["name"],
                path=pp["path"],
                interval_s=float(pp.get("interval", 30)),
                timeout_s=float(pp.get("timeout", 30)),
                unhealthy_threshold=int(pp.get("unhealthyThreshold", 3)),
                status_codes=list(codes),
                host=pp.get("host") or None,
                pick_host_from_settings=bool(pp.get("pickHostNameFromBackendHttpSettings")),
            )
        )
    rules = [
        RuleSpec(
            name=item["name"],
            listener=name_of(item["properties"]["httpListener"]),
            pool=name_of(item["properties"]["backendAddressPool"]),
            settings=name_of(item["properties"]["backendHttpSettings"]),
            priority=item["properties"]["priority"],
        )
        for item in props.get("requestRoutingRules", [])
    ]
    return GatewaySpec(
        gateway_id=resource.key,
        listeners=listeners,
        pools=pools,
        settings=settings,
        probes=probes,
        rules=rules,
        # only an NSG looks at sources: without one, instances coming and going need no re-apply
        vnet_addresses=view.vnet_addresses(_vnet_of(props))
        if any(x.inbound_rules is not None for x in listeners)
        else [],
    )


def _listener_specs(em: Emulator, props: dict[str, Any], ports: dict[str, int]) -> list[ListenerSpec]:
    """Each listener on its frontend's loopback address, with the subnet NSG's inbound rules that
    apply to its flows (TCP to its frontend and port), by priority.

    Which destination a client's flow has decides which rules apply. Normally Azure evaluates it
    after translating the frontend address to the gateway's instances, so a rule applies when its
    destination covers the gateway's whole subnet prefix (or is Any, or VirtualNetwork); once a
    public and a private listener (with rules) share a port, "your application gateway changes the
    Destination of all inbound flows to the frontend IPs" (configuration-infrastructure, "Inbound
    rules"): then a rule applies when its destination covers the frontend's address."""
    frontends = {f["name"].lower(): f for f in props.get("frontendIPConfigurations", [])}
    routed = {ref_name(r["properties"]["httpListener"]).lower() for r in props.get("requestRoutingRules", [])}
    public_ports: set[int] = set()
    private_ports: set[int] = set()
    for item in props.get("httpListeners", []):
        if item["name"].lower() not in routed:
            continue
        frontend = frontends[ref_name(item["properties"]["frontendIPConfiguration"]).lower()]
        port = ports[ref_name(item["properties"]["frontendPort"]).lower()]
        (public_ports if is_public(frontend) else private_ports).add(port)
    to_frontend_ips = bool(public_ports & private_ports)

    subnet_id = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
    nsg = em.networks.subnet_nsg(subnet_id)
    rules = netsec.inbound_rules(nsg.body["properties"]) if nsg is not None else None
    found = em.networks.subnet(subnet_id)
    subnet_props = found[1]["properties"] if found else {}
    subnet_networks = [
        ipaddress.IPv4Network(p, strict=False)
        for p in subnet_props.get("addressPrefixes") or [subnet_props.get("addressPrefix", "0.0.0.0/32")]
    ]
    listeners = []
    for item in props.get("httpListeners", []):
        frontend = frontends[ref_name(item["properties"]["frontendIPConfiguration"]).lower()]
        port = ports[ref_name(item["properties"]["frontendPort"]).lower()]
        inbound: list[InboundRuleSpec] | None = None
        if rules is not None:
            applies = _destination_test(frontend, to_frontend_ips, subnet_networks)
            inbound = [
                InboundRuleSpec(
                    name=rule.name,
                    priority=rule.priority,
                    allow=rule.allow,
                    sources=list(rule.sources),
                    source_ports=list(rule.source_ports),
                )
                for rule in rules
                if rule.tcp and netsec.covers(rule.destination_ports, port) and any(map(applies, rule.destinations))
            ]
        listeners.append(
            ListenerSpec(name=item["name"], port=port, host=frontend_host(frontend), inbound_rules=inbound)
        )
    return listeners


def _vnet_of(props: dict[str, Any]) -> str:
    """The key of the virtual network the gateway's own subnet is in."""
    return vnet_key_of(props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"])


def _destination_test(
    frontend: dict[str, Any], to_frontend_ips: bool, subnet: list[ipaddress.IPv4Network]
) -> Callable[[str], bool]:
    """Whether an NSG rule's destination prefix covers a listener's flows (see _listener_specs)."""
    if not to_frontend_ips:
        return functools.partial(_covers_subnet, subnet=subnet)
    if is_public(frontend):
        return functools.partial(_is_address, address=ipaddress.IPv4Address(PUBLIC_FRONTEND_HOST), tag="internet")
    address = ipaddress.IPv4Address(frontend["properties"]["privateIPAddress"])
    return functools.partial(_is_address, address=address, tag="virtualnetwork")


def _covers_subnet(prefix: str, *, subnet: list[ipaddress.IPv4Network]) -> bool:
    return netsec.destination_covers_subnet(prefix, subnet)


def _is_address(prefix: str, *, address: ipaddress.IPv4Address, tag: str) -> bool:
    return netsec.destination_is(prefix, address, tag)
