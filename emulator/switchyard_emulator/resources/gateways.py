"""Application Gateways (Standard_v2): validated like Azure, made real by the data plane.

Every internal reference (`<gateway id>/backendAddressPools/blue`, ...) must resolve, else 400
naming the field. Each pool's read-only `backendIPConfigurations` is recomputed from the scale sets
whose NIC ipConfigurations reference it, per the model each instance runs (Manual upgrade policy:
an instance not yet upgraded stays where its model put it). The ETag covers what a client writes,
so instances joining or leaving a pool do not invalidate a client's If-Match.

Frontends: one public (its listeners bind 127.0.0.1) and at most one private, a static address of
the gateway's subnet whose listeners bind its loopback alias (addresses.py). The NSG of the gateway's
subnet, if any, must let Azure's infrastructure in (a write is refused otherwise) and its inbound
rules are handed to the data plane per listener, which drops the connections they deny (netsec.py).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import azure.mgmt.network.models as nm
from starlette.responses import Response

from switchyard_emulator import apiversions, netsec
from switchyard_emulator.addresses import PUBLIC_FRONTEND_HOST, loopback_alias
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    new_etag,
    page_response,
    require_resource_group,
    resource_response,
    route,
)
from switchyard_emulator.dataplane.api import (
    BackendSettingsSpec,
    GatewaySpec,
    InboundRuleSpec,
    ListenerSpec,
    PoolSpec,
    ProbeSpec,
    RuleSpec,
)
from switchyard_emulator.errors import ArmError, bad_request, unsupported
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import (
    ResourceKind,
    check_name,
    new_guid,
    referrers,
    require_location,
    tags_of,
)
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.gateways")

NS = "Microsoft.Network"
TYPE = "Microsoft.Network/applicationGateways"
TYPE_KEY = TYPE.lower()

# collections the emulator serves, with their sub-resource type names
_COLLECTIONS = (
    "gatewayIPConfigurations",
    "frontendIPConfigurations",
    "frontendPorts",
    "probes",
    "backendAddressPools",
    "backendHttpSettingsCollection",
    "httpListeners",
    "requestRoutingRules",
)
# valid Azure features the emulator's proxy does not implement: refused when non-empty
_REFUSED = (
    "authenticationCertificates",
    "trustedRootCertificates",
    "trustedClientCertificates",
    "sslCertificates",
    "sslProfiles",
    "urlPathMaps",
    "advancedRoutingMaps",
    "advancedRoutingConditionSets",
    "redirectConfigurations",
    "rewriteRuleSets",
    "listeners",
    "routingRules",
    "backendSettingsCollection",
    "privateLinkConfigurations",
    "loadDistributionPolicies",
    "entraJWTValidationConfigs",
    "customErrorConfigurations",
    "webApplicationFirewallConfiguration",
    "firewallPolicy",
)
# empty collections Azure returns on every gateway (those both REST examples of a gateway answer show)
_EMPTY_DEFAULTS = (
    "authenticationCertificates",
    "entraJWTValidationConfigs",
    "loadDistributionPolicies",
    "privateEndpointConnections",
    "probes",
    "rewriteRuleSets",
    "sslCertificates",
    "sslProfiles",
    "trustedClientCertificates",
    "urlPathMaps",
)
_V2_SKUS = {"standard_v2": "Standard_v2", "waf_v2": "WAF_v2", "basic": "Basic"}


class Gateways:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "applicationGateways")
        self._applied: dict[str, GatewaySpec] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        em.ops.register("gateway.apply", self._run_apply)
        em.ops.register("gateway.delete", self._run_delete)
        em.ops.register("gateway.backendhealth", self._run_backend_health)

    def routes(self) -> list[Route]:
        v = apiversions.NETWORK
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways"
        one = rg + "/{name}"
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Network/applicationGateways",
                self.list_all,
                v,
                TYPE,
            ),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("PATCH", one, self.patch_tags, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
            route("POST", one + "/backendhealth", self.backend_health, v, TYPE),
        ]

    # -- reading -----------------------------------------------------------------------------------

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body = json.loads(json.dumps(resource.body))
        body["etag"] = resource.etag
        props = body["properties"]
        for collection in _COLLECTIONS:
            for item in props.get(collection, []):
                item["etag"] = resource.etag
        members = self.em.scale_sets.pool_members()
        for pool in props.get("backendAddressPools", []):
            configs = [{"id": m.ip_configuration_id} for m in members.get(key_of(pool["id"]), [])]
            if configs:
                pool["properties"]["backendIPConfigurations"] = configs
        return body

    async def list_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(TYPE_KEY, subscription=ctx.subscription)
        return page_response(ctx, [self.render(r) for r in items])

    async def list_by_group(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        return page_response(ctx, [self.render(r) for r in self.em.store.of_type(TYPE_KEY, rg_key=ctx.params["rg"])])

    async def get(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        return resource_response(200, self.render(existing), existing.etag)

    # -- writing -----------------------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "application gateway")
        gateway_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(nm.ApplicationGateway))
        location = require_location(body, existing)
        if existing is not None:
            gateway_id = existing.id
        props = self._check(gateway_id, body.get("properties", {}), existing)
        props["provisioningState"] = "Updating"
        props["operationalState"] = "Running"
        props["resourceGuid"] = existing.body["properties"]["resourceGuid"] if existing else new_guid()
        stored = {
            "id": gateway_id,
            "name": existing.body["name"] if existing else name,
            "type": TYPE,
            "location": location,
            **tags_of(body),
            "properties": props,
        }
        for optional in ("zones", "identity"):
            if body.get(optional):
                stored[optional] = body[optional]
        op = self.em.ops.start("gateway.apply", key_of(gateway_id), namespace=NS, region=location)
        resource = StoredResource(
            key=key_of(gateway_id),
            id=gateway_id,
            type_key=TYPE_KEY,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=new_etag(),
            internal={"operation": op.id},
        )
        self.em.store.put(resource)
        return resource_response(
            200 if existing else 201,
            self.render(resource),
            resource.etag,
            self.em.ops.headers(ctx, op, with_location=False),
        )

    def _check(self, gateway_id: str, props: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        """Validate a gateway's properties like Azure (plus the emulator's limits); return them completed."""
        for field in _REFUSED:
            if props.get(field):
                raise unsupported(
                    f"The switchyard emulator's gateway does not implement '{field}'; leave it empty.",
                    target=f"properties.{field}",
                )
        sku = props.get("sku")
        if not sku or not sku.get("name"):
            raise bad_request("The gateway needs a sku (Standard_v2).", target="properties.sku.name")
        sku_name = _V2_SKUS.get(str(sku["name"]).lower())
        if sku_name is None:
            raise bad_request(
                f"SKU '{sku['name']}' is not supported: v1 gateways are retired; use Standard_v2 or WAF_v2.",
                target="properties.sku.name",
                code="ApplicationGatewayV1SkuNotSupported",
            )
        sku = {**sku, "name": sku_name, "tier": sku.get("tier", sku_name)}
        if "capacity" not in sku and not props.get("autoscaleConfiguration"):
            sku["capacity"] = 1
        props = json.loads(json.dumps(props))
        props["sku"] = sku
        # every sub-resource: unique name, canonical id
        index: dict[str, dict[str, dict[str, Any]]] = {}
        for collection in _COLLECTIONS:
            seen: dict[str, dict[str, Any]] = {}
            for i, item in enumerate(props.get(collection, [])):
                target = f"properties.{collection}[{i}]"
                name = item.get("name")
                if not name:
                    raise bad_request(f"Every item of {collection} needs a name.", target=f"{target}.name")
                if name.lower() in seen:
                    raise bad_request(f"The name '{name}' is used twice in {collection}.", target=f"{target}.name")
                item["id"] = f"{gateway_id}/{collection}/{name}"
                item["type"] = f"{TYPE}/{collection}"
                item.setdefault("properties", {})
                item["properties"]["provisioningState"] = "Succeeded"
                seen[name.lower()] = item
            index[collection] = seen
            props[collection] = props.get(collection, [])

        def ref(value: Any, collection: str, target: str, *, required: bool = True) -> dict[str, Any] | None:
            ref_id = (value or {}).get("id") if isinstance(value, dict) else None
            if not ref_id:
                if required:
                    raise bad_request(f"{target} is required.", target=target)
                return None
            prefix = f"{gateway_id}/{collection}/".lower()
            if not ref_id.lower().startswith(prefix):
                raise ArmError(
                    400,
                    "InvalidResourceReference",
                    f"Resource {ref_id} referenced by {target} was not found: it must be one of this "
                    f"gateway's {collection} ({prefix}...).",
                    target=target,
                )
            found = index[collection].get(ref_id[len(prefix) :].lower())
            if found is None:
                raise ArmError(
                    400,
                    "InvalidResourceReference",
                    f"Resource {ref_id} referenced by {target} was not found.",
                    target=target,
                )
            return found

        if not props["gatewayIPConfigurations"]:
            raise bad_request(
                "The gateway needs one gateway IP configuration (its subnet).",
                target="properties.gatewayIPConfigurations",
            )
        for i, item in enumerate(props["gatewayIPConfigurations"]):
            self.em.networks.subnet_exists(
                item["properties"].get("subnet", {}).get("id"),
                f"properties.gatewayIPConfigurations[{i}].properties.subnet.id",
            )
        if not props["frontendIPConfigurations"]:
            raise bad_request(
                "The gateway needs a frontend IP configuration.", target="properties.frontendIPConfigurations"
            )
        for i, item in enumerate(props["frontendIPConfigurations"]):
            fp = item["properties"]
            target = f"properties.frontendIPConfigurations[{i}].properties"
            if fp.get("publicIPAddress"):
                self.em.networks.public_ips.resolve(fp["publicIPAddress"].get("id"), f"{target}.publicIPAddress.id")
            if fp.get("subnet"):
                self.em.networks.subnet_exists(fp["subnet"].get("id"), f"{target}.subnet.id")
            if not fp.get("publicIPAddress") and not fp.get("subnet"):
                raise bad_request("A frontend IP configuration needs a publicIPAddress or a subnet.", target=target)
            if fp.get("publicIPAddress"):
                fp.setdefault("privateIPAllocationMethod", "Dynamic")  # what Azure answers for a public frontend
        gateway_subnet = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
        self._check_frontends(gateway_id, sku_name, props["frontendIPConfigurations"], gateway_subnet)
        ports_seen: dict[int, str] = {}
        for i, item in enumerate(props["frontendPorts"]):
            port = item["properties"].get("port")
            target = f"properties.frontendPorts[{i}].properties.port"
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise bad_request("A frontend port needs a port number 1-65535.", target=target)
            if port in ports_seen:
                raise bad_request(f"Port {port} is used by two frontend ports.", target=target)
            ports_seen[port] = item["name"]
        for i, item in enumerate(props["probes"]):
            pp = item["properties"]
            target = f"properties.probes[{i}].properties"
            if str(pp.get("protocol", "Http")).lower() != "http":
                raise unsupported("Only Http probes are supported by the emulator.", target=f"{target}.protocol")
            path = pp.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise bad_request("A probe path must start with '/'.", target=f"{target}.path")
            for field_name, low, high, default in (
                ("interval", 1, 86400, 30),
                ("timeout", 1, 86400, 30),
                ("unhealthyThreshold", 1, 20, 3),
            ):
                value = pp.setdefault(field_name, default)
                if not low <= value <= high:
                    raise bad_request(
                        f"{field_name} must be between {low} and {high}.", target=f"{target}.{field_name}"
                    )
            pp.setdefault("protocol", "Http")
            pp.setdefault("pickHostNameFromBackendHttpSettings", False)
            if not pp.get("host") and not pp["pickHostNameFromBackendHttpSettings"]:
                # Azure's answer, seen in a user's log (find_string "ApplicationGatewayProbeHostIsNull")
                raise ArmError(
                    400,
                    "ApplicationGatewayProbeHostIsNull",
                    f"Probe '{item['id']}' is not valid. Host can only be null when "
                    "pickHostNameFromBackendHttpSettings is set to true.",
                    target=f"{target}.host",
                )
            if pp.get("host"):
                _check_host_name(pp["host"], f"{target}.host")
            pp.setdefault("minServers", 0)
            pp.setdefault("match", {})
        for i, item in enumerate(props["backendAddressPools"]):
            bp = item["properties"]
            bp.setdefault("backendAddresses", [])
            for j, address in enumerate(bp["backendAddresses"]):
                if not address.get("ipAddress") and not address.get("fqdn"):
                    raise bad_request(
                        "A backend address needs an ipAddress or an fqdn.",
                        target=f"properties.backendAddressPools[{i}].properties.backendAddresses[{j}]",
                    )
            if bp["backendAddresses"]:
                self._check_homogeneous_pool(item, f"properties.backendAddressPools[{i}].properties.backendAddresses")
        for i, item in enumerate(props["backendHttpSettingsCollection"]):
            sp = item["properties"]
            target = f"properties.backendHttpSettingsCollection[{i}].properties"
            if str(sp.get("protocol", "Http")).lower() != "http":
                raise unsupported(
                    "Only Http backend settings are supported by the emulator.", target=f"{target}.protocol"
                )
            port = sp.get("port")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise bad_request("Backend settings need a port 1-65535.", target=f"{target}.port")
            sp.setdefault("protocol", "Http")
            sp.setdefault("cookieBasedAffinity", "Disabled")
            sp.setdefault("requestTimeout", 30)
            sp.setdefault("pickHostNameFromBackendAddress", False)
            if not 1 <= sp["requestTimeout"] <= 86400:
                raise bad_request("requestTimeout must be 1-86400 seconds.", target=f"{target}.requestTimeout")
            if sp.get("hostName"):
                _check_host_name(sp["hostName"], f"{target}.hostName")
            if sp.get("probe"):
                probe = ref(sp["probe"], "probes", f"{target}.probe.id")
                assert probe is not None
                picks = probe["properties"]["pickHostNameFromBackendHttpSettings"]
                if picks and not sp.get("hostName") and not sp["pickHostNameFromBackendAddress"]:
                    # A probe that takes its host from these settings needs them to name one. Azure's
                    # message (quoted from a deployment's error); the code is the emulator's.
                    raise ArmError(
                        400,
                        "ApplicationGatewayBackendHttpSettingsProbeHostNameMissing",
                        f"BackendHttpSettings '{item['id']}' is not allowed to have "
                        "PickHostNameFromBackendHttpSettings set to true. It may only be set to true if Backend "
                        "Http Settings defines the 'HostName' property or sets 'PickHostNameFromBackendAddress' "
                        "to true.",
                        target=f"{target}.probe.id",
                    )
            draining = sp.get("connectionDraining")
            if draining and draining.get("enabled"):
                timeout = draining.get("drainTimeoutInSec")
                if not isinstance(timeout, int) or not 1 <= timeout <= 3600:
                    raise bad_request(
                        "connectionDraining.drainTimeoutInSec must be 1-3600.",
                        target=f"{target}.connectionDraining.drainTimeoutInSec",
                    )
        listener_endpoints: dict[str, tuple[str, int]] = {}
        used_frontends: dict[tuple[str, str], str] = {}
        for i, item in enumerate(props["httpListeners"]):
            lp = item["properties"]
            target = f"properties.httpListeners[{i}].properties"
            if str(lp.get("protocol", "Http")).lower() != "http":
                raise unsupported(
                    "Only Http listeners are supported by the emulator (no TLS frontends).",
                    target=f"{target}.protocol",
                )
            if lp.get("hostName") or lp.get("hostNames"):
                raise unsupported(
                    "Multi-site listeners (hostName) are not supported by the emulator.",
                    target=f"{target}.hostName",
                )
            lp.setdefault("protocol", "Http")
            fip = ref(
                lp.get("frontendIPConfiguration"),
                "frontendIPConfigurations",
                f"{target}.frontendIPConfiguration.id",
            )
            port = ref(lp.get("frontendPort"), "frontendPorts", f"{target}.frontendPort.id")
            assert fip is not None and port is not None
            pair = (fip["name"].lower(), port["name"].lower())
            if pair in used_frontends:
                raise bad_request(
                    f"Listeners '{used_frontends[pair]}' and '{item['name']}' use the same frontend IP "
                    "configuration and port.",
                    target=f"{target}.frontendPort.id",
                    code="ApplicationGatewayHttpListenersUsingSameFrontendPortAndFrontendIpConfig",
                )
            used_frontends[pair] = item["name"]
            listener_endpoints[item["name"]] = (_frontend_host(fip), port["properties"]["port"])
        rule_listeners: dict[str, str] = {}
        priorities: dict[int, str] = {}
        for i, item in enumerate(props["requestRoutingRules"]):
            rp = item["properties"]
            target = f"properties.requestRoutingRules[{i}].properties"
            rule_type = str(rp.get("ruleType", "Basic"))
            if rule_type.lower() != "basic":
                raise unsupported(
                    f"Rule type '{rule_type}' is not supported by the emulator; use Basic.",
                    target=f"{target}.ruleType",
                )
            rp["ruleType"] = "Basic"
            for refused in (
                "urlPathMap",
                "redirectConfiguration",
                "rewriteRuleSet",
                "loadDistributionPolicy",
                "entraJWTValidationConfig",
                "advancedRoutingMap",
            ):
                if rp.get(refused):
                    raise unsupported(f"'{refused}' is not supported by the emulator.", target=f"{target}.{refused}")
            priority = rp.get("priority")
            if not isinstance(priority, int) or not 1 <= priority <= 20000:
                raise bad_request(
                    "Rules of a v2 gateway need a priority 1-20000.",
                    target=f"{target}.priority",
                    code="ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty",
                )
            if priority in priorities:
                raise bad_request(
                    f"Rules '{priorities[priority]}' and '{item['name']}' have the same priority {priority}.",
                    target=f"{target}.priority",
                    code="ApplicationGatewayRequestRoutingRulePriorityDuplicate",
                )
            priorities[priority] = item["name"]
            listener = ref(rp.get("httpListener"), "httpListeners", f"{target}.httpListener.id")
            ref(rp.get("backendAddressPool"), "backendAddressPools", f"{target}.backendAddressPool.id")
            ref(
                rp.get("backendHttpSettings"),
                "backendHttpSettingsCollection",
                f"{target}.backendHttpSettings.id",
            )
            assert listener is not None
            if listener["name"].lower() in rule_listeners:
                first_rule = rule_listeners[listener["name"].lower()]
                raise bad_request(
                    f"Listener '{listener['name']}' is used by rules '{first_rule}' and '{item['name']}'.",
                    target=f"{target}.httpListener.id",
                )
            rule_listeners[listener["name"].lower()] = item["name"]
        self._check_ports(gateway_id, listener_endpoints)
        if existing is not None:
            self._check_removed_pools(existing, index["backendAddressPools"])
        nsg = self.em.networks.subnet_nsg(gateway_subnet)
        if nsg is not None:
            self._check_infrastructure(gateway_id, gateway_subnet, nsg)
        for collection in _EMPTY_DEFAULTS:
            props.setdefault(collection, [])
        return props

    def _check_ports(self, gateway_id: str, listener_endpoints: dict[str, tuple[str, int]]) -> None:
        """Each listener binds its frontend's loopback address and its port: those of new listeners
        must be free and unused by other gateways (the emulator's limit: Azure gateways have
        addresses of their own, here every public frontend shares 127.0.0.1)."""
        mine = self._applied.get(key_of(gateway_id))
        already = {(listener.host, listener.port) for listener in mine.listeners} if mine else set()
        for other in self.em.store.of_type(TYPE_KEY):
            if other.key == key_of(gateway_id):
                continue
            taken = _listener_endpoints(other.body["properties"])
            for listener, endpoint in listener_endpoints.items():
                if endpoint in taken:
                    raise ArmError(
                        409,
                        "FrontendPortInUse",
                        f"Frontend port {endpoint[1]} of listener '{listener}' is already used on {endpoint[0]} by "
                        f"gateway {other.id}.",
                        target="properties.frontendPorts",
                    )
        for listener, (host, port) in listener_endpoints.items():
            if (host, port) in already:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ArmError(
                    409,
                    "FrontendPortInUse",
                    f"Frontend port {port} of listener '{listener}' cannot be bound on {host} "
                    f"({exc.strerror}): another process uses it; choose a free port.",
                    target="properties.frontendPorts",
                ) from None
            finally:
                probe.close()

    def _check_frontends(
        self, gateway_id: str, sku_name: str, frontends: list[dict[str, Any]], gateway_subnet: str
    ) -> None:
        """Application Gateway v2 frontends: one public and at most one private, the private one a
        static address of the gateway's own subnet."""
        where = "properties.frontendIPConfigurations"
        public = [f for f in frontends if f["properties"].get("publicIPAddress")]
        private = [f for f in frontends if f["properties"].get("subnet") and not f["properties"].get("publicIPAddress")]
        # "Only one public IP address and one private IP address is supported"
        # (configuration-frontend-ip); codes and messages as Azure answers them
        # (hashicorp/terraform-provider-azurerm#23805)
        if len(frontends) > 2:
            raise ArmError(
                400,
                "ApplicationGatewayFrontendIpConfigurationLimitReached",
                "The number of FrontendIpConfigurations exceeds the maximum allowed value. The number of "
                f"FrontendIpConfigurations is {len(frontends)} and the maximum allowed is 2.",
                target=where,
            )
        for kind, found in (("Public", public), ("Private", private)):
            if len(found) > 1:
                raise ArmError(
                    400,
                    "ApplicationGatewayCannotHaveMoreThanOneIpV4FrontendIPConfiguration",
                    f"Application Gateway {gateway_id} cannot have more than one FrontendIPConfigurations using "
                    f"IPv4 {kind} IP.",
                    target=where,
                )
        # v2 without a public frontend needs the network-isolation preview feature, which the emulator
        # does not model: "does not support Application Gateway without Public IP for the selected SKU
        # tier Standard_v2" (hashicorp/terraform-provider-azurerm#4578; code from a deployment's log)
        if not public:
            raise ArmError(
                400,
                "ApplicationGatewayFeatureCannotBeEnabledForSelectedSku",
                "Application Gateway does not support Application Gateway without Public IP for the selected SKU "
                f"tier {sku_name}. Supported SKU tiers are Standard,WAF.",
                target=where,
            )
        for frontend in private:
            i = frontends.index(frontend)
            fp = frontend["properties"]
            target = f"{where}[{i}].properties"
            subnet_id = fp["subnet"]["id"]
            if key_of(subnet_id) != key_of(gateway_subnet):
                # Azure/azure-cli#4134, #24122
                raise ArmError(
                    400,
                    "ApplicationGatewayFrontendIpSubnetCannotBeDifferentFromGatewaySubnet",
                    f"FrontendIpConfiguration {frontend['id']} subnet {subnet_id} and gateway subnet "
                    f"{gateway_subnet} can not be different.",
                    target=f"{target}.subnet.id",
                )
            # "For Application Gateway v2 sku deployments, a static IP address must be defined when adding a
            # private IP address to the gateway" (configuration-frontend-ip); Azure's answer otherwise:
            # MicrosoftDocs/azure-docs#64853, #68983
            if str(fp.get("privateIPAllocationMethod") or "Dynamic").lower() != "static":
                raise ArmError(
                    400,
                    "ApplicationGatewayFrontendIpPrivateIpAddressInvalidAllocationType",
                    f"FrontendIpConfiguration {frontend['id']} of Application Gateway with SKU tier {sku_name} can "
                    "only use PrivateIPAddress with IpAllocationMethod as Static.",
                    target=f"{target}.privateIPAllocationMethod",
                )
            fp["privateIPAllocationMethod"] = "Static"
            self._check_private_address(gateway_id, fp.get("privateIPAddress"), subnet_id, f"{target}.privateIPAddress")

    def _check_private_address(self, gateway_id: str, value: Any, subnet_id: str, target: str) -> None:
        """A static private address: inside the subnet's prefix, not one Azure reserves, not taken.
        Codes from ARM's common deployment errors (PrivateIPAddressNotInSubnet,
        PrivateIPAddressInReservedRange); 'Azure reserves ... the first four and last IP address in
        each subnet' (configuration-infrastructure, "Size of the subnet")."""
        try:
            address = ipaddress.IPv4Address(str(value))
        except ValueError:
            raise bad_request(
                f"'{value}' is not an IPv4 address: a static private frontend needs privateIPAddress.", target=target
            ) from None
        found = self.em.networks.subnet(subnet_id)
        assert found is not None  # the subnet was checked to exist
        sp = found[1]["properties"]
        prefixes = sp.get("addressPrefixes") or [sp["addressPrefix"]]
        networks = [ipaddress.ip_network(p, strict=False) for p in prefixes]
        network = next((n for n in networks if n.version == 4 and address in n), None)
        if network is None:
            raise ArmError(
                400,
                "PrivateIPAddressNotInSubnet",
                f"Private static IP address {address} does not belong to the range of subnet prefix "
                f"{', '.join(prefixes)}.",
                target=target,
            )
        offset = int(address) - int(network.network_address)
        if offset < 4 or address == network.broadcast_address:
            raise ArmError(
                400,
                "PrivateIPAddressInReservedRange",
                f"Private static IP address {address} falls in a range reserved by Azure in subnet prefix "
                f"{network}: the first four and the last address of a subnet are reserved.",
                target=target,
            )
        for other in self.em.store.of_type(TYPE_KEY):
            if other.key == key_of(gateway_id):
                continue
            for frontend in other.body["properties"].get("frontendIPConfigurations", []):
                fp = frontend.get("properties", {})
                same_subnet = key_of((fp.get("subnet") or {}).get("id", "/")) == key_of(subnet_id)
                if same_subnet and fp.get("privateIPAddress") == str(address):
                    raise ArmError(
                        400,
                        "PrivateIPAddressInUse",
                        f"Private static IP address {address} is already in use by {frontend['id']}.",
                        target=target,
                    )

    def check_infrastructure_access(self, subnet_id: str, nsg: StoredResource) -> None:
        """Refuse an NSG (or its association) that would block Azure's infrastructure on the subnet of
        a v2 gateway (every gateway of the emulator is v2)."""
        for gateway in self.em.store.of_type(TYPE_KEY):
            configs = gateway.body["properties"].get("gatewayIPConfigurations", [])
            if any(key_of(c["properties"]["subnet"]["id"]) == key_of(subnet_id) for c in configs):
                self._check_infrastructure(gateway.id, subnet_id, nsg)

    def _check_infrastructure(self, gateway_id: str, subnet_id: str, nsg: StoredResource) -> None:
        """The NSG of a v2 gateway's subnet must allow, inbound with destination Any, TCP from the
        GatewayManager service tag on ports 65200-65535 and traffic from AzureLoadBalancer
        (configuration-infrastructure, "Required security rules"). Azure refuses the gateway write,
        or the NSG write or association, with ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup
        (its message as users' deployments show it: mspnp/aks-baseline#284,
        Azure/terraform-azurerm-avm-ptn-aiml-landing-zone#16). The same code for an NSG that blocks
        AzureLoadBalancer is the emulator's reading of MicrosoftDocs/azure-docs#58458; its wording is
        the emulator's."""
        rules = netsec.inbound_rules(nsg.body["properties"])
        blocking = netsec.first_blocking_rule(rules, netsec.GATEWAY_MANAGER, (65200, 65535))
        if blocking is not None:
            raise ArmError(
                400,
                "ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup",
                f"Network security group {nsg.id} blocks incoming internet traffic on ports 65200 - 65535 to subnet "
                f"{subnet_id}, associated with Application Gateway {gateway_id}. This is not permitted for "
                f"Application Gateways that have V2 Sku. (Rule '{blocking.name}' decides: allow TCP from the "
                "GatewayManager service tag to destination Any on ports 65200-65535.)",
            )
        blocking = netsec.first_blocking_rule(rules, netsec.AZURE_LOAD_BALANCER, (0, 65535))
        if blocking is not None:
            raise ArmError(
                400,
                "ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup",
                f"Network security group {nsg.id} blocks incoming traffic from AzureLoadBalancer to subnet "
                f"{subnet_id}, associated with Application Gateway {gateway_id}. This is not permitted for "
                f"Application Gateways that have V2 Sku. (Rule '{blocking.name}' decides: traffic from the "
                "AzureLoadBalancer service tag must be allowed to destination Any.)",
            )

    def _check_homogeneous_pool(self, pool: dict[str, Any], target: str) -> None:
        """A pool holds NIC IP configurations or explicit addresses, never both.

        Microsoft's CLI team: "Mixing IP/FQDN and Virtual Machine targets is not allowed"
        (Azure/azure-cli#3491; shared/azure-rules.md rule 4). NICs join a pool from their own side
        (a scale set's model), so the pool is refused its addresses while any scale-set model the
        emulator keeps mentions it: the latest model (instances a manualUpgrade would move there)
        and every older model an instance still runs. The error code is the emulator's, modelled on
        the one Azure's load balancer gives for the same mix
        (CannotMixIPBasedAddressesAndIPConfigurationsOnLoadBalancerBackendAddressPool)."""
        users = referrers(self.em, pool["id"], type_keys=("microsoft.compute/virtualmachinescalesets",))
        if users:
            raise ArmError(
                400,
                "CannotMixIPBasedAddressesAndIPConfigurationsOnApplicationGatewayBackendAddressPool",
                f"Backend address pool '{pool['name']}' cannot have backendAddresses: the NIC IP configurations "
                f"of scale set(s) {', '.join(users)} reference it. A pool holds either NIC IP configurations "
                "or IP addresses/FQDNs, never both; put the addresses in a pool of their own.",
                target=target,
            )

    def _check_removed_pools(self, existing: StoredResource, keep: dict[str, dict[str, Any]]) -> None:
        for pool in existing.body["properties"].get("backendAddressPools", []):
            if pool["name"].lower() in keep:
                continue
            users = referrers(self.em, pool["id"], type_keys=("microsoft.compute/virtualmachinescalesets",))
            if users:
                raise ArmError(
                    400,
                    "ApplicationGatewayBackendAddressPoolInUse",
                    f"Backend address pool '{pool['name']}' is referenced by scale set(s) "
                    f"{', '.join(users)}; remove it from their network profile first.",
                    target="properties.backendAddressPools",
                )

    async def patch_tags(self, ctx: Ctx) -> Response:
        existing = self.kind.replace_tags(ctx, nm.TagsObject)
        return resource_response(200, self.render(existing), existing.etag)

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        users = referrers(self.em, existing.id, type_keys=("microsoft.compute/virtualmachinescalesets",))
        if users:
            raise ArmError(
                400,
                "InUseApplicationGatewayCannotBeDeleted",
                f"Application gateway {existing.body['name']} has backend pools referenced by {', '.join(users)}.",
            )
        existing.body["properties"]["provisioningState"] = "Deleting"
        self.em.store.put(existing)
        op = self.em.ops.start("gateway.delete", existing.key, namespace=NS, region=existing.body["location"])
        return self.em.ops.accepted(ctx, op)

    async def backend_health(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        op = self.em.ops.start("gateway.backendhealth", existing.key, namespace=NS, region=existing.body["location"])
        return self.em.ops.accepted(ctx, op)

    # -- operations --------------------------------------------------------------------------------

    async def _run_apply(self, op: OperationRecord) -> None:
        try:
            await self.push(op.resource_key)
        except ArmError:
            self._finish(op, "Failed")
            raise
        except Exception as exc:
            self._finish(op, "Failed")
            raise ArmError(500, "ApplicationGatewayApplyFailed", f"The gateway could not be applied: {exc}") from exc
        self._finish(op, "Succeeded")

    def _finish(self, op: OperationRecord, state: str) -> None:
        with self.em.store.write():
            resource = self.em.store.get(op.resource_key)
            if resource is not None and resource.internal.get("operation") == op.id:
                resource.body["properties"]["provisioningState"] = state
                self.em.store.put(resource)

    async def _run_delete(self, op: OperationRecord) -> None:
        resource = self.em.store.get(op.resource_key)
        if resource is not None:
            await self.purge(resource)
            self.em.store.delete(resource.key)

    async def _run_backend_health(self, op: OperationRecord) -> dict[str, Any]:
        resource = self.em.store.get(op.resource_key)
        if resource is None:
            raise ArmError(404, "ResourceNotFound", "The application gateway was deleted.")
        health = await self.em.dataplane.backend_health(resource.key)
        members = self.em.scale_sets.pool_members()
        props = resource.body["properties"]
        pools = []
        for pool in props.get("backendAddressPools", []):
            ip_configs = {m.ip: m.ip_configuration_id for m in members.get(key_of(pool["id"]), [])}
            settings_ids: list[str] = []
            for rule in props.get("requestRoutingRules", []):
                rp = rule["properties"]
                if key_of(rp["backendAddressPool"]["id"]) == key_of(pool["id"]):
                    settings_id = rp["backendHttpSettings"]["id"]
                    if key_of(settings_id) not in {key_of(s) for s in settings_ids}:
                        settings_ids.append(settings_id)
            servers = []
            for server in _pool_health(health, pool["name"]):
                entry: dict[str, Any] = {"address": server.address, "health": server.health}
                if server.log:
                    entry["healthProbeLog"] = server.log
                if server.address in ip_configs:
                    entry["ipConfiguration"] = {"id": ip_configs[server.address]}
                servers.append(entry)
            pools.append(
                {
                    "backendAddressPool": {"id": pool["id"]},
                    "backendHttpSettingsCollection": [
                        {"backendHttpSettings": {"id": s}, "servers": servers} for s in settings_ids
                    ],
                }
            )
        return {"backendAddressPools": pools}

    # -- the data plane ----------------------------------------------------------------------------

    def build_spec(self, resource: StoredResource) -> GatewaySpec:
        props = resource.body["properties"]
        members = self.em.scale_sets.pool_members()
        ports = {p["name"].lower(): p["properties"]["port"] for p in props.get("frontendPorts", [])}

        def name_of(ref: dict[str, Any]) -> str:
            return ref["id"].rsplit("/", 1)[-1]

        listeners = self._listener_specs(props, ports)
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
            vnet_addresses=self._vnet_addresses(props) if any(x.inbound_rules is not None for x in listeners) else [],
        )

    def _listener_specs(self, props: dict[str, Any], ports: dict[str, int]) -> list[ListenerSpec]:
        """Each listener on its frontend's loopback address, with the subnet NSG's inbound rules that
        apply to its flows (TCP to its frontend and port), by priority.

        Which destination a client's flow has decides which rules apply. Normally Azure evaluates it
        after translating the frontend address to the gateway's instances, so a rule applies when its
        destination covers the gateway's whole subnet prefix (or is Any, or VirtualNetwork); once a
        public and a private listener (with rules) share a port, "your application gateway changes the
        Destination of all inbound flows to the frontend IPs" (configuration-infrastructure, "Inbound
        rules"): then a rule applies when its destination covers the frontend's address."""
        frontends = {f["name"].lower(): f for f in props.get("frontendIPConfigurations", [])}
        routed = {_ref_name(r["properties"]["httpListener"]).lower() for r in props.get("requestRoutingRules", [])}
        public_ports: set[int] = set()
        private_ports: set[int] = set()
        for item in props.get("httpListeners", []):
            if item["name"].lower() not in routed:
                continue
            frontend = frontends[_ref_name(item["properties"]["frontendIPConfiguration"]).lower()]
            port = ports[_ref_name(item["properties"]["frontendPort"]).lower()]
            (public_ports if _is_public(frontend) else private_ports).add(port)
        to_frontend_ips = bool(public_ports & private_ports)

        subnet_id = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
        nsg = self.em.networks.subnet_nsg(subnet_id)
        rules = netsec.inbound_rules(nsg.body["properties"]) if nsg is not None else None
        found = self.em.networks.subnet(subnet_id)
        subnet_props = found[1]["properties"] if found else {}
        subnet_networks = [
            ipaddress.IPv4Network(p, strict=False)
            for p in subnet_props.get("addressPrefixes") or [subnet_props.get("addressPrefix", "0.0.0.0/32")]
        ]
        listeners = []
        for item in props.get("httpListeners", []):
            frontend = frontends[_ref_name(item["properties"]["frontendIPConfiguration"]).lower()]
            port = ports[_ref_name(item["properties"]["frontendPort"]).lower()]
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
                ListenerSpec(name=item["name"], port=port, host=_frontend_host(frontend), inbound_rules=inbound)
            )
        return listeners

    def _vnet_addresses(self, props: dict[str, Any]) -> list[str]:
        """The loopback addresses that stand for addresses of the gateway's virtual network, so carry
        the VirtualNetwork tag as an NSG source: the instances whose NICs (in the model each runs)
        are in that network, and the private frontends of its gateways."""
        subnet_id = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
        vnet_key = key_of(subnet_id.rstrip("/").rsplit("/", 2)[0])
        found = set(self.em.scale_sets.addresses_in_vnet(vnet_key))
        for gateway in self.em.store.of_type(TYPE_KEY):
            for frontend in gateway.body["properties"].get("frontendIPConfigurations", []):
                fp = frontend.get("properties", {})
                subnet = (fp.get("subnet") or {}).get("id")
                if subnet and fp.get("privateIPAddress") and key_of(subnet.rsplit("/", 2)[0]) == vnet_key:
                    found.add(loopback_alias(fp["privateIPAddress"]))
        return sorted(found)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def push(self, key: str) -> None:
        """Hand the gateway's current configuration to the data plane (returns once it serves it)."""
        async with self._lock(key):
            resource = self.em.store.get(key)
            if resource is None:
                return
            spec = self.build_spec(resource)
            await self.em.dataplane.apply_gateway(spec)
            self._applied[key] = spec

    async def refresh_all(self) -> None:
        """Re-apply every gateway whose resolved configuration changed (scale-set membership moved)."""
        for resource in self.em.store.of_type(TYPE_KEY):
            if resource.key not in self._applied:
                continue  # never applied (failed or still applying): its own operation handles it
            if resource.body["properties"].get("provisioningState") == "Deleting":
                continue
            if self.build_spec(resource) == self._applied.get(resource.key):
                continue
            try:
                await self.push(resource.key)
            except Exception:
                log.exception("re-applying gateway %s failed", resource.id)

    async def replay(self) -> None:
        for resource in self.em.store.of_type(TYPE_KEY):
            if resource.body["properties"].get("provisioningState") == "Deleting":
                continue
            try:
                await self.push(resource.key)
            except Exception as exc:
                log.error("could not re-apply gateway %s after restart: %s", resource.id, exc)

    async def purge(self, resource: StoredResource) -> None:
        """Stop serving a gateway that is being deleted."""
        if resource.type_key != TYPE_KEY:
            return
        async with self._lock(resource.key):
            await self.em.dataplane.remove_gateway(resource.key)
            self._applied.pop(resource.key, None)


def _ref_name(ref: dict[str, Any]) -> str:
    return str(ref["id"]).rsplit("/", 1)[-1]


def _is_public(frontend: dict[str, Any]) -> bool:
    return bool(frontend.get("properties", {}).get("publicIPAddress"))


def _frontend_host(frontend: dict[str, Any]) -> str:
    """The loopback address a frontend's listeners bind (addresses.py): 127.0.0.1 for the public
    frontend, the alias of its static address for a private one."""
    if _is_public(frontend):
        return PUBLIC_FRONTEND_HOST
    return loopback_alias(frontend["properties"]["privateIPAddress"])


def _destination_test(
    frontend: dict[str, Any], to_frontend_ips: bool, subnet: list[ipaddress.IPv4Network]
) -> Callable[[str], bool]:
    """Whether an NSG rule's destination prefix covers a listener's flows (see _listener_specs)."""
    if not to_frontend_ips:
        return functools.partial(_covers_subnet, subnet=subnet)
    if _is_public(frontend):
        return functools.partial(_is_address, address=ipaddress.IPv4Address(PUBLIC_FRONTEND_HOST), tag="internet")
    address = ipaddress.IPv4Address(frontend["properties"]["privateIPAddress"])
    return functools.partial(_is_address, address=address, tag="virtualnetwork")


def _covers_subnet(prefix: str, *, subnet: list[ipaddress.IPv4Network]) -> bool:
    return netsec.destination_covers_subnet(prefix, subnet)


def _is_address(prefix: str, *, address: ipaddress.IPv4Address, tag: str) -> bool:
    return netsec.destination_is(prefix, address, tag)


def _listener_endpoints(props: dict[str, Any]) -> set[tuple[str, int]]:
    """The (loopback address, port) pairs a stored gateway's listeners bind."""
    frontends = {f["name"].lower(): f for f in props.get("frontendIPConfigurations", [])}
    ports = {p["name"].lower(): p["properties"]["port"] for p in props.get("frontendPorts", [])}
    found = set()
    for item in props.get("httpListeners", []):
        frontend = frontends.get(_ref_name(item["properties"]["frontendIPConfiguration"]).lower())
        port = ports.get(_ref_name(item["properties"]["frontendPort"]).lower())
        if frontend is not None and port is not None:
            found.add((_frontend_host(frontend), port))
    return found


def _check_host_name(value: Any, target: str) -> None:
    """A host name goes into a Host header: it must be one token (no spaces or control characters)."""
    if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise bad_request(f"'{value}' is not a valid host name.", target=target)


def _pool_health(health: dict[str, list[Any]], pool_name: str) -> list[Any]:
    for name, servers in health.items():
        if name.lower() == pool_name.lower():
            return servers
    return []
