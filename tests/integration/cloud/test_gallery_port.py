"""The image gallery port (AzureGallery) and the image storage port (AzureImageStorage) against a
real emulator with its Azurite: what publishing leaves in the Azure Compute Gallery (a version made
from a page blob of the environment's storage account), and how a version's tags and latest-ness
change afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob import BlobClient

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.errors import CloudError, NotFoundError
from switchyard.cloud.ports import ImageSource
from switchyard.core.config import AzureEnvironment
from switchyard_emulator.testing import EmulatorHandle, pack_sample_image
from tests.integration.cloud.cloud_support import FAILING, V1, V2, publish, service_in


def test_a_published_version_reads_back_with_its_tags_and_every_region_replicated(
    cloud: AzureCloud, artifacts: dict[str, Path]
) -> None:
    gallery, service = cloud.gallery, cloud.service.name
    progress: list[str] = []
    gallery.ensure_image_definition(service, "debian-12")
    tags = {"switchyard.app": "1.0.0", "switchyard.commit": "c0ffee"}
    source = cloud.image_storage.stage(artifacts[V1], service, V1, progress.append)

    published = gallery.publish(service, V1, source, tags, ["westeurope", "northeurope"], progress.append)

    assert published.exists and published.provisioning_state == "Succeeded"
    assert published.tags == tags
    assert published.replication == {"westeurope": "Completed", "northeurope": "Completed"}
    # Not "latest" until a release has held full traffic: a scale set asking for latest must not get it.
    assert published.exclude_from_latest is True
    assert published.resource_id is not None
    assert published.resource_id.lower() == gallery.image_version_id(service, V1).lower()
    assert progress[0].startswith(f"uploading {artifacts[V1].name} (") and "as a page blob" in progress[0]
    assert progress[1] == f"replicating {service} {V1} to westeurope, northeurope"
    assert gallery.image_version(service, V1) == published
    # made from the blob, in the environment's storage account, in the gallery's resource group
    assert source.uri is not None and source.storage_account_id is not None
    assert (published.source_uri, published.source_storage_account_id) == (source.uri, source.storage_account_id)
    assert (
        f"/resourceGroups/{cloud.environment.gallery_group}/providers/Microsoft.Storage/" in source.storage_account_id
    )
    # staging again uploads nothing: the blob is there, whole
    again: list[str] = []
    assert cloud.image_storage.stage(artifacts[V1], service, V1, again.append) == source
    assert again == [f"{source.uri} is already uploaded"]
    # publishing the same version again never writes over it (If-None-Match: *): it is what it was
    assert gallery.publish(service, V1, source, {"other": "tags"}, ["westeurope"]) == published


def test_update_version_merges_tags_and_flips_latest_separately(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    gallery, service = cloud.gallery, cloud.service.name
    publish(cloud, artifacts[V2], V2, **{"switchyard.app": "2.0.0", "switchyard.scan": "passed"})

    tagged = gallery.update_version(
        service, V2, tags={"switchyard.releasedAt": "2026-11-27T10:00:00Z", "switchyard.scan": "re-scanned"}
    )

    assert tagged.tags == {
        "switchyard.service": service,
        "switchyard.app": "2.0.0",  # kept
        "switchyard.scan": "re-scanned",  # replaced
        "switchyard.releasedAt": "2026-11-27T10:00:00Z",  # added
    }
    assert tagged.exclude_from_latest is True  # untouched when not asked

    released = gallery.update_version(service, V2, exclude_from_latest=False)

    assert released.exclude_from_latest is False
    assert released.tags == tagged.tags  # untouched when not asked
    assert gallery.image_version(service, V2) == released


def test_image_versions_lists_every_published_version_and_nothing_for_an_unknown_service(
    environment: AzureEnvironment, artifacts: dict[str, Path]
) -> None:
    till = AzureCloud(environment, service_in(environment, name="till"))
    assert till.gallery.image_versions("till") == []  # no image definition yet: no error either

    publish(till, artifacts[V1], V1)
    publish(till, artifacts[FAILING], FAILING)
    till.gallery.ensure_image_definition("till", "debian-12")  # again: changes nothing

    listed = till.gallery.image_versions("till")
    assert [image.gallery_version for image in listed] == [V1, FAILING]
    assert all(image.exists and image.tags["switchyard.service"] == "till" for image in listed)


def test_a_version_that_was_never_published_reads_as_missing(cloud: AzureCloud) -> None:
    missing = cloud.gallery.image_version(cloud.service.name, "1.2.3")

    assert missing.exists is False and missing.tags == {}
    with pytest.raises(NotFoundError):
        cloud.gallery.update_version(cloud.service.name, "1.2.3", tags={"switchyard.rolledBack": "true"})


def test_publishing_a_blob_that_is_not_there_fails_and_leaves_no_version(
    cloud: AzureCloud, artifacts: dict[str, Path]
) -> None:
    gallery, service = cloud.gallery, cloud.service.name
    gallery.ensure_image_definition(service, "debian-12")
    staged = cloud.image_storage.stage(artifacts[V1], service, "4000000.20261100.1")
    absent = staged.model_copy(update={"uri": str(staged.uri).replace(".vhd", "-never-built.vhd")})

    with pytest.raises(CloudError) as failure:
        gallery.publish(service, "4000000.20261100.1", absent, {}, ["westeurope"])

    assert "never-built.vhd" in str(failure.value) and "does not exist" in str(failure.value)
    assert gallery.image_version(service, "4000000.20261100.1").exists is False


def test_the_account_key_is_in_no_error(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    """A failed upload says what failed, never with the key it signed with: here the blob an upload
    must replace is held by someone else's lease, so Azure Storage refuses the signed delete."""
    clients, service, version, artifact = cloud.clients, cloud.service.name, "4000000.20261100.2", artifacts[V1]
    staged = cloud.image_storage.stage(artifact, service, version)
    assert staged.uri is not None
    account = clients.storage_account
    key = clients.storage.storage_accounts.list_keys(cloud.environment.gallery_group, account)["keys"][0]["value"]
    # The staged blob, made to look unfinished (another digest) and leased: staging again must
    # replace it, and cannot.
    in_the_way = BlobClient.from_blob_url(
        staged.uri,
        credential={"account_name": account, "account_key": key},
        connection_verify=clients.connection_verify,
    )
    in_the_way.set_blob_metadata({"sha256": "0" * 64})
    in_the_way.acquire_lease()

    with pytest.raises(CloudError) as failure:
        cloud.image_storage.stage(artifact, service, version)

    assert f"uploading {artifact.name} to storage account {account}" in str(failure.value)
    chain = [failure.value, failure.value.__cause__, failure.value.__context__]
    assert all(key not in str(error) and key not in repr(error) for error in chain)


def test_an_azure_builds_managed_image_is_the_versions_source_and_is_deleted_after(
    cloud: AzureCloud, emulator: EmulatorHandle, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The azure builder's half that runs here: Packer left a managed image in the build group (made
    here from a page blob, as Azure makes one from the build VM's disk); the gallery version is made
    from it by id, and the intermediate image is deleted once the version holds its own copy."""
    gallery, service, group = cloud.gallery, cloud.service.name, cloud.environment.gallery_group
    version = "4000000.20261100.1"
    artifact = pack_sample_image(tmp_path, app_version="4.0.0", gallery_version=version)
    blob = cloud.image_storage.stage(artifact, service, version)
    built_tags = {"switchyard.version": version, "switchyard.commit": "c0ffee"}
    clients = emulator.clients()
    try:
        made = clients.compute.images.begin_create_or_update(
            group,
            f"{service}-{version}",
            {
                "location": cloud.environment.location,
                "tags": built_tags,
                "properties": {
                    "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized", "blobUri": blob.uri}}
                },
            },
        ).result()
    finally:
        clients.close()
    assert gallery.managed_image_tags(made.id) == built_tags  # what verify_artifact checks before publishing
    gallery.ensure_image_definition(service, "debian-12")

    published = gallery.publish(
        service, version, ImageSource(image_id=made.id), {"switchyard.app": "4.0.0"}, ["westeurope"]
    )

    assert published.provisioning_state == "Succeeded" and published.source_id == made.id
    gallery.delete_managed_image(made.id)
    assert gallery.managed_image_tags(made.id) is None
    gallery.delete_managed_image(made.id)  # gone already is fine: a retried publish deletes again
    assert gallery.image_version(service, version).provisioning_state == "Succeeded"  # the version kept its copy
    with pytest.raises(ValueError, match=r"is not a Microsoft\.Compute/images resource id"):
        gallery.managed_image_tags(f"/subscriptions/x/resourceGroups/{group}/providers/Microsoft.Compute/disks/d")
