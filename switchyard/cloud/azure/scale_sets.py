"""The scale sets port on Virtual Machine Scale Sets: one scale set per color, Manual upgrades."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds, gallery_version_in, instance_id_in
from switchyard.cloud.azure.wire import azure_errors, no_progress, wire
from switchyard.cloud.errors import CloudError, OperationFailedError
from switchyard.cloud.ports import Progress
from switchyard.core.capacity import ComputeQuota, QuotaUsage
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import InstanceObservation, ScaleSetObservation
from switchyard.core.topology import Color, Topology


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
            body = wire(nic)
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
        return ComputeQuota(location=location, vm_size=size, vcpus_per_vm=vcpus, family=sku.family or "", usages=usages)

    def observe(self, topology: Topology, color: Color) -> ScaleSetObservation:
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        with azure_errors(f"scale set {name}"):
            try:
                vmss = wire(self._compute.virtual_machine_scale_sets.get(rg, name))
            except ResourceNotFoundError:
                return ScaleSetObservation(name=name, color=color, exists=False)
            vms = [wire(vm) for vm in self._compute.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView")]
            addresses = self._addresses(name) if vms else {}
        props = vmss.get("properties", {})
        model_image = gallery_version_in(
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
            instance_image = gallery_version_in(
                (vm_props.get("storageProfile") or {}).get("imageReference", {}).get("id")
            )
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
        say = progress or no_progress
        rg = self._environment.resource_group
        name = topology.scale_set(color)
        current = self.observe(topology, color)
        with azure_errors(f"rolling out {image_version} on {name}"):
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
        with azure_errors(f"scaling {name} to {capacity}"):
            self._compute.virtual_machine_scale_sets.begin_update(rg, name, {"sku": {"capacity": capacity}}).result()
        return self.observe(topology, color)
