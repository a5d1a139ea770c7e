"""Storage accounts (Microsoft.Storage/storageAccounts): the control plane of the blob storage an
image's VHD is uploaded to. The blobs themselves live in Azurite (switchyard_emulator.azurite).

The operations, as the Azure REST API spec states them (specification/storage/resource-manager/
Microsoft.Storage/stable/2025-01-01/storage.json; examples StorageAccountCreate.json,
StorageAccountListKeys.json, StorageAccountGetProperties.json, StorageAccountDelete.json):
  * PUT creates asynchronously (StorageAccounts_Create: 200 or 202, `x-ms-long-running-operation`,
    final state via Location); a PUT of an account that exists updates it. Required: `sku`, `kind`,
    `location` (StorageAccountCreateParameters).
  * GET answers the account with `properties.primaryEndpoints.blob`, list by resource group and in
    the subscription, DELETE answers 200 (204 when it does not exist).
  * POST .../listKeys answers `{"keys": [{"keyName": "key1", "value", "permissions": "Full"}, ...]}`.
  * Account names are 3-24 digits and lower-case letters (AccountNameInvalid) and unique across
    Azure (409 StorageAccountAlreadyTaken) (https://learn.microsoft.com/azure/azure-resource-manager/
    management/resource-name-rules#microsoftstorage).

Stricter than Azure, because Azurite serves only the accounts fixed at its start: an account whose
name the emulator's Azurite does not serve is refused with 400 StorageAccountNotServed naming the
ones it serves; without Azurite (`--storage-file`) no account can be created. An account's blob
endpoint is path-style, Azurite's form on an IP address: https://127.0.0.1:PORT/ACCOUNT/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.mgmt.storage.models as sm
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.azurite import ACCOUNT_NAME, BlobStorage, StorageAccountSecret
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    new_etag,
    now_iso,
    resource_response,
    route,
)
from switchyard_emulator.errors import ArmError, bad_request
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import RenderedKind, ResourceKind, require_location, tags_of
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Storage"
TYPE = "Microsoft.Storage/storageAccounts"


class StorageAccounts(RenderedKind):
    def __init__(self, em: Emulator, storage: BlobStorage | None) -> None:
        self.em = em
        self.storage = storage
        self.kind = ResourceKind(em, NS, "storageAccounts")
        em.ops.register("storageaccount.create", self._run_create)

    def routes(self) -> list[Route]:
        v = apiversions.STORAGE
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts"
        one = rg + "/{name}"
        return [
            route("GET", "/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts", self.list_all, v, TYPE),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
            route("POST", one + "/listKeys", self.list_keys, v, TYPE),
        ]

    # -- what other kinds ask ----------------------------------------------------------------------

    def served(self, name: str) -> StorageAccountSecret | None:
        return self.storage.account(name.lower()) if self.storage else None

    def blob_endpoint(self, name: str) -> str:
        """The account's blob endpoint now (Azurite's port may change between starts)."""
        assert self.storage is not None
        return self.storage.account_url(name.lower())

    def account_of(self, storage_account_id: Any, target: str) -> tuple[StoredResource, StorageAccountSecret]:
        """A body's storageAccountId: an existing account of this emulator that Azurite serves."""
        _, account = self.kind.resolve(storage_account_id, target)
        secret = self.served(account.body["name"])
        if secret is None:  # created while another Azurite served it; its blobs are gone with it
            raise bad_request(
                f"The storage account '{account.body['name']}' is not served by the emulator's blob storage now.",
                target=target,
            )
        return account, secret

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body: dict[str, Any] = dict(resource.body)
        props = dict(body["properties"])
        if self.storage is not None:
            props["primaryEndpoints"] = {"blob": self.blob_endpoint(body["name"])}
        body["properties"] = props
        return body

    # -- operations --------------------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), typespec_schema(sm.StorageAccountCreateParameters))
        name = ctx.params["name"]
        if not ACCOUNT_NAME.match(name):
            raise ArmError(
                400,
                "AccountNameInvalid",
                f"{name} is not a valid storage account name. Storage account name must be between 3 and 24 "
                "characters in length and use numbers and lower-case letters only.",
                target="accountName",
            )
        account_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        taken = [
            r
            for r in self.em.store.of_type(self.kind.type_key)
            if r.body["name"] == name and r.key != key_of(account_id)
        ]
        if taken:
            raise ArmError(409, "StorageAccountAlreadyTaken", f"The storage account named {name} is already taken.")
        if self.storage is None:
            raise bad_request(
                "This emulator runs without blob storage, so it cannot create storage accounts: start it with "
                "--storage-file (the local stack and switchyard_emulator.testing start Azurite and pass it).",
                target="accountName",
                code="StorageAccountNotServed",
            )
        if self.served(name) is None:
            served = ", ".join(a.name for a in self.storage.accounts)
            raise bad_request(
                "The emulator's blob storage (Azurite) serves only the storage accounts fixed at its start "
                f"({served}); '{name}' is not one of them. Use one of those names (emulator.json's storage_accounts).",
                target="accountName",
                code="StorageAccountNotServed",
            )
        location = require_location(body, existing)
        props = {k: v for k, v in (body.get("properties") or {}).items()}
        props.setdefault("supportsHttpsTrafficOnly", True)
        props.setdefault("minimumTlsVersion", "TLS1_2")
        props.setdefault("allowSharedKeyAccess", True)
        props["creationTime"] = existing.body["properties"]["creationTime"] if existing else now_iso()
        props["primaryLocation"] = location
        props["statusOfPrimary"] = "available"
        props["provisioningState"] = "Succeeded"
        stored = {
            "id": existing.id if existing else account_id,
            "name": existing.body["name"] if existing else name,
            "type": TYPE,
            "location": location,
            "kind": body["kind"],
            "sku": {**body["sku"], "tier": "Premium" if str(body["sku"]["name"]).startswith("Premium") else "Standard"},
            **tags_of(body),
            "properties": props,
        }
        resource = StoredResource(
            key=key_of(stored["id"]),
            id=stored["id"],
            type_key=self.kind.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=new_etag(),
        )
        self.em.store.put(resource)
        if existing is not None:  # an update answers at once, as Azure's does
            return resource_response(200, self.render(resource), None)
        # a create answers 202 and is polled (final state via Location), as StorageAccounts_Create is
        op = self.em.ops.start("storageaccount.create", resource.key, namespace=NS, region=location)
        return json_response(202, None, self.em.ops.headers(ctx, op, with_location=True))

    async def _run_create(self, op: OperationRecord) -> dict[str, Any]:
        resource = self.em.store.get(op.resource_key)
        if resource is None:
            raise ArmError(404, "ResourceNotFound", "The storage account was deleted while it was being created.")
        return self.render(resource)

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        self.em.store.delete(existing.key)
        return json_response(200, None)

    async def list_keys(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        secret = self.served(existing.body["name"])
        if secret is None:
            raise bad_request(
                f"The storage account '{existing.body['name']}' is not served by the emulator's blob storage now.",
                code="StorageAccountNotServed",
            )
        created = existing.body["properties"]["creationTime"]
        # Azurite has one key per account; Azure has two. The second is the same key, so that a client
        # that rotates between them keeps working.
        keys = [
            {
                "keyName": f"key{i}",
                "value": secret.key.get_secret_value(),
                "permissions": "Full",
                "creationTime": created,
            }
            for i in (1, 2)
        ]
        return json_response(200, {"keys": keys})
