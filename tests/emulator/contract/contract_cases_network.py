"""Contract cases for Microsoft.Network (application gateways) and Azure Monitor (metrics,
autoscale settings)."""

from __future__ import annotations

import contextlib
import copy
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.mgmt.monitor.models as mm
import azure.mgmt.network.models as nm
from contract_cases import (
    Refusal,
    case,
    eventually,
    refused_with,
)
from contract_cases_compute import (
    ensure_min_vmss,
)
from contract_world import World, load_example

from switchyard_emulator.testing import free_port

# -- application gateways --------------------------------------------------------------------------

_GATEWAY_REFUSED = (
    "sslCertificates",
    "sslProfiles",
    "trustedClientCertificates",
    "trustedRootCertificates",
    "rewriteRuleSets",
    "entraJWTValidationConfigs",
    "loadDistributionPolicies",
    "privateLinkConfigurations",
    "urlPathMaps",
    "redirectConfigurations",
    "listeners",
    "routingRules",
    "authenticationCertificates",
)


def _local_gateway_body(body: dict[str, Any]) -> dict[str, Any]:
    """The documented adaptation of a gateway example: HTTP only (the emulator has no TLS frontends
    and none of the refused features), free local frontend ports, backend addresses as objects."""
    adapted = copy.deepcopy(body)
    props = adapted["properties"]
    for refused in _GATEWAY_REFUSED:
        props.pop(refused, None)
    https = {listener["name"] for listener in props["httpListeners"] if listener["properties"]["protocol"] != "Http"}
    props["httpListeners"] = [listener for listener in props["httpListeners"] if listener["name"] not in https]
    for port in props["frontendPorts"]:
        port["properties"]["port"] = free_port()
    kept_listener = props["httpListeners"][0]["name"]
    for rule in props["requestRoutingRules"]:
        rp = rule["properties"]
        for refused in (
            "rewriteRuleSet",
            "entraJWTValidationConfig",
            "loadDistributionPolicy",
            "urlPathMap",
            "redirectConfiguration",
        ):
            rp.pop(refused, None)
        if rp["httpListener"]["id"].rsplit("/", 1)[1] in https:
            rp["httpListener"]["id"] = rp["httpListener"]["id"].rsplit("/", 1)[0] + "/" + kept_listener
        rp.setdefault("priority", 10)
    # backend addresses: objects (the Get example's bare strings are an INDEX.md caveat), and local
    # loopback addresses nothing listens on instead of 10.0.x.x (probes must not leave the machine)
    unused = iter(f"127.250.0.{i}" for i in range(1, 250))
    for pool in props["backendAddressPools"]:
        addresses = pool.get("properties", {}).get("backendAddresses", [])
        pool.setdefault("properties", {})["backendAddresses"] = [{"ipAddress": next(unused)} for _ in addresses]
    return adapted


def _gateway_prerequisites(world: World, body: dict[str, Any], rg: str) -> None:
    props = body["properties"]
    subnet = props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"]
    vnet, subnet_name = subnet.split("/virtualNetworks/")[1].split("/subnets/")
    public_ip = props["frontendIPConfigurations"][0]["properties"]["publicIPAddress"]["id"].rsplit("/", 1)[1]
    world.network(rg, vnet, [subnet_name], public_ip=public_ip)


_SUB_RESOURCES = (
    "backendAddressPools",
    "backendHttpSettingsCollection",
    "frontendIPConfigurations",
    "frontendPorts",
    "gatewayIPConfigurations",
    "httpListeners",
    "requestRoutingRules",
)
# what the emulator answers and these hand-written examples leave out (live Azure answers them)
_GATEWAY_EXTRA = (
    "etag",
    "identity",
    "properties.resourceGuid",
    "properties.backendHttpSettingsCollection[].properties.pickHostNameFromBackendAddress",
    *(f"properties.{name}[].etag" for name in _SUB_RESOURCES),
    *(f"properties.{name}[].type" for name in _SUB_RESOURCES),
)
# what the examples use and the emulator refuses (so the adapted request leaves it out)
_GATEWAY_TLS_AND_FEATURES = (
    "properties.entraJWTValidationConfigs",
    "properties.rewriteRuleSets",
    "properties.sslCertificates",
    "properties.sslProfiles",
    "properties.trustedClientCertificates",
    "properties.httpListeners[].properties.requireServerNameIndication",
    "properties.httpListeners[].properties.sslCertificate",
    "properties.httpListeners[].properties.sslProfile",
    "properties.requestRoutingRules[].properties.entraJWTValidationConfig",
    "properties.requestRoutingRules[].properties.rewriteRuleSet",
)


@case(
    "network/ApplicationGateways_CreateOrUpdate.json",
    refusal=Refusal(400, "NotSupportedByEmulator", "properties.trustedRootCertificates"),
    missing=(
        *_GATEWAY_TLS_AND_FEATURES,
        "properties.listeners",  # empty lists this example shows and the Get example does not
        "properties.redirectConfigurations",
        "properties.routingRules",
    ),
    extra=(*_GATEWAY_EXTRA, "properties.requestRoutingRules[].properties.priority"),
)
def gateways_create(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    rg, name = p["resourceGroupName"], p["applicationGatewayName"]
    _gateway_prerequisites(world, p["parameters"], rg)
    gateways = world.c.network.application_gateways
    world.refusal = refused_with(lambda: gateways.begin_create_or_update(rg, name, p["parameters"]).result())
    result = gateways.begin_create_or_update(rg, name, _local_gateway_body(p["parameters"])).result()
    return result, nm.ApplicationGateway(world.substitute(example["responses"]["200"]["body"]))


def _ensure_gateway(world: World, rg: str, name: str) -> None:
    if world.once("example-gateway", rg.lower(), name.lower()):
        create = load_example("network/ApplicationGateways_CreateOrUpdate.json")
        body = world.substitute(create["parameters"]["parameters"])
        # the example's ids name rg1/appgw: point them at this gateway
        body = world.substitute(
            body,
            {
                "/resourceGroups/rg1/": f"/resourceGroups/{rg}/",
                "/applicationGateways/appgw/": f"/applicationGateways/{name}/",
            },
        )
        _gateway_prerequisites(world, body, rg)
        world.c.network.application_gateways.begin_create_or_update(rg, name, _local_gateway_body(body)).result()


@case(
    "network/ApplicationGateways_Get.json",
    missing=(
        *_GATEWAY_TLS_AND_FEATURES,
        "properties.loadDistributionPolicies",
        "properties.privateLinkConfigurations",
        "properties.urlPathMaps",
        "properties.requestRoutingRules[].properties.loadDistributionPolicy",
        "properties.requestRoutingRules[].properties.urlPathMap",
    ),
    # the example writes backendAddresses as bare strings (INDEX.md caveat); Azure answers objects
    extra=(*_GATEWAY_EXTRA, "properties.backendAddressPools[].properties.backendAddresses[].ipAddress"),
)
def gateways_get(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    _ensure_gateway(world, p["resourceGroupName"], p["applicationGatewayName"])
    result = world.c.network.application_gateways.get(p["resourceGroupName"], p["applicationGatewayName"])
    return result, nm.ApplicationGateway(world.substitute(example["responses"]["200"]["body"]))


@case(
    "network/ApplicationGateways_BackendHealth.json",
    extra=("backendAddressPools[].backendHttpSettingsCollection[].servers[].healthProbeLog",),
)
def gateways_backend_health(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    rg, name = p["resourceGroupName"], p["applicationGatewayName"]
    _ensure_gateway(world, rg, name)

    def probed() -> Any:  # once every server has been probed, its health says why
        health = world.c.network.application_gateways.begin_backend_health(rg, name).result()
        servers = [
            s for p in health.backend_address_pools for c in p.backend_http_settings_collection for s in c.servers
        ]
        return health if servers and all(s.health_probe_log for s in servers) else None

    result = eventually(probed, timeout=30)
    return result, nm.ApplicationGatewayBackendHealth(example["responses"]["200"]["body"])


# -- Azure Monitor ---------------------------------------------------------------------------------


@case(
    "monitor/Metrics_List.json",
    refusal=Refusal(400, "ResourceTypeNotSupported", "resourceUri"),
)
def metrics_list(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    kwargs = {
        "timespan": p["timespan"],
        "interval": p["interval"],
        "metricnames": p["metricnames"],
        "aggregation": p["aggregation"],
        "top": p["top"],
        "orderby": p["orderby"],
        "filter": p["$filter"],
        "metricnamespace": p["metricnamespace"],
    }
    world.refusal = refused_with(lambda: world.c.monitor.metrics.list("/" + p["resourceUri"], **kwargs))
    # the adaptation: a gateway's metrics, split by a dimension, over a window with real traffic
    rg, name = "contractMetrics", "metricsgw"
    world.gateway(rg, name, "pool")
    gateway = world.c.network.application_gateways.get(rg, name)
    port = gateway.frontend_ports[0].port
    for _ in range(3):
        # no backend: the gateway answers 502, which is traffic all the same
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    now = datetime.now(UTC)
    start, end = now - timedelta(minutes=30), now + timedelta(minutes=5)
    kwargs.update(
        timespan=f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
        interval="PT5M",
        metricnames="ResponseStatus,BackendResponseStatus",
        filter="HttpStatusGroup eq '*'",
        metricnamespace="Microsoft.Network/applicationGateways",
    )
    result = world.c.monitor.metrics.list(gateway.id, **kwargs)
    return result, mm.Response.deserialize(example["responses"]["200"]["body"])


def _autoscale_target(world: World, body: dict[str, Any]) -> None:
    target = body["properties"]["targetResourceUri"]
    rg = target.split("/resourceGroups/")[1].split("/")[0]
    name = target.rsplit("/", 1)[1]
    ensure_min_vmss(world, {"parameters": {"resourceGroupName": rg, "vmScaleSetName": name}})


@case("monitor/AutoscaleSettings_CreateOrUpdate.json")
def autoscale_create(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    body = copy.deepcopy(p["parameters"])
    _autoscale_target(world, body)
    body["properties"]["enabled"] = False  # so the emulator's autoscaler leaves the scale set alone
    result = world.c.monitor.autoscale_settings.create_or_update(
        p["resourceGroupName"], p["autoscaleSettingName"], body
    )
    return result, mm.AutoscaleSettingResource.deserialize(world.substitute(example["responses"]["200"]["body"]))


@case("monitor/AutoscaleSettings_Get.json")
def autoscale_get(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    body = world.substitute(example["responses"]["200"]["body"])
    _autoscale_target(world, body)
    body["properties"]["enabled"] = False
    world.c.monitor.autoscale_settings.create_or_update(p["resourceGroupName"], p["autoscaleSettingName"], body)
    result = world.c.monitor.autoscale_settings.get(p["resourceGroupName"], p["autoscaleSettingName"])
    return result, mm.AutoscaleSettingResource.deserialize(body)
