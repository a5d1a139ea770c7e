"""The Azure adapter: switchyard's ports on the official azure-mgmt SDKs.

It talks to real Azure and to the emulator alike; only client construction (connection.py)
differs. Bodies are written in ARM's wire shape so what is sent is what the REST reference shows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from switchyard.cloud.connection import AzureClients
from switchyard.cloud.errors import CloudError, NotFoundError, OperationFailedError, StaleStateError
from switchyard.cloud.ports import Progress, RequestCounts
from switchyard.core.capacity import ComputeQuota, QuotaUsage
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import (
    GatewayObservation,
    ImageObservation,
    InstanceObservation,
    PoolObservation,
    ScaleSetObservation,
    ServiceObservation,
)
from switchyard.core.topology import Color, Topology

_VERSION_IN_ID = re.compile(r"/galleries/[^/]+/images/[^/]+/versions/([^/]+)$", re.IGNORECASE)
_INSTANCE_IN_ID = re.compile(r"/virtualMachines/([^/]+)$", re.IGNORECASE)


def _quiet(_: str) -> None:
    return None


@contextmanager
def _azure_errors(what: str) -> Iterator[None]:
    """Turn SDK exceptions into switchyard's, keeping Azure's own message (never a token)."""
    try:
        yield
    except ResourceModifiedError as error:
        raise StaleStateError(f"{what}: the resource changed since it was read ({_message(error)})") from None
    except ResourceNotFoundError as error:
        raise NotFoundError(f"{what}: {_message(error)}") from None
    except HttpResponseError as error:
        if error.status_code == 412:
            raise StaleStateError(f"{what}: the resource changed since it was read ({_message(error)})") from None
        raise CloudError(f"{what}: {_message(error)}") from None


def _message(error: HttpResponseError) -> str:
    odata = getattr(error, "error", None)
    if odata is not None and getattr(odata, "message", None):
        return f"{odata.code}: {odata.message}"
    return str(error.message or error).splitlines()[0]


def _wire(model: Any) -> dict[str, Any]:
    """An SDK model (or dict) as ARM wire JSON."""
    if isinstance(model, dict):
        return model
    return model.as_dict()


def _version_of(image_reference_id: str | None) -> str | None:
    if not image_reference_id:
        return None
    match = _VERSION_IN_ID.search(image_reference_id)
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


class AzureGallery:
    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
        self._clients = clients
        self._compute = clients.compute
        self._ids = ids
        self._environment = environment

    def ensure_gallery(self) -> None:
        env = self._environment
        with _azure_errors(f"resource group {env.gallery_group}"):
            if not self._clients.resources.resource_groups.check_existence(env.gallery_group):
                self._clients.resources.resource_groups.create_or_update(
                    env.gallery_group, {"location": env.location, "tags": {"managedBy": "switchyard"}}
                )
        with _azure_errors(f"gallery {env.gallery}"):
            try:
                self._compute.galleries.get(env.gallery_group, env.gallery)
                return
            except ResourceNotFoundError:
                pass
            self._compute.galleries.begin_create_or_update(
                env.gallery_group,
                env.gallery,
                {"location": env.location, "properties": {"description": "switchyard images"}},
            ).result()

    def ensure_image_definition(self, service: str, base: str) -> None:
        env = self._environment
        self.ensure_gallery()
        with _azure_errors(f"gallery image definition {service}"):
            try:
                self._compute.gallery_images.get(env.gallery_group, env.gallery, service)
                return
            except ResourceNotFoundError:
                pass
            self._compute.gallery_images.begin_create_or_update(
                env.gallery_group,
                env.gallery,
                service,
                {
                    "location": env.location,
                    "tags": {"switchyard.service": service, "switchyard.base": base},
                    "properties": {
                        "osType": "Linux",
                        "osState": "Generalized",
                        "hyperVGeneration": "V2",
                        "identifier": {"publisher": "switchyard", "offer": service, "sku": base},
                        "description": f"switchyard images of service {service}",
                    },
                },
            ).result()

    def image_version_id(self, service: str, gallery_version: str) -> str:
        return self._ids.gallery_version(service, gallery_version)

    @staticmethod
    def _observe(gallery_version: str, version: Any) -> ImageObservation:
        body = _wire(version)
        props = body.get("properties", {})
        replication = {
            summary.get("region", "?").replace(" ", "").lower(): summary.get("state", "Unknown")
            for summary in (props.get("replicationStatus") or {}).get("summary", [])
        }
        publishing = props.get("publishingProfile") or {}
        return ImageObservation(
            gallery_version=gallery_version,
            exists=True,
            tags=body.get("tags") or {},
            exclude_from_latest=publishing.get("excludeFromLatest"),
            provisioning_state=props.get("provisioningState"),
            replication=replication,
            resource_id=body.get("id"),
        )

    def image_version(self, service: str, gallery_version: str) -> ImageObservation:
        env = self._environment
        with _azure_errors(f"image {service} {gallery_version}"):
            try:
                version = self._compute.gallery_image_versions.get(
                    env.gallery_group, env.gallery, service, gallery_version, expand="ReplicationStatus"
                )
            except ResourceNotFoundError:
                return ImageObservation(gallery_version=gallery_version, exists=False)
        return self._observe(gallery_version, version)

    def image_versions(self, service: str) -> list[ImageObservation]:
        env = self._environment
        with _azure_errors(f"images of {service}"):
            try:
                versions = list(
                    self._compute.gallery_image_versions.list_by_gallery_image(env.gallery_group, env.gallery, service)
                )
            except ResourceNotFoundError:
                return []
        return [self._observe(str(v.name), v) for v in versions]

    def publish(
        self,
        service: str,
        gallery_version: str,
        source_uri: str,
        tags: dict[str, str],
        regions: list[str],
        progress: Progress | None = None,
    ) -> ImageObservation:
        env = self._environment
        say = progress or _quiet
        body = {
            "location": env.location,
            "tags": tags,
            "properties": {
                "publishingProfile": {
                    # Not "latest" until a release has held full traffic (DESIGN.md, decision 6).
                    "excludeFromLatest": True,
                    "replicaCount": 1,
                    "targetRegions": [
                        {"name": region, "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS"}
                        for region in regions
                    ],
                },
                "storageProfile": {"osDiskImage": {"source": {"uri": source_uri}}},
            },
        }
        with _azure_errors(f"publishing image {service} {gallery_version}"):
            poller = self._compute.gallery_image_versions.begin_create_or_update(
                env.gallery_group, env.gallery, service, gallery_version, body
            )
            say(f"replicating {service} {gallery_version} to {', '.join(regions)}")
            while not poller.done():
                poller.wait(2)
                observed = self.image_version(service, gallery_version)
                if observed.replication:
                    say("replication: " + ", ".join(f"{r} {s}" for r, s in observed.replication.items()))
            result = poller.result()
        if _wire(result).get("properties", {}).get("provisioningState") not in (None, "Succeeded"):
            raise OperationFailedError(f"publishing image {service} {gallery_version} did not succeed")
        return self.image_version(service, gallery_version)

    def update_version(
        self,
        service: str,
        gallery_version: str,
        *,
        tags: dict[str, str] | None = None,
        exclude_from_latest: bool | None = None,
    ) -> ImageObservation:
        env = self._environment
        with _azure_errors(f"updating image {service} {gallery_version}"):
            current = _wire(
                self._compute.gallery_image_versions.get(env.gallery_group, env.gallery, service, gallery_version)
            )
            patch: dict[str, Any] = {}
            if tags is not None:
                patch["tags"] = {**(current.get("tags") or {}), **tags}
            if exclude_from_latest is not None:
                publishing = dict(current.get("properties", {}).get("publishingProfile") or {})
                publishing["excludeFromLatest"] = exclude_from_latest
                patch["properties"] = {"publishingProfile": publishing}
            if patch:
                self._compute.gallery_image_versions.begin_update(
                    env.gallery_group, env.gallery, service, gallery_version, patch
                ).result()
        return self.image_version(service, gallery_version)


class AzureScaleSets:
    def __init__(
        self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment, service: ServiceConfig
    ) -> None:
        self._compute = clients.compute
        self._network = clients.network
        self._ids = ids
        self._environment = environment
        self._service = service

    def _addresses(self, scale_set: str) -> dict[str, str]:
        """instance id -> private IP, from the scale set's NICs (the network API owns IPs)."""
        addresses: dict[str, str] = {}
        nics = self._network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
            self._environment.resource_group, scale_set
        )
        for nic in nics:
            body = _wire(nic)
            vm_id = (body.get("properties", {}).get("virtualMachine") or {}).get("id", "")
            match = _INSTANCE_IN_ID.search(vm_id)
            if not match:
                continue
            for ip_configuration in body.get("properties", {}).get("ipConfigurations", []):
                address = ip_configuration.get("properties", {}).get("privateIPAddress")
                if address:
                    addresses[match.group(1)] = address
        return addresses

    def compute_quota(self) -> ComputeQuota:
        """The location's compute usage and limits, and what one VM of the service's size takes."""
        location, size = self._environment.location, self._service.vm_size
        with _azure_errors(f"compute quota in {location}"):
            usages = {
                str(u.name.value): QuotaUsage(name=str(u.name.value), current=u.current_value, limit=u.limit)
                for u in self._compute.usage.list(location)
                if u.name is not None and u.name.value
            }
            skus = self._compute.resource_skus.list(filter=f"location eq '{location}'")
            sku = next((s for s in skus if s.resource_type == "virtualMachines" and s.name == size), None)
        if sku is None:
            raise CloudError(f"VM size {size} is not offered in {location}: choose another vm_size for the service")
        vcpus = next((int(c.value) for c in sku.capabilities or [] if c.name == "vCPUs" and c.value), 1)
        return ComputeQuota(location=location, vm_size=size, vcpus_per_vm=vcpus, family=sku.family or "", usages=usages)

    def observe(self, topology: Topology, color: Color) -> ScaleSetObservation:
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        with _azure_errors(f"scale set {name}"):
            try:
                vmss = _wire(self._compute.virtual_machine_scale_sets.get(rg, name))
            except ResourceNotFoundError:
                return ScaleSetObservation(name=name, color=color, exists=False)
            vms = [
                _wire(vm) for vm in self._compute.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView")
            ]
            addresses = self._addresses(name) if vms else {}
        props = vmss.get("properties", {})
        model_image = _version_of(
            props.get("virtualMachineProfile", {}).get("storageProfile", {}).get("imageReference", {}).get("id")
        )
        instances = []
        for vm in vms:
            vm_props = vm.get("properties", {})
            statuses = (vm_props.get("instanceView") or {}).get("statuses", [])
            power = next(
                (s["code"].split("/", 1)[1] for s in statuses if s.get("code", "").startswith("PowerState/")),
                None,
            )
            message = "; ".join(s["message"] for s in statuses if s.get("message"))
            instance_image = _version_of((vm_props.get("storageProfile") or {}).get("imageReference", {}).get("id"))
            latest = bool(vm_props.get("latestModelApplied"))
            instances.append(
                InstanceObservation(
                    instance_id=vm.get("instanceId") or vm["name"].rsplit("_", 1)[-1],
                    name=vm["name"],
                    private_ip=addresses.get(vm.get("instanceId", "")),
                    image_version=instance_image or (model_image if latest else None),
                    latest_model_applied=latest,
                    provisioning_state=vm_props.get("provisioningState", "Unknown"),
                    power_state=power,
                    status_message=message,
                )
            )
        return ScaleSetObservation(
            name=name,
            color=color,
            exists=True,
            capacity=int((vmss.get("sku") or {}).get("capacity") or 0),
            image_version=model_image,
            provisioning_state=props.get("provisioningState"),
            instances=sorted(instances, key=lambda i: int(i.instance_id) if i.instance_id.isdigit() else 0),
        )

    def _body(self, topology: Topology, color: Color, image_version: str, capacity: int) -> dict[str, Any]:
        env = self._environment
        service = self._service
        return {
            "location": env.location,
            "tags": {"switchyard.service": service.name, "switchyard.color": color.value},
            "sku": {"name": service.vm_size, "tier": "Standard", "capacity": capacity},
            "properties": {
                # Manual: instances change only when switchyard says so (update_instances), never
                # behind a release's back.
                "upgradePolicy": {"mode": "Manual"},
                "overprovision": False,
                "virtualMachineProfile": {
                    "osProfile": {
                        "computerNamePrefix": f"{service.name[:8]}{color.value[0]}",
                        "adminUsername": env.admin_username,
                        "linuxConfiguration": {
                            "disablePasswordAuthentication": True,
                            "ssh": {
                                "publicKeys": [
                                    {
                                        "path": f"/home/{env.admin_username}/.ssh/authorized_keys",
                                        "keyData": env.ssh_public_key,
                                    }
                                ]
                            },
                        },
                    },
                    "storageProfile": {
                        "imageReference": {"id": self._ids.gallery_version(service.name, image_version)},
                        "osDisk": {
                            "createOption": "FromImage",
                            "caching": "ReadWrite",
                            "managedDisk": {"storageAccountType": "Standard_LRS"},
                        },
                    },
                    "networkProfile": {
                        "networkInterfaceConfigurations": [
                            {
                                "name": topology.nic_configuration,
                                "properties": {
                                    "primary": True,
                                    "ipConfigurations": [
                                        {
                                            "name": topology.ip_configuration,
                                            "properties": {
                                                "subnet": {"id": self._ids.subnet(topology, topology.instance_subnet)},
                                                "applicationGatewayBackendAddressPools": [
                                                    {
                                                        "id": self._ids.gateway_child(
                                                            topology,
                                                            "backendAddressPools",
                                                            topology.pool(color),
                                                        )
                                                    }
                                                ],
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    },
                },
            },
        }

    def roll_out(
        self,
        topology: Topology,
        color: Color,
        *,
        image_version: str,
        capacity: int,
        progress: Progress | None = None,
    ) -> ScaleSetObservation:
        say = progress or _quiet
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        current = self.observe(topology, color)
        with _azure_errors(f"rolling out {image_version} on {name}"):
            if not current.exists or current.image_version != image_version or current.capacity != capacity:
                say(f"{name}: model -> image {image_version}, capacity {capacity}")
                self._compute.virtual_machine_scale_sets.begin_create_or_update(
                    rg, name, self._body(topology, color, image_version, capacity)
                ).result()
            current = self.observe(topology, color)
            stale = [i.instance_id for i in current.instances if not i.latest_model_applied]
            if stale:
                say(f"{name}: updating instances {', '.join(stale)} to the latest model")
                self._compute.virtual_machine_scale_sets.begin_update_instances(
                    rg, name, {"instanceIds": stale}
                ).result()
        observed = self.observe(topology, color)
        failed = [i for i in observed.instances if i.provisioning_state.lower() == "failed"]
        if failed:
            details = "; ".join(f"{i.name}: {i.status_message or 'failed'}" for i in failed)
            raise OperationFailedError(f"{name}: instances failed to start: {details}")
        return observed

    def scale(self, topology: Topology, color: Color, capacity: int) -> ScaleSetObservation:
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        with _azure_errors(f"scaling {name} to {capacity}"):
            self._compute.virtual_machine_scale_sets.begin_update(rg, name, {"sku": {"capacity": capacity}}).result()
        return self.observe(topology, color)


class AzureTrafficRouter:
    """Application Gateway as a traffic router: one If-Match-guarded PUT per routing change."""

    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
        self._network = clients.network
        self._ids = ids
        self._environment = environment

    def _get(self, topology: Topology) -> dict[str, Any] | None:
        with _azure_errors(f"gateway {topology.gateway}"):
            try:
                return _wire(self._network.application_gateways.get(self._environment.resource_group, topology.gateway))
            except ResourceNotFoundError:
                return None

    def _nic_addresses(self, topology: Topology) -> dict[str, str]:
        """NIC ip-configuration id (lower case) -> private IP, for both colors' scale sets."""
        addresses: dict[str, str] = {}
        for color in Color:
            with _azure_errors(f"network interfaces of {topology.scale_set(color)}"):
                try:
                    nics = list(
                        self._network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
                            self._environment.resource_group, topology.scale_set(color)
                        )
                    )
                except ResourceNotFoundError:
                    continue
            for nic in nics:
                for ip_configuration in _wire(nic).get("properties", {}).get("ipConfigurations", []):
                    address = ip_configuration.get("properties", {}).get("privateIPAddress")
                    if address and ip_configuration.get("id"):
                        addresses[ip_configuration["id"].lower()] = address
        return addresses

    def _health(self, topology: Topology) -> dict[str, dict[str, str]]:
        """pool name -> address -> Up/Down/Unknown, from the gateway's own backend health."""
        with _azure_errors(f"backend health of {topology.gateway}"):
            result = _wire(
                self._network.application_gateways.begin_backend_health(
                    self._environment.resource_group, topology.gateway
                ).result()
            )
        health: dict[str, dict[str, str]] = defaultdict(dict)
        for pool in result.get("backendAddressPools", []):
            pool_name = pool.get("backendAddressPool", {}).get("id", "").rsplit("/", 1)[-1]
            for settings in pool.get("backendHttpSettingsCollection", []):
                for server in settings.get("servers", []):
                    health[pool_name][server.get("address", "")] = server.get("health", "Unknown")
        return health

    def observe(self, topology: Topology, *, with_health: bool = True) -> GatewayObservation:
        body = self._get(topology)
        if body is None:
            return GatewayObservation(name=topology.gateway, exists=False)
        props = body.get("properties", {})
        nic_addresses = self._nic_addresses(topology)
        health = self._health(topology) if with_health else {}
        pools: dict[str, PoolObservation] = {}
        for pool in props.get("backendAddressPools", []):
            pool_props = pool.get("properties", {})
            members = [
                nic_addresses[c["id"].lower()]
                for c in pool_props.get("backendIPConfigurations", [])
                if c.get("id", "").lower() in nic_addresses
            ]
            extra = [a["ipAddress"] for a in pool_props.get("backendAddresses", []) if a.get("ipAddress")]
            pools[pool["name"]] = PoolObservation(
                name=pool["name"],
                member_addresses=members,
                extra_addresses=extra,
                health=health.get(pool["name"], {}),  # type: ignore[arg-type]
            )
        rules = {rule["name"]: rule.get("properties", {}) for rule in props.get("requestRoutingRules", [])}

        def pool_of(rule: str) -> str | None:
            pool_id = (rules.get(rule, {}).get("backendAddressPool") or {}).get("id")
            return pool_id.rsplit("/", 1)[-1] if pool_id else None

        return GatewayObservation(
            name=topology.gateway,
            exists=True,
            etag=body.get("etag"),
            provisioning_state=props.get("provisioningState"),
            production_pool=pool_of(topology.production_rule),
            test_pool=pool_of(topology.test_rule),
            pools=pools,
            tags=body.get("tags") or {},
        )

    def _write(
        self,
        topology: Topology,
        expect_etag: str | None,
        change: Callable[[dict[str, Any]], None],
        what: str,
    ) -> dict[str, Any]:
        """GET, change, PUT with If-Match; returns the gateway as the PUT answered it."""
        body = self._get(topology)
        if body is None:
            raise NotFoundError(f"{what}: gateway {topology.gateway} does not exist; run provision first")
        if expect_etag is not None and body.get("etag") != expect_etag:
            raise StaleStateError(
                f"{what}: gateway {topology.gateway} changed since it was observed "
                f"(ETag {expect_etag} -> {body.get('etag')}); observe again before deciding"
            )
        change(body)
        with _azure_errors(what):
            written = self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group,
                topology.gateway,
                body,
                headers={"If-Match": body["etag"]},
            ).result()
        return _wire(written)

    @staticmethod
    def _pool(body: dict[str, Any], name: str) -> dict[str, Any]:
        for pool in body["properties"].get("backendAddressPools", []):
            if pool["name"].lower() == name.lower():
                return pool
        raise NotFoundError(f"gateway has no backend pool {name!r}; run provision")

    @staticmethod
    def _rule(body: dict[str, Any], name: str) -> dict[str, Any]:
        for rule in body["properties"].get("requestRoutingRules", []):
            if rule["name"].lower() == name.lower():
                return rule
        raise NotFoundError(f"gateway has no routing rule {name!r}; run provision")

    def set_split(
        self,
        topology: Topology,
        canary_addresses: list[str],
        expect_etag: str,
        tags: dict[str, str] | None = None,
    ) -> list[str]:
        def live_pool(body: dict[str, Any]) -> dict[str, Any]:
            live_pool_id = self._rule(body, topology.production_rule)["properties"]["backendAddressPool"]["id"]
            return self._pool(body, live_pool_id.rsplit("/", 1)[-1]).setdefault("properties", {})

        def change(body: dict[str, Any]) -> None:
            if tags:
                body["tags"] = {**(body.get("tags") or {}), **tags}
            live_pool(body)["backendAddresses"] = [{"ipAddress": address} for address in canary_addresses]

        written = self._write(topology, expect_etag, change, f"setting canary of {len(canary_addresses)} instance(s)")
        return [a.get("ipAddress", "") for a in live_pool(written).get("backendAddresses", [])]

    def switch(
        self, topology: Topology, to_color: Color, expect_etag: str, tags: dict[str, str] | None = None
    ) -> GatewayObservation:
        def change(body: dict[str, Any]) -> None:
            for color, rule in ((to_color, topology.production_rule), (to_color.other, topology.test_rule)):
                self._rule(body, rule)["properties"]["backendAddressPool"] = {
                    "id": self._ids.gateway_child(topology, "backendAddressPools", topology.pool(color))
                }
            for color in Color:
                self._pool(body, topology.pool(color)).setdefault("properties", {})["backendAddresses"] = []
            if tags:
                body["tags"] = {**(body.get("tags") or {}), **tags}

        self._write(topology, expect_etag, change, f"switching production to {to_color.value}")
        return self.observe(topology, with_health=False)

    def clear_canary(self, topology: Topology, tags: dict[str, str] | None = None) -> list[str]:
        """Take every canary address out of the live pool: one GET, one If-Match-guarded PUT.

        The fast way back: it needs no other observation, because explicit addresses in the live
        pool are only ever canary instances. Returns the addresses removed ([] and no write if none).
        """
        body = self._get(topology)
        if body is None:
            raise NotFoundError(f"gateway {topology.gateway} does not exist")
        live_pool_id = self._rule(body, topology.production_rule)["properties"]["backendAddressPool"]["id"]
        live_pool = self._pool(body, live_pool_id.rsplit("/", 1)[-1]).setdefault("properties", {})
        removed = [a.get("ipAddress") or a.get("fqdn", "") for a in live_pool.get("backendAddresses", [])]
        if not removed:
            return []
        live_pool["backendAddresses"] = []
        if tags:
            body["tags"] = {**(body.get("tags") or {}), **tags}
        with _azure_errors("taking the canary out of production"):
            self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group, topology.gateway, body, headers={"If-Match": body["etag"]}
            ).result()
        return removed

    def tag(self, topology: Topology, tags: dict[str, str], expect_etag: str) -> GatewayObservation:
        def change(body: dict[str, Any]) -> None:
            body["tags"] = {**(body.get("tags") or {}), **tags}

        self._write(topology, expect_etag, change, "tagging the gateway")
        return self.observe(topology, with_health=False)

    def frontend_address(self, topology: Topology) -> str:
        with _azure_errors(f"public IP of {topology.gateway}"):
            address = (
                _wire(self._network.public_ip_addresses.get(self._environment.resource_group, topology.public_ip))
                .get("properties", {})
                .get("ipAddress")
            )
        if not address:
            raise CloudError(f"public IP {topology.public_ip} has no address yet")
        return str(address)

    def write_full(self, topology: Topology, body: dict[str, Any], expect_etag: str | None) -> None:
        """Create the gateway, or replace its definition (If-Match when it exists)."""
        headers = {"If-Match": expect_etag} if expect_etag else {"If-None-Match": "*"}
        with _azure_errors(f"writing gateway {topology.gateway}"):
            self._network.application_gateways.begin_create_or_update(
                self._environment.resource_group, topology.gateway, body, headers=headers
            ).result()


class AzureMonitorTelemetry:
    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment, metrics_grain: str) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._grain = metrics_grain

    @staticmethod
    def _timespan(start: datetime, end: datetime) -> str:
        return f"{start.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}/{end.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"

    def _series(
        self, resource_id: str, metric: str, aggregation: str, start: datetime, end: datetime, filter: str
    ) -> list[dict[str, Any]]:
        with _azure_errors(f"metric {metric} of {resource_id.rsplit('/', 1)[-1]}"):
            response = _wire(
                self._clients.monitor.metrics.list(
                    resource_id,
                    timespan=self._timespan(start, end),
                    interval=self._grain,
                    metricnames=metric,
                    aggregation=aggregation,
                    filter=filter,
                    # Azure returns 10 series by default; a split by backend and status has more.
                    top=1000,
                )
            )
        series: list[dict[str, Any]] = []
        for value in response.get("value", []):
            series.extend(value.get("timeseries", []))
        return series

    @staticmethod
    def _dimensions(element: dict[str, Any]) -> dict[str, str]:
        return {m["name"]["value"].lower(): m.get("value", "") for m in element.get("metadatavalues", [])}

    def requests_by_backend(self, topology: Topology, start: datetime, end: datetime) -> dict[str, RequestCounts]:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for element in self._series(
            self._ids.gateway(topology),
            "BackendResponseStatus",
            "Total",
            start,
            end,
            "BackendServer eq '*' and HttpStatusGroup eq '*'",
        ):
            dims = self._dimensions(element)
            server = dims.get("backendserver", "").rsplit(":", 1)[0]
            count = int(sum(point.get("total") or 0 for point in element.get("data", [])))
            totals[server][0] += count
            if dims.get("httpstatusgroup", "").startswith("5"):
                totals[server][1] += count
        return {server: RequestCounts(total=t, failed=f) for server, (t, f) in totals.items()}

    def latency_by_backend(
        self, topology: Topology, start: datetime, end: datetime, listener: str
    ) -> dict[str, list[float]]:
        workspace = self._clients.log_analytics_workspace_id
        if not workspace:
            raise CloudError(
                f"environment {self._environment.name} has no log_analytics_workspace_id: "
                "latency percentiles come from the gateway access log in Log Analytics"
            )
        gateway_id = self._ids.gateway(topology).upper()
        query = (
            "AzureDiagnostics"
            f' | where Category == "ApplicationGatewayAccessLog" and ResourceId == "{gateway_id}"'
            f' and listenerName_s == "{listener}"'
            f" and TimeGenerated >= datetime({start.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ})"
            f" and TimeGenerated < datetime({end.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ})"
            " | project serverRouted_s, timeTaken_d"
        )
        with _azure_errors("querying the gateway access log"):
            result = self._clients.logs.query_workspace(workspace, query, timespan=(start, end))
        tables = getattr(result, "tables", None)
        if tables is None:
            raise CloudError(f"the access log query returned no tables: {getattr(result, 'partial_error', '')}")
        samples: dict[str, list[float]] = defaultdict(list)
        for table in tables:
            for row in table.rows:
                server, seconds = row[0], row[1]
                if server and seconds is not None:
                    samples[str(server).rsplit(":", 1)[0]].append(float(seconds) * 1000.0)
        return dict(samples)

    def cpu_percent(
        self,
        topology: Topology,
        color: Color,
        start: datetime,
        end: datetime,
        vm_names: list[str] | None = None,
    ) -> list[float]:
        wanted = {name.lower() for name in vm_names} if vm_names is not None else None
        samples: list[float] = []
        for element in self._series(
            self._ids.scale_set(topology, color), "Percentage CPU", "Average", start, end, "VMName eq '*'"
        ):
            if wanted is not None and self._dimensions(element).get("vmname", "").lower() not in wanted:
                continue
            samples.extend(p["average"] for p in element.get("data", []) if p.get("average") is not None)
        return samples


class AzureInfrastructure:
    def __init__(
        self,
        clients: AzureClients,
        ids: AzureIds,
        environment: AzureEnvironment,
        gallery: AzureGallery,
        router: AzureTrafficRouter,
    ) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._gallery = gallery
        self._router = router

    def ensure_foundation(self, topology: Topology, service: ServiceConfig, progress: Progress) -> None:
        env = self._environment
        network = self._clients.network
        gateway_prefix, instance_prefix = env.subnet_prefixes()
        for group in dict.fromkeys([env.resource_group, env.gallery_group]):
            with _azure_errors(f"resource group {group}"):
                progress(f"resource group {group}")
                self._clients.resources.resource_groups.create_or_update(
                    group, {"location": env.location, "tags": {"managedBy": "switchyard"}}
                )
        with _azure_errors(f"virtual network {topology.virtual_network}"):
            progress(f"virtual network {topology.virtual_network} ({env.vnet_address_space})")
            network.virtual_networks.begin_create_or_update(
                env.resource_group,
                topology.virtual_network,
                {
                    "location": env.location,
                    "properties": {
                        "addressSpace": {"addressPrefixes": [env.vnet_address_space]},
                        "subnets": [
                            {
                                "name": topology.gateway_subnet,
                                "properties": {"addressPrefix": gateway_prefix},
                            },
                            {
                                "name": topology.instance_subnet,
                                "properties": {"addressPrefix": instance_prefix},
                            },
                        ],
                    },
                },
            ).result()
        with _azure_errors(f"public IP {topology.public_ip}"):
            progress(f"public IP {topology.public_ip}")
            network.public_ip_addresses.begin_create_or_update(
                env.resource_group,
                topology.public_ip,
                {
                    "location": env.location,
                    "sku": {"name": "Standard", "tier": "Regional"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                },
            ).result()
        progress(f"gallery {env.gallery}, image definition {service.name}")
        self._gallery.ensure_image_definition(service.name, service.base)

    def _gateway_body(
        self,
        topology: Topology,
        service: ServiceConfig,
        live: Color,
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        ids = self._ids
        ports = service.ports_in(topology.environment)

        def ref(kind: str, name: str) -> dict[str, str]:
            return {"id": ids.gateway_child(topology, kind, name)}

        kept_addresses: dict[str, list[dict[str, Any]]] = {}
        if existing:
            for pool in existing.get("properties", {}).get("backendAddressPools", []):
                kept_addresses[pool["name"]] = pool.get("properties", {}).get("backendAddresses", [])
        body: dict[str, Any] = {
            "location": self._environment.location,
            "tags": (existing or {}).get("tags") or {"switchyard.service": service.name},
            "properties": {
                "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 2},
                "gatewayIPConfigurations": [
                    {
                        "name": topology.gateway_ip_configuration,
                        "properties": {"subnet": {"id": ids.subnet(topology, topology.gateway_subnet)}},
                    }
                ],
                "frontendIPConfigurations": [
                    {
                        "name": topology.frontend_ip,
                        "properties": {"publicIPAddress": {"id": ids.public_ip(topology)}},
                    }
                ],
                "frontendPorts": [
                    {"name": topology.production_port_name, "properties": {"port": ports.production}},
                    {"name": topology.test_port_name, "properties": {"port": ports.test}},
                ],
                "backendAddressPools": [
                    {
                        "name": topology.pool(color),
                        "properties": {"backendAddresses": kept_addresses.get(topology.pool(color), [])},
                    }
                    for color in Color
                ],
                "probes": [
                    {
                        "name": topology.probe,
                        "properties": {
                            "protocol": "Http",
                            "host": "127.0.0.1",
                            "path": service.health_path,
                            "interval": service.probe_interval_s,
                            "timeout": service.probe_timeout_s,
                            "unhealthyThreshold": service.probe_unhealthy_threshold,
                            "pickHostNameFromBackendHttpSettings": False,
                            "match": {"statusCodes": ["200-399"]},
                        },
                    }
                ],
                "backendHttpSettingsCollection": [
                    {
                        "name": topology.backend_settings,
                        "properties": {
                            "port": service.service_port,
                            "protocol": "Http",
                            "cookieBasedAffinity": "Disabled",
                            "requestTimeout": service.request_timeout_s,
                            "probe": ref("probes", topology.probe),
                            "connectionDraining": {
                                "enabled": True,
                                "drainTimeoutInSec": service.draining_timeout_s,
                            },
                        },
                    }
                ],
                "httpListeners": [
                    {
                        "name": listener,
                        "properties": {
                            "frontendIPConfiguration": ref("frontendIPConfigurations", topology.frontend_ip),
                            "frontendPort": ref("frontendPorts", port_name),
                            "protocol": "Http",
                        },
                    }
                    for listener, port_name in (
                        (topology.production_listener, topology.production_port_name),
                        (topology.test_listener, topology.test_port_name),
                    )
                ],
                "requestRoutingRules": [
                    {
                        "name": rule,
                        "properties": {
                            "ruleType": "Basic",
                            "priority": priority,
                            "httpListener": ref("httpListeners", listener),
                            "backendAddressPool": ref("backendAddressPools", topology.pool(color)),
                            "backendHttpSettings": ref("backendHttpSettingsCollection", topology.backend_settings),
                        },
                    }
                    for rule, listener, color, priority in (
                        (topology.production_rule, topology.production_listener, live, 100),
                        (topology.test_rule, topology.test_listener, live.other, 200),
                    )
                ],
            },
        }
        return body

    def ensure_gateway(self, topology: Topology, service: ServiceConfig, progress: Progress) -> GatewayObservation:
        existing = self._router._get(topology)
        if existing is None:
            progress(f"gateway {topology.gateway}: creating (production -> blue, test -> green)")
            body = self._gateway_body(topology, service, Color.BLUE, None)
            self._router.write_full(topology, body, None)
        else:
            # Routing is the release's business: keep whichever color is live and any canary.
            observed = self._router.observe(topology, with_health=False)
            live = observed.live_color or Color.BLUE
            body = self._gateway_body(topology, service, live, existing)
            progress(f"gateway {topology.gateway}: updating in place (production stays on {live.value})")
            self._router.write_full(topology, body, existing.get("etag"))
        return self._router.observe(topology, with_health=False)

    def ensure_autoscale(self, topology: Topology, service: ServiceConfig, color: Color) -> None:
        env = self._environment
        scale = service.autoscale
        target = self._ids.scale_set(topology, color)

        def rule(operator: str, threshold: float, direction: str) -> dict[str, Any]:
            window = f"PT{scale.time_window_s}S"
            return {
                "metricTrigger": {
                    "metricName": "Percentage CPU",
                    "metricNamespace": "microsoft.compute/virtualmachinescalesets",
                    "metricResourceUri": target,
                    "timeGrain": "PT1M" if scale.time_window_s >= 60 else "PT1S",
                    "statistic": "Average",
                    "timeWindow": window,
                    "timeAggregation": "Average",
                    "operator": operator,
                    "threshold": threshold,
                },
                "scaleAction": {
                    "direction": direction,
                    "type": "ChangeCount",
                    "value": "1",
                    "cooldown": f"PT{scale.cooldown_s}S",
                },
            }

        body = {
            "location": env.location,
            "tags": {"switchyard.service": service.name, "switchyard.color": color.value},
            "properties": {
                "name": topology.autoscale_setting,
                "enabled": scale.enabled,
                "targetResourceUri": target,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {
                            "minimum": str(max(scale.minimum, 1)),
                            "maximum": str(max(scale.maximum, service.capacity)),
                            "default": str(service.capacity),
                        },
                        "rules": [
                            rule("GreaterThan", scale.scale_out_cpu_percent, "Increase"),
                            rule("LessThan", scale.scale_in_cpu_percent, "Decrease"),
                        ],
                    }
                ],
            },
        }
        with _azure_errors(f"autoscale setting {topology.autoscale_setting}"):
            self._clients.monitor.autoscale_settings.create_or_update(
                env.resource_group, topology.autoscale_setting, body
            )


class AzureCloud:
    """switchyard's ports for one environment and one service, on Azure (or its emulator)."""

    def __init__(self, environment: AzureEnvironment, service: ServiceConfig) -> None:
        self.environment = environment
        self.service = service
        self.clients = AzureClients(environment)
        ids = AzureIds(self.clients.subscription_id, environment)
        self.ids = ids
        self.gallery = AzureGallery(self.clients, ids, environment)
        self.scale_sets = AzureScaleSets(self.clients, ids, environment, service)
        self.router = AzureTrafficRouter(self.clients, ids, environment)
        self.telemetry = AzureMonitorTelemetry(self.clients, ids, environment, self.clients.metrics_grain)
        self.infrastructure = AzureInfrastructure(self.clients, ids, environment, self.gallery, self.router)

    def observe(self, topology: Topology, *, with_health: bool = True) -> ServiceObservation:
        return ServiceObservation(
            topology=topology,
            observed_at=datetime.now(UTC),
            gateway=self.router.observe(topology, with_health=with_health),
            scale_sets={color: self.scale_sets.observe(topology, color) for color in Color},
        )
