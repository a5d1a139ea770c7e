"""The scale sets port on Virtual Machine Scale Sets: one scale set per color, Manual upgrades.

Pool membership is written on the NICs, i.e. the scale-set model (a gateway pool's
backendIPConfigurations is read-only), and with the Manual upgrade policy an instance takes a changed
model only when it is upgraded (manualUpgrade). So every instance of a color is in its color's two
pools, and a canary is exactly the instances upgraded to a model that also names the other color's
canary pool (docs/decisions/0010-canary-pools.md).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError

from switchyard.checkout import default_state_dir
from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds, gallery_version_in, instance_id_in
from switchyard.cloud.azure.nics import ScaleSetNics
from switchyard.cloud.azure.wire import azure_errors, no_progress, wire
from switchyard.cloud.errors import CloudError, NotFoundError, OperationFailedError, StaleStateError
from switchyard.cloud.ports import Progress
from switchyard.core.capacity import ComputeQuota, QuotaUsage
from switchyard.core.config import AzureEnvironment, ServiceConfig, instance_settings
from switchyard.core.state import InstanceObservation, ScaleSetObservation
from switchyard.core.topology import Color, Topology


@dataclass(frozen=True)
class _ScaleSetRead:
    """An observation plus what the adapter needs beyond it: which pools (lower-case ids) the model
    and each instance's own model put the NIC in."""

    observation: ScaleSetObservation
    model_pools: frozenset[str]
    instance_pools: dict[str, frozenset[str]]


def _by_number(instance_id: str) -> tuple[int, str]:
    return (len(instance_id), instance_id)


def _pools_in(network_interface_configurations: list[dict[str, Any]]) -> frozenset[str]:
    """The gateway pools (lower-case ids) NIC configurations reference."""
    return frozenset(
        pool["id"].lower()
        for nic in network_interface_configurations
        for ip_configuration in (nic.get("properties") or {}).get("ipConfigurations", [])
        for pool in (ip_configuration.get("properties") or {}).get("applicationGatewayBackendAddressPools") or []
        if pool.get("id")
    )


class AzureScaleSets:
    def __init__(
        self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment, service: ServiceConfig
    ) -> None:
        self._compute = clients.compute
        self._network = clients.network
        self._ids = ids
        self._environment = environment
        self._service = service

    def _addresses(self, scale_set: str, nics: ScaleSetNics) -> dict[str, str]:
        """instance id -> private IP, from the scale set's NICs (the network API owns IPs)."""
        addresses: dict[str, str] = {}
        bodies = nics.of(self._environment.resource_group, scale_set)
        if bodies is None:
            raise NotFoundError(f"scale set {scale_set}: its network interfaces are not found (deleted meanwhile?)")
        for body in bodies:
            vm_id = (body.get("properties", {}).get("virtualMachine") or {}).get("id", "")
            instance_id = instance_id_in(vm_id)
            if instance_id is None:
                continue
            for ip_configuration in body.get("properties", {}).get("ipConfigurations", []):
                address = ip_configuration.get("properties", {}).get("privateIPAddress")
                if address:
                    addresses[instance_id] = address
        return addresses

    def compute_quota(self) -> ComputeQuota:
        """The location's compute usage and limits, and what one VM of the service's size takes."""
        location, size = self._environment.location, self._service.vm_size
        with azure_errors(f"compute quota in {location}"):
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
        # Restrictions of type Location name the locations the size is not available in; Zone ones
        # only some zones (switchyard's scale sets are zonal-agnostic, so those do not stop it).
        restrictions = [
            f"{restriction.get('reasonCode') or 'restricted'} in {location}"
            for restriction in (wire(r) for r in sku.restrictions or [])
            if restriction.get("type") == "Location"
            and location.lower() in [str(v).lower() for v in restriction.get("values") or [location]]
        ]
        return ComputeQuota(
            location=location,
            vm_size=size,
            vcpus_per_vm=vcpus,
            family=sku.family or "",
            usages=usages,
            restrictions=restrictions,
        )

    def observe(self, topology: Topology, color: Color, *, nics: ScaleSetNics | None = None) -> ScaleSetObservation:
        """One color's scale set. `nics`: the scale-set NICs of the observation this is part of
        (AzureCloud.observe shares them with the router); None: listed here."""
        return self._read(topology, color, nics).observation

    def _read(self, topology: Topology, color: Color, nics: ScaleSetNics | None = None) -> _ScaleSetRead:
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        with azure_errors(f"scale set {name}"):
            try:
                vmss = wire(self._compute.virtual_machine_scale_sets.get(rg, name))
            except ResourceNotFoundError:
                return _ScaleSetRead(ScaleSetObservation(name=name, color=color, exists=False), frozenset(), {})
            vms = [wire(vm) for vm in self._compute.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView")]
            addresses = self._addresses(name, nics or ScaleSetNics(self._network)) if vms else {}
        props = vmss.get("properties", {})
        profile = props.get("virtualMachineProfile", {})
        model_image = gallery_version_in(profile.get("storageProfile", {}).get("imageReference", {}).get("id"))
        instances = []
        instance_pools: dict[str, frozenset[str]] = {}
        for vm in vms:
            vm_props = vm.get("properties", {})
            instance_id = vm.get("instanceId") or vm["name"].rsplit("_", 1)[-1]
            statuses = (vm_props.get("instanceView") or {}).get("statuses", [])
            power = next(
                (s["code"].split("/", 1)[1] for s in statuses if s.get("code", "").startswith("PowerState/")),
                None,
            )
            message = "; ".join(s["message"] for s in statuses if s.get("message"))
            # What the instance runs is its own model's, never the scale set's: with the Manual policy
            # a canary instance runs a newer model than its siblings (docs/decisions/0010-canary-pools.md).
            image_reference = (vm_props.get("storageProfile") or {}).get("imageReference") or {}
            instance_image = gallery_version_in(image_reference.get("id")) or image_reference.get("exactVersion")
            instance_pools[instance_id] = _pools_in(
                (vm_props.get("networkProfileConfiguration") or {}).get("networkInterfaceConfigurations", [])
            )
            instances.append(
                InstanceObservation(
                    instance_id=instance_id,
                    name=vm["name"],
                    private_ip=addresses.get(instance_id),
                    image_version=instance_image,
                    latest_model_applied=bool(vm_props.get("latestModelApplied")),
                    provisioning_state=vm_props.get("provisioningState", "Unknown"),
                    power_state=power,
                    status_message=message,
                )
            )
        sku = vmss.get("sku") or {}
        observation = ScaleSetObservation(
            name=name,
            color=color,
            exists=True,
            etag=vmss.get("etag"),
            capacity=int(sku.get("capacity") or 0),
            vm_size=sku.get("name"),
            image_version=model_image,
            provisioning_state=props.get("provisioningState"),
            instances=sorted(instances, key=lambda i: int(i.instance_id) if i.instance_id.isdigit() else 0),
        )
        model_pools = _pools_in(profile.get("networkProfile", {}).get("networkInterfaceConfigurations", []))
        return _ScaleSetRead(observation, model_pools, instance_pools)

    def _own_pools(self, topology: Topology, color: Color) -> list[str]:
        """The pools every instance of `color` is in: its own and its own canary pool."""
        return [self._ids.pool(topology, Topology.pool(color)), self._ids.pool(topology, Topology.canary_pool(color))]

    def _network_interfaces(self, topology: Topology, pools: list[str]) -> list[dict[str, Any]]:
        """The model's NIC configurations, in the pools (ids) given."""
        return [
            {
                "name": topology.nic_configuration,
                "properties": {
                    "primary": True,
                    "ipConfigurations": [
                        {
                            "name": topology.ip_configuration,
                            "properties": {
                                "subnet": {"id": self._ids.subnet(topology, topology.instance_subnet)},
                                "applicationGatewayBackendAddressPools": [{"id": pool} for pool in pools],
                            },
                        }
                    ],
                },
            }
        ]

    def _custom_data(self) -> str:
        """What every instance is told at provisioning (base64 JSON, as Azure requires): its service,
        its environment and the shared database. A change reaches instances with their next model
        (the next release), as custom data on Azure does."""
        settings = instance_settings(self._service, self._environment.name, str(default_state_dir()))
        return base64.b64encode(json.dumps(settings, sort_keys=True).encode()).decode()

    def _body(self, topology: Topology, color: Color, image_version: str, capacity: int) -> dict[str, Any]:
        env = self._environment
        service = self._service
        return {
            "location": env.location,
            "tags": {"switchyard.service": service.name, "switchyard.color": color.value},
            "sku": {"name": service.vm_size, "tier": "Standard", "capacity": capacity},
            "properties": {
                # Manual: instances change only when switchyard says so (update_instances), never
                # behind a release's back; a canary is the instances upgraded to a model with one more pool.
                "upgradePolicy": {"mode": "Manual"},
                "overprovision": False,
                "virtualMachineProfile": {
                    "osProfile": {
                        "computerNamePrefix": f"{service.name[:8]}{color.value[0]}",
                        "adminUsername": env.admin_username,
                        "customData": self._custom_data(),
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
                        "networkInterfaceConfigurations": self._network_interfaces(
                            topology, self._own_pools(topology, color)
                        )
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
        say = progress or no_progress
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        own = frozenset(pool.lower() for pool in self._own_pools(topology, color))
        read = self._read(topology, color)
        current = read.observation
        with azure_errors(f"rolling out {image_version} on {name}"):
            body = self._body(topology, color, image_version, capacity)
            if not current.exists:
                say(f"{name}: model -> image {image_version}, capacity {capacity}")
                self._compute.virtual_machine_scale_sets.begin_create_or_update(rg, name, body).result()
            elif current.image_version != image_version or current.capacity != capacity or read.model_pools != own:
                say(f"{name}: model -> image {image_version}, capacity {capacity}")
                # If-Match on what was just read: a write that landed meanwhile is not overwritten.
                self._compute.virtual_machine_scale_sets.begin_create_or_update(
                    rg, name, body, etag=current.etag, match_condition=MatchConditions.IfNotModified
                ).result()
            read = self._read(topology, color)
            # An instance that runs another image, or is in other pools (a canary of the other color,
            # or a model from before the canary pools), takes the model; every other one is left alone.
            stale = [
                i.instance_id
                for i in read.observation.instances
                if i.image_version != image_version or read.instance_pools.get(i.instance_id) != own
            ]
            if stale:
                say(f"{name}: updating instances {', '.join(stale)} to the latest model")
                self._upgrade(name, stale)
        observed = self.observe(topology, color)
        failed = [i for i in observed.instances if i.provisioning_state.lower() == "failed"]
        if failed:
            details = "; ".join(f"{i.name}: {i.status_message or 'failed'}" for i in failed)
            raise OperationFailedError(f"{name}: instances failed to start: {details}")
        return observed

    def set_canary(
        self,
        topology: Topology,
        color: Color,
        instance_ids: list[str],
        expect_etag: str,
        progress: Progress | None = None,
    ) -> ScaleSetObservation:
        """Leaving instances first (model without the canary pool, then upgrade them), then joining
        ones (model with it, then upgrade them). The model keeps naming the canary pool after
        instances joined, so until some leave a scale-out of this color adds canary instances too;
        with no canary asked for, the model is back to its own pools and a later scale-out adds none.
        The model writes are If-Match guarded; manualUpgrade takes no ETag, so a write that lands
        between the ETag check and an upgrade-only call is not detected."""
        say = progress or no_progress
        name = topology.scale_set(color)
        canary_pool = Topology.canary_pool(color.other)
        read = self._read(topology, color)
        current = read.observation
        if not current.exists:
            raise NotFoundError(f"setting the canary of {name}: the scale set does not exist")
        if current.etag != expect_etag:
            raise StaleStateError(
                f"setting the canary of {name}: the scale set changed since it was observed "
                f"(ETag {expect_etag} -> {current.etag}); observe again before deciding"
            )
        known = {i.instance_id for i in current.instances}
        unknown = [i for i in instance_ids if i not in known]
        if unknown:
            raise NotFoundError(f"setting the canary of {name}: no instance {', '.join(unknown)} in it")
        canary = self._ids.pool(topology, canary_pool).lower()
        members = {i for i, pools in read.instance_pools.items() if canary in pools}
        wanted = set(instance_ids)
        leave, join = sorted(members - wanted, key=_by_number), sorted(wanted - members, key=_by_number)
        own = self._own_pools(topology, color)
        etag, model_has_canary = expect_etag, canary in read.model_pools
        with azure_errors(f"setting the canary of {name} in pool {canary_pool}"):
            if model_has_canary and (leave or not wanted):
                etag = self._set_model_pools(name, topology, own, etag)
                model_has_canary = False
            if leave:
                say(f"{name}: instances {', '.join(leave)} leave pool {canary_pool}")
                self._upgrade(name, leave)
            if join and not model_has_canary:
                etag = self._set_model_pools(name, topology, [*own, self._ids.pool(topology, canary_pool)], etag)
            if join:
                say(f"{name}: instances {', '.join(join)} join pool {canary_pool}")
                self._upgrade(name, join)
        return self.observe(topology, color)

    def _set_model_pools(self, name: str, topology: Topology, pools: list[str], etag: str) -> str:
        """Change only the model's pools, If-Match `etag`; returns the new ETag. No instance changes
        (Manual upgrade policy) until it is upgraded."""
        updated = self._compute.virtual_machine_scale_sets.begin_update(
            self._environment.resource_group,
            name,
            {
                "properties": {
                    "virtualMachineProfile": {
                        "networkProfile": {"networkInterfaceConfigurations": self._network_interfaces(topology, pools)}
                    }
                }
            },
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
        return str(wire(updated).get("etag") or "")

    def _upgrade(self, name: str, instance_ids: list[str]) -> None:
        """manualUpgrade: these instances take the scale set's current model; no other changes."""
        self._compute.virtual_machine_scale_sets.begin_update_instances(
            self._environment.resource_group, name, {"instanceIds": instance_ids}
        ).result()

    def scale(self, topology: Topology, color: Color, capacity: int, expect_etag: str) -> ScaleSetObservation:
        """New instances take the model as it is (Azure: scale-out uses the latest model); scale-in
        removes the highest instance ids (the emulator; Azure's default scale-in policy balances zones
        and then removes the highest ids too)."""
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        with azure_errors(f"scaling {name} to {capacity}"):
            self._compute.virtual_machine_scale_sets.begin_update(
                rg,
                name,
                {"sku": {"capacity": capacity}},
                etag=expect_etag,
                match_condition=MatchConditions.IfNotModified,
            ).result()
        return self.observe(topology, color)
