"""Every example in tests/fixtures/azure-rest-examples, replayed through the real SDK clients.

For each example: the request is sent as the service team wrote it (names filled in). If the
emulator refuses it, the refusal must be the one documented in tests/emulator/contract/README.md; the
request is then sent again with the documented adaptation. The answer, deserialized by the SDK,
must set the same fields as the example's response, except the documented differences
(`MISSING`: in the example, not in the emulator's answer; `EXTRA`: the other way round). A
documented difference that no longer occurs fails too, so the README stays true.
"""

from __future__ import annotations

import contextlib
import copy
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.mgmt.compute.models as cm
import azure.mgmt.monitor.models as mm
import azure.mgmt.network.models as nm
import pytest
from azure.core.exceptions import HttpResponseError
from contract_world import EXAMPLES, World, load_example

from switchyard_emulator.testing import free_port


def eventually(check: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout} s")


@dataclass
class Refusal:
    status: int
    code: str
    target: str | None


@dataclass
class Case:
    run: Callable[[World, dict[str, Any]], tuple[Any, Any]]
    refusal: Refusal | None = None
    missing: tuple[str, ...] = ()  # path prefixes; "*" = anything (generated minimum-set examples)
    extra: tuple[str, ...] = ()


CASES: dict[str, Case] = {}


def case(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(run: Callable[..., Any]) -> Callable[..., Any]:
        CASES[name] = Case(run=run, **kwargs)
        return run

    return register


def as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return dict(value.as_dict())


def paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path set in a JSON-like value ("a.b", lists as "a[]")."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            found |= paths(item, path)
    elif isinstance(value, list):
        for item in value:
            found |= paths(item, f"{prefix}[]")
    return found


def covered(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "*" or path == p or path.startswith(p + ".") or path.startswith(p + "[]") for p in prefixes)


def refused_with(call: Callable[[], Any]) -> Refusal | None:
    try:
        call()
    except HttpResponseError as exc:
        error = exc.error
        return Refusal(exc.status_code or 0, (error.code or "") if error else "", error.target if error else None)
    return None


def _param_body(example: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in example["parameters"].values() if isinstance(v, dict))


# -- galleries -------------------------------------------------------------------------------------


@case("compute/Galleries_CreateOrUpdate.json", extra=("type",))
def galleries_create(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    world.resource_group(p["resourceGroupName"])
    result = world.c.compute.galleries.begin_create_or_update(
        p["resourceGroupName"], p["galleryName"], p["gallery"]
    ).result()
    return result, cm.Gallery(world.substitute(example["responses"]["201"]["body"]))


def _put_example_image(world: World) -> Any:
    """The image definition of GalleryImages_CreateOrUpdate (the version examples live in it)."""
    p = world.substitute(load_example("compute/GalleryImages_CreateOrUpdate.json")["parameters"])
    world.resource_group(p["resourceGroupName"])
    world.c.compute.galleries.begin_create_or_update(
        p["resourceGroupName"], p["galleryName"], {"location": "westus"}
    ).result()
    return world.c.compute.gallery_images.begin_create_or_update(
        p["resourceGroupName"], p["galleryName"], p["galleryImageName"], p["galleryImage"]
    ).result()


@case("compute/GalleryImages_CreateOrUpdate.json", extra=("type",))
def gallery_images_create(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    result = _put_example_image(world)
    return result, cm.GalleryImage(world.substitute(example["responses"]["201"]["body"]))


def _local_version_body(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """The documented adaptation: the source is the local artifact, not a VM."""
    adapted = copy.deepcopy(body)
    adapted["properties"]["storageProfile"] = {"osDiskImage": {"source": {"uri": world.artifact.as_uri()}}}
    return adapted


_VERSION_DIFF = {
    "missing": (
        "properties.storageProfile.source",
        "properties.storageProfile.dataDiskImages",
        "properties.safetyProfile.policyViolations",
    ),
    "extra": ("type", "properties.storageProfile.osDiskImage.source"),
}


@case(
    "compute/GalleryImageVersions_CreateOrUpdate.json",
    refusal=Refusal(400, "NotSupportedByEmulator", "properties.storageProfile.source"),
    **_VERSION_DIFF,
)
def gallery_image_versions_create(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"])
    rg, gallery, image, version = (
        p["resourceGroupName"],
        p["galleryName"],
        p["galleryImageName"],
        p["galleryImageVersionName"],
    )
    _put_example_image(world)
    versions = world.c.compute.gallery_image_versions
    world.refusal = refused_with(
        lambda: versions.begin_create_or_update(rg, gallery, image, version, p["galleryImageVersion"]).result()
    )
    result = versions.begin_create_or_update(
        rg, gallery, image, version, _local_version_body(world, p["galleryImageVersion"])
    ).result()
    return result, cm.GalleryImageVersion(world.substitute(example["responses"]["201"]["body"]))


def _ensure_example_version(world: World) -> tuple[str, str, str, str]:
    create = load_example("compute/GalleryImageVersions_CreateOrUpdate.json")
    p = world.substitute(create["parameters"])
    rg, gallery, image, version = (
        p["resourceGroupName"],
        p["galleryName"],
        p["galleryImageName"],
        p["galleryImageVersionName"],
    )
    if world.once("example-version", rg, gallery, image, version):
        _put_example_image(world)
        world.c.compute.gallery_image_versions.begin_create_or_update(
            rg, gallery, image, version, _local_version_body(world, p["galleryImageVersion"])
        ).result()
    return rg, gallery, image, version


@case("compute/GalleryImageVersions_Get.json", **_VERSION_DIFF)
def gallery_image_versions_get(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, gallery, image, version = _ensure_example_version(world)
    result = world.c.compute.gallery_image_versions.get(rg, gallery, image, version, expand="ReplicationStatus")
    return result, cm.GalleryImageVersion(world.substitute(example["responses"]["200"]["body"]))


@case("compute/GalleryImageVersions_ListByGalleryImage.json", **_VERSION_DIFF)
def gallery_image_versions_list(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, gallery, image, version = _ensure_example_version(world)
    listed = {v.name: v for v in world.c.compute.gallery_image_versions.list_by_gallery_image(rg, gallery, image)}
    expected = world.substitute(example["responses"]["200"]["body"]["value"][0])
    return listed[version], cm.GalleryImageVersion(expected)


# -- scale sets ------------------------------------------------------------------------------------

_VMSS_NAMES = {
    "{existing-virtual-network-name}": "vnet",
    "{existing-subnet-name}": "subnet",
    "{existing-application-gateway-name}": "agw",
    "{existing-backend-address-pool-name}": "pool",
    "{vmss-name}": "examplevmss",
    "{your-username}": "azureuser",
    "{your-password}": "Not-a-real-password-1",
}


def _gallery_image_reference(world: World, rg: str) -> dict[str, str]:
    """The documented adaptation of a marketplace image: the sample image's version."""
    return {"id": world.image_version(rg, "contractGallery", "sample")}


_VMSS_LIVE_FIELDS = ("etag", "properties.orchestrationMode", "properties.timeCreated")


@case("compute/VirtualMachineScaleSets_CreateOrUpdate.gallery_image.json", extra=_VMSS_LIVE_FIELDS)
def vmss_create_gallery_image(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"], _VMSS_NAMES)
    rg = p["resourceGroupName"]
    world.network(rg, "vnet", ["subnet"])
    image_id = p["parameters"]["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"]
    gallery, image = image_id.split("/galleries/")[1].split("/images/")
    world.image_version(rg, gallery, image)  # the example references an image definition: "latest"
    result = world.c.compute.virtual_machine_scale_sets.begin_create_or_update(
        rg, p["vmScaleSetName"], p["parameters"]
    ).result()
    expected = world.substitute(example["responses"]["200"]["body"], _VMSS_NAMES)
    return result, cm.VirtualMachineScaleSet(expected)


@case(
    "compute/VirtualMachineScaleSets_CreateOrUpdate.appgw.json",
    refusal=Refusal(400, "NotSupportedByEmulator", "properties.virtualMachineProfile.storageProfile.imageReference"),
    missing=(
        "properties.virtualMachineProfile.storageProfile.imageReference.publisher",
        "properties.virtualMachineProfile.storageProfile.imageReference.offer",
        "properties.virtualMachineProfile.storageProfile.imageReference.sku",
        "properties.virtualMachineProfile.storageProfile.imageReference.version",
        "properties.virtualMachineProfile.osProfile.windowsConfiguration",
    ),
    extra=(
        *_VMSS_LIVE_FIELDS,
        "properties.virtualMachineProfile.storageProfile.imageReference.id",
        "properties.virtualMachineProfile.osProfile.linuxConfiguration",
    ),
)
def vmss_create_appgw(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    p = world.substitute(example["parameters"], _VMSS_NAMES)
    rg = p["resourceGroupName"]
    world.network(rg, "vnet", ["subnet"])
    world.gateway(rg, "agw", "pool")
    scale_sets = world.c.compute.virtual_machine_scale_sets
    world.refusal = refused_with(lambda: scale_sets.begin_create_or_update(rg, "appgwvmss", p["parameters"]).result())
    body = copy.deepcopy(p["parameters"])
    body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] = _gallery_image_reference(
        world, rg
    )
    result = scale_sets.begin_create_or_update(rg, "appgwvmss", body).result()
    expected = world.substitute(example["responses"]["200"]["body"], _VMSS_NAMES)
    return result, cm.VirtualMachineScaleSet(expected)


def _ensure_get_example_vmss(world: World) -> tuple[str, str]:
    """The scale set of VirtualMachineScaleSets_Get, created from that example's own answer."""
    example = load_example("compute/VirtualMachineScaleSets_Get.json")
    p = world.substitute(example["parameters"])
    rg, name = p["resourceGroupName"], p["vmScaleSetName"]
    if world.once("get-example-vmss"):
        world.network(rg, "myVNet", ["mySubnet"])
        body = world.substitute(example["responses"]["200"]["body"])
        body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] = _gallery_image_reference(
            world, rg
        )
        world.c.compute.virtual_machine_scale_sets.begin_create_or_update(rg, name, body).result()
    return rg, name


@case(
    "compute/VirtualMachineScaleSets_Get.json",
    missing=(
        "properties.virtualMachineProfile.storageProfile.imageReference.publisher",
        "properties.virtualMachineProfile.storageProfile.imageReference.offer",
        "properties.virtualMachineProfile.storageProfile.imageReference.sku",
        "properties.virtualMachineProfile.storageProfile.imageReference.version",
    ),
    extra=(
        "etag",
        "properties.virtualMachineProfile.storageProfile.imageReference.id",
        "properties.uniqueId",
        "properties.timeCreated",
        "properties.orchestrationMode",
        "properties.virtualMachineProfile.osProfile.secrets",
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[].properties.dnsSettings",
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[].properties."
        "enableAcceleratedNetworking",
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[].properties."
        "ipConfigurations[].properties.privateIPAddressVersion",
    ),
)
def vmss_get(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_get_example_vmss(world)
    result = world.c.compute.virtual_machine_scale_sets.get(rg, name, expand="userData")
    return result, cm.VirtualMachineScaleSet(world.substitute(example["responses"]["200"]["body"]))


def _ensure_min_vmss(world: World, example: dict[str, Any]) -> tuple[str, str]:
    """The generated minimum-set examples name a scale set that must exist: a small one."""
    p = world.substitute(example["parameters"])
    rg = p["resourceGroupName"]
    name = p.get("vmScaleSetName") or p["virtualMachineScaleSetName"]
    if world.once("min-vmss", rg.lower(), name.lower()):
        world.network(rg, "vnet", ["subnet"])
        topo = world.topology(rg)
        body = topo.scale_set_body(_gallery_image_reference(world, rg)["id"], 1)
        body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0][
            "properties"
        ]["ipConfigurations"][0]["properties"]["subnet"]["id"] = topo.subnet_id("subnet")
        world.c.compute.virtual_machine_scale_sets.begin_create_or_update(rg, name, body).result()
    return rg, name


@case("compute/VirtualMachineScaleSets_Update.min.json", extra=("*",))
def vmss_update_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_min_vmss(world, example)
    p = world.substitute(example["parameters"])
    result = world.c.compute.virtual_machine_scale_sets.begin_update(rg, name, p["parameters"]).result()
    return result, cm.VirtualMachineScaleSet(example["responses"]["200"]["body"])


@case("compute/VirtualMachineScaleSets_GetInstanceView.min.json", extra=("*",))
def vmss_instance_view_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_min_vmss(world, example)
    result = world.c.compute.virtual_machine_scale_sets.get_instance_view(rg, name)
    return result, cm.VirtualMachineScaleSetInstanceView(example["responses"]["200"]["body"])


@case("compute/VirtualMachineScaleSets_Reimage.min.json")
def vmss_reimage_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_min_vmss(world, example)
    result = world.c.compute.virtual_machine_scale_sets.begin_reimage(rg, name).result()
    assert result is None  # 200/202 without a body, as in the example
    return {}, {}


@case("compute/VirtualMachineScaleSetVMs_List.min.json", extra=("*",))
def vms_list_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_min_vmss(world, example)
    first = next(iter(world.c.compute.virtual_machine_scale_set_vms.list(rg, name)))
    return first, cm.VirtualMachineScaleSetVM(world.substitute(example["responses"]["200"]["body"]["value"][0]))


_VM_GET_MISSING = (
    "resources",
    "properties.hardwareProfile.vmSizeProperties",
    "properties.diagnosticsProfile",
    "properties.storageProfile.imageReference.publisher",
    "properties.storageProfile.imageReference.offer",
    "properties.storageProfile.imageReference.sku",
    "properties.storageProfile.imageReference.version",
    "properties.storageProfile.osDisk.managedDisk.id",
    "properties.storageProfile.dataDisks",
    "properties.osProfile.windowsConfiguration",
)
_VM_GET_EXTRA = (
    "instanceId",
    "sku",
    "properties.timeCreated",
    "properties.hardwareProfile.vmSize",
    "properties.storageProfile.imageReference.id",
    "properties.osProfile.linuxConfiguration",
    "properties.networkProfileConfiguration.networkInterfaceConfigurations[].properties.ipConfigurations[]."
    "properties.primary",
    "properties.networkProfileConfiguration.networkInterfaceConfigurations[].properties.networkSecurityGroup",
)


@case("compute/VirtualMachineScaleSetVMs_Get.json", missing=_VM_GET_MISSING, extra=_VM_GET_EXTRA)
def vms_get(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_get_example_vmss(world)
    result = world.c.compute.virtual_machine_scale_set_vms.get(rg, name, "0", expand="UserData")
    return result, cm.VirtualMachineScaleSetVM(world.substitute(example["responses"]["200"]["body"]))


@case(
    "compute/VirtualMachineScaleSetVMs_GetInstanceView.json",
    missing=("assignedHost",),
    extra=("computerName", "osName"),
)
def vms_instance_view(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = _ensure_get_example_vmss(world)
    result = world.c.compute.virtual_machine_scale_set_vms.get_instance_view(rg, name, "0")
    return result, cm.VirtualMachineScaleSetVMInstanceView(example["responses"]["200"]["body"])


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
    _ensure_min_vmss(world, {"parameters": {"resourceGroupName": rg, "vmScaleSetName": name}})


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


# -- the test --------------------------------------------------------------------------------------


def _all_examples() -> list[str]:
    return sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*.json"))


def test_every_example_has_a_case() -> None:
    assert sorted(CASES) == _all_examples()


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, world: World) -> None:
    spec = CASES[name]
    world.refusal = None
    actual, expected = spec.run(world, load_example(name))
    assert world.refusal == spec.refusal, "the refusal of the original request is the documented one"
    actual_paths, expected_paths = paths(as_dict(actual)), paths(as_dict(expected))
    missing = {p for p in expected_paths - actual_paths if not covered(p, spec.missing)}
    extra = {p for p in actual_paths - expected_paths if not covered(p, spec.extra)}
    assert missing == set(), f"fields of the example's answer the emulator did not set: {sorted(missing)}"
    assert extra == set(), f"fields the emulator set that the example's answer does not: {sorted(extra)}"
    stale = [p for p in spec.missing if p != "*" and not any(covered(q, (p,)) for q in expected_paths - actual_paths)]
    stale += [p for p in spec.extra if p != "*" and not any(covered(q, (p,)) for q in actual_paths - expected_paths)]
    assert stale == [], f"documented differences that no longer occur (update README.md and the case): {stale}"
