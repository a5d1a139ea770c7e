"""A scale set's instance records and the actions on them.

Records: a loopback IP each, the model version and image version each runs, a generation bumped
whenever its process must be replaced. Actions (manualUpgrade, reimage, restart, delete instances,
and the same on one VM) change the records and answer 202; `converge` completes the operation of an
action or a model write once the data plane runs what the records say.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import azure.mgmt.compute.models as cm
from starlette.responses import Response

from switchyard_emulator.common import Ctx, new_etag
from switchyard_emulator.dataplane.api import InstanceRuntime
from switchyard_emulator.errors import ArmError, bad_request
from switchyard_emulator.ids import parse_resource_id
from switchyard_emulator.resources.base import ResourceKind
from switchyard_emulator.resources.scaleset_model import IMAGE_TARGET, NS
from switchyard_emulator.resources.scaleset_vms import vm_or_404
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import InstanceRecord, OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

_CONVERGE_TIMEOUT_S = 600.0


def allocate_ip(em: Emulator) -> str:
    """A loopback address no other instance of this emulator has (never 127.0.0.x). The block starts
    at a random offset per state dir, so emulators running side by side do not collide."""
    base_text = em.store.meta_get("ip_base")
    if base_text is None:
        base_text = str(random.randrange(1 << 16, 0xF00000, 1 << 8))
        em.store.meta_set("ip_base", base_text)
    base = int(base_text)
    used = {i.ip for i in em.store.all_instances()}
    while True:
        value = 0x7F000000 + base + em.store.next_counter("ip")
        if value & 0xFF in (0, 255):
            continue
        ip = str(ipaddress.IPv4Address(value))
        if ip not in used:
            return ip


def new_instance(
    em: Emulator,
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
        ip=allocate_ip(em),
        generation=1,
        model_version=model_version,
        image_version_id=image.id,
        artifact_path=image.internal["artifact"],
        service_port=int(image.internal["manifest"]["service_port"]),
        vm_id=str(uuid.uuid4()),
        created_at=now,
    )
    em.store.put_instance(inst)
    return inst


def move_to(em: Emulator, inst: InstanceRecord, model_version: int, image: StoredResource) -> None:
    inst.model_version = model_version
    reimage_to(em, inst, image)


def reimage_to(em: Emulator, inst: InstanceRecord, image: StoredResource) -> None:
    inst.generation += 1
    inst.image_version_id = image.id
    inst.artifact_path = image.internal["artifact"]
    inst.service_port = int(image.internal["manifest"]["service_port"])
    em.store.put_instance(inst)


class InstanceActions:
    """manualUpgrade / reimage / restart / delete of a scale set's instances (and of one VM)."""

    def __init__(self, em: Emulator, kind: ResourceKind, after_commit: Callable[[str], Awaitable[None]]) -> None:
        self.em = em
        self.kind = kind
        self._after_commit = after_commit

    # -- the actions ----------------------------------------------------------------------

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
                IMAGE_TARGET + ".id",
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
                    move_to(self.em, inst, model_version, current_image)
                elif action == "reimage":
                    image = exact_images.get(instance_id)
                    if image is not None:
                        reimage_to(self.em, inst, image)
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

    async def delete_vm(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        return await self._act(ctx, resource, [inst.instance_id], "delete")

    async def reimage_vm(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        body = validate(
            ctx.json_body(required=False) or {}, typespec_schema(cm.VirtualMachineScaleSetVMReimageParameters)
        )
        return await self._act(ctx, resource, [inst.instance_id], "reimage", body.get("exactVersion"))

    async def restart_vm(self, ctx: Ctx) -> Response:
        resource, inst = vm_or_404(self.em, self.kind, ctx)
        return await self._act(ctx, resource, [inst.instance_id], "restart")

    # -- deleting the scale set --------------------------------------------------------------------


async def converge(em: Emulator, op: OperationRecord) -> None:
    key = op.resource_key
    targets = {int(i): int(g) for i, g in op.params.get("targets", [])}
    deadline = op.started_at + _CONVERGE_TIMEOUT_S
    while True:
        resource = em.store.get(key)
        if resource is None:
            raise ArmError(409, "OperationPreempted", "The scale set was deleted before the operation completed.")
        instances = {i.instance_id: i for i in em.store.instances(key)}
        states = em.dataplane.instance_states(key)
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
                _finish(em, op, "Failed")
                raise _instance_error(inst, runtime)
        if not pending:
            _finish(em, op, "Succeeded")
            return
        if time.time() > deadline:
            _finish(em, op, "Failed")
            raise ArmError(
                500,
                "OSProvisioningTimedOut",
                f"Instances {', '.join(map(str, pending))} did not start listening within "
                f"{int(_CONVERGE_TIMEOUT_S)} s.",
            )
        await asyncio.sleep(0.1)


def _instance_error(inst: InstanceRecord, runtime: InstanceRuntime) -> ArmError:
    tail = "\n".join(runtime.log_tail[-10:])
    return ArmError(
        500,
        "VMProvisioningFailed",
        f"Instance {inst.instance_id} ({inst.name}) failed: its process exited with code "
        f"{runtime.exit_code}. Last log lines:\n{tail}",
    )


def _finish(em: Emulator, op: OperationRecord, state: str) -> None:
    if not op.params.get("set_state"):
        return
    with em.store.write():
        resource = em.store.get(op.resource_key)
        if resource is not None and resource.internal.get("operation") == op.id:
            resource.body["properties"]["provisioningState"] = state
            em.store.put(resource)


# -- VMs ---------------------------------------------------------------------------------------
