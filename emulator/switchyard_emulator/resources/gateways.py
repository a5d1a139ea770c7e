"""Application Gateways (Standard_v2): validated like Azure, made real by the data plane.

Every internal reference (`<gateway id>/backendAddressPools/blue`, ...) must resolve, else 400
naming the field. Each pool's read-only `backendIPConfigurations` is recomputed from the scale sets
whose NIC ipConfigurations reference it, per the model each instance runs (Manual upgrade policy:
an instance not yet upgraded stays where its model put it). The ETag covers what a client writes,
so instances joining or leaving a pool do not invalidate a client's If-Match.

Frontends: one public (its listeners bind 127.0.0.1) and at most one private, a static address of
the gateway's subnet whose listeners bind its loopback alias (addresses.py). The NSG of the gateway's
subnet, if any, must let Azure's infrastructure in (a write is refused otherwise) and its inbound
rules are handed to the data plane per listener, which drops the connections they deny (netsec.py).

Here: the routes, the handlers, the operations and applying gateways to the data plane (refreshed
whenever scale-set membership moves). The body's checks: gateway_body.py; the rules that reach
beyond the body (frontends, ports, the subnet's NSG, backend pools): gateway_rules.py; the stored
gateway as the data plane's spec: gateway_spec.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import azure.mgmt.network.models as nm
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    new_etag,
    resource_response,
    route,
)
from switchyard_emulator.dataplane.api import (
    GatewaySpec,
)
from switchyard_emulator.errors import ArmError
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import (
    RenderedKind,
    ResourceKind,
    check_name,
    new_guid,
    referrers,
    require_location,
    tags_of,
)
from switchyard_emulator.resources.gateway_body import COLLECTIONS, check_properties
from switchyard_emulator.resources.gateway_rules import NS, TYPE, TYPE_KEY, check_infrastructure
from switchyard_emulator.resources.gateway_spec import FleetView, build_spec
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.gateways")


class Gateways(RenderedKind):
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "applicationGateways")
        self._applied: dict[str, GatewaySpec] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        em.ops.register("gateway.apply", self._run_apply)
        em.ops.register("gateway.delete", self._run_delete)
        em.ops.register("gateway.backendhealth", self._run_backend_health)

    def routes(self) -> list[Route]:
        v = apiversions.NETWORK
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways"
        one = rg + "/{name}"
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Network/applicationGateways",
                self.list_all,
                v,
                TYPE,
            ),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("PATCH", one, self.patch_tags, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
            route("POST", one + "/backendhealth", self.backend_health, v, TYPE),
        ]

    # -- reading -----------------------------------------------------------------------------------

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body = json.loads(json.dumps(resource.body))
        body["etag"] = resource.etag
        props = body["properties"]
        for collection in COLLECTIONS:
            for item in props.get(collection, []):
                item["etag"] = resource.etag
        members = self.em.scale_sets.network_membership().pools
        for pool in props.get("backendAddressPools", []):
            configs = [{"id": m.ip_configuration_id} for m in members.get(key_of(pool["id"]), [])]
            if configs:
                pool["properties"]["backendIPConfigurations"] = configs
        return body

    # -- writing -----------------------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "application gateway")
        gateway_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(nm.ApplicationGateway))
        location = require_location(body, existing)
        if existing is not None:
            gateway_id = existing.id
        props = check_properties(
            self.em, gateway_id, body.get("properties", {}), existing, self._applied.get(key_of(gateway_id))
        )
        props["provisioningState"] = "Updating"
        props["operationalState"] = "Running"
        props["resourceGuid"] = existing.body["properties"]["resourceGuid"] if existing else new_guid()
        stored = {
            "id": gateway_id,
            "name": existing.body["name"] if existing else name,
            "type": TYPE,
            "location": location,
            **tags_of(body),
            "properties": props,
        }
        for optional in ("zones", "identity"):
            if body.get(optional):
                stored[optional] = body[optional]
        op = self.em.ops.start("gateway.apply", key_of(gateway_id), namespace=NS, region=location)
        resource = StoredResource(
            key=key_of(gateway_id),
            id=gateway_id,
            type_key=TYPE_KEY,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=new_etag(),
            internal={"operation": op.id},
        )
        self.em.store.put(resource)
        return resource_response(
            200 if existing else 201,
            self.render(resource),
            resource.etag,
            self.em.ops.headers(ctx, op, with_location=False),
        )

    def check_infrastructure_access(self, subnet_id: str, nsg: StoredResource) -> None:
        """Refuse an NSG (or its association) that would block Azure's infrastructure on the subnet of
        a v2 gateway (every gateway of the emulator is v2)."""
        for gateway in self.em.store.of_type(TYPE_KEY):
            configs = gateway.body["properties"].get("gatewayIPConfigurations", [])
            if any(key_of(c["properties"]["subnet"]["id"]) == key_of(subnet_id) for c in configs):
                check_infrastructure(gateway.id, subnet_id, nsg)

    async def patch_tags(self, ctx: Ctx) -> Response:
        existing = self.kind.replace_tags(ctx, nm.TagsObject)
        return resource_response(200, self.render(existing), existing.etag)

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        users = referrers(self.em, existing.id, type_keys=("microsoft.compute/virtualmachinescalesets",))
        if users:
            raise ArmError(
                400,
                "InUseApplicationGatewayCannotBeDeleted",
                f"Application gateway {existing.body['name']} has backend pools referenced by {', '.join(users)}.",
            )
        existing.body["properties"]["provisioningState"] = "Deleting"
        self.em.store.put(existing)
        op = self.em.ops.start("gateway.delete", existing.key, namespace=NS, region=existing.body["location"])
        return self.em.ops.accepted(ctx, op)

    async def backend_health(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        op = self.em.ops.start("gateway.backendhealth", existing.key, namespace=NS, region=existing.body["location"])
        return self.em.ops.accepted(ctx, op)

    # -- operations --------------------------------------------------------------------------------

    async def _run_apply(self, op: OperationRecord) -> None:
        try:
            await self.push(op.resource_key)
        except ArmError:
            self._finish(op, "Failed")
            raise
        except Exception as exc:
            self._finish(op, "Failed")
            raise ArmError(500, "ApplicationGatewayApplyFailed", f"The gateway could not be applied: {exc}") from exc
        self._finish(op, "Succeeded")

    def _finish(self, op: OperationRecord, state: str) -> None:
        with self.em.store.write():
            resource = self.em.store.get(op.resource_key)
            if resource is not None and resource.internal.get("operation") == op.id:
                resource.body["properties"]["provisioningState"] = state
                self.em.store.put(resource)

    async def _run_delete(self, op: OperationRecord) -> None:
        resource = self.em.store.get(op.resource_key)
        if resource is not None:
            await self.purge(resource)
            self.em.store.delete(resource.key)

    async def _run_backend_health(self, op: OperationRecord) -> dict[str, Any]:
        resource = self.em.store.get(op.resource_key)
        if resource is None:
            raise ArmError(404, "ResourceNotFound", "The application gateway was deleted.")
        health = await self.em.dataplane.backend_health(resource.key)
        members = self.em.scale_sets.network_membership().pools
        props = resource.body["properties"]
        pools = []
        for pool in props.get("backendAddressPools", []):
            ip_configs = {m.ip: m.ip_configuration_id for m in members.get(key_of(pool["id"]), [])}
            settings_ids: list[str] = []
            for rule in props.get("requestRoutingRules", []):
                rp = rule["properties"]
                if key_of(rp["backendAddressPool"]["id"]) == key_of(pool["id"]):
                    settings_id = rp["backendHttpSettings"]["id"]
                    if key_of(settings_id) not in {key_of(s) for s in settings_ids}:
                        settings_ids.append(settings_id)
            servers = []
            for server in _pool_health(health, pool["name"]):
                entry: dict[str, Any] = {"address": server.address, "health": server.health}
                if server.log:
                    entry["healthProbeLog"] = server.log
                if server.address in ip_configs:
                    entry["ipConfiguration"] = {"id": ip_configs[server.address]}
                servers.append(entry)
            pools.append(
                {
                    "backendAddressPool": {"id": pool["id"]},
                    "backendHttpSettingsCollection": [
                        {"backendHttpSettings": {"id": s}, "servers": servers} for s in settings_ids
                    ],
                }
            )
        return {"backendAddressPools": pools}

    # -- the data plane ----------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def push(self, key: str) -> None:
        """Hand the gateway's current configuration to the data plane (returns once it serves it)."""
        async with self._lock(key):
            resource = self.em.store.get(key)
            if resource is None:
                return
            spec = build_spec(self.em, resource)
            await self.em.dataplane.apply_gateway(spec)
            self._applied[key] = spec

    async def refresh_all(self) -> None:
        """Re-apply every gateway whose resolved configuration changed (scale-set membership moved)."""
        view = FleetView(self.em)
        for resource in self.em.store.of_type(TYPE_KEY):
            if resource.key not in self._applied:
                continue  # never applied (failed or still applying): its own operation handles it
            if resource.body["properties"].get("provisioningState") == "Deleting":
                continue
            if build_spec(self.em, resource, view) == self._applied.get(resource.key):
                continue
            try:
                await self.push(resource.key)
            except Exception:
                log.exception("re-applying gateway %s failed", resource.id)

    async def replay(self) -> None:
        for resource in self.em.store.of_type(TYPE_KEY):
            if resource.body["properties"].get("provisioningState") == "Deleting":
                continue
            try:
                await self.push(resource.key)
            except Exception as exc:
                log.error("could not re-apply gateway %s after restart: %s", resource.id, exc)

    async def purge(self, resource: StoredResource) -> None:
        """Stop serving a gateway that is being deleted."""
        if resource.type_key != TYPE_KEY:
            return
        async with self._lock(resource.key):
            await self.em.dataplane.remove_gateway(resource.key)
            self._applied.pop(resource.key, None)


def _pool_health(health: dict[str, list[Any]], pool_name: str) -> list[Any]:
    for name, servers in health.items():
        if name.lower() == pool_name.lower():
            return servers
    return []
