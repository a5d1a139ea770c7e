"""The traffic router port on an Application Gateway: a production listener (public frontend), a test
listener (private frontend) and four pools of scale-set NICs: each color's own and its canary pool
(docs/decisions/0010-canary-pools.md). Every change users can see is one If-Match-guarded PUT."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds, last_segment
from switchyard.cloud.azure.nics import ScaleSetNics
from switchyard.cloud.azure.wire import azure_errors, wire
from switchyard.cloud.errors import CloudError, NotFoundError, StaleStateError
from switchyard.core.config import AzureEnvironment
from switchyard.core.state import GatewayObservation, GatewayRoutes, PoolObservation
from switchyard.core.topology import Topology

_SCALE_SET_NIC = re.compile(
    r"/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachineScaleSets/([^/]+)/virtualMachines/",
    re.IGNORECASE,
)
_NIC = re.compile(r"/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkInterfaces/([^/]+)/", re.IGNORECASE)


def _scale_set_of(configuration_id: str) -> str:
    """The scale set a NIC ip configuration belongs to, by its id; '' for a NIC of no scale set."""
    match = _SCALE_SET_NIC.search(configuration_id)
    return match.group(2) if match else ""


class AzureTrafficRouter:
    """Application Gateway as a traffic router: one If-Match-guarded PUT per routing change."""

    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
        self._clients = clients
        self._network = clients.network
        self._ids = ids
        self._environment = environment

    def definition(self, topology: Topology) -> dict[str, Any] | None:
        """The gateway's ARM JSON as Azure holds it now, or None when there is no gateway."""
        with azure_errors(f"gateway {topology.gateway}"):
            try:
                return wire(self._network.application_gateways.get(self._environment.resource_group, topology.gateway))
            except ResourceNotFoundError:
                return None

    def _member_addresses(self, configuration_ids: set[str], nics: ScaleSetNics) -> dict[str, str]:
        """NIC ip-configuration id (lower case) -> private IP, for the members of the pools.

        backendIPConfigurations name NIC ip configurations, not addresses; the network API owns the
        addresses. Scale-set NICs are listed per scale set (whatever scale set they belong to, so a
        stranger in a pool shows as an address too); a member whose NIC is gone (an instance being
        deleted) is left out."""
        addresses: dict[str, str] = {}
        scale_sets = {(m.group(1), m.group(2)) for i in configuration_ids if (m := _SCALE_SET_NIC.search(i))}
        bodies: list[dict[str, Any]] = []
        for group, scale_set in sorted(scale_sets):
            with azure_errors(f"network interfaces of scale set {scale_set}"):
                bodies.extend(nics.of(group, scale_set) or [])
        for configuration_id in sorted(configuration_ids):
            match = None if _SCALE_SET_NIC.search(configuration_id) else _NIC.search(configuration_id)
            if match:
                with azure_errors(f"network interface {match.group(2)}"):
                    try:
                        bodies.append(wire(self._network.network_interfaces.get(match.group(1), match.group(2))))
                    except ResourceNotFoundError:
                        continue
        for nic in bodies:
            for ip_configuration in nic.get("properties", {}).get("ipConfigurations", []):
                address = ip_configuration.get("properties", {}).get("privateIPAddress")
                if address and ip_configuration.get("id"):
                    addresses[ip_configuration["id"].lower()] = address
        return addresses

    def _health(self, topology: Topology) -> dict[str, dict[str, str]]:
        """pool name (lower case) -> address -> Up/Down/Unknown/Draining, from the gateway's own probes."""
        with azure_errors(f"backend health of {topology.gateway}"):
            result = wire(
                self._network.application_gateways.begin_backend_health(
                    self._environment.resource_group, topology.gateway
                ).result()
            )
        health: dict[str, dict[str, str]] = defaultdict(dict)
        for pool in result.get("backendAddressPools", []):
            pool_name = last_segment(pool.get("backendAddressPool", {}).get("id")).lower()
            for settings in pool.get("backendHttpSettingsCollection", []):
                for server in settings.get("servers", []):
                    health[pool_name][server.get("address", "")] = server.get("health", "Unknown")
        return health

    def observe(
        self, topology: Topology, *, with_health: bool = True, nics: ScaleSetNics | None = None
    ) -> GatewayObservation:
        """The gateway as the service sees it. `nics`: the scale-set NICs of the observation this is
        part of (AzureCloud.observe shares them with the scale sets); None: listed here."""
        body = self.definition(topology)
        if body is None:
            return GatewayObservation(name=topology.gateway, exists=False)
        return self._observation(topology, body, with_health=with_health, nics=nics)

    def routes(self, topology: Topology) -> GatewayRoutes:
        body = self.definition(topology)
        if body is None:
            return GatewayRoutes(name=topology.gateway, exists=False)
        return self._routes(topology, body)

    def _routes(self, topology: Topology, body: dict[str, Any]) -> GatewayRoutes:
        return GatewayRoutes(
            name=topology.gateway,
            exists=True,
            etag=body.get("etag"),
            production_pool=self.routed_pool(body, topology.production_rule),
            test_pool=self.routed_pool(body, topology.test_rule),
            tags=body.get("tags") or {},
        )

    def _observation(
        self, topology: Topology, body: dict[str, Any], *, with_health: bool, nics: ScaleSetNics | None = None
    ) -> GatewayObservation:
        props = body.get("properties", {})
        pool_bodies = props.get("backendAddressPools", [])
        members = {
            c["id"].lower()
            for pool in pool_bodies
            for c in pool.get("properties", {}).get("backendIPConfigurations", [])
            if c.get("id")
        }
        addresses = self._member_addresses(members, nics or ScaleSetNics(self._network))
        health = self._health(topology) if with_health else {}
        pools: dict[str, PoolObservation] = {}
        for pool in pool_bodies:
            pool_props = pool.get("properties", {})
            pools[pool["name"]] = PoolObservation(
                name=pool["name"],
                member_addresses=[
                    addresses[c["id"].lower()]
                    for c in pool_props.get("backendIPConfigurations", [])
                    if c.get("id", "").lower() in addresses
                ],
                member_scale_sets={
                    addresses[c["id"].lower()]: _scale_set_of(c["id"])
                    for c in pool_props.get("backendIPConfigurations", [])
                    if c.get("id", "").lower() in addresses
                },
                explicit_addresses=[
                    a.get("ipAddress") or a.get("fqdn", "")
                    for a in pool_props.get("backendAddresses", [])
                    if a.get("ipAddress") or a.get("fqdn")
                ],
                health=health.get(pool["name"].lower(), {}),  # type: ignore[arg-type]
            )
        return GatewayObservation(
            **dict(self._routes(topology, body)), provisioning_state=props.get("provisioningState"), pools=pools
        )

    def routed_pool(self, body: dict[str, Any], rule_name: str) -> str | None:
        """The name of the pool a routing rule of this gateway JSON sends to."""
        for rule in body.get("properties", {}).get("requestRoutingRules", []):
            if rule["name"].lower() == rule_name.lower():
                return last_segment((rule.get("properties", {}).get("backendAddressPool") or {}).get("id")) or None
        return None

    def _write(
        self,
        topology: Topology,
        expect_etag: str | None,
        change: Callable[[dict[str, Any]], None],
        what: str,
    ) -> dict[str, Any]:
        """GET, change, PUT with If-Match; returns the gateway as the PUT answered it."""
        body = self.definition(topology)
        if body is None:
            raise NotFoundError(f"{what}: gateway {topology.gateway} does not exist; run provision first")
        if expect_etag is not None and body.get("etag") != expect_etag:
            raise StaleStateError(
                f"{what}: gateway {topology.gateway} changed since it was observed "
                f"(ETag {expect_etag} -> {body.get('etag')}); observe again before deciding"
            )
        change(body)
        return self._put(topology, body, what)

    def _put(self, topology: Topology, body: dict[str, Any], what: str) -> dict[str, Any]:
        with azure_errors(what):
            written = self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group,
                topology.gateway,
                body,
                headers={"If-Match": body["etag"]},
            ).result()
        return wire(written)

    @staticmethod
    def _pool(body: dict[str, Any], name: str) -> dict[str, Any]:
        for pool in body["properties"].get("backendAddressPools", []):
            if pool["name"].lower() == name.lower():
                return pool
        raise NotFoundError(f"gateway has no backend pool {name!r}; run provision")

    @staticmethod
    def _rule(body: dict[str, Any], name: str) -> dict[str, Any]:
        for rule in body["properties"].get("requestRoutingRules", []):
            if rule["name"].lower() == name.lower():
                return rule
        raise NotFoundError(f"gateway has no routing rule {name!r}; run provision")

    def _point(self, body: dict[str, Any], rule: str, pool: str) -> None:
        self._rule(body, rule)["properties"]["backendAddressPool"] = {"id": self._pool(body, pool)["id"]}

    @staticmethod
    def _merge_tags(body: dict[str, Any], tags: dict[str, str] | None) -> None:
        if tags:
            body["tags"] = {**(body.get("tags") or {}), **tags}

    def route(
        self,
        topology: Topology,
        *,
        production: str,
        test: str,
        expect_etag: str,
        tags: dict[str, str] | None = None,
    ) -> GatewayRoutes:
        def change(body: dict[str, Any]) -> None:
            self._point(body, topology.production_rule, production)
            self._point(body, topology.test_rule, test)
            self._merge_tags(body, tags)

        written = self._write(topology, expect_etag, change, f"routing production to {production}, test to {test}")
        return self._routes(topology, written)

    def restore_live_pool(self, topology: Topology, tags: dict[str, str] | None = None) -> str | None:
        """One GET, one PUT If-Match that GET's ETag: a write that lands between them is never
        overwritten (the PUT fails with StaleStateError, and the caller reads again)."""
        body = self.definition(topology)
        if body is None:
            raise NotFoundError(f"taking production off the canary: gateway {topology.gateway} does not exist")
        canary = self.routed_pool(body, topology.production_rule)
        color = Topology.color_of_pool(canary) if canary else None
        if canary is None or color is None or not Topology.is_canary_pool(canary):
            return None
        self._point(body, topology.production_rule, Topology.pool(color))
        self._merge_tags(body, tags)
        self._put(topology, body, f"taking production off {canary} back to {Topology.pool(color)}")
        return canary

    def tag(self, topology: Topology, tags: dict[str, str], expect_etag: str) -> GatewayRoutes:
        written = self._write(topology, expect_etag, lambda body: self._merge_tags(body, tags), "tagging the gateway")
        return self._routes(topology, written)

    def frontend_address(self, topology: Topology) -> str:
        with azure_errors(f"public IP of {topology.gateway}"):
            address = (
                wire(self._network.public_ip_addresses.get(self._environment.resource_group, topology.public_ip))
                .get("properties", {})
                .get("ipAddress")
            )
        if not address:
            raise CloudError(f"public IP {topology.public_ip} has no address yet")
        return str(address)

    def test_address(self, topology: Topology) -> str:
        """The address of the frontend the test listener is on, as the gateway reports it, made
        reachable from here by the clients (the emulator serves a private address on a loopback
        alias). A gateway provisioned before private frontends has its test listener on the public
        frontend: its public address, until provisioning moves it."""
        body = self.definition(topology)
        if body is None:
            raise NotFoundError(f"test address: gateway {topology.gateway} does not exist; run provision first")
        props = body.get("properties", {})
        listener = next(
            (x for x in props.get("httpListeners", []) if x["name"].lower() == topology.test_listener.lower()), None
        )
        frontend_id = ((listener or {}).get("properties", {}).get("frontendIPConfiguration") or {}).get("id", "")
        frontend = next(
            (f for f in props.get("frontendIPConfigurations", []) if f.get("id", "").lower() == frontend_id.lower()),
            None,
        )
        if frontend is None:
            raise NotFoundError(f"gateway {topology.gateway} has no test listener on a frontend; run provision")
        private = frontend.get("properties", {}).get("privateIPAddress")
        if private:
            return self._clients.reachable_address(str(private))
        return self.frontend_address(topology)

    def write_full(self, topology: Topology, body: dict[str, Any], expect_etag: str | None) -> dict[str, Any]:
        """Create the gateway, or replace its definition (If-Match when it exists)."""
        headers = {"If-Match": expect_etag} if expect_etag else {"If-None-Match": "*"}
        with azure_errors(f"writing gateway {topology.gateway}"):
            written = self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group, topology.gateway, body, headers=headers
            ).result()
        return wire(written)
