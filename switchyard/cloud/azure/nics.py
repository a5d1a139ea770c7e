"""Scale-set NICs, listed once per look at a service.

The network API owns private addresses: the gateway's pool members (NIC ip configurations) and the
scale sets' instances both take theirs from the scale sets' NICs. One observation used to list each
scale set's NICs twice, once for the router and once for the scale sets; that list was the most
frequent ARM read of a release (about a sixth of a monthly patch's requests per service). Reading
them once also gives both parts of the observation the same addresses.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient

from switchyard.cloud.azure.wire import wire


class ScaleSetNics:
    """The NICs of the scale sets one observation asks about, each scale set's listed on first ask.
    Keep one per observation, never longer: NICs come and go with instances."""

    def __init__(self, network: NetworkManagementClient) -> None:
        self._network = network
        self._listed: dict[tuple[str, str], list[dict[str, Any]] | None] = {}

    def of(self, resource_group: str, scale_set: str) -> list[dict[str, Any]] | None:
        """The NICs of `scale_set` as ARM JSON; None when Azure knows no such scale set. Other errors
        are the SDK's, for the caller's azure_errors to word."""
        key = (resource_group.lower(), scale_set.lower())
        if key not in self._listed:
            try:
                listed = self._network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
                    resource_group, scale_set
                )
                self._listed[key] = [wire(nic) for nic in listed]
            except ResourceNotFoundError:
                self._listed[key] = None
        return self._listed[key]
