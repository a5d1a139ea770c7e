"""The emulator's Log Analytics workspace as an ARM resource (Microsoft.OperationalInsights/workspaces).

On Azure a workspace has two names: its ARM resource id, which a diagnostic setting's `workspaceId`
takes ("The full ARM resource ID of the Log Analytics workspace to which you would like to send
Diagnostic Logs", specification/monitor/resource-manager/Microsoft.Insights/preview/2021-05-01-preview/
diagnosticsSettings_API.json), and its customer id, which the query API takes
(`POST /v1/workspaces/{customerId}/query`); `properties.customerId` of the resource maps one to the
other. The emulator has exactly one workspace, in a resource group it owns; both are (re)created at
start. It serves GET and lists; creating, changing or deleting workspaces is not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import Ctx, Route, new_etag, now_iso, page_response, resource_response, route
from switchyard_emulator.errors import not_found, unsupported
from switchyard_emulator.identity import MONITOR_RESOURCE_GROUP, WORKSPACE_NAME
from switchyard_emulator.ids import key_of, resource_group_id
from switchyard_emulator.resources.base import ResourceKind
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.OperationalInsights"
TYPE = "Microsoft.OperationalInsights/workspaces"
TYPE_KEY = TYPE.lower()
LOCATION = "westus"


class Workspaces:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "workspaces")

    def routes(self) -> list[Route]:
        v = apiversions.WORKSPACES
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces"
        one = rg + "/{name}"
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.OperationalInsights/workspaces",
                self.list_all,
                v,
                TYPE,
            ),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT,PATCH,DELETE", one, self.refuse, v, TYPE),
        ]

    @property
    def resource_id(self) -> str:
        return self.em.identity.log_analytics_workspace_resource_id

    def ensure(self) -> None:
        """The emulator's resource group and workspace exist (a client may have deleted the group)."""
        sub = self.em.identity.subscription_id
        rg_id = resource_group_id(sub, MONITOR_RESOURCE_GROUP)
        store = self.em.store
        if store.get(key_of(rg_id)) is None:
            store.put(
                StoredResource(
                    key=key_of(rg_id),
                    id=rg_id,
                    type_key="microsoft.resources/resourcegroups",
                    rg_key=MONITOR_RESOURCE_GROUP.lower(),
                    parent_key=None,
                    body={
                        "id": rg_id,
                        "name": MONITOR_RESOURCE_GROUP,
                        "type": "Microsoft.Resources/resourceGroups",
                        "location": LOCATION,
                        "properties": {"provisioningState": "Succeeded"},
                    },
                    etag=new_etag(),
                )
            )
        if store.get(key_of(self.resource_id)) is None:
            created = now_iso()
            store.put(
                StoredResource(
                    key=key_of(self.resource_id),
                    id=self.resource_id,
                    type_key=TYPE_KEY,
                    rg_key=MONITOR_RESOURCE_GROUP.lower(),
                    parent_key=None,
                    body={
                        "id": self.resource_id,
                        "name": WORKSPACE_NAME,
                        "type": TYPE,
                        "location": LOCATION,
                        "properties": {
                            "customerId": self.em.identity.log_analytics_workspace_id,
                            "provisioningState": "Succeeded",
                            "sku": {"name": "PerGB2018"},
                            "retentionInDays": 30,
                            "publicNetworkAccessForIngestion": "Enabled",
                            "publicNetworkAccessForQuery": "Enabled",
                            "createdDate": created,
                            "modifiedDate": created,
                        },
                    },
                    etag=new_etag(),
                )
            )

    def by_customer_id(self, customer_id: str) -> StoredResource | None:
        """The workspace resource a query's workspace (customer) id names, if it still exists."""
        for resource in self.em.store.of_type(TYPE_KEY):
            if str(resource.body["properties"].get("customerId", "")).lower() == customer_id.lower():
                return resource
        return None

    async def list_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(TYPE_KEY, subscription=ctx.subscription)
        return page_response(ctx, [r.body for r in items])

    async def list_by_group(self, ctx: Ctx) -> Response:
        self.kind.lookup(ctx, "-")  # 404 ResourceGroupNotFound when the group does not exist
        return page_response(ctx, [r.body for r in self.em.store.of_type(TYPE_KEY, rg_key=ctx.params["rg"])])

    async def get(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            raise not_found(TYPE, ctx.params["name"], ctx.params["rg"])
        return resource_response(200, existing.body, existing.etag)

    async def refuse(self, ctx: Ctx) -> Response:
        raise unsupported(
            "The emulator has one Log Analytics workspace (its resource id and customer id are in "
            "emulator.json); it does not create, change or delete workspaces."
        )
