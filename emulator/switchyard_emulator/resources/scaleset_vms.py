"""A scale set's VMs and their NICs as Azure shows them: rendering an instance record (with the
data plane's runtime state) as a VM, its instance view and its NICs, and the read handlers for them
(VMs list with its $filter, VM get, instance views, the network SDK's scale-set NIC operations).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from switchyard_emulator.common import Ctx, json_response, now_iso, page_response, resource_response
from switchyard_emulator.dataplane.api import InstanceRuntime
from switchyard_emulator.errors import bad_request, not_found
from switchyard_emulator.resources.base import ResourceKind
from switchyard_emulator.resources.scaleset_model import NIC_TYPE, VM_TYPE
from switchyard_emulator.store import InstanceRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator


def vm_or_404(em: Emulator, kind: ResourceKind, ctx: Ctx) -> tuple[StoredResource, InstanceRecord]:
    resource = kind.get_or_404(ctx, ctx.params["name"])
    raw = ctx.params["instance"]
    for inst in em.store.instances(resource.key):
        if str(inst.instance_id) == raw:
            return resource, inst
    raise not_found(VM_TYPE, f"{resource.body['name']}/{raw}", ctx.params["rg"])


class ScaleSetVms:
    """The read handlers of a scale set's VMs, its instance view and its NICs."""

    def __init__(self, em: Emulator, kind: ResourceKind) -> None:
        self.em = em
        self.kind = kind

    async def list_vms(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        expand = (ctx.query.get("$expand") or "").lower()
        select = (ctx.query.get("$select") or "").lower()
        if expand and expand != "instanceview":
            raise bad_request(f"The $expand value '{expand}' is not supported; use 'instanceView'.", target="$expand")
        if select and select not in ("instanceview", "instanceview/statuses"):
            raise bad_request(f"The $select value '{select}' is not supported; use 'instanceView'.", target="$select")
        keep = vm_filter(ctx.query.get("$filter"))
        models = self.em.store.models(resource.key)
        states = self.em.dataplane.instance_states(resource.key)
        items = []
        for inst in self.em.store.instances(resource.key):
            vm = render_vm(
                resource,
                inst,
                models,
                states.get(str(inst.instance_id)),
                with_instance_view=bool(expand or select or keep.needs_view),
            )
            if keep(vm):
                items.append(vm)
        return page_response(ctx, items)

    async def get_vm(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        expand = (ctx.query.get("$expand") or "").lower()
        if expand and expand not in ("instanceview", "userdata", "resiliencyview"):
            raise bad_request(f"The $expand value '{expand}' is not supported; use 'instanceView'.", target="$expand")
        runtime = self.em.dataplane.instance_states(resource.key).get(str(inst.instance_id))
        vm = render_vm(
            resource,
            inst,
            self.em.store.models(resource.key),
            runtime,
            with_instance_view=expand == "instanceview",
            with_user_data=expand == "userdata",
        )
        return resource_response(200, vm, vm["etag"])

    async def vm_instance_view(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        runtime = self.em.dataplane.instance_states(resource.key).get(str(inst.instance_id))
        return json_response(200, vm_instance_view_body(inst, runtime))

    async def instance_view(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        states = self.em.dataplane.instance_states(resource.key)
        counts: dict[str, int] = {}
        for inst in self.em.store.instances(resource.key):
            code = runtime_statuses(inst, states.get(str(inst.instance_id)))[0]["code"]
            code = "/".join(code.split("/")[:2])
            counts[code] = counts.get(code, 0) + 1
        state = resource.body["properties"]["provisioningState"]
        body = {
            "virtualMachine": {
                "statusesSummary": [{"code": code, "count": count} for code, count in sorted(counts.items())]
            },
            "extensions": [],
            "statuses": [
                {
                    "code": f"ProvisioningState/{state.lower()}",
                    "level": "Error" if state == "Failed" else "Info",
                    "displayStatus": f"Provisioning {state.lower()}",
                    "time": now_iso(),
                }
            ],
            "orchestrationServices": [],
        }
        return json_response(200, body)

    # -- NICs (azure-mgmt-network's scale-set network interface operations) ------------------------

    def _nics(self, resource: StoredResource, only: int | None = None) -> list[dict[str, Any]]:
        models = self.em.store.models(resource.key)
        nics = []
        for inst in self.em.store.instances(resource.key):
            if only is not None and inst.instance_id != only:
                continue
            profile = models.get(inst.model_version, {})
            vm_id = f"{resource.id}/virtualMachines/{inst.instance_id}"
            for n, nic in enumerate(profile.get("networkProfile", {}).get("networkInterfaceConfigurations", [])):
                nic_id = f"{vm_id}/networkInterfaces/{nic['name']}"
                nic_props = nic.get("properties", {})
                ip_configs = []
                for m, ipc in enumerate(nic_props.get("ipConfigurations", [])):
                    ipc_props = ipc.get("properties", {})
                    ip_configs.append(
                        {
                            "name": ipc["name"],
                            "id": f"{nic_id}/ipConfigurations/{ipc['name']}",
                            "etag": f'W/"{inst.vm_id}-{inst.generation}"',
                            "properties": {
                                "provisioningState": "Succeeded",
                                "privateIPAddress": inst.ip,
                                "privateIPAllocationMethod": "Dynamic",
                                "privateIPAddressVersion": ipc_props.get("privateIPAddressVersion", "IPv4"),
                                "subnet": ipc_props.get("subnet"),
                                "primary": ipc_props.get("primary", m == 0),
                                "applicationGatewayBackendAddressPools": ipc_props.get(
                                    "applicationGatewayBackendAddressPools", []
                                ),
                            },
                        }
                    )
                nics.append(
                    {
                        "name": nic["name"],
                        "id": nic_id,
                        "etag": f'W/"{inst.vm_id}-{inst.generation}"',
                        "location": resource.body["location"],
                        "properties": {
                            "provisioningState": "Succeeded",
                            "resourceGuid": str(uuid.uuid5(uuid.NAMESPACE_URL, nic_id.lower())),
                            "virtualMachine": {"id": vm_id},
                            "ipConfigurations": ip_configs,
                            "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
                            "macAddress": mac_address(inst.ip, n),
                            "enableAcceleratedNetworking": nic_props.get("enableAcceleratedNetworking", False),
                            "enableIPForwarding": nic_props.get("enableIPForwarding", False),
                            "primary": nic_props.get("primary", n == 0),
                        },
                    }
                )
        return nics

    async def list_nics(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        return page_response(ctx, self._nics(resource))

    async def list_vm_nics(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        return page_response(ctx, self._nics(resource, inst.instance_id))

    def _nic_or_404(self, ctx: Ctx) -> dict[str, Any]:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        for nic in self._nics(resource, inst.instance_id):
            if nic["name"].lower() == ctx.params["nic"].lower():
                return nic
        raise not_found(NIC_TYPE, ctx.params["nic"], ctx.params["rg"])

    async def get_nic(self, ctx: Ctx) -> Response:
        nic = self._nic_or_404(ctx)
        return resource_response(200, nic, nic["etag"])

    async def list_nic_ip_configurations(self, ctx: Ctx) -> Response:
        return page_response(ctx, self._nic_or_404(ctx)["properties"]["ipConfigurations"])

    async def get_nic_ip_configuration(self, ctx: Ctx) -> Response:
        for ipc in self._nic_or_404(ctx)["properties"]["ipConfigurations"]:
            if ipc["name"].lower() == ctx.params["ipconfig"].lower():
                return resource_response(200, ipc, ipc["etag"])
        raise not_found(
            "Microsoft.Network/networkInterfaces/ipConfigurations", ctx.params["ipconfig"], ctx.params["rg"]
        )


def runtime_statuses(inst: InstanceRecord, runtime: InstanceRuntime | None) -> list[dict[str, Any]]:
    now = now_iso()
    if runtime is None or runtime.generation != inst.generation or runtime.state == "creating":
        updating = inst.generation > 1
        return [
            {
                "code": "ProvisioningState/updating" if updating else "ProvisioningState/creating",
                "level": "Info",
                "displayStatus": "Updating" if updating else "Creating",
                "time": now,
            },
            {"code": "PowerState/starting", "level": "Info", "displayStatus": "VM starting"},
        ]
    started = runtime.started_at.isoformat().replace("+00:00", "Z") if runtime.started_at else now
    if runtime.state == "running":
        return [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": started,
            },
            {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
        ]
    if runtime.state == "failed":
        tail = "\n".join(runtime.log_tail[-20:])
        return [
            {
                "code": "ProvisioningState/failed/ProcessExited",
                "level": "Error",
                "displayStatus": "Provisioning failed",
                "message": f"The instance's process exited with code {runtime.exit_code}. Last log lines:\n{tail}",
                "time": started,
            },
            {"code": "PowerState/stopped", "level": "Info", "displayStatus": "VM stopped"},
        ]
    return [
        {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "time": started,
        },
        {"code": "PowerState/stopped", "level": "Info", "displayStatus": "VM stopped"},
    ]


def provisioning_state(statuses: list[dict[str, Any]]) -> str:
    code = statuses[0]["code"].split("/")[1]
    return code.capitalize()


def vm_instance_view_body(inst: InstanceRecord, runtime: InstanceRuntime | None) -> dict[str, Any]:
    statuses = runtime_statuses(inst, runtime)
    return {
        "platformUpdateDomain": inst.instance_id % 5,
        "platformFaultDomain": inst.instance_id % 2,
        "computerName": computer_name(inst, None),
        "osName": "linux",
        "vmAgent": {
            "vmAgentVersion": "switchyard-emulator",
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Ready",
                    "message": "The emulator supervises this instance's process.",
                    "time": now_iso(),
                }
            ],
        },
        "disks": [
            {
                "name": f"{inst.name}_OsDisk_1",
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                        "time": inst.created_at,
                    }
                ],
            }
        ],
        "statuses": statuses,
    }


def computer_name(inst: InstanceRecord, profile: dict[str, Any] | None) -> str:
    prefix = ((profile or {}).get("osProfile") or {}).get("computerNamePrefix") or inst.name.rsplit("_", 1)[0]
    return f"{prefix}{base36(inst.instance_id):0>6}"


def render_vm(
    resource: StoredResource,
    inst: InstanceRecord,
    models: dict[int, dict[str, Any]],
    runtime: InstanceRuntime | None,
    *,
    with_instance_view: bool,
    with_user_data: bool = False,
) -> dict[str, Any]:
    profile = models.get(inst.model_version, {})
    vm_id = f"{resource.id}/virtualMachines/{inst.instance_id}"
    statuses = runtime_statuses(inst, runtime)
    storage = profile.get("storageProfile", {})
    image_ref = {
        "id": storage.get("imageReference", {}).get("id"),
        "exactVersion": inst.image_version_id.rsplit("/", 1)[-1],
    }
    os_profile = dict(profile.get("osProfile") or {})
    os_profile.pop("computerNamePrefix", None)
    os_profile.pop("adminPassword", None)  # never returned, as in Azure
    os_profile.update(
        {
            "computerName": computer_name(inst, profile),
            "secrets": os_profile.get("secrets", []),
            "allowExtensionOperations": True,
            "requireGuestProvisionSignal": True,
        }
    )
    props: dict[str, Any] = {
        "latestModelApplied": inst.model_version == int(resource.internal["model_version"]),
        "modelDefinitionApplied": "VirtualMachineScaleSet",
        "vmId": inst.vm_id,
        "provisioningState": provisioning_state(statuses),
        "timeCreated": inst.created_at,
        "hardwareProfile": {"vmSize": resource.body["sku"]["name"]},
        "storageProfile": {
            "imageReference": image_ref,
            "osDisk": {
                "osType": "Linux",
                "name": f"{inst.name}_OsDisk_1",
                "createOption": "FromImage",
                "caching": storage.get("osDisk", {}).get("caching", "ReadWrite"),
                "managedDisk": {"storageAccountType": "Standard_LRS"},
                "diskSizeGB": 30,
            },
            "dataDisks": [],
        },
        "osProfile": os_profile,
        "networkProfile": {
            "networkInterfaces": [
                {"id": f"{vm_id}/networkInterfaces/{nic['name']}"}
                for nic in profile.get("networkProfile", {}).get("networkInterfaceConfigurations", [])
            ]
        },
        "networkProfileConfiguration": {"networkInterfaceConfigurations": vm_nic_configurations(profile)},
    }
    if with_instance_view:
        props["instanceView"] = vm_instance_view_body(inst, runtime)
    if with_user_data and profile.get("userData") is not None:
        props["userData"] = profile["userData"]
    return {
        "id": vm_id,
        "name": inst.name,
        "type": VM_TYPE,
        "location": resource.body["location"],
        "tags": resource.body.get("tags", {}),
        "instanceId": str(inst.instance_id),
        "sku": {
            "name": resource.body["sku"]["name"],
            "tier": resource.body["sku"].get("tier", "Standard"),
        },
        "etag": f'"{inst.generation}"',
        "properties": props,
    }


def vm_nic_configurations(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's NIC configurations as a VM shows them (with Azure's per-VM defaults)."""
    configurations = json.loads(json.dumps(profile.get("networkProfile", {}).get("networkInterfaceConfigurations", [])))
    for nic in configurations:
        nic.setdefault("properties", {}).setdefault("enableIPForwarding", False)
    return configurations


def base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


_FILTER_LATEST = re.compile(r"^\s*properties/latestModelApplied\s+eq\s+(true|false)\s*$", re.IGNORECASE)
_FILTER_POWER = re.compile(
    r"^\s*startswith\(\s*instanceView/statuses/code\s*,\s*'PowerState'\s*\)\s+eq\s+true\s*$", re.IGNORECASE
)


class VmFilter:
    def __init__(self, latest: bool | None, power: bool) -> None:
        self.latest = latest
        self.needs_view = power

    def __call__(self, vm: dict[str, Any]) -> bool:
        return self.latest is None or vm["properties"]["latestModelApplied"] == self.latest


def vm_filter(expression: str | None) -> VmFilter:
    """The $filter values Azure documents for VMSS VMs list."""
    if not expression:
        return VmFilter(None, False)
    match = _FILTER_LATEST.match(expression)
    if match:
        return VmFilter(match.group(1).lower() == "true", False)
    if _FILTER_POWER.match(expression):
        return VmFilter(None, True)
    raise bad_request(
        f"The $filter '{expression}' is not supported. Allowed: \"startswith(instanceView/statuses/code, "
        '\'PowerState\') eq true", "properties/latestModelApplied eq true", '
        '"properties/latestModelApplied eq false".',
        target="$filter",
    )


def mac_address(ip: str, index: int) -> str:
    octets = [0x00, 0x0D, 0x3A, *[int(p) for p in ip.split(".")[1:]]]
    octets[-1] = (octets[-1] + index) % 256
    return "-".join(f"{o:02X}" for o in octets)
