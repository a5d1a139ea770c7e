"""Azure Compute Gallery: galleries, image definitions and image versions.

An image version's source is what Azure accepts: a VHD page blob of one of the emulator's storage
accounts (`storageProfile.osDiskImage.source {uri, storageAccountId}`, the blob in Azurite) or a
managed image (`storageProfile.source.id`); never a local path. The image inside is a gzip'd tar
with manifest.json at its root. On create the emulator copies it into DIR/blobs/ by content hash
(as Azure copies a VHD), so deleting the blob or the managed image later does not matter.
Replication to the target regions takes a short, realistic time; the create LRO completes when
every region reports Completed (`$expand=ReplicationStatus` shows the progress). The artifact's
checks and copy: gallery_artifacts.py; managed images: managed_images.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
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
from switchyard_emulator.errors import ArmError, bad_request, conflict, unsupported
from switchyard_emulator.ids import key_of, parse_resource_id
from switchyard_emulator.resources.base import (
    ResourceKind,
    check_name,
    require_location,
    same_region,
    tags_of,
)
from switchyard_emulator.resources.gallery_artifacts import (
    SOURCE_URI,
    blob_path_in,
    copy_page_blob,
    require_blob_uri,
    source_of,
)
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import OperationRecord, StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Compute"
_VERSION_NAME = re.compile(r"^(\d{1,10})\.(\d{1,10})\.(\d{1,10})$")
# replication: the first region completes after this long, each further one a little later
_REPLICATION_FIRST_S = 0.6
_REPLICATION_STEP_S = 0.2


def version_key(name: str) -> tuple[int, ...]:
    match = _VERSION_NAME.match(name)
    return tuple(int(p) for p in match.groups()) if match else (-1,)


def _gallery_name_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.]{0,78}[A-Za-z0-9]|[A-Za-z0-9]", name))


class Galleries:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.galleries = ResourceKind(em, NS, "galleries")
        self.images = ResourceKind(em, NS, "galleries", "images")
        self.versions = ResourceKind(em, NS, "galleries", "images", "versions")
        self.blob_dir = em.state_dir / "blobs"
        em.ops.register("galleryversion.replicate", self._run_replication)

    def routes(self) -> list[Route]:
        v = apiversions.GALLERIES
        base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries"
        g = base + "/{gallery}"
        i = g + "/images/{image}"
        ver = i + "/versions/{version}"
        tg, ti, tv = self.galleries.full_type, self.images.full_type, self.versions.full_type
        return [
            route("GET", "/subscriptions/{sub}/providers/Microsoft.Compute/galleries", self.list_all, v, tg),
            route("GET", base, self.list_galleries, v, tg),
            route("GET", g, self.get_gallery, v, tg),
            route("PUT", g, self.put_gallery, v, tg),
            route("PATCH", g, self.patch_gallery, v, tg),
            route("DELETE", g, self.delete_gallery, v, tg),
            route("GET", g + "/images", self.list_images, v, ti),
            route("GET", i, self.get_image, v, ti),
            route("PUT", i, self.put_image, v, ti),
            route("PATCH", i, self.patch_image, v, ti),
            route("DELETE", i, self.delete_image, v, ti),
            route("GET", i + "/versions", self.list_versions, v, tv),
            route("GET", ver, self.get_version, v, tv),
            route("PUT", ver, self.put_version, v, tv),
            route("PATCH", ver, self.patch_version, v, tv),
            route("DELETE", ver, self.delete_version, v, tv),
        ]

    # -- galleries ---------------------------------------------------------------------------------

    def _render(self, resource: StoredResource) -> dict[str, Any]:
        return dict(resource.body)

    async def list_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(self.galleries.type_key, subscription=ctx.subscription)
        return page_response(ctx, [self._render(r) for r in items])

    async def list_galleries(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        items = self.em.store.of_type(self.galleries.type_key, rg_key=ctx.params["rg"])
        return page_response(ctx, [self._render(r) for r in items])

    async def get_gallery(self, ctx: Ctx) -> Response:
        existing = self.galleries.get_or_404(ctx, ctx.params["gallery"])
        return resource_response(200, self._render(existing), existing.etag)

    async def put_gallery(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), typespec_schema(cm.Gallery))
        return self._write_gallery(ctx, body)

    async def patch_gallery(self, ctx: Ctx) -> Response:
        existing = self.galleries.get_or_404(ctx, ctx.params["gallery"])
        patch = validate(ctx.json_body(), typespec_schema(cm.GalleryUpdate), keep_nulls=True)
        merged = merge_patch(_writable(existing.body), patch)
        return self._write_gallery(ctx, validate(merged, typespec_schema(cm.Gallery)))

    def _write_gallery(self, ctx: Ctx, body: dict[str, Any]) -> Response:
        name = ctx.params["gallery"]
        if not _gallery_name_ok(name):
            raise ArmError(
                400,
                "InvalidGalleryName",
                f"The gallery name '{name}' is invalid: use letters, digits, '.' and '_' (no '-'), up to 80.",
            )
        gallery_id, existing = self.galleries.lookup(ctx, name)
        check_preconditions(ctx, existing)
        location = require_location(body, existing)
        props = dict(body.get("properties", {}))
        props["identifier"] = {"uniqueName": f"{ctx.subscription}-{name.upper()}"}
        props["provisioningState"] = "Succeeded"
        stored = {
            "id": existing.id if existing else gallery_id,
            "name": existing.body["name"] if existing else name,
            "type": self.galleries.full_type,
            "location": location,
            **tags_of(body),
            "properties": props,
        }
        return self._save(ctx, stored, existing, self.galleries, parent_key=None)

    def _save(
        self,
        ctx: Ctx,
        stored: dict[str, Any],
        existing: StoredResource | None,
        kind: ResourceKind,
        *,
        parent_key: str | None,
        internal: dict[str, Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        etag = new_etag()
        resource = StoredResource(
            key=key_of(stored["id"]),
            id=stored["id"],
            type_key=kind.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=parent_key,
            body=stored,
            etag=etag,
            internal=internal if internal is not None else (existing.internal if existing else {}),
        )
        self.em.store.put(resource)
        return resource_response(status or (200 if existing else 201), self._render_any(resource), etag, headers)

    def _render_any(self, resource: StoredResource, *, expand_replication: bool = False) -> dict[str, Any]:
        if resource.type_key == self.versions.type_key:
            return self.render_version(resource, expand_replication=expand_replication)
        return dict(resource.body)

    async def delete_gallery(self, ctx: Ctx) -> Response:
        _, existing = self.galleries.lookup(ctx, ctx.params["gallery"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        if self.em.store.children(existing.key):
            raise conflict(
                f"The gallery '{existing.body['name']}' still has image definitions; delete them first.",
                code="CannotDeleteResource",
            )
        self.em.store.delete(existing.key)
        return json_response(200, None)

    # -- image definitions -------------------------------------------------------------------------

    async def list_images(self, ctx: Ctx) -> Response:
        gallery = self.galleries.get_or_404(ctx, ctx.params["gallery"])
        return page_response(ctx, [dict(r.body) for r in self.em.store.children(gallery.key)])

    async def get_image(self, ctx: Ctx) -> Response:
        existing = self.images.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"])
        return resource_response(200, dict(existing.body), existing.etag)

    async def put_image(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), typespec_schema(cm.GalleryImage))
        return self._write_image(ctx, body)

    async def patch_image(self, ctx: Ctx) -> Response:
        existing = self.images.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"])
        patch = validate(ctx.json_body(), typespec_schema(cm.GalleryImageUpdate), keep_nulls=True)
        merged = merge_patch(_writable(existing.body), patch)
        return self._write_image(ctx, validate(merged, typespec_schema(cm.GalleryImage)))

    def _write_image(self, ctx: Ctx, body: dict[str, Any]) -> Response:
        gallery = self.galleries.get_or_404(ctx, ctx.params["gallery"])
        name = ctx.params["image"]
        check_name(name, "gallery image")
        _, existing = self.images.lookup(ctx, ctx.params["gallery"], name)
        check_preconditions(ctx, existing)
        location = require_location(body, existing)
        props = dict(body.get("properties", {}))
        if existing is not None:
            for frozen in ("osType", "osState", "identifier", "hyperVGeneration"):
                old, new = existing.body["properties"].get(frozen), props.get(frozen)
                if new is not None and old is not None and json.dumps(old).lower() != json.dumps(new).lower():
                    raise ArmError(
                        409,
                        "PropertyChangeNotAllowed",
                        f"Changing property '{frozen}' of an image definition is not allowed.",
                        target=f"properties.{frozen}",
                    )
        props["provisioningState"] = "Succeeded"
        stored = {
            "id": existing.id if existing else f"{gallery.id}/images/{name}",
            "name": existing.body["name"] if existing else name,
            "type": self.images.full_type,
            "location": location,
            **tags_of(body),
            "properties": props,
        }
        return self._save(ctx, stored, existing, self.images, parent_key=gallery.key)

    async def delete_image(self, ctx: Ctx) -> Response:
        _, existing = self.images.lookup(ctx, ctx.params["gallery"], ctx.params["image"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        if self.em.store.children(existing.key):
            raise conflict(
                f"The image definition '{existing.body['name']}' still has versions; delete them first.",
                code="CannotDeleteResource",
            )
        self.em.store.delete(existing.key)
        return json_response(200, None)

    # -- image versions ----------------------------------------------------------------------------

    def replication(self, resource: StoredResource, at: float | None = None) -> list[dict[str, Any]]:
        """Per target region: state and progress, from the replication start time."""
        now = time.time() if at is None else at
        info = resource.internal.get("replication", {})
        started = float(info.get("started", 0.0))
        summary = []
        for index, region in enumerate(resource.body["properties"]["publishingProfile"]["targetRegions"]):
            duration = _REPLICATION_FIRST_S + _REPLICATION_STEP_S * index
            progress = 100 if duration <= 0 else min(100, int((now - started) / duration * 100))
            summary.append(
                {
                    "region": region["name"],
                    "state": "Completed" if progress >= 100 else "Replicating",
                    "details": "",
                    "progress": max(progress, 0),
                }
            )
        return summary

    def replication_done_at(self, resource: StoredResource) -> float:
        info = resource.internal.get("replication", {})
        regions = len(resource.body["properties"]["publishingProfile"]["targetRegions"])
        return float(info.get("started", 0.0)) + _REPLICATION_FIRST_S + _REPLICATION_STEP_S * max(regions - 1, 0)

    def render_version(self, resource: StoredResource, *, expand_replication: bool = False) -> dict[str, Any]:
        body = json.loads(json.dumps(resource.body))
        if expand_replication:
            summary = self.replication(resource)
            done = all(s["state"] == "Completed" for s in summary)
            body["properties"]["replicationStatus"] = {
                "aggregatedState": "Completed" if done else "InProgress",
                "summary": summary,
            }
        return body

    async def list_versions(self, ctx: Ctx) -> Response:
        image = self.images.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"])
        versions = sorted(self.em.store.children(image.key), key=lambda r: version_key(r.body["name"]))
        return page_response(ctx, [self.render_version(r) for r in versions])

    async def get_version(self, ctx: Ctx) -> Response:
        existing = self.versions.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"], ctx.params["version"])
        expand = ctx.query.get("$expand", "")
        if expand and expand.lower() not in ("replicationstatus", "uefisettings"):
            raise bad_request(
                f"The $expand value '{expand}' is not supported; use 'ReplicationStatus'.", target="$expand"
            )
        return resource_response(
            200,
            self.render_version(existing, expand_replication=expand.lower() == "replicationstatus"),
            existing.etag,
        )

    async def put_version(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), typespec_schema(cm.GalleryImageVersion))
        return await self._write_version(ctx, body)

    async def patch_version(self, ctx: Ctx) -> Response:
        existing = self.versions.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"], ctx.params["version"])
        patch = validate(ctx.json_body(), typespec_schema(cm.GalleryImageVersionUpdate), keep_nulls=True)
        merged = merge_patch(_writable(existing.body), patch)
        return await self._write_version(ctx, validate(merged, typespec_schema(cm.GalleryImageVersion)))

    async def _write_version(self, ctx: Ctx, body: dict[str, Any]) -> Response:
        image = self.images.get_or_404(ctx, ctx.params["gallery"], ctx.params["image"])
        name = ctx.params["version"]
        match = _VERSION_NAME.match(name)
        if not match or any(int(p) > 2**31 - 1 for p in match.groups()):
            raise ArmError(
                400,
                "InvalidParameter",
                f"The gallery image version name '{name}' is invalid: it must be MAJOR.MINOR.PATCH with each "
                "part a 32-bit integer.",
                target="galleryImageVersionName",
            )
        version_id, existing = self.versions.lookup(ctx, ctx.params["gallery"], ctx.params["image"], name)
        check_preconditions(ctx, existing)
        location = require_location(body, existing)
        props = body.get("properties", {})
        storage = props.get("storageProfile", {})
        internal = dict(existing.internal) if existing else {}
        if existing is not None:
            old_storage = _writable(existing.body)["properties"].get("storageProfile", {})
            if source_of(storage) != source_of(old_storage):
                raise ArmError(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing the source of an existing image version is not allowed.",
                    target="properties.storageProfile",
                )
            storage = existing.body["properties"]["storageProfile"]
        else:
            blob, manifest, size, source = await self._ingest_source(storage)
            internal["artifact"] = str(blob)
            internal["manifest"] = manifest
            internal["source"] = source
            storage = json.loads(json.dumps(storage))
            storage.setdefault("osDiskImage", {})
            storage["osDiskImage"]["sizeInGB"] = max(1, -(-size // (1 << 30)))
            storage["osDiskImage"].setdefault("hostCaching", "ReadOnly")

        publishing = dict(props.get("publishingProfile", {}))
        replica_count = publishing.get("replicaCount", 1)
        account_type = publishing.get("storageAccountType", "Standard_LRS")
        regions = publishing.get("targetRegions") or [{"name": location}]
        seen: set[str] = set()
        normalized_regions = []
        for i, region in enumerate(regions):
            region_key = region["name"].replace(" ", "").lower()
            if region_key in seen:
                raise bad_request(
                    f"Target region '{region['name']}' is listed twice.",
                    target=f"properties.publishingProfile.targetRegions[{i}].name",
                )
            seen.add(region_key)
            normalized_regions.append(
                {
                    "name": region["name"],
                    "regionalReplicaCount": region.get("regionalReplicaCount", replica_count),
                    "storageAccountType": region.get("storageAccountType", account_type),
                    **{
                        k: v
                        for k, v in region.items()
                        if k not in ("name", "regionalReplicaCount", "storageAccountType", "excludeFromLatest")
                    },
                    "excludeFromLatest": region.get("excludeFromLatest", False),
                }
            )
        if not any(same_region(r["name"], location) for r in normalized_regions):
            raise bad_request(
                f"The target regions must include the image version's own region '{location}'.",
                target="properties.publishingProfile.targetRegions",
            )
        publishing.update(
            {
                "targetRegions": normalized_regions,
                "replicaCount": replica_count,
                "storageAccountType": account_type,
                "publishedDate": existing.body["properties"]["publishingProfile"]["publishedDate"]
                if existing
                else now_iso(),
            }
        )
        safety = {
            "allowDeletionOfReplicatedLocations": False,
            "blockDeletionBeforeEndOfLife": False,
            **props.get("safetyProfile", {}),
            "reportedForPolicyViolation": False,
        }
        old_regions = (
            {
                r["name"].replace(" ", "").lower()
                for r in existing.body["properties"]["publishingProfile"]["targetRegions"]
            }
            if existing
            else set()
        )
        replicate = existing is None or old_regions != seen
        if replicate:
            state = "Creating" if existing is None else "Updating"
        else:  # a metadata update while replication still runs keeps the replication's state
            state = existing.body["properties"]["provisioningState"] if existing else "Succeeded"
        out_props = {
            **{k: v for k, v in props.items() if k not in ("publishingProfile", "storageProfile", "safetyProfile")},
            "publishingProfile": publishing,
            "storageProfile": storage,
            "safetyProfile": safety,
            "provisioningState": state,
        }
        stored = {
            "id": existing.id if existing else version_id,
            "name": existing.body["name"] if existing else name,
            "type": self.versions.full_type,
            "location": location,
            **tags_of(body),
            "properties": out_props,
        }
        if replicate:
            internal["replication"] = {"started": time.time()}
        headers: dict[str, str] = {}
        if replicate:
            op = self.em.ops.start("galleryversion.replicate", key_of(stored["id"]), namespace=NS, region=location)
            internal["operation"] = op.id
            headers = self.em.ops.headers(ctx, op, with_location=False)
        return self._save(
            ctx, stored, existing, self.versions, parent_key=image.key, internal=internal, headers=headers
        )

    async def _ingest_source(self, storage: dict[str, Any]) -> tuple[Path, dict[str, Any], int, str]:
        """The new version's OS disk, copied into the emulator's store (as Azure copies it: the version
        no longer depends on its source): from a page blob of one of the emulator's storage accounts
        (`osDiskImage.source {uri, storageAccountId}`) or from a managed image (`source.id`). Azure's
        sources: GalleryImageVersion_Create_WithVHD.json, ..._WithVmAsSource.json (the REST API spec
        examples, tests/fixtures/azure-rest-examples/compute/); a local path is none of them."""
        if storage.get("dataDiskImages"):
            raise unsupported(
                "The emulator runs images with an OS disk only: dataDiskImages are not modelled.",
                target="properties.storageProfile.dataDiskImages",
            )
        source = storage.get("source") or {}
        if source.get("virtualMachineId"):  # GalleryImageVersion_Create_WithVmAsSource.json
            raise unsupported(
                "The emulator does not model VMs as an image source: publish from a VHD page blob "
                "(osDiskImage.source {uri, storageAccountId}) or a managed image (storageProfile.source.id).",
                target="properties.storageProfile.source.virtualMachineId",
            )
        source_id = source.get("id")
        os_source = (storage.get("osDiskImage") or {}).get("source") or {}
        if source_id and (os_source.get("uri") or os_source.get("id")):
            raise bad_request(
                "Give the image version one source: storageProfile.source.id or osDiskImage.source, not both.",
                target="properties.storageProfile",
            )
        if source_id:
            target = "properties.storageProfile.source.id"
            if parse_resource_id(source_id, target=target).type_key != self.em.managed_images.kind.type_key:
                raise unsupported(
                    "The emulator publishes image versions from a managed image (Microsoft.Compute/images) or a "
                    f"VHD page blob; '{source_id}' is neither (VMs, disks, snapshots and other versions are not "
                    "modelled).",
                    target=target,
                )
            image, artifact, manifest = self.em.managed_images.artifact_of(source_id, target)
            return Path(artifact), manifest, Path(artifact).stat().st_size, image.id
        if os_source.get("id"):
            raise unsupported(
                "The emulator does not model disks or snapshots as an OS disk source: use "
                "osDiskImage.source {uri, storageAccountId} of a page blob, or storageProfile.source.id of a "
                "managed image.",
                target="properties.storageProfile.osDiskImage.source.id",
            )
        uri = require_blob_uri(os_source.get("uri"), SOURCE_URI)
        account_target = "properties.storageProfile.osDiskImage.source.storageAccountId"
        if not os_source.get("storageAccountId"):
            raise bad_request(
                "A VHD source needs the storageAccountId of the account that holds the blob.", target=account_target
            )
        account, secret = self.em.storage_accounts.account_of(os_source["storageAccountId"], account_target)
        if blob_path_in(uri, self.em.storage_accounts.blob_endpoint(account.body["name"])) is None:
            raise bad_request(
                f"The blob '{uri}' is not in storage account '{account.body['name']}' (its blob endpoint is "
                f"{self.em.storage_accounts.blob_endpoint(account.body['name'])}).",
                target=SOURCE_URI,
            )
        assert self.em.storage_accounts.storage is not None  # account_of found a served account
        blob, manifest, size = await asyncio.to_thread(
            copy_page_blob, self.em.storage_accounts.storage, secret, uri, self.blob_dir, SOURCE_URI
        )
        return blob, manifest, size, uri

    async def _run_replication(self, op: OperationRecord) -> None:
        while True:
            resource = self.em.store.get(op.resource_key)
            if resource is None:
                raise ArmError(404, "ResourceNotFound", "The image version was deleted while replicating.")
            remaining = self.replication_done_at(resource) - time.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.25))
        with self.em.store.write():
            resource = self.em.store.get(op.resource_key)
            if resource is not None and resource.internal.get("operation") == op.id:
                resource.body["properties"]["provisioningState"] = "Succeeded"
                self.em.store.put(resource)

    async def delete_version(self, ctx: Ctx) -> Response:
        _, existing = self.versions.lookup(ctx, ctx.params["gallery"], ctx.params["image"], ctx.params["version"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        # the blob stays: instances already running this version keep their artifact (as VMs keep disks)
        self.em.store.delete(existing.key)
        return json_response(200, None)

    # -- what scale sets ask -----------------------------------------------------------------------

    def resolve_image(self, image_ref_id: str, region: str, target: str) -> StoredResource:
        """An imageReference.id -> the image version to run: the version itself, or for an image
        definition id ("latest") the highest version not excluded from latest (here or in `region`)."""

        rid = parse_resource_id(image_ref_id, target=target)
        if rid.type_key == self.versions.type_key:
            version = self.em.store.get(rid.key)
            if version is None:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The gallery image version {image_ref_id} does not exist.",
                    target=target,
                )
            if version.body["properties"]["provisioningState"] not in ("Succeeded", "Updating"):
                raise conflict(
                    f"The gallery image version {version.id} is still replicating; wait for it to complete.",
                    code="GalleryImageVersionNotReady",
                    target=target,
                )
            return version
        if rid.type_key == self.images.type_key:
            image = self.em.store.get(rid.key)
            if image is None:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The gallery image {image_ref_id} does not exist.",
                    target=target,
                )
            latest = self.latest_version(image.key, region)
            if latest is None:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The gallery image {image.id} has no version that can be used as latest (replicated and "
                    "not excludeFromLatest).",
                    target=target,
                )
            return latest
        raise unsupported(
            "The emulator runs gallery images only: imageReference.id must be a gallery image version id or "
            f"a gallery image id (for latest), not '{image_ref_id}'.",
            target=target,
        )

    def latest_version(self, image_key: str, region: str) -> StoredResource | None:
        candidates = []
        for version in self.em.store.children(image_key):
            props = version.body["properties"]
            if props["provisioningState"] not in ("Succeeded", "Updating"):
                continue
            publishing = props["publishingProfile"]
            if publishing.get("excludeFromLatest"):
                continue
            regional = [r for r in publishing["targetRegions"] if same_region(r["name"], region)]
            if regional and regional[0].get("excludeFromLatest"):
                continue
            candidates.append(version)
        return max(candidates, key=lambda r: version_key(r.body["name"]), default=None)


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    """A stored body minus what the server computes, as the base of a PATCH merge."""
    out = json.loads(json.dumps({k: v for k, v in body.items() if k in ("location", "tags", "properties")}))
    return out
