"""Resource groups (Microsoft.Resources/resourceGroups): every other resource lives in one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.mgmt.resource.resources.models as rm
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    merge_patch,
    new_etag,
    page_response,
    resource_response,
    route,
)
from switchyard_emulator.errors import ArmError, resource_group_not_found
from switchyard_emulator.ids import key_of, resource_group_id
from switchyard_emulator.resources.base import tags_of
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

TYPE = "Microsoft.Resources/resourceGroups"
TYPE_KEY = TYPE.lower()
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.()")


class ResourceGroups:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        em.ops.register("resourcegroup.delete", self._run_delete)

    def routes(self) -> list[Route]:
        v = apiversions.RESOURCE_GROUPS
        one = "/subscriptions/{sub}/resourcegroups/{rg}"
        return [
            route("GET", "/subscriptions/{sub}/resourcegroups", self.list, v, TYPE),
            route("GET,HEAD", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("PATCH", one, self.patch, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
        ]

    def _key(self, ctx: Ctx) -> str:
        return key_of(resource_group_id(ctx.subscription, ctx.params["rg"]))

    async def list(self, ctx: Ctx) -> Response:
        return page_response(ctx, [r.body for r in self.em.store.of_type(TYPE_KEY)])

    async def get(self, ctx: Ctx) -> Response:
        existing = self.em.store.get(self._key(ctx))
        if ctx.method == "HEAD":
            return Response(status_code=204 if existing else 404)
        if existing is None:
            raise resource_group_not_found(ctx.params["rg"])
        return resource_response(200, existing.body, existing.etag)

    async def put(self, ctx: Ctx) -> Response:
        name = ctx.params["rg"]
        if not name or len(name) > 90 or not set(name) <= _NAME_OK or name.endswith("."):
            raise ArmError(
                400,
                "InvalidResourceGroupName",
                f"Resource group name '{name}' is invalid: use up to 90 letters, digits, '-', '_', '.', '(' "
                "and ')', not ending in '.'.",
            )
        body = validate(ctx.json_body(), typespec_schema(rm.ResourceGroup))
        existing = self.em.store.get(self._key(ctx))
        check_preconditions(ctx, existing)
        return self._write(ctx, body, existing)

    async def patch(self, ctx: Ctx) -> Response:
        existing = self.em.store.get(self._key(ctx))
        if existing is None:
            raise resource_group_not_found(ctx.params["rg"])
        check_preconditions(ctx, existing)
        patch = validate(ctx.json_body(), typespec_schema(rm.ResourceGroupPatchable), keep_nulls=True)
        merged = merge_patch({k: v for k, v in existing.body.items() if k in ("location", "tags", "managedBy")}, patch)
        body = validate(merged, typespec_schema(rm.ResourceGroup))
        return self._write(ctx, body, existing)

    def _write(self, ctx: Ctx, body: dict[str, Any], existing: StoredResource | None) -> Response:
        if existing is not None and existing.body["properties"]["provisioningState"] == "Deleting":
            raise ArmError(
                409,
                "ResourceGroupBeingDeleted",
                f"The resource group '{existing.body['name']}' is being deleted.",
            )
        rg_id = existing.id if existing else resource_group_id(ctx.subscription, ctx.params["rg"])
        if existing and body["location"].replace(" ", "").lower() != existing.body["location"].replace(" ", "").lower():
            raise ArmError(
                409,
                "InvalidResourceGroupLocation",
                f"Invalid resource group location '{body['location']}'. The Resource group already exists in "
                f"location '{existing.body['location']}'.",
                target="location",
            )
        stored_body = {
            "id": rg_id,
            "name": rg_id.rsplit("/", 1)[-1],
            "type": TYPE,
            "location": existing.body["location"] if existing else body["location"],
            **tags_of(body),
            "properties": {"provisioningState": "Succeeded"},
        }
        if "managedBy" in body:
            stored_body["managedBy"] = body["managedBy"]
        resource = StoredResource(
            key=key_of(rg_id),
            id=rg_id,
            type_key=TYPE_KEY,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored_body,
            etag=new_etag(),
        )
        self.em.store.put(resource)
        return resource_response(200 if existing else 201, stored_body, resource.etag)

    async def delete(self, ctx: Ctx) -> Response:
        existing = self.em.store.get(self._key(ctx))
        if existing is None:
            raise resource_group_not_found(ctx.params["rg"])
        check_preconditions(ctx, existing)
        existing.body["properties"]["provisioningState"] = "Deleting"
        self.em.store.put(existing)
        op = self.em.ops.start(
            "resourcegroup.delete",
            existing.key,
            namespace="Microsoft.Resources",
            region=existing.body["location"],
        )
        return self.em.ops.accepted(ctx, op)

    async def _run_delete(self, op: OperationRecord) -> None:
        group = self.em.store.get(op.resource_key)
        if group is None:
            return None
        # the data plane first (processes, listeners), then the records
        for resource in self.em.store.list_in_group(group.rg_key):
            if resource.key.startswith(group.key + "/"):
                await self.em.scale_sets.purge(resource)
                await self.em.gateways.purge(resource)
        self.em.store.delete(group.key)
        await self.em.gateways.refresh_all()
        return None
