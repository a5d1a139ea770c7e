"""Azure resource ids of one environment's resources, and the names read back out of ids."""

from __future__ import annotations

import re

from switchyard.core.config import AzureEnvironment
from switchyard.core.topology import Color, Topology

_VERSION_IN_ID = re.compile(r"/galleries/[^/]+/images/[^/]+/versions/([^/]+)$", re.IGNORECASE)
_INSTANCE_IN_ID = re.compile(r"/virtualMachines/([^/]+)$", re.IGNORECASE)


def gallery_version_in(image_reference_id: str | None) -> str | None:
    """The gallery version an image reference id names (None for anything but a gallery version)."""
    if not image_reference_id:
        return None
    match = _VERSION_IN_ID.search(image_reference_id)
    return match.group(1) if match else None


def last_segment(resource_id: str | None) -> str:
    """The name at the end of a resource id ("" for none)."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else ""


def instance_id_in(virtual_machine_id: str) -> str | None:
    """The scale set instance id at the end of a scale set VM's resource id."""
    match = _INSTANCE_IN_ID.search(virtual_machine_id)
    return match.group(1) if match else None


class AzureIds:
    """Resource ids of one environment."""

    def __init__(self, subscription_id: str, environment: AzureEnvironment) -> None:
        self.subscription_id = subscription_id
        self.rg = environment.resource_group
        self.gallery_name = environment.gallery
        self.group = f"/subscriptions/{subscription_id}/resourceGroups/{self.rg}"
        self.gallery_group = f"/subscriptions/{subscription_id}/resourceGroups/{environment.gallery_group}"

    def gallery_image(self, service: str) -> str:
        return f"{self.gallery_group}/providers/Microsoft.Compute/galleries/{self.gallery_name}/images/{service}"

    def gallery_version(self, service: str, version: str) -> str:
        return f"{self.gallery_image(service)}/versions/{version}"

    def scale_set(self, topology: Topology, color: Color) -> str:
        return f"{self.group}/providers/Microsoft.Compute/virtualMachineScaleSets/{topology.scale_set(color)}"

    def gateway(self, topology: Topology) -> str:
        return f"{self.group}/providers/Microsoft.Network/applicationGateways/{topology.gateway}"

    def gateway_child(self, topology: Topology, kind: str, name: str) -> str:
        return f"{self.gateway(topology)}/{kind}/{name}"

    def subnet(self, topology: Topology, name: str) -> str:
        return f"{self.group}/providers/Microsoft.Network/virtualNetworks/{topology.virtual_network}/subnets/{name}"

    def public_ip(self, topology: Topology) -> str:
        return f"{self.group}/providers/Microsoft.Network/publicIPAddresses/{topology.public_ip}"

    def pool(self, topology: Topology, name: str) -> str:
        return self.gateway_child(topology, "backendAddressPools", name)

    def network_security_group(self, topology: Topology) -> str:
        return f"{self.group}/providers/Microsoft.Network/networkSecurityGroups/{topology.network_security_group}"
