"""Virtual machine scale sets (Uniform), their VMs and their NICs.

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
import ipaddress
import json
import logging
import random
import time
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
    page_response,
    require_resource_group,
    resource_response,
    route,
)
from switchyard_emulator.dataplane.api import InstanceRuntime, InstanceSpec
from switchyard_emulator.errors import ArmError, bad_request, not_found, unsupported
from switchyard_emulator.ids import key_of, parse_resource_id
from switchyard_emulator.resources.base import ResourceKind, check_name, require_location, tags_of
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import InstanceRecord, OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.scalesets")

NS = "Microsoft.Compute"
TYPE = "Microsoft.Compute/virtualMachineScaleSets"
TYPE_KEY = TYPE.lower()
VM_TYPE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
_MODES = {"manual": "Manual", "automatic": "Automatic", "rolling": "Rolling"}
_MAX_CAPACITY = 100
_CONVERGE_TIMEOUT_S = 600.0
_IMAGE_TARGET = "properties.virtualMachineProfile.storageProfile.imageReference"


@dataclass(frozen=True)
class PoolMember:
    ip: str
    ip_configuration_id: str
    vmss_key: str
    instance_id: int


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("location", "tags", "sku", "properties", "identity", "zones", "plan")
    return json.loads(json.dumps({k: v for k, v in body.items() if k in keep}))


class ScaleSets:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "virtualMachineScaleSets")
        self._locks: dict[str, asyncio.Lock] = {}
        em.ops.register("scaleset.converge", self._run_converge)
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
            route("GET", one + "/instanceView", self.instance_view, v, TYPE),
            route("POST", one + "/manualupgrade", self.manual_upgrade, v, TYPE),
            route("POST", one + "/reimage", self.reimage, v, TYPE),
            route("POST", one + "/restart", self.restart, v, TYPE),
            route("POST", one + "/delete", self.delete_instances, v, TYPE),
            route("GET", one + "/virtualMachines", self.list_vms, v, vt),
            route("GET", vm, self.get_vm, v, vt),
            route("DELETE", vm, self.delete_vm, v, vt),
            route("GET", vm + "/instanceView", self.vm_instance_view, v, vt),
            route("POST", vm + "/reimage", self.reimage_vm, v, vt),
            route("POST", vm + "/restart", self.restart_vm, v, vt),
            # the network SDK's scale-set NIC operations (served under Microsoft.Compute)
            route("GET", one + "/networkInterfaces", self.list_nics, n, NIC_TYPE),
            route("GET", vm + "/networkInterfaces", self.list_vm_nics, n, NIC_TYPE),
            route("GET", nic, self.get_nic, n, NIC_TYPE),
            route("GET", nic + "/ipConfigurations", self.list_nic_ip_configurations, n, NIC_TYPE),
            route("GET", nic + "/ipConfigurations/{ipconfig}", self.get_nic_ip_configuration, n, NIC_TYPE),
        ]

    # -- reading -----------------------------------------------------------------------------------

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body = json.loads(json.dumps(resource.body))
        body["etag"] = resource.etag
        return body

    async def list_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(TYPE_KEY, subscription=ctx.subscription)
        return page_response(ctx, [self.render(r) for r in items])

    async def list_by_group(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        return page_response(ctx, [self.render(r) for r in self.em.store.of_type(TYPE_KEY, rg_key=ctx.params["rg"])])

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
        check_name(name, "virtual machine scale set", pattern=_VMSS_NAME)
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
        merged = merge_patch(_writable(existing.body), patch)
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
        body = _writable(existing.body)
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
        if not 0 <= capacity <= _MAX_CAPACITY:
            raise bad_request(
                f"sku.capacity must be between 0 and {_MAX_CAPACITY} in the emulator.", target="sku.capacity"
            )
        sku.setdefault("name", existing.body["sku"]["name"] if existing else "Standard_D2s_v3")
        sku.setdefault("tier", "Standard")
        props = dict(body.get("properties") or {})
        if str(props.get("orchestrationMode", "Uniform")).lower() != "uniform":
            raise unsupported("Only Uniform orchestration is supported.", target="properties.orchestrationMode")
        upgrade = dict(props.get("upgradePolicy") or {})
        mode = _MODES.get(str(upgrade.get("mode", "Manual")).lower())
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
        profile = self._complete_profile(profile)
        image = self._check_profile(profile, location)
        zones = body.get("zones") or (existing.body.get("zones") if existing else None) or []
        self.em.quotas.check_sku_available(vmss_id, location, str(sku["name"]), [str(z) for z in zones])
        self.em.quotas.check_scale_set_write(key, location, str(sku["name"]), capacity)
        model_changed = existing is None or _canonical(profile) != _canonical(models.get(current_version))
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
                    self._move_to(inst, model_version, image)
                    targets.append([inst.instance_id, inst.generation])
            if capacity > len(instances):
                for _ in range(capacity - len(instances)):
                    inst = self._new_instance(key, stored["name"], internal, model_version, image, now)
                    targets.append([inst.instance_id, inst.generation])
            elif capacity < len(instances):
                for inst in sorted(instances, key=lambda i: i.instance_id)[capacity:]:
                    self.em.store.delete_instance(key, inst.instance_id)
                    removed.append(inst.instance_id)
            in_use = {i.model_version for i in self.em.store.instances(key)} | {model_version}
            self.em.store.prune_models(key, in_use)
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

    def _complete_profile(self, profile: dict[str, Any]) -> dict[str, Any]:
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

    def _check_profile(self, profile: dict[str, Any], location: str) -> StoredResource:
        """The model's references must resolve: image (-> the version to run), subnets, gateway pools."""
        image_ref = profile.get("storageProfile", {}).get("imageReference") or {}
        if not image_ref.get("id"):
            if image_ref:
                raise unsupported(
                    "The emulator runs gallery images only: set imageReference.id to a gallery image version "
                    "(or a gallery image for 'latest'); marketplace references are not supported.",
                    target=_IMAGE_TARGET,
                )
            raise bad_request("imageReference.id is required.", target=f"{_IMAGE_TARGET}.id")
        image = self.em.galleries.resolve_image(image_ref["id"], location, f"{_IMAGE_TARGET}.id")
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
                self.em.networks.subnet_exists(subnet.get("id"), f"{target}.properties.subnet.id")
                for k, pool in enumerate(ipc_props.get("applicationGatewayBackendAddressPools", [])):
                    self._check_pool(
                        pool.get("id"), f"{target}.properties.applicationGatewayBackendAddressPools[{k}].id"
                    )
        return image

    def _check_pool(self, pool_id: Any, target: str) -> None:
        if not isinstance(pool_id, str):
            raise bad_request("A backend pool reference needs an id.", target=target)
        rid = parse_resource_id(pool_id, target=target)
        if rid.type_key != "microsoft.network/applicationgateways/backendaddresspools":
            raise bad_request(f"'{pool_id}' is not an application gateway backend pool id.", target=target)
        parent = rid.parent()
        assert parent is not None
        gateway = self.em.store.get(parent.key)
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
            # addresses, so no NIC may join it. Error code: the emulator's (see gateways.py).
            raise ArmError(
                400,
                "CannotMixIPBasedAddressesAndIPConfigurationsOnApplicationGatewayBackendAddressPool",
                f"Backend address pool '{pool['name']}' of gateway {gateway.id if gateway else ''} has "
                "backendAddresses: NIC IP configurations cannot join it. A pool holds either NIC IP "
                "configurations or IP addresses/FQDNs, never both.",
                target=target,
            )

    def _allocate_ip(self) -> str:
        """A loopback address no other instance of this emulator has (never 127.0.0.x). The block starts
        at a random offset per state dir, so emulators running side by side do not collide."""
        base_text = self.em.store.meta_get("ip_base")
        if base_text is None:
            base_text = str(random.randrange(1 << 16, 0xF00000, 1 << 8))
            self.em.store.meta_set("ip_base", base_text)
        base = int(base_text)
        used = {i.ip for i in self.em.store.all_instances()}
        while True:
            value = 0x7F000000 + base + self.em.store.next_counter("ip")
            if value & 0xFF in (0, 255):
                continue
            ip = str(ipaddress.IPv4Address(value))
            if ip not in used:
                return ip

    def _new_instance(
        self,
        key: str,
        name: str,
        internal: dict[str, Any],
        model_version: int,
        image: StoredResource,
        now: str,
    ) -> InstanceRecord:
        instance_id = int(internal["next_instance_id"])
        internal["next_instance_id"] = instance_id + 1
        inst = InstanceRecord(
            vmss_key=key,
            instance_id=instance_id,
            name=f"{name}_{instance_id}",
            ip=self._allocate_ip(),
            generation=1,
            model_version=model_version,
            image_version_id=image.id,
            artifact_path=image.internal["artifact"],
            service_port=int(image.internal["manifest"]["service_port"]),
            vm_id=str(uuid.uuid4()),
            created_at=now,
        )
        self.em.store.put_instance(inst)
        return inst

    def _move_to(self, inst: InstanceRecord, model_version: int, image: StoredResource) -> None:
        inst.model_version = model_version
        self._reimage_to(inst, image)

    def _reimage_to(self, inst: InstanceRecord, image: StoredResource) -> None:
        inst.generation += 1
        inst.image_version_id = image.id
        inst.artifact_path = image.internal["artifact"]
        inst.service_port = int(image.internal["manifest"]["service_port"])
        self.em.store.put_instance(inst)

    async def _after_commit(self, key: str) -> None:
        # gateways first: a removed instance leaves its pools (and drains) before its process stops
        await self.em.gateways.refresh_all()
        await self.push(key)

    # -- actions on instances ----------------------------------------------------------------------

    def _instance_ids(self, resource: StoredResource, requested: list[str] | None, target: str) -> list[int]:
        instances = {i.instance_id for i in self.em.store.instances(resource.key)}
        if requested is None:
            return sorted(instances)
        result = []
        for i, raw in enumerate(requested):
            try:
                value = int(raw)
            except (TypeError, ValueError):
                value = -1
            if value not in instances:
                raise bad_request(
                    f"Instance id '{raw}' is not an instance of scale set {resource.body['name']}.",
                    target=f"{target}[{i}]",
                )
            result.append(value)
        return result

    async def _act(
        self,
        ctx: Ctx,
        resource: StoredResource,
        ids: list[int],
        action: str,
        exact_version: str | None = None,
    ) -> Response:
        """Upgrade / reimage / restart / delete instances, then answer 202 with the operation."""
        key = resource.key
        if resource.body["properties"].get("provisioningState") == "Deleting":
            raise ArmError(409, "OperationNotAllowed", "The scale set is being deleted.")
        model_version = int(resource.internal["model_version"])
        targets: list[list[int]] = []
        removed: list[int] = []
        current_image: StoredResource | None = None
        instances_now = {i.instance_id: i for i in self.em.store.instances(key)}
        # resolve every image before anything is written or started: a bad exactVersion is a clean 400
        exact_images = {
            instance_id: self._image_for_reimage(instances_now[instance_id], exact_version)
            for instance_id in ids
            if action == "reimage" and exact_version
        }
        if action == "upgrade":
            profile = self.em.store.models(key)[model_version]
            current_image = self.em.galleries.resolve_image(
                profile["storageProfile"]["imageReference"]["id"],
                resource.body["location"],
                _IMAGE_TARGET + ".id",
            )
        op = self.em.ops.start(
            "scaleset.converge",
            key,
            namespace=NS,
            region=resource.body["location"],
            params={"set_state": False},
        )
        with self.em.store.write():
            instances = {i.instance_id: i for i in self.em.store.instances(key)}
            for instance_id in ids:
                inst = instances[instance_id]
                if action == "upgrade":
                    if inst.model_version == model_version:
                        continue  # already on the latest model: nothing to apply
                    assert current_image is not None
                    self._move_to(inst, model_version, current_image)
                elif action == "reimage":
                    image = exact_images.get(instance_id)
                    if image is not None:
                        self._reimage_to(inst, image)
                    else:
                        inst.generation += 1
                        self.em.store.put_instance(inst)
                elif action == "restart":
                    inst.generation += 1
                    self.em.store.put_instance(inst)
                elif action == "delete":
                    self.em.store.delete_instance(key, instance_id)
                    removed.append(instance_id)
                    continue
                targets.append([inst.instance_id, inst.generation])
            if action == "delete":
                resource.body["sku"]["capacity"] = len(self.em.store.instances(key))
                resource.etag = new_etag()
                in_use = {i.model_version for i in self.em.store.instances(key)} | {model_version}
                self.em.store.prune_models(key, in_use)
                self.em.store.put(resource)
            op.params["targets"] = targets
            op.params["removed"] = removed
            self.em.store.put_operation(op)
        await self._after_commit(key)
        return self.em.ops.accepted(ctx, op)

    def _image_for_reimage(self, inst: InstanceRecord, exact_version: str) -> StoredResource:
        current = parse_resource_id(inst.image_version_id, target="exactVersion")
        image_parent = current.parent()
        assert image_parent is not None
        version = self.em.store.get(f"{image_parent.key}/versions/{exact_version.lower()}")
        if version is None:
            raise bad_request(
                f"exactVersion '{exact_version}' is not a version of the instance's image {image_parent.id}.",
                target="exactVersion",
            )
        return version

    async def manual_upgrade(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        body = validate(ctx.json_body(), typespec_schema(cm.VirtualMachineScaleSetVMInstanceRequiredIDs))
        ids = self._instance_ids(resource, body["instanceIds"], "instanceIds")
        return await self._act(ctx, resource, ids, "upgrade")

    async def reimage(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        body = validate(
            ctx.json_body(required=False) or {}, typespec_schema(cm.VirtualMachineScaleSetReimageParameters)
        )
        ids = self._instance_ids(resource, body.get("instanceIds"), "instanceIds")
        return await self._act(ctx, resource, ids, "reimage", body.get("exactVersion"))

    async def restart(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        body = validate(ctx.json_body(required=False) or {}, typespec_schema(cm.VirtualMachineScaleSetVMInstanceIDs))
        ids = self._instance_ids(resource, body.get("instanceIds"), "instanceIds")
        return await self._act(ctx, resource, ids, "restart")

    async def delete_instances(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        body = validate(ctx.json_body(), typespec_schema(cm.VirtualMachineScaleSetVMInstanceRequiredIDs))
        ids = self._instance_ids(resource, body["instanceIds"], "instanceIds")
        return await self._act(ctx, resource, ids, "delete")

    def _vm_or_404(self, ctx: Ctx) -> tuple[StoredResource, InstanceRecord]:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        raw = ctx.params["instance"]
        for inst in self.em.store.instances(resource.key):
            if str(inst.instance_id) == raw:
                return resource, inst
        raise not_found(VM_TYPE, f"{resource.body['name']}/{raw}", ctx.params["rg"])

    async def delete_vm(self, ctx: Ctx) -> Response:
        resource, inst = self._vm_or_404(ctx)
        return await self._act(ctx, resource, [inst.instance_id], "delete")

    async def reimage_vm(self, ctx: Ctx) -> Response:
        resource, inst = self._vm_or_404(ctx)
        body = validate(
            ctx.json_body(required=False) or {}, typespec_schema(cm.VirtualMachineScaleSetVMReimageParameters)
        )
        return await self._act(ctx, resource, [inst.instance_id], "reimage", body.get("exactVersion"))

    async def restart_vm(self, ctx: Ctx) -> Response:
        resource, inst = self._vm_or_404(ctx)
        return await self._act(ctx, resource, [inst.instance_id], "restart")

    # -- deleting the scale set --------------------------------------------------------------------

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
        return [
            InstanceSpec(
                instance_id=str(inst.instance_id),
                vm_name=inst.name,
                ip=inst.ip,
                port=inst.service_port,
                artifact_path=inst.artifact_path,
                generation=inst.generation,
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

    def pool_members(self) -> dict[str, list[PoolMember]]:
        """Gateway pool key -> the instances whose (own) model puts their NIC in that pool."""
        members: dict[str, list[PoolMember]] = {}
        for resource in self.em.store.of_type(TYPE_KEY):
            if resource.body["properties"].get("provisioningState") == "Deleting":
                continue
            models = self.em.store.models(resource.key)
            for inst in self.em.store.instances(resource.key):
                for nic_id, ipc_id, ipc in self._ip_configurations(resource, inst, models):
                    del nic_id
                    for pool in ipc.get("properties", {}).get("applicationGatewayBackendAddressPools", []):
                        members.setdefault(key_of(pool["id"]), []).append(
                            PoolMember(inst.ip, ipc_id, resource.key, inst.instance_id)
                        )
        return members

    def addresses_in_vnet(self, vnet_key: str) -> list[str]:
        """The addresses of instances whose NICs (in the model each runs) are in a virtual network:
        the sources an NSG's VirtualNetwork tag covers (netsec.py)."""
        found = []
        for resource in self.em.store.of_type(TYPE_KEY):
            models = self.em.store.models(resource.key)
            for inst in self.em.store.instances(resource.key):
                for _nic, _ipc_id, ipc in self._ip_configurations(resource, inst, models):
                    subnet = ((ipc.get("properties") or {}).get("subnet") or {}).get("id", "")
                    if key_of(subnet.rstrip("/").rsplit("/", 2)[0]) == vnet_key:
                        found.append(inst.ip)
        return found

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

    async def _run_converge(self, op: OperationRecord) -> None:
        key = op.resource_key
        targets = {int(i): int(g) for i, g in op.params.get("targets", [])}
        deadline = op.started_at + _CONVERGE_TIMEOUT_S
        while True:
            resource = self.em.store.get(key)
            if resource is None:
                raise ArmError(409, "OperationPreempted", "The scale set was deleted before the operation completed.")
            instances = {i.instance_id: i for i in self.em.store.instances(key)}
            states = self.em.dataplane.instance_states(key)
            # removed instances: done once their process has stopped (as Azure's delete completes
            # when the VM is gone)
            pending = [
                instance_id
                for instance_id in op.params.get("removed", [])
                if (runtime := states.get(str(instance_id))) is not None and runtime.state != "stopped"
            ]
            for instance_id, generation in targets.items():
                inst = instances.get(instance_id)
                if inst is None or inst.generation != generation:
                    continue  # removed or replaced by a later operation: no longer this one's concern
                runtime = states.get(str(instance_id))
                if runtime is None or runtime.generation != generation or runtime.state in ("creating", "stopped"):
                    pending.append(instance_id)
                elif runtime.state == "failed":
                    self._finish(op, "Failed")
                    raise self._instance_error(inst, runtime)
            if not pending:
                self._finish(op, "Succeeded")
                return
            if time.time() > deadline:
                self._finish(op, "Failed")
                raise ArmError(
                    500,
                    "OSProvisioningTimedOut",
                    f"Instances {', '.join(map(str, pending))} did not start listening within "
                    f"{int(_CONVERGE_TIMEOUT_S)} s.",
                )
            await asyncio.sleep(0.1)

    def _instance_error(self, inst: InstanceRecord, runtime: InstanceRuntime) -> ArmError:
        tail = "\n".join(runtime.log_tail[-10:])
        return ArmError(
            500,
            "VMProvisioningFailed",
            f"Instance {inst.instance_id} ({inst.name}) failed: its process exited with code "
            f"{runtime.exit_code}. Last log lines:\n{tail}",
        )

    def _finish(self, op: OperationRecord, state: str) -> None:
        if not op.params.get("set_state"):
            return
        with self.em.store.write():
            resource = self.em.store.get(op.resource_key)
            if resource is not None and resource.internal.get("operation") == op.id:
                resource.body["properties"]["provisioningState"] = state
                self.em.store.put(resource)

    # -- VMs ---------------------------------------------------------------------------------------

    def _runtime_statuses(self, inst: InstanceRecord, runtime: InstanceRuntime | None) -> list[dict[str, Any]]:
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

    @staticmethod
    def _provisioning_state(statuses: list[dict[str, Any]]) -> str:
        code = statuses[0]["code"].split("/")[1]
        return code.capitalize()

    def _vm_instance_view(self, inst: InstanceRecord, runtime: InstanceRuntime | None) -> dict[str, Any]:
        statuses = self._runtime_statuses(inst, runtime)
        return {
            "platformUpdateDomain": inst.instance_id % 5,
            "platformFaultDomain": inst.instance_id % 2,
            "computerName": self._computer_name(inst, None),
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

    @staticmethod
    def _computer_name(inst: InstanceRecord, profile: dict[str, Any] | None) -> str:
        prefix = ((profile or {}).get("osProfile") or {}).get("computerNamePrefix") or inst.name.rsplit("_", 1)[0]
        return f"{prefix}{_base36(inst.instance_id):0>6}"

    def render_vm(
        self,
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
        statuses = self._runtime_statuses(inst, runtime)
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
                "computerName": self._computer_name(inst, profile),
                "secrets": os_profile.get("secrets", []),
                "allowExtensionOperations": True,
                "requireGuestProvisionSignal": True,
            }
        )
        props: dict[str, Any] = {
            "latestModelApplied": inst.model_version == int(resource.internal["model_version"]),
            "modelDefinitionApplied": "VirtualMachineScaleSet",
            "vmId": inst.vm_id,
            "provisioningState": self._provisioning_state(statuses),
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
            "networkProfileConfiguration": {"networkInterfaceConfigurations": self._vm_nic_configurations(profile)},
        }
        if with_instance_view:
            props["instanceView"] = self._vm_instance_view(inst, runtime)
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

    @staticmethod
    def _vm_nic_configurations(profile: dict[str, Any]) -> list[dict[str, Any]]:
        """The model's NIC configurations as a VM shows them (with Azure's per-VM defaults)."""
        configurations = json.loads(
            json.dumps(profile.get("networkProfile", {}).get("networkInterfaceConfigurations", []))
        )
        for nic in configurations:
            nic.setdefault("properties", {}).setdefault("enableIPForwarding", False)
        return configurations

    async def list_vms(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        expand = (ctx.query.get("$expand") or "").lower()
        select = (ctx.query.get("$select") or "").lower()
        if expand and expand != "instanceview":
            raise bad_request(f"The $expand value '{expand}' is not supported; use 'instanceView'.", target="$expand")
        if select and select not in ("instanceview", "instanceview/statuses"):
            raise bad_request(f"The $select value '{select}' is not supported; use 'instanceView'.", target="$select")
        keep = _vm_filter(ctx.query.get("$filter"))
        models = self.em.store.models(resource.key)
        states = self.em.dataplane.instance_states(resource.key)
        items = []
        for inst in self.em.store.instances(resource.key):
            vm = self.render_vm(
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
        resource, inst = self._vm_or_404(ctx)
        expand = (ctx.query.get("$expand") or "").lower()
        if expand and expand not in ("instanceview", "userdata", "resiliencyview"):
            raise bad_request(f"The $expand value '{expand}' is not supported; use 'instanceView'.", target="$expand")
        runtime = self.em.dataplane.instance_states(resource.key).get(str(inst.instance_id))
        vm = self.render_vm(
            resource,
            inst,
            self.em.store.models(resource.key),
            runtime,
            with_instance_view=expand == "instanceview",
            with_user_data=expand == "userdata",
        )
        return resource_response(200, vm, vm["etag"])

    async def vm_instance_view(self, ctx: Ctx) -> Response:
        resource, inst = self._vm_or_404(ctx)
        runtime = self.em.dataplane.instance_states(resource.key).get(str(inst.instance_id))
        return json_response(200, self._vm_instance_view(inst, runtime))

    async def instance_view(self, ctx: Ctx) -> Response:
        resource = self.kind.get_or_404(ctx, ctx.params["name"])
        states = self.em.dataplane.instance_states(resource.key)
        counts: dict[str, int] = {}
        for inst in self.em.store.instances(resource.key):
            code = self._runtime_statuses(inst, states.get(str(inst.instance_id)))[0]["code"]
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
                            "macAddress": _mac(inst.ip, n),
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
        resource, inst = self._vm_or_404(ctx)
        return page_response(ctx, self._nics(resource, inst.instance_id))

    def _nic_or_404(self, ctx: Ctx) -> dict[str, Any]:
        resource, inst = self._vm_or_404(ctx)
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


import re as _re  # noqa: E402 - kept next to its only users below

_VMSS_NAME = _re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")
_FILTER_LATEST = _re.compile(r"^\s*properties/latestModelApplied\s+eq\s+(true|false)\s*$", _re.IGNORECASE)
_FILTER_POWER = _re.compile(
    r"^\s*startswith\(\s*instanceView/statuses/code\s*,\s*'PowerState'\s*\)\s+eq\s+true\s*$", _re.IGNORECASE
)


class _VmFilter:
    def __init__(self, latest: bool | None, power: bool) -> None:
        self.latest = latest
        self.needs_view = power

    def __call__(self, vm: dict[str, Any]) -> bool:
        return self.latest is None or vm["properties"]["latestModelApplied"] == self.latest


def _vm_filter(expression: str | None) -> _VmFilter:
    """The $filter values Azure documents for VMSS VMs list."""
    if not expression:
        return _VmFilter(None, False)
    match = _FILTER_LATEST.match(expression)
    if match:
        return _VmFilter(match.group(1).lower() == "true", False)
    if _FILTER_POWER.match(expression):
        return _VmFilter(None, True)
    raise bad_request(
        f"The $filter '{expression}' is not supported. Allowed: \"startswith(instanceView/statuses/code, "
        '\'PowerState\') eq true", "properties/latestModelApplied eq true", '
        '"properties/latestModelApplied eq false".',
        target="$filter",
    )


def _mac(ip: str, index: int) -> str:
    octets = [0x00, 0x0D, 0x3A, *[int(p) for p in ip.split(".")[1:]]]
    octets[-1] = (octets[-1] + index) % 256
    return "-".join(f"{o:02X}" for o in octets)
