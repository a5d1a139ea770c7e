"""Contract cases for Microsoft.Compute: galleries, image versions, scale sets and their VMs."""

from __future__ import annotations

import copy
from typing import Any

import azure.mgmt.compute.models as cm
from contract_cases import (
    Refusal,
    case,
    refused_with,
)
from contract_world import World, load_example

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
    """The documented adaptation: the source is a page blob of the emulator's storage account (the
    sample image uploaded to Azurite), not a VM."""
    adapted = copy.deepcopy(body)
    adapted["properties"]["storageProfile"] = world.blob_storage_profile()
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
    refusal=Refusal(400, "NotSupportedByEmulator", "properties.storageProfile.source.virtualMachineId"),
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


def ensure_min_vmss(world: World, example: dict[str, Any]) -> tuple[str, str]:
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
    rg, name = ensure_min_vmss(world, example)
    p = world.substitute(example["parameters"])
    result = world.c.compute.virtual_machine_scale_sets.begin_update(rg, name, p["parameters"]).result()
    return result, cm.VirtualMachineScaleSet(example["responses"]["200"]["body"])


@case("compute/VirtualMachineScaleSets_GetInstanceView.min.json", extra=("*",))
def vmss_instance_view_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = ensure_min_vmss(world, example)
    result = world.c.compute.virtual_machine_scale_sets.get_instance_view(rg, name)
    return result, cm.VirtualMachineScaleSetInstanceView(example["responses"]["200"]["body"])


@case("compute/VirtualMachineScaleSets_Reimage.min.json")
def vmss_reimage_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = ensure_min_vmss(world, example)
    result = world.c.compute.virtual_machine_scale_sets.begin_reimage(rg, name).result()
    assert result is None  # 200/202 without a body, as in the example
    return {}, {}


@case("compute/VirtualMachineScaleSetVMs_List.min.json", extra=("*",))
def vms_list_min(world: World, example: dict[str, Any]) -> tuple[Any, Any]:
    rg, name = ensure_min_vmss(world, example)
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
