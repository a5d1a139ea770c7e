"""Gallery image versions from page blobs in the emulator's storage account (Azurite): validation of
the image inside, the copy into the emulator's store, replication progress and the LRO that waits for
it, excludeFromLatest/latest. What may be a source at all: test_image_sources.py."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import azure.mgmt.compute.models as cm
import pytest
from azure.core.exceptions import HttpResponseError

from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, SampleTopology, arm_error

URI = "properties.storageProfile.osDiskImage.source.uri"


def _version_body(source: tuple[str, str], **publishing: object) -> dict[str, object]:
    """A version body from (blob URI, storage account id), as SampleTopology.upload answers."""
    uri, account_id = source
    return {
        "location": "westus",
        "properties": {
            "publishingProfile": publishing,
            "storageProfile": {"osDiskImage": {"source": {"uri": uri, "storageAccountId": account_id}}},
        },
    }


def _exclude(value: bool) -> cm.GalleryImageVersionUpdate:
    """The SDK model of a PATCH that flips excludeFromLatest (as the release pipeline does)."""
    # The mapping form: the model's typed keywords do not include the flattened publishing_profile.
    return cm.GalleryImageVersionUpdate({"properties": {"publishingProfile": {"excludeFromLatest": value}}})


def test_the_artifact_must_be_a_gzipd_tar_with_a_manifest(
    clients: EmulatorClients, topo: SampleTopology, tmp_path: Path
) -> None:
    topo.network()
    topo.gallery()
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_bytes(b"not a tarball")
    no_manifest = tmp_path / "nomanifest.tar.gz"
    with tarfile.open(no_manifest, "w:gz") as archive:
        data = b"print('hi')"
        info = tarfile.TarInfo("app/server.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    bad_manifest = tmp_path / "badmanifest.tar.gz"
    with tarfile.open(bad_manifest, "w:gz") as archive:
        data = b'{"entrypoint": "not a list"}'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    uri, account_id = topo.upload(not_gzip)
    cases = {
        (uri + "-missing", account_id): "does not exist",
        (uri, account_id): "not a gzip'd tar",
        topo.upload(no_manifest): "no manifest.json",
        topo.upload(bad_manifest): "entrypoint",
    }
    for source, says in cases.items():
        with pytest.raises(HttpResponseError) as raised:
            clients.compute.gallery_image_versions.begin_create_or_update(
                topo.rg, "gallery", "sample", "1.0.0", _version_body(source)
            ).result()
        assert raised.value.status_code == 400
        assert arm_error(raised.value).target == URI
        assert says in arm_error(raised.value).message
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.gallery_image_versions.begin_create_or_update(
            topo.rg, "gallery", "sample", "1.0", _version_body(topo.upload(no_manifest))
        ).result()
    assert "MAJOR.MINOR.PATCH" in arm_error(raised.value).message
    assert list(clients.compute.gallery_image_versions.list_by_gallery_image(topo.rg, "gallery", "sample")) == []


def test_create_waits_for_replication_and_shows_its_progress(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    # eight regions: the last completes 2 s after the first, so "still replicating" is observable
    # even on a busy machine
    regions = [
        "westus",
        "eastus",
        "westeurope",
        "northeurope",
        "eastasia",
        "japaneast",
        "brazilsouth",
        "australiaeast",
    ]
    body = _version_body(
        topo.upload(artifacts["1.0.0"]),
        targetRegions=[
            {"name": "westus", "regionalReplicaCount": 1},
            {"name": "eastus", "regionalReplicaCount": 2, "storageAccountType": "Standard_ZRS"},
            *({"name": r} for r in regions[2:]),
        ],
        endOfLifeDate="2030-01-01T00:00:00Z",
    )
    versions = clients.compute.gallery_image_versions
    poller = versions.begin_create_or_update(topo.rg, "gallery", "sample", "1.0.0", body)
    during = versions.get(topo.rg, "gallery", "sample", "1.0.0", expand="ReplicationStatus")
    assert during.provisioning_state == "Creating"
    assert during.replication_status.aggregated_state == "InProgress"
    replicating = [s for s in during.replication_status.summary if s.state == "Replicating"]
    assert replicating and all(0 <= s.progress < 100 for s in replicating)
    assert not poller.done()
    done = poller.result()
    assert done.provisioning_state == "Succeeded"
    after = versions.get(topo.rg, "gallery", "sample", "1.0.0", expand="ReplicationStatus")
    assert after.replication_status.aggregated_state == "Completed"
    assert [(s.region, s.state, s.progress) for s in after.replication_status.summary] == [
        (r, "Completed", 100) for r in regions
    ]
    targets = after.publishing_profile.target_regions
    assert [(r.name, r.regional_replica_count, r.storage_account_type) for r in targets[:3]] == [
        ("westus", 1, "Standard_LRS"),
        ("eastus", 2, "Standard_ZRS"),
        ("westeurope", 1, "Standard_LRS"),
    ]
    assert after.publishing_profile.end_of_life_date.year == 2030
    assert after.publishing_profile.published_date is not None
    assert versions.get(topo.rg, "gallery", "sample", "1.0.0").replication_status is None  # only with $expand


def test_the_artifact_is_copied_so_deleting_the_build_output_does_not_matter(
    clients: EmulatorClients,
    topo: SampleTopology,
    emulator: EmulatorHandle,
    artifacts: dict[str, Path],
    tmp_path: Path,
) -> None:
    topo.network()
    topo.gallery()
    transient = tmp_path / "build-output.tar.gz"
    transient.write_bytes(artifacts["2.0.0"].read_bytes())
    version = topo.publish("2.0.0", transient)
    transient.unlink()
    blobs = list((emulator.state_dir / "blobs").glob("*.tar.gz"))
    assert blobs, "the artifact was copied into DIR/blobs"
    for blob in blobs:  # each is the gzip'd tar it was made from
        with gzip.open(blob) as handle:
            assert handle.read(1)
    vmss = clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "vmss", topo.scale_set_body(version.id, 1)
    ).result()
    assert vmss.provisioning_state == "Succeeded"


def test_exclude_from_latest_decides_what_latest_resolves_to(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    topo.publish("2.0.0", artifacts["2.0.0"], exclude_from_latest=True)
    # "latest" = the image definition's id: the highest version not excluded from latest
    vmss = clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "vmss", topo.scale_set_body(topo.image_id(), 1)
    ).result()
    vm = next(iter(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "vmss")))
    assert vm.storage_profile.image_reference.exact_version == "1.0.0"
    # promote 2.0.0 (PATCH of publishingProfile.excludeFromLatest) and scale out: the new instance
    # gets the version that is latest at its creation, the old one keeps its own
    promoted = clients.compute.gallery_image_versions.begin_update(
        topo.rg, "gallery", "sample", "2.0.0", _exclude(False)
    ).result()
    assert promoted.publishing_profile.exclude_from_latest is False
    clients.compute.virtual_machine_scale_sets.begin_update(topo.rg, "vmss", {"sku": {"capacity": 2}}).result()
    by_id = {vm.instance_id: vm for vm in clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "vmss")}
    assert by_id["0"].storage_profile.image_reference.exact_version == "1.0.0"
    assert by_id["1"].storage_profile.image_reference.exact_version == "2.0.0"
    assert vmss.virtual_machine_profile.storage_profile.image_reference.id == topo.image_id()
    # with every version excluded there is no latest: refused, naming the field
    clients.compute.gallery_image_versions.begin_update(topo.rg, "gallery", "sample", "1.0.0", _exclude(True)).result()
    clients.compute.gallery_image_versions.begin_update(topo.rg, "gallery", "sample", "2.0.0", _exclude(True)).result()
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            topo.rg, "other", topo.scale_set_body(topo.image_id(), 1)
        ).result()
    assert arm_error(raised.value).target == "properties.virtualMachineProfile.storageProfile.imageReference.id"


def test_tags_update_and_source_change_is_refused(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"], tags={"app_version": "1.0.0"})
    versions = clients.compute.gallery_image_versions
    updated = versions.begin_update(
        topo.rg, "gallery", "sample", "1.0.0", {"tags": {"app_version": "1.0.0", "rolled_back": "true"}}
    ).result()
    assert updated.tags == {"app_version": "1.0.0", "rolled_back": "true"}
    other_uri, account_id = topo.upload(artifacts["2.0.0"])
    other = {"osDiskImage": {"source": {"uri": other_uri, "storageAccountId": account_id}}}
    with pytest.raises(HttpResponseError) as raised:
        versions.begin_update(topo.rg, "gallery", "sample", "1.0.0", {"properties": {"storageProfile": other}}).result()
    assert arm_error(raised.value).code == "PropertyChangeNotAllowed"
    listed = list(versions.list_by_gallery_image(topo.rg, "gallery", "sample"))
    assert [(v.name, v.tags) for v in listed] == [("1.0.0", {"app_version": "1.0.0", "rolled_back": "true"})]
