"""What an Application Gateway's body may say: the features the emulator refuses, the SKU, and
every collection (unique names, canonical ids, references that resolve, Azure's defaults and
limits for probes, backend settings, listeners and rules); it then applies the rules that reach
beyond the body (gateway_rules.py). The walk returns the properties completed as Azure stores them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from switchyard_emulator.dataplane.api import GatewaySpec
from switchyard_emulator.errors import ArmError, bad_request, unsupported
from switchyard_emulator.resources.gateway_rules import (
    TYPE,
    check_frontends,
    check_homogeneous_pool,
    check_infrastructure,
    check_ports,
    check_removed_pools,
    frontend_host,
)
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

# collections the emulator serves, with their sub-resource type names
COLLECTIONS = (
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


def check_properties(
    em: Emulator,
    gateway_id: str,
    props: dict[str, Any],
    existing: StoredResource | None,
    applied: GatewaySpec | None,
) -> dict[str, Any]:
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
    for collection in COLLECTIONS:
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
        em.networks.subnet_exists(
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
            em.networks.public_ips.resolve(fp["publicIPAddress"].get("id"), f"{target}.publicIPAddress.id")
        if fp.get("subnet"):
            em.networks.subnet_exists(fp["subnet"].get("id"), f"{target}.subnet.id")
        if not fp.get("publicIPAddress") and not fp.get("subnet"):
            raise bad_request("A frontend IP configuration needs a publicIPAddress or a subnet.", target=target)
        if fp.get("publicIPAddress"):
            fp.setdefault("privateIPAllocationMethod", "Dynamic")  # what Azure answers for a public frontend
    gateway_subnet = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
    check_frontends(em, gateway_id, sku_name, props["frontendIPConfigurations"], gateway_subnet)
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
                raise bad_request(f"{field_name} must be between {low} and {high}.", target=f"{target}.{field_name}")
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
            check_homogeneous_pool(em, item, f"properties.backendAddressPools[{i}].properties.backendAddresses")
    for i, item in enumerate(props["backendHttpSettingsCollection"]):
        sp = item["properties"]
        target = f"properties.backendHttpSettingsCollection[{i}].properties"
        if str(sp.get("protocol", "Http")).lower() != "http":
            raise unsupported("Only Http backend settings are supported by the emulator.", target=f"{target}.protocol")
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
        listener_endpoints[item["name"]] = (frontend_host(fip), port["properties"]["port"])
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
    check_ports(em, gateway_id, listener_endpoints, applied)
    if existing is not None:
        check_removed_pools(em, existing, index["backendAddressPools"])
    nsg = em.networks.subnet_nsg(gateway_subnet)
    if nsg is not None:
        check_infrastructure(gateway_id, gateway_subnet, nsg)
    for collection in _EMPTY_DEFAULTS:
        props.setdefault(collection, [])
    return props


def _check_host_name(value: Any, target: str) -> None:
    """A host name goes into a Host header: it must be one token (no spaces or control characters)."""
    if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise bad_request(f"'{value}' is not a valid host name.", target=target)
