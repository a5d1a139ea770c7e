"""What the contract tests share: where the examples are, and `World`, the emulator plus idempotent
builders of what an example's request references."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from switchyard_emulator.testing import (
    EmulatorClients,
    EmulatorHandle,
    SampleTopology,
    free_port,
)
from tests.datasets import AZURE_REST_EXAMPLES

EXAMPLES = AZURE_REST_EXAMPLES


def load_example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / name).read_text()))


class World:
    """The emulator plus idempotent builders for what an example's request references."""

    def __init__(self, emulator: EmulatorHandle, clients: EmulatorClients, artifact: Path) -> None:
        self.emulator = emulator
        self.c = clients
        self.sub = emulator.subscription_id
        self.artifact = artifact
        self._blob: tuple[str, str] | None = None
        self._done: set[tuple[Any, ...]] = set()
        self.refusal: Any = None  # what the emulator answered to an example's original request

    def once(self, *key: Any) -> bool:
        """True the first time a prerequisite is asked for (so builders run once per session)."""
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def substitute(self, value: Any, names: dict[str, str] | None = None) -> Any:
        """The example with the emulator's subscription in every id and placeholders filled."""
        text = json.dumps(value)
        text = re.sub(r"(?<![A-Za-z0-9_])subscriptions/[^/\"]+", f"subscriptions/{self.sub}", text, flags=re.IGNORECASE)
        for placeholder, real in (names or {}).items():
            text = text.replace(placeholder, real)
        return json.loads(text)

    def blob_storage_profile(self) -> dict[str, Any]:
        """A version's storageProfile from the sample image uploaded once as a page blob to the
        emulator's storage account ({uri, storageAccountId}, as Azure takes a VHD)."""
        if self._blob is None:
            self._blob = self.topology("contract-storage").upload(self.artifact)
        uri, account_id = self._blob
        return {"osDiskImage": {"source": {"uri": uri, "storageAccountId": account_id}}}

    def topology(self, rg: str) -> SampleTopology:
        return SampleTopology(self.c, self.sub, rg)

    def resource_group(self, rg: str) -> None:
        if self.once("rg", rg.lower()):
            self.c.resource.resource_groups.create_or_update(rg, {"location": "westus"})

    def network(self, rg: str, vnet: str, subnets: list[str], public_ip: str | None = None) -> None:
        self.resource_group(rg)
        if self.once("vnet", rg.lower(), vnet.lower(), tuple(subnets)):
            self.c.network.virtual_networks.begin_create_or_update(
                rg,
                vnet,
                {
                    "location": "westus",
                    "properties": {
                        "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                        "subnets": [
                            {"name": s, "properties": {"addressPrefix": f"10.0.{i}.0/24"}}
                            for i, s in enumerate(subnets)
                        ],
                    },
                },
            ).result()
        if public_ip and self.once("pip", rg.lower(), public_ip.lower()):
            self.c.network.public_ip_addresses.begin_create_or_update(
                rg, public_ip, {"location": "westus", "sku": {"name": "Standard"}}
            ).result()

    def image_version(self, rg: str, gallery: str, image: str, version: str = "1.0.0") -> str:
        """A replicated image version of the sample service; returns its id."""
        self.resource_group(rg)
        if self.once("image", rg.lower(), gallery.lower(), image.lower()):
            self.c.compute.galleries.begin_create_or_update(rg, gallery, {"location": "westus"}).result()
            self.c.compute.gallery_images.begin_create_or_update(
                rg,
                gallery,
                image,
                {
                    "location": "westus",
                    "properties": {
                        "osType": "Linux",
                        "osState": "Generalized",
                        "identifier": {"publisher": "switchyard", "offer": image, "sku": "sample"},
                    },
                },
            ).result()
        if self.once("version", rg.lower(), gallery.lower(), image.lower(), version):
            self.c.compute.gallery_image_versions.begin_create_or_update(
                rg,
                gallery,
                image,
                version,
                {
                    "location": "westus",
                    "properties": {"storageProfile": self.blob_storage_profile()},
                },
            ).result()
        return self.topology(rg).version_id(version, gallery, image)

    def gateway(self, rg: str, name: str, pool: str) -> None:
        """A minimal Standard_v2 gateway with one pool (and its own vnet/public IP)."""
        self.network(rg, "gwvnet", ["gateway", "instances"], public_ip="gwpip")
        if not self.once("gateway", rg.lower(), name.lower()):
            return
        topo = self.topology(rg)
        body = topo.gateway_body(free_port(), name=name, live_pool=pool, pools=(pool,))
        props = body["properties"]
        props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"] = topo.subnet_id("gateway", "gwvnet")
        props["frontendIPConfigurations"][0]["properties"]["publicIPAddress"]["id"] = topo.network_id(
            "publicIPAddresses", "gwpip"
        )
        self.c.network.application_gateways.begin_create_or_update(rg, name, body).result()
