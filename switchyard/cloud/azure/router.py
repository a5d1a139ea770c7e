"""The traffic router port on an Application Gateway: production and test listeners, one pool per
color, and the canary as explicit addresses in the live pool."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.wire import azure_errors, wire
from switchyard.cloud.errors import CloudError, NotFoundError, StaleStateError
from switchyard.core.config import AzureEnvironment
from switchyard.core.state import GatewayObservation, PoolObservation
from switchyard.core.topology import Color, Topology


class AzureTrafficRouter:
    """Application Gateway as a traffic router: one If-Match-guarded PUT per routing change."""

    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
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

    def _nic_addresses(self, topology: Topology) -> dict[str, str]:
        """NIC ip-configuration id (lower case) -> private IP, for both colors' scale sets."""
        addresses: dict[str, str] = {}
        for color in Color:
            with azure_errors(f"network interfaces of {topology.scale_set(color)}"):
                try:
                    nics = list(
                        self._network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
                            self._environment.resource_group, topology.scale_set(color)
                        )
                    )
                except ResourceNotFoundError:
                    continue
            for nic in nics:
                for ip_configuration in wire(nic).get("properties", {}).get("ipConfigurations", []):
                    address = ip_configuration.get("properties", {}).get("privateIPAddress")
                    if address and ip_configuration.get("id"):
                        addresses[ip_configuration["id"].lower()] = address
        return addresses

    def _health(self, topology: Topology) -> dict[str, dict[str, str]]:
        """pool name -> address -> Up/Down/Unknown, from the gateway's own backend health."""
        with azure_errors(f"backend health of {topology.gateway}"):
            result = wire(
                self._network.application_gateways.begin_backend_health(
                    self._environment.resource_group, topology.gateway
                ).result()
            )
        health: dict[str, dict[str, str]] = defaultdict(dict)
        for pool in result.get("backendAddressPools", []):
            pool_name = pool.get("backendAddressPool", {}).get("id", "").rsplit("/", 1)[-1]
            for settings in pool.get("backendHttpSettingsCollection", []):
                for server in settings.get("servers", []):
                    health[pool_name][server.get("address", "")] = server.get("health", "Unknown")
        return health

    def observe(self, topology: Topology, *, with_health: bool = True) -> GatewayObservation:
        body = self.definition(topology)
        if body is None:
            return GatewayObservation(name=topology.gateway, exists=False)
        props = body.get("properties", {})
        nic_addresses = self._nic_addresses(topology)
        health = self._health(topology) if with_health else {}
        pools: dict[str, PoolObservation] = {}
        for pool in props.get("backendAddressPools", []):
            pool_props = pool.get("properties", {})
            members = [
                nic_addresses[c["id"].lower()]
                for c in pool_props.get("backendIPConfigurations", [])
                if c.get("id", "").lower() in nic_addresses
            ]
            extra = [a["ipAddress"] for a in pool_props.get("backendAddresses", []) if a.get("ipAddress")]
            pools[pool["name"]] = PoolObservation(
                name=pool["name"],
                member_addresses=members,
                extra_addresses=extra,
                health=health.get(pool["name"], {}),  # type: ignore[arg-type]
            )
        rules = {rule["name"]: rule.get("properties", {}) for rule in props.get("requestRoutingRules", [])}

        def pool_of(rule: str) -> str | None:
            pool_id = (rules.get(rule, {}).get("backendAddressPool") or {}).get("id")
            return pool_id.rsplit("/", 1)[-1] if pool_id else None

        return GatewayObservation(
            name=topology.gateway,
            exists=True,
            etag=body.get("etag"),
            provisioning_state=props.get("provisioningState"),
            production_pool=pool_of(topology.production_rule),
            test_pool=pool_of(topology.test_rule),
            pools=pools,
            tags=body.get("tags") or {},
        )

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

    def set_split(
        self,
        topology: Topology,
        canary_addresses: list[str],
        expect_etag: str,
        tags: dict[str, str] | None = None,
    ) -> list[str]:
        def live_pool(body: dict[str, Any]) -> dict[str, Any]:
            live_pool_id = self._rule(body, topology.production_rule)["properties"]["backendAddressPool"]["id"]
            return self._pool(body, live_pool_id.rsplit("/", 1)[-1]).setdefault("properties", {})

        def change(body: dict[str, Any]) -> None:
            if tags:
                body["tags"] = {**(body.get("tags") or {}), **tags}
            live_pool(body)["backendAddresses"] = [{"ipAddress": address} for address in canary_addresses]

        written = self._write(topology, expect_etag, change, f"setting canary of {len(canary_addresses)} instance(s)")
        return [a.get("ipAddress", "") for a in live_pool(written).get("backendAddresses", [])]

    def switch(
        self, topology: Topology, to_color: Color, expect_etag: str, tags: dict[str, str] | None = None
    ) -> GatewayObservation:
        def change(body: dict[str, Any]) -> None:
            for color, rule in ((to_color, topology.production_rule), (to_color.other, topology.test_rule)):
                self._rule(body, rule)["properties"]["backendAddressPool"] = {
                    "id": self._ids.gateway_child(topology, "backendAddressPools", topology.pool(color))
                }
            for color in Color:
                self._pool(body, topology.pool(color)).setdefault("properties", {})["backendAddresses"] = []
            if tags:
                body["tags"] = {**(body.get("tags") or {}), **tags}

        self._write(topology, expect_etag, change, f"switching production to {to_color.value}")
        return self.observe(topology, with_health=False)

    def clear_canary(self, topology: Topology, tags: dict[str, str] | None = None) -> list[str]:
        """Take every canary address out of the live pool: one GET, one If-Match-guarded PUT.

        The fast way back: it needs no other observation, because explicit addresses in the live
        pool are only ever canary instances. Returns the addresses removed ([] and no write if none).
        """
        body = self.definition(topology)
        if body is None:
            raise NotFoundError(f"gateway {topology.gateway} does not exist")
        live_pool_id = self._rule(body, topology.production_rule)["properties"]["backendAddressPool"]["id"]
        live_pool = self._pool(body, live_pool_id.rsplit("/", 1)[-1]).setdefault("properties", {})
        removed = [a.get("ipAddress") or a.get("fqdn", "") for a in live_pool.get("backendAddresses", [])]
        if not removed:
            return []
        live_pool["backendAddresses"] = []
        if tags:
            body["tags"] = {**(body.get("tags") or {}), **tags}
        with azure_errors("taking the canary out of production"):
            self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group, topology.gateway, body, headers={"If-Match": body["etag"]}
            ).result()
        return removed

    def tag(self, topology: Topology, tags: dict[str, str], expect_etag: str) -> GatewayObservation:
        def change(body: dict[str, Any]) -> None:
            body["tags"] = {**(body.get("tags") or {}), **tags}

        self._write(topology, expect_etag, change, "tagging the gateway")
        return self.observe(topology, with_health=False)

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

    def write_full(self, topology: Topology, body: dict[str, Any], expect_etag: str | None) -> None:
        """Create the gateway, or replace its definition (If-Match when it exists)."""
        headers = {"If-Match": expect_etag} if expect_etag else {"If-None-Match": "*"}
        with azure_errors(f"writing gateway {topology.gateway}"):
            self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group, topology.gateway, body, headers=headers
            ).result()
