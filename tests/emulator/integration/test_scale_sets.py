"""Scale sets: instance records the data plane really runs (one process per instance on its own
loopback IP), scaling, Manual vs Automatic upgrade policy, manualUpgrade, reimage, failures."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from emulator_helpers import eventually, instance_version

from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, SampleTopology, arm_error


def _ips(clients: EmulatorClients, topo: SampleTopology, name: str) -> dict[str, str]:
    """instance id -> private IP, from the network SDK's scale-set NIC listing."""
    result = {}
    for nic in clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(topo.rg, name):
        instance_id = nic.virtual_machine.id.rsplit("/", 1)[-1]
        result[instance_id] = nic.ip_configurations[0].private_ip_address
    return result


def _versions(clients: EmulatorClients, topo: SampleTopology, name: str) -> dict[str, str]:
    """instance id -> the app version its process really serves (asked over HTTP)."""
    return {i: instance_version(ip)["app_version"] for i, ip in _ips(clients, topo, name).items()}


@pytest.fixture
def published(topo: SampleTopology, artifacts: dict[str, Path]) -> SampleTopology:
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    topo.publish("2.0.0", artifacts["2.0.0"])
    return topo


def test_instances_are_real_processes_on_their_own_loopback_ips(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    vmss = clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), 3)
    ).result()
    assert vmss.provisioning_state == "Succeeded"
    assert vmss.sku.capacity == 3
    ips = _ips(clients, topo, "web")
    assert sorted(ips) == ["0", "1", "2"]
    assert len(set(ips.values())) == 3
    assert all(ip.startswith("127.") and not ip.startswith("127.0.0.") for ip in ips.values())
    for instance_id, ip in ips.items():
        served = instance_version(ip)
        assert served["instance_id"] == instance_id and served["app_version"] == "1.0.0"
    vms = list(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web", expand="instanceView"))
    assert [vm.name for vm in vms] == ["web_0", "web_1", "web_2"]
    for vm in vms:
        codes = [s.code for s in vm.instance_view.statuses]
        assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
        assert vm.latest_model_applied is True
    view = clients.compute.virtual_machine_scale_sets.get_instance_view(topo.rg, "web")
    assert [(s.code, s.count) for s in view.virtual_machine.statuses_summary] == [("ProvisioningState/succeeded", 3)]


def test_scale_out_adds_new_ids_and_scale_in_removes_the_highest_never_reusing_ids(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    scale_sets = clients.compute.virtual_machine_scale_sets
    scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), 2)).result()
    scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 4}}).result()
    assert sorted(_ips(clients, topo, "web")) == ["0", "1", "2", "3"]
    removed_ip = _ips(clients, topo, "web")["3"]
    scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 1}}).result()
    assert sorted(_ips(clients, topo, "web")) == ["0"]
    with pytest.raises(OSError):
        instance_version(removed_ip)  # its process is gone
    scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 2}}).result()
    assert sorted(_ips(clients, topo, "web")) == ["0", "4"]
    # deleting one VM lowers the capacity
    clients.compute.virtual_machine_scale_set_vms.begin_delete(topo.rg, "web", "0").result()
    assert scale_sets.get(topo.rg, "web").sku.capacity == 1
    with pytest.raises(ResourceNotFoundError):
        clients.compute.virtual_machine_scale_set_vms.get(topo.rg, "web", "0")
    clients.compute.virtual_machine_scale_sets.begin_delete_instances(topo.rg, "web", {"instanceIds": ["4"]}).result()
    assert scale_sets.get(topo.rg, "web").sku.capacity == 0
    assert list(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web")) == []


def test_manual_policy_keeps_instances_on_their_model_until_manual_upgrade(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    scale_sets = clients.compute.virtual_machine_scale_sets
    vms = clients.compute.virtual_machine_scale_set_vms
    scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), 2)).result()
    scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(topo.version_id("2.0.0"), 2)).result()
    assert _versions(clients, topo, "web") == {"0": "1.0.0", "1": "1.0.0"}
    assert {vm.instance_id: vm.latest_model_applied for vm in vms.list(topo.rg, "web")} == {
        "0": False,
        "1": False,
    }
    stale = list(vms.list(topo.rg, "web", filter="properties/latestModelApplied eq false"))
    assert [vm.instance_id for vm in stale] == ["0", "1"]
    scale_sets.begin_update_instances(topo.rg, "web", {"instanceIds": ["1"]}).result()
    assert _versions(clients, topo, "web") == {"0": "1.0.0", "1": "2.0.0"}
    assert [vm.instance_id for vm in vms.list(topo.rg, "web", filter="properties/latestModelApplied eq true")] == ["1"]
    # reimage keeps the instance's model and image version (Azure: "the existing version")
    scale_sets.begin_reimage(topo.rg, "web", {"instanceIds": ["0"]}).result()
    assert _versions(clients, topo, "web") == {"0": "1.0.0", "1": "2.0.0"}
    # ... unless an exact version is asked for
    clients.compute.virtual_machine_scale_set_vms.begin_reimage(topo.rg, "web", "0", {"exactVersion": "2.0.0"}).result()
    assert _versions(clients, topo, "web")["0"] == "2.0.0"
    with pytest.raises(HttpResponseError) as raised:
        scale_sets.begin_update_instances(topo.rg, "web", {"instanceIds": ["99"]}).result()
    assert arm_error(raised.value).target == "instanceIds[0]"


def test_automatic_policy_moves_every_instance_to_the_new_model(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    scale_sets = clients.compute.virtual_machine_scale_sets
    body = topo.scale_set_body(topo.version_id("1.0.0"), 2, mode="Automatic")
    scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    body = topo.scale_set_body(topo.version_id("2.0.0"), 2, mode="Automatic")
    updated = scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    assert updated.provisioning_state == "Succeeded"
    assert _versions(clients, topo, "web") == {"0": "2.0.0", "1": "2.0.0"}
    assert all(vm.latest_model_applied for vm in clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web"))


def test_a_failing_instance_fails_the_operation_with_its_exit_code_and_log(
    clients: EmulatorClients, published: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo = published
    topo.publish("9.9.9", artifacts["broken"])
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            topo.rg, "bad", topo.scale_set_body(topo.version_id("9.9.9"), 1)
        ).result()
    assert "exited with code 3" in raised.value.message
    assert "boom: cannot start" in raised.value.message
    assert clients.compute.virtual_machine_scale_sets.get(topo.rg, "bad").provisioning_state == "Failed"
    view = clients.compute.virtual_machine_scale_set_vms.get_instance_view(topo.rg, "bad", "0")
    failed = view.statuses[0]
    assert failed.code.startswith("ProvisioningState/failed")
    assert "exited with code 3" in failed.message and "boom: cannot start" in failed.message
    assert view.statuses[1].code == "PowerState/stopped"


def test_unsupported_image_references_and_bad_filters_are_refused_clearly(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    body = topo.scale_set_body(topo.version_id("1.0.0"), 1)
    body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] = {
        "publisher": "Canonical",
        "offer": "ubuntu",
        "sku": "22_04-lts",
        "version": "latest",
    }
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    assert arm_error(raised.value).code == "NotSupportedByEmulator"
    assert arm_error(raised.value).target == "properties.virtualMachineProfile.storageProfile.imageReference"
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), 1)
    ).result()
    with pytest.raises(HttpResponseError) as raised:
        list(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web", filter="name eq 'x'"))
    assert arm_error(raised.value).target == "$filter"


def test_deletes_are_long_running_and_stop_what_they_deleted(
    clients: EmulatorClients, published: SampleTopology
) -> None:
    import socket

    from switchyard_emulator.testing import free_port

    topo = published
    port = free_port()
    clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", topo.gateway_body(port)).result()
    for name in ("blue", "green"):
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            topo.rg, name, topo.scale_set_body(topo.version_id("1.0.0"), 1, pool=name)
        ).result()
    blue_ip, green_ip = _ips(clients, topo, "blue")["0"], _ips(clients, topo, "green")["0"]
    clients.compute.virtual_machine_scale_sets.begin_delete(topo.rg, "blue").result()
    with pytest.raises(ResourceNotFoundError):
        clients.compute.virtual_machine_scale_sets.get(topo.rg, "blue")
    with pytest.raises(OSError):
        instance_version(blue_ip)
    gateway = clients.network.application_gateways.get(topo.rg, "agw")
    assert {p.name: len(p.backend_ip_configurations or []) for p in gateway.backend_address_pools} == {
        "blue": 0,
        "green": 1,
    }
    # the whole group: scale set, gateway (its listener port is released), network, gallery
    clients.resource.resource_groups.begin_delete(topo.rg).result()
    assert not clients.resource.resource_groups.check_existence(topo.rg)
    with pytest.raises(OSError):
        instance_version(green_ip)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
    with pytest.raises(ResourceNotFoundError):
        clients.compute.galleries.get(topo.rg, "gallery")


def _custom_data_files(emulator: EmulatorHandle, scale_set: str) -> dict[str, bytes]:
    """instance id -> the CustomData file its process was started with (the provisioning agent's
    /var/lib/waagent/CustomData on a Linux VM)."""
    found = {}
    for path in emulator.state_dir.glob(f"**/instances/{scale_set}-*/*/CustomData"):
        assert path.stat().st_mode & 0o777 == 0o600, "custom data is for root only"
        found[path.parent.name] = path.read_bytes()
    return found


def test_custom_data_reaches_each_instance_decoded_and_is_never_returned(
    emulator: EmulatorHandle, clients: EmulatorClients, published: SampleTopology
) -> None:
    topo = published
    scale_sets = clients.compute.virtual_machine_scale_sets
    body = topo.scale_set_body(topo.version_id("1.0.0"), 2)
    first = b'{"database_url": "sqlite:////srv/one.sqlite3"}'
    body["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = base64.b64encode(first).decode()
    scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    assert eventually(lambda: len(_custom_data_files(emulator, "web")) == 2)
    assert _custom_data_files(emulator, "web") == {"0": first, "1": first}
    # Azure never returns customData: neither the scale set nor its VMs show it.
    shown = [scale_sets.get(topo.rg, "web").as_dict()]
    shown += [vm.as_dict() for vm in clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web")]
    assert not [d for d in shown if (d.get("virtual_machine_profile") or d).get("os_profile", {}).get("custom_data")]
    assert not [d for d in shown if base64.b64encode(first).decode() in str(d)]

    # A PATCH cannot send it back (a GET never shows it): the new instance still gets it.
    scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 3}}).result()
    assert eventually(lambda: _custom_data_files(emulator, "web").get("2")) == first

    # A new customData is a new model: new instances get it, the running ones keep theirs (Manual).
    second = b'{"database_url": "sqlite:////srv/two.sqlite3"}'
    body["sku"]["capacity"] = 4
    body["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = base64.b64encode(second).decode()
    scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    assert eventually(lambda: _custom_data_files(emulator, "web").get("3")) == second
    assert _custom_data_files(emulator, "web")["0"] == first
    vms = clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web")
    assert {vm.instance_id: vm.latest_model_applied for vm in vms} == {"0": False, "1": False, "2": False, "3": True}


@pytest.mark.parametrize(
    ("custom_data", "message"),
    [
        ("not base64!", "not a valid base-64 encoded string"),
        (base64.b64encode(b"x" * 65536).decode(), "decodes to 65536 bytes; the maximum length is 65535 bytes"),
    ],
)
def test_custom_data_that_is_not_base64_or_over_64_kb_is_refused_and_changes_nothing(
    clients: EmulatorClients, published: SampleTopology, custom_data: str, message: str
) -> None:
    topo = published
    scale_sets = clients.compute.virtual_machine_scale_sets
    scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), 1)).result()
    before = scale_sets.get(topo.rg, "web")
    body = topo.scale_set_body(topo.version_id("1.0.0"), 1)
    body["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = custom_data
    with pytest.raises(HttpResponseError) as refused:
        scale_sets.begin_create_or_update(topo.rg, "web", body).result()
    error = arm_error(refused.value)
    assert error.status == 400 and message in error.message
    assert error.target == "properties.virtualMachineProfile.osProfile.customData"
    assert scale_sets.get(topo.rg, "web").etag == before.etag
