"""The image storage port on Azure Storage: the environment's storage account, and a locally built
image uploaded to it as a page blob, the form a gallery image version's VHD source takes
(GalleryImageVersion_Create_WithVHD.json in the Azure REST API specs; docs/architecture.md, "The
image artifact").

The account is created when missing (Microsoft.Storage StorageAccounts_Create, a long-running PUT)
in the gallery's resource group; the upload signs with the account's key (StorageAccounts_ListKeys),
which never leaves this module: no log line, no exception and no repr carries it. Uploads are safe
to repeat: the blob's name holds the artifact's digest, the blob is created only if it is missing
(If-None-Match: *), and it counts as complete only once its `sha256` metadata is set after the last
page; a half-written blob from a crashed attempt is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, BlobType

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.wire import azure_errors, no_progress
from switchyard.cloud.errors import CloudError
from switchyard.cloud.ports import ImageSource, Progress
from switchyard.core.config import AzureEnvironment

CONTAINER = "switchyard-images"
PAGE = 512  # a page blob's size is a multiple of 512 bytes (Put Blob, x-ms-blob-content-length)
CHUNK = 4 * 1024 * 1024  # the most one Put Page writes


class AzureImageStorage:
    def __init__(self, clients: AzureClients, environment: AzureEnvironment) -> None:
        self._clients = clients
        self._environment = environment

    def _ensure_account(self) -> Any:
        env = self._environment
        name = self._clients.storage_account
        accounts = self._clients.storage.storage_accounts
        with azure_errors(f"resource group {env.gallery_group}"):
            if not self._clients.resources.resource_groups.check_existence(env.gallery_group):
                self._clients.resources.resource_groups.create_or_update(
                    env.gallery_group, {"location": env.location, "tags": {"managedBy": "switchyard"}}
                )
        with azure_errors(f"storage account {name}"):
            try:
                return accounts.get_properties(env.gallery_group, name)
            except ResourceNotFoundError:
                pass
            try:
                return accounts.begin_create(
                    env.gallery_group,
                    name,
                    {
                        "location": env.location,
                        "sku": {"name": "Standard_LRS"},
                        "kind": "StorageV2",
                        "tags": {"managedBy": "switchyard"},
                        "properties": {
                            "minimumTlsVersion": "TLS1_2",
                            "allowBlobPublicAccess": False,
                            "supportsHttpsTrafficOnly": True,
                        },
                    },
                ).result()
            except HttpResponseError as error:
                if error.error is not None and error.error.code == "StorageAccountAlreadyTaken":
                    raise CloudError(
                        f"storage account {name}: the name is taken by another Azure customer; name one of yours "
                        "in the environment's storage_account"
                    ) from None
                raise

    def _container(self, account: Any) -> Any:
        name = self._clients.storage_account
        with azure_errors(f"keys of storage account {name}"):
            keys = self._clients.storage.storage_accounts.list_keys(self._environment.gallery_group, name)
        # a mapping: the model's `.keys` is the dict method
        key = keys["keys"][0]["value"]
        kwargs: dict[str, Any] = {}
        if self._clients.connection_verify:
            kwargs["connection_verify"] = self._clients.connection_verify
        service = BlobServiceClient(
            account.primary_endpoints.blob, credential={"account_name": name, "account_key": key}, **kwargs
        )
        container = service.get_container_client(CONTAINER)
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        return container

    def stage(
        self, artifact: Path, service: str, gallery_version: str, progress: Progress | None = None
    ) -> ImageSource:
        say = progress or no_progress
        digest = _sha256(artifact)
        size = artifact.stat().st_size
        padded = size + (-size % PAGE)
        account = self._ensure_account()
        blob_name = f"{service}/{gallery_version}-{digest[:16]}.vhd"
        try:
            with self._container(account) as container:
                blob = container.get_blob_client(blob_name)
                if not self._complete(blob, digest, padded):
                    say(f"uploading {artifact.name} ({size} bytes) to {blob.url} as a page blob")
                    self._upload(blob, artifact, size, padded, digest)
                else:
                    say(f"{blob.url} is already uploaded")
                uri = str(blob.url)
        except HttpResponseError as error:
            # the storage SDK's messages name the request, never the key
            raise CloudError(f"uploading {artifact.name} to storage account {account.name}: {error.reason}") from None
        return ImageSource(uri=uri, storage_account_id=str(account.id))

    @staticmethod
    def _complete(blob: BlobClient, digest: str, padded: int) -> bool:
        """The blob is there, whole: a page blob of the padded size whose sha256 metadata (set after
        its last page) is the artifact's. A blob that is there but not whole is deleted."""
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return False
        if props.blob_type == BlobType.PAGEBLOB and props.size == padded and props.metadata.get("sha256") == digest:
            return True
        blob.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
        return False

    @staticmethod
    def _upload(blob: BlobClient, artifact: Path, size: int, padded: int, digest: str) -> None:
        # If-None-Match: * : two uploads at once cannot both create it (the loser fails, retries, and
        # finds the winner's blob)
        created = blob.create_page_blob(padded, match_condition=MatchConditions.IfMissing)
        etag = str(created["etag"])
        offset = 0
        with artifact.open("rb") as handle:
            while offset < padded:
                chunk = handle.read(CHUNK)
                chunk += b"\0" * (-len(chunk) % PAGE)  # the last page: zeros, which gzip readers skip
                written = blob.upload_page(
                    chunk, offset=offset, length=len(chunk), etag=etag, match_condition=MatchConditions.IfNotModified
                )
                etag = str(written["etag"])
                offset += len(chunk)
        # Only now is it whole: `length` is the artifact's own size, before the zero padding.
        blob.set_blob_metadata(
            {"sha256": digest, "length": str(size)}, etag=etag, match_condition=MatchConditions.IfNotModified
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
