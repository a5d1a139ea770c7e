"""What an image can be made from, as Azure has it: storage accounts (Microsoft.Storage) whose blobs
live in Azurite, a page blob or a managed image as a gallery image version's source, never a local
path (emulator/switchyard_emulator/resources/gallery_artifacts.py cites the rules). Real Azurite, the
real emulator over HTTPS, the real SDK clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from switchyard_emulator.testing import STORAGE_RG, EmulatorClients, SampleTopology, arm_error

URI = "properties.storageProfile.osDiskImage.source.uri"


def _version(uri: str, account_id: str | None) -> dict[str, object]:
    source = {"uri": uri, **({"storageAccountId": account_id} if account_id else {})}
    return {"location": "westus", "properties": {"storageProfile": {"osDiskImage": {"source": source}}}}


def _refused(clients: EmulatorClients, topo: SampleTopology, body: dict[str, object]) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.gallery_image_versions.begin_create_or_update(
            topo.rg, "gallery", "sample", "1.0.0", body
        ).result()
    return raised.value


def test_storage_accounts_create_list_keys_and_refuse_what_azurite_does_not_serve(
    clients: EmulatorClients, topo: SampleTopology
) -> None:
    account_id = topo.storage_account_id()
    name = str(clients.storage_account)
    accounts = clients.storage.storage_accounts
    account = accounts.get_properties(STORAGE_RG, name)
    assert account.id == account_id and account.kind == "StorageV2"
    assert account.primary_endpoints.blob.endswith(f"/{name}/") and account.primary_endpoints.blob.startswith(
        "https://"
    )
    assert [a.name for a in accounts.list_by_resource_group(STORAGE_RG)] == [name]
    keys = accounts.list_keys(STORAGE_RG, name)["keys"]
    assert [k["keyName"] for k in keys] == ["key1", "key2"] and keys[0]["permissions"] == "Full"
    body = {"location": "westus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    for bad, code in (("Not-Valid", "AccountNameInvalid"), ("notservedbyazurite", "StorageAccountNotServed")):
        with pytest.raises(HttpResponseError) as raised:
            accounts.begin_create(STORAGE_RG, bad, body).result()
        assert (raised.value.status_code, arm_error(raised.value).code) == (400, code)
    # names are unique across Azure: the same name in another resource group is taken
    clients.resource.resource_groups.create_or_update("rg-other-storage", {"location": "westus"})
    with pytest.raises(HttpResponseError) as raised:
        accounts.begin_create("rg-other-storage", name, body).result()
    assert arm_error(raised.value).code == "StorageAccountAlreadyTaken"


def test_a_version_is_never_made_from_a_local_path_a_block_blob_or_another_accounts_blob(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    uri, account_id = topo.upload(artifacts["1.0.0"])
    for local in (artifacts["1.0.0"].as_uri(), "http://127.0.0.1:1/x.vhd", "/tmp/image.tar.gz"):
        refused = _refused(clients, topo, _version(local, account_id))
        assert (refused.status_code, arm_error(refused).code, arm_error(refused).target) == (
            400,
            "InvalidParameter",
            URI,
        )
        assert "local path is never accepted" in arm_error(refused).message
    block_uri, _ = topo.upload(artifacts["1.0.0"], blob_type="BlockBlob")
    refused = _refused(clients, topo, _version(block_uri, account_id))
    assert "not a page blob" in arm_error(refused).message and arm_error(refused).target == URI
    # the blob of another account (the same server, another account's path) is not in this account
    other = uri.replace(f"/{clients.storage_account}/", "/someoneelses/")
    refused = _refused(clients, topo, _version(other, account_id))
    assert f"not in storage account '{clients.storage_account}'" in arm_error(refused).message
    # a storage account that does not exist, and a VHD source without its account
    missing = account_id.replace(str(clients.storage_account), "nosuchaccount")
    assert arm_error(_refused(clients, topo, _version(uri, missing))).code == "InvalidResourceReference"
    assert "storageAccountId" in arm_error(_refused(clients, topo, _version(uri, None))).message
    assert list(clients.compute.gallery_image_versions.list_by_gallery_image(topo.rg, "gallery", "sample")) == []


def test_a_page_blob_publishes_and_the_version_keeps_its_own_copy(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    uri, account_id = topo.upload(artifacts["1.0.0"])
    version = clients.compute.gallery_image_versions.begin_create_or_update(
        topo.rg, "gallery", "sample", "1.0.0", _version(uri, account_id)
    ).result()
    source = version.storage_profile.os_disk_image.source
    assert (source.uri, source.storage_account_id) == (uri, account_id)
    # If-None-Match: * on a version that exists answers 412 (ETag rules, shared/azure-rules.md row 13)
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.gallery_image_versions.begin_create_or_update(
            topo.rg, "gallery", "sample", "1.0.0", _version(uri, account_id), headers={"If-None-Match": "*"}
        ).result()
    assert (raised.value.status_code, arm_error(raised.value).code) == (412, "PreconditionFailed")


def test_a_managed_image_from_a_page_blob_is_a_source_of_versions(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    uri, _ = topo.upload(artifacts["2.0.0"])
    images = clients.compute.images
    disk = {"osType": "Linux", "osState": "Generalized", "blobUri": uri}
    image = images.begin_create_or_update(
        topo.rg, "built", {"location": "westus", "properties": {"storageProfile": {"osDisk": disk}}}
    ).result()
    assert image.provisioning_state == "Succeeded" and image.storage_profile.os_disk.blob_uri == uri
    with pytest.raises(HttpResponseError) as raised:  # a file path is no more a blob here than there
        images.begin_create_or_update(
            topo.rg,
            "local",
            {"location": "westus", "properties": {"storageProfile": {"osDisk": {**disk, "blobUri": "file:///x"}}}},
        ).result()
    assert arm_error(raised.value).target == "properties.storageProfile.osDisk.blobUri"
    version = clients.compute.gallery_image_versions.begin_create_or_update(
        topo.rg,
        "gallery",
        "sample",
        "2.0.0",
        {"location": "westus", "properties": {"storageProfile": {"source": {"id": image.id}}}},
    ).result()
    assert version.provisioning_state == "Succeeded"
    images.begin_delete(topo.rg, "built").result()  # the version has its own copy, as on Azure
    assert clients.compute.gallery_image_versions.get(topo.rg, "gallery", "sample", "2.0.0").name == "2.0.0"
    missing = _refused(
        clients,
        topo,
        {"location": "westus", "properties": {"storageProfile": {"source": {"id": image.id}}}},
    )
    assert arm_error(missing).code == "InvalidResourceReference"
