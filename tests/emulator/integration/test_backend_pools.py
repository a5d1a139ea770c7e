"""Backend pools are homogeneous (NIC IP configurations or explicit addresses, never both,
Azure/azure-cli#3491), a NIC IP configuration may sit in several pools of a gateway, and a Manual
scale set moves an instance between pool sets only when that instance is upgraded. Membership is
proven through the gateway's proxy: which backend answered real requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network.models import ApplicationGatewayBackendAddress
from emulator_helpers import eventually

from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error, free_port

MIX_CODE = "CannotMixIPBasedAddressesAndIPConfigurationsOnApplicationGatewayBackendAddressPool"


def _answer(port: int) -> tuple[int, str | None]:
    """(status, "<app version>/<instance id>" of the backend that answered, or None)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as response:
            body = json.loads(response.read())
            return response.status, f"{body['app_version']}/{response.headers['X-Instance-Id']}"
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _served(port: int, requests: int = 12) -> set[str] | None:
    """Which backends answered `requests` requests (round robin reaches every healthy member);
    None if any request was not answered by a backend (e.g. 502: the pool has no healthy member)."""
    seen = set()
    for _ in range(requests):
        status, backend = _answer(port)
        if status != 200 or backend is None:
            return None
        seen.add(backend)
    return seen


def _two_listeners(topo: SampleTopology, clients: EmulatorClients, artifacts: dict[str, Path]) -> tuple[int, int]:
    """A gateway whose production port routes to pool 'blue' and test port to pool 'green'."""
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    topo.publish("2.0.0", artifacts["2.0.0"])
    production, test = free_port(), free_port()
    clients.network.application_gateways.begin_create_or_update(
        topo.rg, "agw", topo.gateway_body(production, test_port=test)
    ).result()
    return production, test


def _in_pools(topo: SampleTopology, version: str, capacity: int, pools: list[str]) -> dict[str, Any]:
    body = topo.scale_set_body(topo.version_id(version), capacity, pool=pools[0])
    ip_config = body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    ip_config["properties"]["ipConfigurations"][0]["properties"]["applicationGatewayBackendAddressPools"] = [
        {"id": topo.pool_id(pool)} for pool in pools
    ]
    return body


def _with_addresses(gateway: Any, pool: str, addresses: list[str]) -> Any:
    for item in gateway.backend_address_pools:
        if item.name == pool:
            item.backend_addresses = [ApplicationGatewayBackendAddress(ip_address=a) for a in addresses]
    return gateway


def test_a_pool_that_nics_reference_cannot_get_addresses(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    _two_listeners(topo, clients, artifacts)
    scale_sets = clients.compute.virtual_machine_scale_sets
    gateways = clients.network.application_gateways
    scale_sets.begin_create_or_update(topo.rg, "blue", _in_pools(topo, "1.0.0", 1, ["blue"])).result()
    # Manual policy: the model now points at green; the instance still runs the model that puts it in blue
    scale_sets.begin_create_or_update(topo.rg, "blue", _in_pools(topo, "1.0.0", 1, ["green"])).result()
    before = gateways.get(topo.rg, "agw")

    for pool in ("blue", "green"):  # blue: an instance's NIC is in it; green: a manualUpgrade would put it there
        with pytest.raises(HttpResponseError) as raised:
            gateways.begin_create_or_update(
                topo.rg, "agw", _with_addresses(gateways.get(topo.rg, "agw"), pool, ["10.0.1.50"])
            ).result()
        error = arm_error(raised.value)
        assert (raised.value.status_code, error.code) == (400, MIX_CODE)
        index = [p.name for p in before.backend_address_pools].index(pool)
        assert error.target == f"properties.backendAddressPools[{index}].properties.backendAddresses"
        assert f"'{pool}'" in error.message and "/virtualMachineScaleSets/blue" in error.message

    after = gateways.get(topo.rg, "agw")  # nothing was written
    assert after.etag == before.etag
    assert all(not p.backend_addresses for p in after.backend_address_pools)


def test_a_scale_set_cannot_join_a_pool_that_has_addresses(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    _two_listeners(topo, clients, artifacts)
    gateways = clients.network.application_gateways
    scale_sets = clients.compute.virtual_machine_scale_sets
    gateways.begin_create_or_update(
        topo.rg, "agw", _with_addresses(gateways.get(topo.rg, "agw"), "green", ["10.0.1.50"])
    ).result()
    target = (
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[0]"
        ".properties.ipConfigurations[0].properties.applicationGatewayBackendAddressPools[1].id"
    )

    with pytest.raises(HttpResponseError) as raised:  # a create
        scale_sets.begin_create_or_update(topo.rg, "canary", _in_pools(topo, "2.0.0", 1, ["blue", "green"])).result()
    assert (raised.value.status_code, arm_error(raised.value).code, arm_error(raised.value).target) == (
        400,
        MIX_CODE,
        target,
    )
    assert "'green'" in arm_error(raised.value).message
    with pytest.raises(ResourceNotFoundError):
        scale_sets.get(topo.rg, "canary")

    scale_sets.begin_create_or_update(topo.rg, "canary", _in_pools(topo, "2.0.0", 1, ["blue"])).result()
    before = scale_sets.get(topo.rg, "canary")
    profile = _in_pools(topo, "2.0.0", 1, ["blue", "green"])["properties"]["virtualMachineProfile"]
    update = {"properties": {"virtualMachineProfile": {"networkProfile": profile["networkProfile"]}}}
    with pytest.raises(HttpResponseError) as raised:  # an update (PATCH)
        scale_sets.begin_update(topo.rg, "canary", update).result()
    assert (raised.value.status_code, arm_error(raised.value).code, arm_error(raised.value).target) == (
        400,
        MIX_CODE,
        target,
    )
    assert scale_sets.get(topo.rg, "canary").etag == before.etag


def test_a_nic_in_two_pools_serves_in_both(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    production, test = _two_listeners(topo, clients, artifacts)
    scale_sets = clients.compute.virtual_machine_scale_sets
    scale_sets.begin_create_or_update(topo.rg, "both", _in_pools(topo, "1.0.0", 1, ["blue", "green"])).result()
    scale_sets.begin_create_or_update(topo.rg, "blueonly", _in_pools(topo, "2.0.0", 1, ["blue"])).result()

    assert eventually(lambda: _served(production) == {"1.0.0/0", "2.0.0/0"})
    assert eventually(lambda: _served(test) == {"1.0.0/0"})
    gateway = clients.network.application_gateways.get(topo.rg, "agw")
    members = {
        p.name: sorted(
            c.id.split("/virtualMachineScaleSets/")[1].split("/networkInterfaces")[0]
            for c in p.backend_ip_configurations or []
        )
        for p in gateway.backend_address_pools
    }
    assert members == {
        "blue": ["blueonly/virtualMachines/0", "both/virtualMachines/0"],
        "green": ["both/virtualMachines/0"],
    }


def test_manual_policy_moves_an_instance_between_pool_sets_only_when_it_is_upgraded(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    production, test = _two_listeners(topo, clients, artifacts)
    scale_sets = clients.compute.virtual_machine_scale_sets
    scale_sets.begin_create_or_update(topo.rg, "app", _in_pools(topo, "1.0.0", 2, ["blue"])).result()
    assert eventually(lambda: _served(production) == {"1.0.0/0", "1.0.0/1"})
    assert _answer(test)[0] == 502  # green has no member

    # the model moves to green: nothing moves until an instance is upgraded
    scale_sets.begin_create_or_update(topo.rg, "app", _in_pools(topo, "1.0.0", 2, ["green"])).result()
    assert _served(production) == {"1.0.0/0", "1.0.0/1"}
    assert _answer(test)[0] == 502

    scale_sets.begin_update_instances(topo.rg, "app", {"instanceIds": ["1"]}).result()
    assert eventually(lambda: _served(production) == {"1.0.0/0"} and _served(test) == {"1.0.0/1"})

    # a model in both pools, applied to instance 0 only: 0 serves in both, 1 stays in green
    scale_sets.begin_create_or_update(topo.rg, "app", _in_pools(topo, "1.0.0", 2, ["blue", "green"])).result()
    assert _served(production) == {"1.0.0/0"} and _served(test) == {"1.0.0/1"}
    scale_sets.begin_update_instances(topo.rg, "app", {"instanceIds": ["0"]}).result()
    assert eventually(lambda: _served(production) == {"1.0.0/0"} and _served(test) == {"1.0.0/0", "1.0.0/1"})
