"""A scale set's model: its resource types, the model's Azure defaults and the checks a model must
pass before it is written (upgrade mode, capacity, the image, subnets and gateway pools it names).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from switchyard_emulator.errors import ArmError, bad_request, unsupported
from switchyard_emulator.ids import parse_resource_id
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Compute"
TYPE = "Microsoft.Compute/virtualMachineScaleSets"
TYPE_KEY = TYPE.lower()
VM_TYPE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
MODES = {"manual": "Manual", "automatic": "Automatic", "rolling": "Rolling"}
MAX_CAPACITY = 100
IMAGE_TARGET = "properties.virtualMachineProfile.storageProfile.imageReference"
VMSS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def writable(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("location", "tags", "sku", "properties", "identity", "zones", "plan")
    return json.loads(json.dumps({k: v for k, v in body.items() if k in keep}))


# "The base-64 encoded string is decoded to a binary array that is saved as a file on the Virtual
# Machine. The maximum length of the binary array is 65535 bytes." (VirtualMachineScaleSetOSProfile
# .customData, azure-rest-api-specs specification/compute/resource-manager/Microsoft.Compute/
# ComputeRP/stable/*/virtualMachineScaleSet.json; learn.microsoft.com/azure/virtual-machines/custom-data:
# "you must Base64-encode the contents ... The size can't exceed 64 KB.")
CUSTOM_DATA_MAX_BYTES = 65535
CUSTOM_DATA_TARGET = "properties.virtualMachineProfile.osProfile.customData"


def custom_data_of(profile: dict[str, Any], previous: str | None) -> str | None:
    """The model's customData (base64), checked as Azure checks it. Azure never returns it, so a
    client's read-modify-write (a PATCH of the pools, a PUT of what a GET returned) cannot send it
    back: a profile without it keeps the previous one, as for the other write-only osProfile values."""
    value = (profile.get("osProfile") or {}).get("customData")
    if value is None:
        return previous
    if not isinstance(value, str):
        raise bad_request("customData must be a base-64 encoded string.", target=CUSTOM_DATA_TARGET)
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("customData is not a valid base-64 encoded string.", target=CUSTOM_DATA_TARGET) from None
    if len(decoded) > CUSTOM_DATA_MAX_BYTES:
        raise bad_request(
            f"customData decodes to {len(decoded)} bytes; the maximum length is {CUSTOM_DATA_MAX_BYTES} bytes.",
            target=CUSTOM_DATA_TARGET,
        )
    return value


def complete_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Azure's defaults, so the model reads back as Azure returns it (and compares stably)."""
    profile = json.loads(json.dumps(profile))
    os_profile = profile.get("osProfile")
    if os_profile is not None:
        # secrets are used once at provisioning and never returned by Azure: not even stored here
        os_profile.pop("adminPassword", None)
        os_profile.pop("customData", None)
        os_profile.setdefault("secrets", [])
        if "windowsConfiguration" not in os_profile:
            os_profile.setdefault("linuxConfiguration", {"disablePasswordAuthentication": False})
    for nic in profile.get("networkProfile", {}).get("networkInterfaceConfigurations", []):
        nic_props = nic.setdefault("properties", {})
        nic_props.setdefault("dnsSettings", {"dnsServers": []})
        nic_props.setdefault("enableAcceleratedNetworking", False)
        for ipc in nic_props.get("ipConfigurations", []):
            ipc.setdefault("properties", {}).setdefault("privateIPAddressVersion", "IPv4")
    return profile


def check_profile(em: Emulator, profile: dict[str, Any], location: str) -> StoredResource:
    """The model's references must resolve: image (-> the version to run), subnets, gateway pools."""
    image_ref = profile.get("storageProfile", {}).get("imageReference") or {}
    if not image_ref.get("id"):
        if image_ref:
            raise unsupported(
                "The emulator runs gallery images only: set imageReference.id to a gallery image version "
                "(or a gallery image for 'latest'); marketplace references are not supported.",
                target=IMAGE_TARGET,
            )
        raise bad_request("imageReference.id is required.", target=f"{IMAGE_TARGET}.id")
    image = em.galleries.resolve_image(image_ref["id"], location, f"{IMAGE_TARGET}.id")
    nics = profile.get("networkProfile", {}).get("networkInterfaceConfigurations", [])
    for i, nic in enumerate(nics):
        base = f"properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[{i}]"
        if not nic.get("name"):
            raise bad_request("Every network interface configuration needs a name.", target=f"{base}.name")
        for j, ipc in enumerate(nic.get("properties", {}).get("ipConfigurations", [])):
            target = f"{base}.properties.ipConfigurations[{j}]"
            if not ipc.get("name"):
                raise bad_request("Every IP configuration needs a name.", target=f"{target}.name")
            ipc_props = ipc.get("properties", {})
            subnet = ipc_props.get("subnet")
            if subnet is None:
                raise bad_request("An IP configuration needs a subnet.", target=f"{target}.properties.subnet")
            em.networks.subnet_exists(subnet.get("id"), f"{target}.properties.subnet.id")
            for k, pool in enumerate(ipc_props.get("applicationGatewayBackendAddressPools", [])):
                check_pool(em, pool.get("id"), f"{target}.properties.applicationGatewayBackendAddressPools[{k}].id")
    return image


def check_pool(em: Emulator, pool_id: Any, target: str) -> None:
    if not isinstance(pool_id, str):
        raise bad_request("A backend pool reference needs an id.", target=target)
    rid = parse_resource_id(pool_id, target=target)
    if rid.type_key != "microsoft.network/applicationgateways/backendaddresspools":
        raise bad_request(f"'{pool_id}' is not an application gateway backend pool id.", target=target)
    parent = rid.parent()
    assert parent is not None
    gateway = em.store.get(parent.key)
    pools = {p["name"].lower(): p for p in (gateway.body["properties"]["backendAddressPools"] if gateway else [])}
    pool = pools.get(rid.name.lower())
    if pool is None:
        raise ArmError(
            400,
            "InvalidResourceReference",
            f"Resource {pool_id} referenced by {target} was not found.",
            target=target,
        )
    if pool.get("properties", {}).get("backendAddresses"):
        # A pool holds NIC IP configurations or explicit addresses, never both: "Mixing IP/FQDN and
        # Virtual Machine targets is not allowed" (Azure/azure-cli#3491). The pool already has
        # addresses, so no NIC may join it. Error code: the emulator's (see gateway_rules.py check_homogeneous_pool).
        raise ArmError(
            400,
            "CannotMixIPBasedAddressesAndIPConfigurationsOnApplicationGatewayBackendAddressPool",
            f"Backend address pool '{pool['name']}' of gateway {gateway.id if gateway else ''} has "
            "backendAddresses: NIC IP configurations cannot join it. A pool holds either NIC IP "
            "configurations or IP addresses/FQDNs, never both.",
            target=target,
        )
