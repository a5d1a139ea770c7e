"""Application Gateways (Standard_v2): validated like Azure, made real by the data plane.

Every internal reference (`<gateway id>/backendAddressPools/blue`, ...) must resolve, else 400
naming the field. Each pool's read-only `backendIPConfigurations` is recomputed from the scale sets
whose NIC ipConfigurations reference it, per the model each instance runs (Manual upgrade policy:
an instance not yet upgraded stays where its model put it). The ETag covers what a client writes,
so instances joining or leaving a pool do not invalidate a client's If-Match.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

import azure.mgmt.network.models as nm
from starlette.responses import Response

from switchyard_emulator import apiversions
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
            fp.setdefault("privateIPAllocationMethod", "Dynamic")
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
            if sp.get("probe"):
                ref(sp["probe"], "probes", f"{target}.probe.id")
            draining = sp.get("connectionDraining")
            if draining and draining.get("enabled"):
                timeout = draining.get("drainTimeoutInSec")
                if not isinstance(timeout, int) or not 1 <= timeout <= 3600:
                    raise bad_request(
                        "connectionDraining.drainTimeoutInSec must be 1-3600.",
                        target=f"{target}.connectionDraining.drainTimeoutInSec",
                    )
        listener_ports: dict[str, int] = {}
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
            listener_ports[item["name"]] = port["properties"]["port"]
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
        self._check_ports(gateway_id, listener_ports)
        if existing is not None:
            self._check_removed_pools(existing, index["backendAddressPools"])
        for collection in _EMPTY_DEFAULTS:
            props.setdefault(collection, [])
        return props

    def _check_ports(self, gateway_id: str, listener_ports: dict[str, int]) -> None:
        """Frontend ports of new listeners must be free on 127.0.0.1 (the data plane binds them)."""
        mine = self._applied.get(key_of(gateway_id))
        already = {listener.port for listener in mine.listeners} if mine else set()
        for other in self.em.store.of_type(TYPE_KEY):
            if other.key == key_of(gateway_id):
                continue
            taken = {p["properties"]["port"]: p["name"] for p in other.body["properties"].get("frontendPorts", [])}
            for listener, port in listener_ports.items():
                if port in taken:
                    raise ArmError(
                        409,
                        "FrontendPortInUse",
                        f"Frontend port {port} of listener '{listener}' is already used by gateway {other.id}.",
                        target="properties.frontendPorts",
                    )
        for listener, port in listener_ports.items():
            if port in already:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise ArmError(
                    409,
                    "FrontendPortInUse",
                    f"Frontend port {port} of listener '{listener}' cannot be bound on 127.0.0.1 "
                    f"({exc.strerror}): another process uses it; choose a free port.",
                    target="properties.frontendPorts",
                ) from None
            finally:
                probe.close()

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
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        check_preconditions(ctx, existing)
        tags = validate(ctx.json_body(), typespec_schema(nm.TagsObject))
        existing.body["tags"] = tags.get("tags", {})
        existing.etag = new_etag()
        self.em.store.put(existing)
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

        listeners = [
            ListenerSpec(name=item["name"], port=ports[name_of(item["properties"]["frontendPort"]).lower()])
            for item in props.get("httpListeners", [])
        ]
        pools = []
        for pool in props.get("backendAddressPools", []):
            addresses: list[str] = []
            for address in pool["properties"].get("backendAddresses", []):
                if address.get("ipAddress"):
                    addresses.append(address["ipAddress"])
                elif address.get("fqdn"):
                    try:
                        addresses.append(socket.gethostbyname(address["fqdn"]))
                    except OSError:
                        log.warning("backend fqdn %s does not resolve; left out", address["fqdn"])
            addresses += [m.ip for m in members.get(key_of(pool["id"]), [])]
            pools.append(PoolSpec(name=pool["name"], addresses=list(dict.fromkeys(addresses))))
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
        )

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


def _pool_health(health: dict[str, list[Any]], pool_name: str) -> list[Any]:
    for name, servers in health.items():
        if name.lower() == pool_name.lower():
            return servers
    return []
