"""Virtual machine scale sets (Uniform): the routes, the model's create/update/delete, and handing
the instance records to the data plane. Their VMs and NICs: scaleset_vms.py; the model's checks:
scaleset_model.py; the instance records, the actions on them and the operations' completion:
scaleset_instances.py.

The control plane decides the instance records: ids "0", "1", ... never reused; name
`<scale set>_<id>`; a loopback IP each (unique across the emulator, never 127.0.0.x); the model
version each runs and a generation bumped whenever its process must be replaced. The data plane
(`sync_scale_set`) makes exactly those records run.

Upgrade policy (Azure semantics):
* Automatic / Rolling: a model change moves every instance to the new model (Rolling behaves like
  Automatic here: all instances at once);
* Manual: instances keep the model they run (`latestModelApplied=false`) until `manualUpgrade`
  (`update_instances`); `reimage` keeps the instance's model and image version (Azure: "if exact
  version is not provided, the OS disk is reimaged to the existing version"), or reimages to the
  `exactVersion` given, a version of the same image definition.
Scale out adds instances on the latest model (an image-definition reference resolves "latest" at
creation time, as Azure does); scale in removes the highest ids. A create/update/reimage/
manualUpgrade operation completes when the data plane reports the instances it touched running
their new generation, or fails with the instance's error (exit code and last log lines).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import azure.mgmt.compute.models as cm
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    merge_patch,
    new_etag,
    now_iso,
    resource_response,
    route,
)
from switchyard_emulator.dataplane.api import InstanceSpec
from switchyard_emulator.errors import ArmError, bad_request, not_found, unsupported
from switchyard_emulator.ids import key_of, vnet_key_of
from switchyard_emulator.resources.base import RenderedKind, ResourceKind, check_name, require_location, tags_of
from switchyard_emulator.resources.quotas import vm_memory_bytes
from switchyard_emulator.resources.scaleset_instances import InstanceActions, converge, move_to, new_instance
from switchyard_emulator.resources.scaleset_model import (
    MAX_CAPACITY,
    MODES,
    NIC_TYPE,
    NS,
    TYPE,
    TYPE_KEY,
    VM_TYPE,
    VMSS_NAME,
    canonical,
    check_profile,
    complete_profile,
    custom_data_of,
    writable,
)
from switchyard_emulator.resources.scaleset_vms import ScaleSetVms
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import InstanceRecord, OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.scalesets")


@dataclass(frozen=True)
class PoolMember:
    ip: str
    ip_configuration_id: str
    vmss_key: str
    instance_id: int


@dataclass(frozen=True)
class NetworkMembership:
    """Gateway pool key -> its member instances; virtual network key -> the addresses of the
    instances whose NICs are in it (the sources an NSG's VirtualNetwork tag covers, netsec.py)."""

    pools: dict[str, list[PoolMember]]
    vnets: dict[str, list[str]]


class ScaleSets(RenderedKind):
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "virtualMachineScaleSets")
        self._locks: dict[str, asyncio.Lock] = {}
        self._membership: tuple[int, NetworkMembership] | None = None  # (store generation, as read)
        self.vms = ScaleSetVms(em, self.kind)
        self.actions = InstanceActions(em, self.kind, self._after_commit)
        em.ops.register("scaleset.converge", functools.partial(converge, em))
        em.ops.register("scaleset.delete", self._run_delete)

    def routes(self) -> list[Route]:
        v = apiversions.SCALE_SETS
        n = apiversions.SCALE_SET_NICS
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets"
        one = rg + "/{name}"
        vm = one + "/virtualMachines/{instance}"
        nic = vm + "/networkInterfaces/{nic}"
        vt = VM_TYPE
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachineScaleSets",
                self.list_all,
                v,
                TYPE,
            ),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("PATCH", one, self.patch, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
            route("GET", one + "/instanceView", self.vms.instance_view, v, TYPE),
            route("POST", one + "/manualupgrade", self.actions.manual_upgrade, v, TYPE),
            route("POST", one + "/reimage", self.actions.reimage, v, TYPE),
            route("POST", one + "/restart", self.actions.restart, v, TYPE),
            route("POST", one + "/delete", self.actions.delete_instances, v, TYPE),
            route("GET", one + "/virtualMachines", self.vms.list_vms, v, vt),
            route("GET", vm, self.vms.get_vm, v, vt),
            route("DELETE", vm, self.actions.delete_vm, v, vt),
            route("GET", vm + "/instanceView", self.vms.vm_instance_view, v, vt),
            route("POST", vm + "/reimage", self.actions.reimage_vm, v, vt),
            route("POST", vm + "/restart", self.actions.restart_vm, v, vt),
            # the network SDK's scale-set NIC operations (served under Microsoft.Compute)
            route("GET", one + "/networkInterfaces", self.vms.list_nics, n, NIC_TYPE),
            route("GET", vm + "/networkInterfaces", self.vms.list_vm_nics, n, NIC_TYPE),
            route("GET", nic, self.vms.get_nic, n, NIC_TYPE),
            route("GET", nic + "/ipConfigurations", self.vms.list_nic_ip_configurations, n, NIC_TYPE),
            route("GET", nic + "/ipConfigurations/{ipconfig}", self.vms.get_nic_ip_configuration, n, NIC_TYPE),
        ]

    # -- reading -----------------------------------------------------------------------------------

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body = json.loads(json.dumps(resource.body))
        body["etag"] = resource.etag
        return body

    async def get(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        expand = ctx.query.get("$expand")
        if expand and expand.lower() != "userdata":
            raise bad_request(f"The $expand value '{expand}' is not supported; use 'userData'.", target="$expand")
        body = self.render(existing)
        if not expand:
            body.get("properties", {}).get("virtualMachineProfile", {}).pop("userData", None)
        return resource_response(200, body, existing.etag)

    # -- writing the model -------------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "virtual machine scale set", pattern=VMSS_NAME)
        vmss_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(cm.VirtualMachineScaleSet))
        resource, op = self._commit(existing.id if existing else vmss_id, ctx.params["rg"], existing, body)
        await self._after_commit(resource.key)
        return resource_response(
            200 if existing else 201,
            self.render(resource),
            resource.etag,
            self.em.ops.headers(ctx, op, with_location=False),
        )

    async def patch(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        check_preconditions(ctx, existing)
        patch = validate(ctx.json_body(), typespec_schema(cm.VirtualMachineScaleSetUpdate), keep_nulls=True)
        merged = merge_patch(writable(existing.body), patch)
        body = validate(merged, typespec_schema(cm.VirtualMachineScaleSet))
        resource, op = self._commit(existing.id, ctx.params["rg"], existing, body)
        await self._after_commit(resource.key)
        return resource_response(
            200, self.render(resource), resource.etag, self.em.ops.headers(ctx, op, with_location=False)
        )

    async def set_capacity(self, scale_set_id: str, capacity: int, reason: str) -> None:
        """Autoscale's path: the same update a PATCH of sku.capacity makes (ETag, instances, LRO)."""
        existing = self.em.store.get(key_of(scale_set_id))
        if existing is None:
            raise not_found(TYPE, scale_set_id.rsplit("/", 1)[-1])
        body = writable(existing.body)
        body["sku"]["capacity"] = capacity
        log.info(
            "autoscale sets %s capacity %s -> %s: %s",
            existing.id,
            existing.body["sku"]["capacity"],
            capacity,
            reason,
        )
        resource, _op = self._commit(existing.id, existing.rg_key, existing, body)
        await self._after_commit(resource.key)

    def _commit(
        self, vmss_id: str, rg: str, existing: StoredResource | None, body: dict[str, Any]
    ) -> tuple[StoredResource, OperationRecord]:
        """Validate the desired model against the world, then write it and the instance records at once."""
        key = key_of(vmss_id)
        if existing is not None and existing.body["properties"].get("provisioningState") == "Deleting":
            raise ArmError(409, "OperationNotAllowed", "The scale set is being deleted.")
        location = require_location(body, existing)
        sku = dict(body.get("sku") or {})
        if "capacity" not in sku:
            if existing is None:
                raise bad_request("Required parameter 'sku.capacity' is missing.", target="sku.capacity")
            sku["capacity"] = existing.body["sku"]["capacity"]
        capacity = sku["capacity"]
        if not 0 <= capacity <= MAX_CAPACITY:
            raise bad_request(
                f"sku.capacity must be between 0 and {MAX_CAPACITY} in the emulator.", target="sku.capacity"
            )
        sku.setdefault("name", existing.body["sku"]["name"] if existing else "Standard_D2s_v3")
        sku.setdefault("tier", "Standard")
        props = dict(body.get("properties") or {})
        if str(props.get("orchestrationMode", "Uniform")).lower() != "uniform":
            raise unsupported("Only Uniform orchestration is supported.", target="properties.orchestrationMode")
        upgrade = dict(props.get("upgradePolicy") or {})
        mode = MODES.get(str(upgrade.get("mode", "Manual")).lower())
        if mode is None:
            raise bad_request(
                f"upgradePolicy.mode '{upgrade.get('mode')}' is not one of Manual, Automatic, Rolling.",
                target="properties.upgradePolicy.mode",
            )
        upgrade["mode"] = mode
        current_version = int(existing.internal.get("model_version", 0)) if existing else 0
        models = self.em.store.models(key) if existing else {}
        profile = props.get("virtualMachineProfile")
        if profile is None:
            if existing is None:
                raise bad_request(
                    "A scale set needs a virtualMachineProfile.", target="properties.virtualMachineProfile"
                )
            profile = models[current_version]
        custom_data_by_model: dict[str, str] = dict(existing.internal.get("custom_data", {})) if existing else {}
        custom_data = custom_data_of(profile, custom_data_by_model.get(str(current_version)))
        profile = complete_profile(profile)
        image = check_profile(self.em, profile, location)
        zones = body.get("zones") or (existing.body.get("zones") if existing else None) or []
        self.em.quotas.check_sku_available(vmss_id, location, str(sku["name"]), [str(z) for z in zones])
        self.em.quotas.check_scale_set_write(key, location, str(sku["name"]), capacity)
        model_changed = (
            existing is None
            or canonical(profile) != canonical(models.get(current_version))
            or custom_data != custom_data_by_model.get(str(current_version))
        )
        model_version = current_version + 1 if model_changed else current_version

        internal: dict[str, Any] = dict(existing.internal) if existing else {"next_instance_id": 0}
        internal["model_version"] = model_version
        now = now_iso()
        stored = {
            "id": vmss_id,
            "name": existing.body["name"] if existing else vmss_id.rsplit("/", 1)[-1],
            "type": TYPE,
            "location": location,
            **tags_of(body),
            "sku": sku,
            "properties": {
                **{k: v for k, v in props.items() if k not in ("virtualMachineProfile", "upgradePolicy")},
                "singlePlacementGroup": props.get("singlePlacementGroup", True),
                "orchestrationMode": "Uniform",
                "upgradePolicy": upgrade,
                "virtualMachineProfile": profile,
                "provisioningState": "Updating" if existing else "Creating",
                "overprovision": props.get("overprovision", False),
                "uniqueId": existing.body["properties"]["uniqueId"] if existing else str(uuid.uuid4()),
                "timeCreated": existing.body["properties"]["timeCreated"] if existing else now,
            },
        }
        for optional in ("zones", "identity", "plan"):
            if body.get(optional):
                stored[optional] = body[optional]
        targets: list[list[int]] = []
        removed: list[int] = []
        op = self.em.ops.start("scaleset.converge", key, namespace=NS, region=location, params={"set_state": True})
        internal["operation"] = op.id
        with self.em.store.write():
            if model_changed:
                self.em.store.put_model(key, model_version, profile)
            instances = self.em.store.instances(key)
            if model_changed and mode != "Manual":
                for inst in instances:
                    move_to(self.em, inst, model_version, image)
                    targets.append([inst.instance_id, inst.generation])
            if capacity > len(instances):
                for _ in range(capacity - len(instances)):
                    inst = new_instance(self.em, key, stored["name"], internal, model_version, image, now)
                    targets.append([inst.instance_id, inst.generation])
            elif capacity < len(instances):
                for inst in sorted(instances, key=lambda i: i.instance_id)[capacity:]:
                    self.em.store.delete_instance(key, inst.instance_id)
                    removed.append(inst.instance_id)
            in_use = {i.model_version for i in self.em.store.instances(key)} | {model_version}
            self.em.store.prune_models(key, in_use)
            # Kept beside the models, never in them: a model is what the VMs' GET shows, and Azure
            # returns no customData.
            if custom_data is not None:
                custom_data_by_model[str(model_version)] = custom_data
            internal["custom_data"] = {v: data for v, data in custom_data_by_model.items() if int(v) in in_use}
            resource = StoredResource(
                key=key,
                id=vmss_id,
                type_key=TYPE_KEY,
                rg_key=rg.lower(),
                parent_key=None,
                body=stored,
                etag=new_etag(),
                internal=internal,
            )
            self.em.store.put(resource)
            op.params["targets"] = targets
            op.params["removed"] = removed
            self.em.store.put_operation(op)
        return resource, op

    async def _after_commit(self, key: str) -> None:
        # gateways first: a removed instance leaves its pools (and drains) before its process stops
        await self.em.gateways.refresh_all()
        await self.push(key)

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        existing.body["properties"]["provisioningState"] = "Deleting"
        op = self.em.ops.start("scaleset.delete", existing.key, namespace=NS, region=existing.body["location"])
        existing.internal["operation"] = op.id
        self.em.store.put(existing)
        return self.em.ops.accepted(ctx, op)

    async def _run_delete(self, op: OperationRecord) -> None:
        resource = self.em.store.get(op.resource_key)
        if resource is None:
            return
        await self.em.gateways.refresh_all()  # its instances leave their pools first
        await self.purge(resource)
        self.em.store.delete(resource.key)

    async def purge(self, resource: StoredResource) -> None:
        """Stop every process of a scale set that is being deleted."""
        if resource.type_key != TYPE_KEY:
            return
        async with self._lock(resource.key):
            await self.em.dataplane.remove_scale_set(resource.key)

    # -- the data plane ----------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def specs(self, key: str) -> list[InstanceSpec]:
        resource = self.em.store.get(key)
        memory_bytes = vm_memory_bytes(str(resource.body["sku"]["name"])) if resource is not None else None
        custom_data = resource.internal.get("custom_data", {}) if resource is not None else {}
        return [
            InstanceSpec(
                instance_id=str(inst.instance_id),
                vm_name=inst.name,
                ip=inst.ip,
                port=inst.service_port,
                artifact_path=inst.artifact_path,
                generation=inst.generation,
                memory_bytes=memory_bytes,
                custom_data=custom_data.get(str(inst.model_version)),
            )
            for inst in self.em.store.instances(key)
        ]

    async def push(self, key: str) -> None:
        """Hand the scale set's instance records to the data plane (serialized per scale set, read
        fresh under the lock, so a later write is never overtaken by an earlier one)."""
        async with self._lock(key):
            resource = self.em.store.get(key)
            if resource is None or resource.body["properties"].get("provisioningState") == "Deleting":
                return
            await self.em.dataplane.sync_scale_set(key, self.specs(key))

    async def replay(self) -> None:
        for resource in self.em.store.of_type(TYPE_KEY):
            await self.push(resource.key)

    def network_membership(self) -> NetworkMembership:
        """Where every instance's NIC (in the model each runs) sits: the gateway pools it is a member
        of, and the virtual network of its subnet. Every gateway read and refresh asks, so it is
        read in one pass over the scale sets and kept until the store changes (read-only)."""
        generation = self.em.store.generation  # before reading: a change meanwhile reads again
        cached = self._membership
        if cached is not None and cached[0] == generation:
            return cached[1]
        membership = self._read_membership()
        self._membership = (generation, membership)
        return membership

    def _read_membership(self) -> NetworkMembership:
        membership = NetworkMembership(pools={}, vnets={})
        for resource in self.em.store.of_type(TYPE_KEY):
            # A scale set being deleted has left its pools (its instances drain first) but its
            # instances still hold their addresses in the network until they are gone.
            deleting = resource.body["properties"].get("provisioningState") == "Deleting"
            models = self.em.store.models(resource.key)
            for inst in self.em.store.instances(resource.key):
                for _nic, ipc_id, ipc in self._ip_configurations(resource, inst, models):
                    props = ipc.get("properties") or {}
                    subnet = (props.get("subnet") or {}).get("id", "")
                    membership.vnets.setdefault(vnet_key_of(subnet), []).append(inst.ip)
                    if deleting:
                        continue
                    for pool in props.get("applicationGatewayBackendAddressPools", []):
                        membership.pools.setdefault(key_of(pool["id"]), []).append(
                            PoolMember(inst.ip, ipc_id, resource.key, inst.instance_id)
                        )
        return membership

    def _ip_configurations(
        self, resource: StoredResource, inst: InstanceRecord, models: dict[int, dict[str, Any]]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        profile = models.get(inst.model_version, {})
        found = []
        for nic in profile.get("networkProfile", {}).get("networkInterfaceConfigurations", []):
            nic_id = f"{resource.id}/virtualMachines/{inst.instance_id}/networkInterfaces/{nic['name']}"
            for ipc in nic.get("properties", {}).get("ipConfigurations", []):
                found.append((nic_id, f"{nic_id}/ipConfigurations/{ipc['name']}", ipc))
        return found
