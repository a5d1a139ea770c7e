"""The image gallery port on the Azure Compute Gallery: definitions, versions and their tags."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.wire import azure_errors, no_progress, wire
from switchyard.cloud.errors import OperationFailedError
from switchyard.cloud.ports import ImageSource, Progress
from switchyard.core.config import AzureEnvironment
from switchyard.core.state import ImageObservation

# how long a retry waits for the replication an earlier attempt started (Azure: minutes per region)
_REPLICATION_WAIT_S = 3600.0


def _storage_profile(source: ImageSource) -> dict[str, Any]:
    """Azure's two shapes: a managed image is `source.id`; a VHD blob is osDiskImage.source {uri,
    storageAccountId} (GalleryImageVersion_Create_WithVHD.json, Azure REST API specs)."""
    if source.image_id:
        return {"source": {"id": source.image_id}}
    if not (source.uri and source.storage_account_id):
        raise ValueError("an image source is a managed image id, or a blob URI with its storage account id")
    return {"osDiskImage": {"source": {"uri": source.uri, "storageAccountId": source.storage_account_id}}}


class AzureGallery:
    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
        self._clients = clients
        self._compute = clients.compute
        self._ids = ids
        self._environment = environment

    def ensure_gallery(self) -> None:
        env = self._environment
        with azure_errors(f"resource group {env.gallery_group}"):
            if not self._clients.resources.resource_groups.check_existence(env.gallery_group):
                self._clients.resources.resource_groups.create_or_update(
                    env.gallery_group, {"location": env.location, "tags": {"managedBy": "switchyard"}}
                )
        with azure_errors(f"gallery {env.gallery}"):
            try:
                self._compute.galleries.get(env.gallery_group, env.gallery)
                return
            except ResourceNotFoundError:
                pass
            self._compute.galleries.begin_create_or_update(
                env.gallery_group,
                env.gallery,
                {"location": env.location, "properties": {"description": "switchyard images"}},
            ).result()

    def ensure_image_definition(self, service: str, base: str) -> None:
        env = self._environment
        self.ensure_gallery()
        with azure_errors(f"gallery image definition {service}"):
            try:
                self._compute.gallery_images.get(env.gallery_group, env.gallery, service)
                return
            except ResourceNotFoundError:
                pass
            self._compute.gallery_images.begin_create_or_update(
                env.gallery_group,
                env.gallery,
                service,
                {
                    "location": env.location,
                    "tags": {"switchyard.service": service, "switchyard.base": base},
                    "properties": {
                        "osType": "Linux",
                        "osState": "Generalized",
                        "hyperVGeneration": "V2",
                        "identifier": {"publisher": "switchyard", "offer": service, "sku": base},
                        "description": f"switchyard images of service {service}",
                    },
                },
            ).result()

    def image_version_id(self, service: str, gallery_version: str) -> str:
        return self._ids.gallery_version(service, gallery_version)

    @staticmethod
    def _observe(gallery_version: str, version: Any) -> ImageObservation:
        body = wire(version)
        props = body.get("properties", {})
        replication = {
            summary.get("region", "?").replace(" ", "").lower(): summary.get("state", "Unknown")
            for summary in (props.get("replicationStatus") or {}).get("summary", [])
        }
        publishing = props.get("publishingProfile") or {}
        storage = props.get("storageProfile") or {}
        os_source = (storage.get("osDiskImage") or {}).get("source") or {}
        return ImageObservation(
            gallery_version=gallery_version,
            exists=True,
            tags=body.get("tags") or {},
            exclude_from_latest=publishing.get("excludeFromLatest"),
            provisioning_state=props.get("provisioningState"),
            replication=replication,
            resource_id=body.get("id"),
            source_uri=os_source.get("uri"),
            source_storage_account_id=os_source.get("storageAccountId"),
            source_id=(storage.get("source") or {}).get("id"),
        )

    def image_version(self, service: str, gallery_version: str) -> ImageObservation:
        env = self._environment
        with azure_errors(f"image {service} {gallery_version}"):
            try:
                version = self._compute.gallery_image_versions.get(
                    env.gallery_group, env.gallery, service, gallery_version, expand="ReplicationStatus"
                )
            except ResourceNotFoundError:
                return ImageObservation(gallery_version=gallery_version, exists=False)
        return self._observe(gallery_version, version)

    def image_versions(self, service: str) -> list[ImageObservation]:
        env = self._environment
        with azure_errors(f"images of {service}"):
            try:
                versions = list(
                    self._compute.gallery_image_versions.list_by_gallery_image(env.gallery_group, env.gallery, service)
                )
            except ResourceNotFoundError:
                return []
        return [self._observe(str(v.name), v) for v in versions]

    def publish(
        self,
        service: str,
        gallery_version: str,
        source: ImageSource,
        tags: dict[str, str],
        regions: list[str],
        progress: Progress | None = None,
    ) -> ImageObservation:
        env = self._environment
        say = progress or no_progress
        body = {
            "location": env.location,
            "tags": tags,
            "properties": {
                "publishingProfile": {
                    # Not "latest" until a release has held full traffic
                    # (docs/decisions/0006-images-carry-their-history.md).
                    "excludeFromLatest": True,
                    "replicaCount": 1,
                    "targetRegions": [
                        {"name": region, "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS"}
                        for region in regions
                    ],
                },
                "storageProfile": _storage_profile(source),
            },
        }
        with azure_errors(f"publishing image {service} {gallery_version}"):
            try:
                # If-None-Match: * : a version is immutable once made; never write over one (etag rules,
                # shared/azure-rules.md row 13). A retry that finds its own earlier create waits for it.
                poller = self._compute.gallery_image_versions.begin_create_or_update(
                    env.gallery_group, env.gallery, service, gallery_version, body, headers={"If-None-Match": "*"}
                )
            except HttpResponseError as error:
                if error.status_code != 412:
                    raise
                return self._wait_for(service, gallery_version, source, say)
            say(f"replicating {service} {gallery_version} to {', '.join(regions)}")
            while not poller.done():
                poller.wait(2)
                observed = self.image_version(service, gallery_version)
                if observed.replication:
                    say("replication: " + ", ".join(f"{r} {s}" for r, s in observed.replication.items()))
            result = poller.result()
        if wire(result).get("properties", {}).get("provisioningState") not in (None, "Succeeded"):
            raise OperationFailedError(f"publishing image {service} {gallery_version} did not succeed")
        return self.image_version(service, gallery_version)

    def _wait_for(self, service: str, gallery_version: str, source: ImageSource, say: Progress) -> ImageObservation:
        """The version exists already: an earlier attempt's (same source), waited for; or another's."""
        observed = self.image_version(service, gallery_version)
        if (observed.source_uri, observed.source_id) != (source.uri, source.image_id):
            raise OperationFailedError(
                f"image {service} {gallery_version} exists already, made from another source "
                f"({observed.source_uri or observed.source_id}); versions are immutable: build a new one"
            )
        say(f"{service} {gallery_version} exists already (an earlier attempt): waiting for its replication")
        deadline = time.monotonic() + _REPLICATION_WAIT_S
        while observed.provisioning_state not in ("Succeeded", "Failed") and time.monotonic() < deadline:
            time.sleep(2)
            observed = self.image_version(service, gallery_version)
        if observed.provisioning_state != "Succeeded":
            raise OperationFailedError(
                f"publishing image {service} {gallery_version} did not succeed ({observed.provisioning_state})"
            )
        return observed

    def update_version(
        self,
        service: str,
        gallery_version: str,
        *,
        tags: dict[str, str] | None = None,
        exclude_from_latest: bool | None = None,
    ) -> ImageObservation:
        env = self._environment
        with azure_errors(f"updating image {service} {gallery_version}"):
            current = wire(
                self._compute.gallery_image_versions.get(env.gallery_group, env.gallery, service, gallery_version)
            )
            patch: dict[str, Any] = {}
            if tags is not None:
                patch["tags"] = {**(current.get("tags") or {}), **tags}
            if exclude_from_latest is not None:
                publishing = dict(current.get("properties", {}).get("publishingProfile") or {})
                publishing["excludeFromLatest"] = exclude_from_latest
                patch["properties"] = {"publishingProfile": publishing}
            if patch:
                self._compute.gallery_image_versions.begin_update(
                    env.gallery_group, env.gallery, service, gallery_version, patch
                ).result()
        return self.image_version(service, gallery_version)

    def managed_image_tags(self, image_id: str) -> dict[str, str] | None:
        """A managed image's tags, or None when it does not exist (or is not finished)."""
        group, name = _group_and_name(image_id, "images")
        with azure_errors(f"reading managed image {name}"):
            try:
                image = wire(self._compute.images.get(group, name))
            except ResourceNotFoundError:
                return None
        if image.get("properties", {}).get("provisioningState") not in (None, "Succeeded"):
            return None
        return dict(image.get("tags") or {})

    def delete_managed_image(self, image_id: str) -> None:
        """Delete a managed image (gone already is fine): once a gallery version is made from it,
        the version holds its own copy and the intermediate image only costs storage."""
        group, name = _group_and_name(image_id, "images")
        with azure_errors(f"deleting managed image {name}"), contextlib.suppress(ResourceNotFoundError):
            self._compute.images.begin_delete(group, name).result()


def _group_and_name(resource_id: str, kind: str) -> tuple[str, str]:
    """(resource group, name) of /subscriptions/S/resourceGroups/G/providers/Microsoft.Compute/<kind>/N."""
    parts = resource_id.strip("/").split("/")
    lowered = [part.lower() for part in parts]
    try:
        group = parts[lowered.index("resourcegroups") + 1]
        name = parts[lowered.index(kind.lower()) + 1]
    except (ValueError, IndexError):
        raise ValueError(f"{resource_id!r} is not a Microsoft.Compute/{kind} resource id") from None
    return group, name
