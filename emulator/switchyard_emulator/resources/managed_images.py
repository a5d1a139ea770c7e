"""Managed images (Microsoft.Compute/images): an OS disk made from a VHD page blob, the source a
gallery image version can be published from (`storageProfile.source.id`), as Packer's Azure builder
leaves one behind.

As the Azure REST API spec has them (specification/compute/resource-manager/Microsoft.Compute/
ComputeRP/stable/2024-11-01/image.json; example "Create a virtual machine image from a blob",
ComputeRP/.../examples/imageExamples/Image_CreateFromABlob.json): PUT with
`properties.storageProfile.osDisk {osType, osState, blobUri}` (osType and osState required,
ImageOSDisk), answered 200/201; GET; DELETE 200/204. The emulator supports the blob source only:
`sourceVirtualMachine`, snapshots, managed disks and data disks are refused (NotSupportedByEmulator).

The blob must be a page blob of a storage account of this emulator (found by its blob endpoint,
since an image's blobUri comes without a storageAccountId), 512-aligned, and an image the emulator
can run; its bytes are copied into the emulator's store on create (gallery_artifacts.py), so the
image no longer depends on the blob. The source of an existing image cannot change.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import azure.mgmt.compute.models as cm
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
from switchyard_emulator.errors import ArmError, bad_request, unsupported
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import RenderedKind, ResourceKind, check_name, require_location, tags_of
from switchyard_emulator.resources.gallery_artifacts import blob_path_in, copy_page_blob, require_blob_uri
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Compute"
TYPE = "Microsoft.Compute/images"
BLOB_URI = "properties.storageProfile.osDisk.blobUri"


class ManagedImages(RenderedKind):
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "images")
        self.blob_dir = em.state_dir / "blobs"

    def routes(self) -> list[Route]:
        v = apiversions.SCALE_SETS  # the Compute RP's api-versions (the SDK sends one for both)
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/images"
        one = rg + "/{name}"
        return [
            route("GET", "/subscriptions/{sub}/providers/Microsoft.Compute/images", self.list_all, v, TYPE),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
        ]

    def render(self, resource: StoredResource) -> dict[str, Any]:
        return dict(resource.body)

    async def put(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), typespec_schema(cm.Image))
        name = ctx.params["name"]
        check_name(name, "image")
        image_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        location = require_location(body, existing)
        props = dict(body.get("properties") or {})
        storage = props.get("storageProfile") or {}
        os_disk = storage.get("osDisk")
        if props.get("sourceVirtualMachine") or storage.get("dataDisks"):
            raise unsupported(
                "The emulator makes managed images from a VHD page blob only (storageProfile.osDisk.blobUri); "
                "sourceVirtualMachine and data disks are not modelled.",
                target="properties.sourceVirtualMachine"
                if props.get("sourceVirtualMachine")
                else "properties.storageProfile.dataDisks",
            )
        if not os_disk:
            raise bad_request(
                "An image needs properties.storageProfile.osDisk.", target="properties.storageProfile.osDisk"
            )
        if os_disk.get("snapshot") or os_disk.get("managedDisk"):
            raise unsupported(
                "The emulator makes managed images from a VHD page blob only (osDisk.blobUri), not from snapshots or "
                "managed disks.",
                target="properties.storageProfile.osDisk",
            )
        uri = require_blob_uri(os_disk.get("blobUri"), BLOB_URI)
        internal: dict[str, Any] = dict(existing.internal) if existing else {}
        if existing is not None:
            old = existing.body["properties"]["storageProfile"]["osDisk"].get("blobUri")
            if old != uri:
                raise ArmError(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing property 'osDisk.blobUri' of an existing image is not allowed.",
                    target=BLOB_URI,
                )
        else:
            account, secret = self._account_holding(uri)
            assert self.em.storage_accounts.storage is not None  # an account exists only with storage
            blob, manifest, size = await asyncio.to_thread(
                copy_page_blob, self.em.storage_accounts.storage, secret, uri, self.blob_dir, BLOB_URI
            )
            internal.update(artifact=str(blob), manifest=manifest, storage_account_id=account.id)
            os_disk = {**os_disk, "diskSizeGB": os_disk.get("diskSizeGB") or max(1, -(-size // (1 << 30)))}
            os_disk.setdefault("caching", "ReadWrite")
            os_disk.setdefault("storageAccountType", "Standard_LRS")
        stored = {
            "id": existing.id if existing else image_id,
            "name": existing.body["name"] if existing else name,
            "type": TYPE,
            "location": location,
            **tags_of(body),
            "properties": {
                **{k: v for k, v in props.items() if k != "storageProfile"},
                "storageProfile": json.loads(json.dumps({**storage, "osDisk": os_disk}))
                if existing is None
                else existing.body["properties"]["storageProfile"],
                "hyperVGeneration": props.get("hyperVGeneration", "V1"),
                "provisioningState": "Succeeded",
            },
        }
        resource = StoredResource(
            key=key_of(stored["id"]),
            id=stored["id"],
            type_key=self.kind.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=new_etag(),
            internal=internal,
        )
        self.em.store.put(resource)
        return resource_response(200 if existing else 201, self.render(resource), resource.etag)

    def _account_holding(self, uri: str) -> tuple[StoredResource, Any]:
        """The emulator's storage account whose blob endpoint holds `uri`."""
        accounts = self.em.storage_accounts
        for account in self.em.store.of_type(accounts.kind.type_key):
            secret = accounts.served(account.body["name"])
            if secret is not None and blob_path_in(uri, accounts.blob_endpoint(account.body["name"])):
                return account, secret
        raise bad_request(
            f"The blob '{uri}' is not in a storage account of this subscription: create the account "
            "(Microsoft.Storage/storageAccounts) and upload the VHD as a page blob there.",
            target=BLOB_URI,
        )

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        # gallery image versions made from it keep their own copy, as on Azure
        self.em.store.delete(existing.key)
        return json_response(200, None)

    def artifact_of(self, image_id: Any, target: str) -> tuple[StoredResource, str, dict[str, Any]]:
        """A body's reference to a managed image: it must exist; its stored artifact and manifest."""
        _, image = self.kind.resolve(image_id, target)
        return image, str(image.internal["artifact"]), dict(image.internal["manifest"])
