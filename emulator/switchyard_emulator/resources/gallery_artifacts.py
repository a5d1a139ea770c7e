"""An image's bytes: read from a page blob in Azurite, checked, and copied into the emulator's own
artifact store, DIR/blobs/<sha256>.tar.gz.

Azure takes an image's OS disk from a VHD page blob in a storage account, and copies it: a gallery
image version or a managed image no longer depends on the source blob once created (Azure Compute
Gallery "replication"; the source can be deleted afterwards). The emulator does the same, so deleting
the blob (or the build output) later does not matter.

What Azure states, and the emulator checks:
  * The source of a gallery image version's OS disk is a VHD blob (`osDiskImage.source.uri` with the
    `storageAccountId` of its account), a managed image, disk, snapshot or VM (`source.id`):
    GalleryImageVersion_Create_WithVHD.json and ..._WithVmAsSource.json, Azure REST API specs,
    specification/compute/resource-manager/Microsoft.Compute/GalleryRP/stable/2025-03-03/examples/
    galleryExamples/ (tests/fixtures/azure-rest-examples/compute/). A `file://` path is none of these.
  * A VHD in Azure storage is a page blob ("Upload a VHD to Azure ... as a page blob": Add-AzVhd,
    https://learn.microsoft.com/powershell/module/az.compute/add-azvhd), and a page blob's size is a
    multiple of 512 bytes ("x-ms-blob-content-length ... must be aligned to a 512-byte boundary",
    Put Blob, https://learn.microsoft.com/rest/api/storageservices/put-blob).

The emulator's image format is not a VHD: the blob holds a gzip'd tar with manifest.json at its root
(docs/architecture.md, "The image artifact"), zero-padded to the page size; gzip readers skip the
trailing zeros (Python's gzip module: "Gzip files can be padded with zeroes and still have
archives"). The emulator checks that it can run it (entrypoint, service_port) before it accepts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from switchyard_emulator.azurite import BlobStorage, StorageAccountSecret
from switchyard_emulator.errors import ArmError, bad_request

SOURCE_URI = "properties.storageProfile.osDiskImage.source.uri"
PAGE_BYTES = 512


def require_blob_uri(uri: Any, target: str) -> str:
    """An https URI of a blob; `file://` and anything else is refused as Azure refuses it."""
    if not isinstance(uri, str) or not uri:
        raise bad_request(f"{target} is required: the https URI of a VHD page blob.", target=target)
    parsed = urlparse(uri)
    if parsed.scheme.lower() != "https" or not parsed.netloc:
        raise ArmError(
            400,
            "InvalidParameter",
            f"The value '{uri}' of {target} is not a blob URI. An image's OS disk source is a VHD page blob in a "
            "storage account (https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB with its storageAccountId), a "
            "managed image, a snapshot, a disk or a VM (source.id); a local path is never accepted.",
            target=target,
        )
    return uri


def blob_path_in(uri: str, account_url: str) -> tuple[str, str] | None:
    """(container, blob name) when `uri` lies in the account whose blob endpoint is `account_url`."""
    base = urlparse(account_url)
    parsed = urlparse(uri)
    if (parsed.scheme.lower(), parsed.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
        return None
    prefix = base.path.rstrip("/") + "/"
    # the account (path-style, Azurite) is case-insensitive like a host name; container and blob are not
    if not parsed.path.lower().startswith(prefix.lower()):
        return None
    container, _, name = unquote(parsed.path[len(prefix) :]).partition("/")
    if not container or not name:
        return None
    return container, name


def copy_page_blob(
    storage: BlobStorage, account: StorageAccountSecret, uri: str, blob_dir: Path, target: str
) -> tuple[Path, dict[str, Any], int]:
    """Check the blob (exists, page blob, 512-aligned, an image the emulator can run) and copy its
    bytes into DIR/blobs by content hash. Runs in a thread: it blocks on Azurite."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.storage.blob import BlobClient, BlobType

    container_and_name = blob_path_in(uri, storage.account_url(account.name))
    if container_and_name is None:  # the caller checked; kept so this function stands on its own
        raise bad_request(f"The blob '{uri}' is not in storage account '{account.name}'.", target=target)
    container, name = container_and_name
    client = BlobClient(
        storage.account_url(account.name).rstrip("/"),
        container,
        name,
        credential=account.credential(),
        connection_verify=str(storage.ca_bundle),
    )
    try:
        with client:
            try:
                props = client.get_blob_properties()
            except ResourceNotFoundError:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The blob '{uri}' does not exist in storage account '{account.name}'.",
                    target=target,
                ) from None
            if props.blob_type != BlobType.PAGEBLOB:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The blob '{uri}' is a {props.blob_type.value if props.blob_type else 'blob'}, not a page blob: "
                    "an image's VHD must be uploaded as a page blob.",
                    target=target,
                )
            if props.size % PAGE_BYTES:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The blob '{uri}' is {props.size} bytes, not a multiple of {PAGE_BYTES}.",
                    target=target,
                )
            blob_dir.mkdir(parents=True, exist_ok=True)
            partial = blob_dir / f"incoming-{os.getpid()}-{os.urandom(4).hex()}.partial"
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as out:
                    for chunk in client.download_blob().chunks():
                        digest.update(chunk)
                        out.write(chunk)
                manifest = read_manifest(partial, uri, target)
                stored = blob_dir / f"{digest.hexdigest()}.tar.gz"
                if stored.exists():
                    partial.unlink()
                else:
                    partial.replace(stored)
            finally:
                partial.unlink(missing_ok=True)
    except HttpResponseError as error:
        # Azurite refused the emulator's own read: a misconfiguration of the emulator, not the caller's
        raise ArmError(
            500, "InternalServerError", f"The emulator could not read '{uri}' from its blob storage: {error.reason}"
        ) from None
    return stored, manifest, stored.stat().st_size


def source_of(storage: dict[str, Any]) -> str:
    """What an image version was made from, to refuse a change of it."""
    return json.dumps(
        {
            "source": (storage.get("source") or {}).get("id"),
            "uri": storage.get("osDiskImage", {}).get("source", {}).get("uri"),
        },
        sort_keys=True,
    )


def read_manifest(path: Path, shown_as: str, target: str) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            member = None
            for candidate in archive.getmembers():
                if candidate.name in ("manifest.json", "./manifest.json") and candidate.isfile():
                    member = candidate
                    break
            if member is None:
                raise bad_request(f"The image '{shown_as}' has no manifest.json at its root.", target=target)
            handle = archive.extractfile(member)
            assert handle is not None
            raw = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise bad_request(
            f"The image '{shown_as}' is not an image the emulator can run: not a gzip'd tar ({exc}).", target=target
        ) from None
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise bad_request(f"The manifest.json of '{shown_as}' is not valid JSON.", target=target) from None
    if not isinstance(manifest, dict):
        raise bad_request(f"The manifest.json of '{shown_as}' must be a JSON object.", target=target)
    entrypoint = manifest.get("entrypoint")
    port = manifest.get("service_port")
    if not isinstance(entrypoint, list) or not entrypoint or not all(isinstance(a, str) for a in entrypoint):
        raise bad_request(f"The manifest.json of '{shown_as}' needs an 'entrypoint' argv list.", target=target)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise bad_request(f"The manifest.json of '{shown_as}' needs a 'service_port' (1-65535).", target=target)
    return manifest
