"""Compute quotas through the real SDK: usage.list and resource_skus.list report what the scale
sets hold, and a scale set write beyond the vCPU quota is refused as Azure refuses it (409
OperationNotAllowed), with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error

B1S_VCPUS = 1


@pytest.fixture
def quota(http: httpx.Client) -> Iterator[httpx.Client]:
    """The module's emulator with a small regional vCPU quota; the default is put back afterwards."""
    before = http.get("/switchyard/quotas").json()
    yield http
    http.put("/switchyard/quotas", json=before).raise_for_status()


def usages(clients: EmulatorClients, location: str) -> dict[str, tuple[int, int]]:
    return {u.name.value: (u.current_value, u.limit) for u in clients.compute.usage.list(location)}


def create_web(clients: EmulatorClients, topo: SampleTopology, image: Path, capacity: int) -> None:
    """Scale set `web` of Standard_B1s at `capacity`, on a published image."""
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", image)
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "web", topo.scale_set_body(topo.version_id("1.0.0"), capacity)
    ).result()


def test_usage_and_skus_report_the_scale_sets_and_their_sizes(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path], quota: httpx.Client
) -> None:
    before = usages(clients, topo.location)
    create_web(clients, topo, artifacts["1.0.0"], capacity=2)

    after = usages(clients, topo.location)
    assert after["cores"][0] - before["cores"][0] == 2 * B1S_VCPUS
    assert after["standardBSFamily"][0] - before["standardBSFamily"][0] == 2 * B1S_VCPUS
    assert after["virtualMachines"][0] - before["virtualMachines"][0] == 2
    assert after["virtualMachineScaleSets"][0] - before["virtualMachineScaleSets"][0] == 1

    skus = {s.name: s for s in clients.compute.resource_skus.list(filter=f"location eq '{topo.location}'")}
    b1s = skus["Standard_B1s"]
    assert b1s.resource_type == "virtualMachines" and b1s.family == "standardBSFamily"
    assert b1s.locations == [topo.location]
    assert {c.name: c.value for c in b1s.capabilities}["vCPUs"] == str(B1S_VCPUS)
    with pytest.raises(HttpResponseError) as unsupported:
        list(clients.compute.resource_skus.list(filter="name eq 'Standard_B1s'"))
    assert unsupported.value.status_code == 400 and "location eq" in unsupported.value.message


def test_a_scale_out_beyond_the_vcpu_quota_is_refused_and_changes_nothing(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path], quota: httpx.Client
) -> None:
    create_web(clients, topo, artifacts["1.0.0"], capacity=1)
    in_use = usages(clients, topo.location)["cores"][0]
    quota.put("/switchyard/quotas", json={"cores": in_use + 1}).raise_for_status()
    etag = clients.compute.virtual_machine_scale_sets.get(topo.rg, "web").etag

    with pytest.raises(HttpResponseError) as refused:
        clients.compute.virtual_machine_scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 3}}).result()
    assert refused.value.status_code == 409 and arm_error(refused.value).code == "OperationNotAllowed"
    assert "exceeding approved Total Regional Cores quota" in refused.value.message
    assert f"Current Limit: {in_use + 1}" in refused.value.message
    assert "Additional Required: 2" in refused.value.message
    unchanged = clients.compute.virtual_machine_scale_sets.get(topo.rg, "web")
    assert unchanged.sku.capacity == 1 and unchanged.etag == etag

    # Within the quota it goes through; scaling in is always allowed.
    grown = clients.compute.virtual_machine_scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 2}}).result()
    assert grown.sku.capacity == 2
    quota.put("/switchyard/quotas", json={"cores": 0}).raise_for_status()
    shrunk = clients.compute.virtual_machine_scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 1}}).result()
    assert shrunk.sku.capacity == 1


def test_the_quota_control_route_validates_its_input(quota: httpx.Client) -> None:
    bad = quota.put("/switchyard/quotas", json={"cores": -1})
    assert bad.status_code == 400 and "usage name -> limit" in bad.json()["error"]["message"]
    assert quota.put("/switchyard/quotas", content=b"not json").status_code == 400
    assert quota.get("/switchyard/quotas").json()["cores"] == 350


@pytest.fixture
def sku_restrictions(http: httpx.Client) -> Iterator[httpx.Client]:
    """The module's emulator; every restriction set by the test is lifted afterwards."""
    yield http
    lifted: dict[str, dict[str, object]] = {name: {} for name in http.get("/switchyard/skus").json()}
    http.put("/switchyard/skus", json=lifted).raise_for_status()


def test_a_size_restricted_in_a_location_is_listed_so_and_cannot_be_deployed_there(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path], sku_restrictions: httpx.Client
) -> None:
    create_web(clients, topo, artifacts["1.0.0"], capacity=1)  # Standard_B1s, before any restriction
    put = sku_restrictions.put(
        "/switchyard/skus",
        json={
            "Standard_B1s": {"restricted_locations": [topo.location]},
            "Standard_B2s": {"restricted_zones": {topo.location: ["2"]}},
        },
    )
    assert put.status_code == 200
    assert put.json()["Standard_B1s"] == {"restricted_locations": [topo.location], "restricted_zones": {}}

    skus = {s.name: s for s in clients.compute.resource_skus.list(filter=f"location eq '{topo.location}'")}
    (location,) = skus["Standard_B1s"].restrictions
    # `values` is the name of a Mapping method on the SDK's models: read the field by its wire name
    assert (location.type, location["values"], location.reason_code) == (
        "Location",
        [topo.location],
        "NotAvailableForSubscription",
    )
    assert location.restriction_info.locations == [topo.location]
    (zone,) = skus["Standard_B2s"].restrictions
    assert (zone.type, zone.restriction_info.zones) == ("Zone", ["2"])
    assert skus["Standard_D2s_v3"].restrictions == []

    scale_sets = clients.compute.virtual_machine_scale_sets
    etag = scale_sets.get(topo.rg, "web").etag
    with pytest.raises(HttpResponseError) as refused:  # even with quota to spare
        scale_sets.begin_update(topo.rg, "web", {"sku": {"capacity": 2}}).result()
    assert (refused.value.status_code, arm_error(refused.value).code) == (409, "SkuNotAvailable")
    assert arm_error(refused.value).message.startswith(
        f"The requested size for resource '{topo.rg_id()}/providers/Microsoft.Compute/virtualMachineScaleSets/web'"
        f" is currently not available in location '{topo.location}' zones ''"
    )
    assert scale_sets.get(topo.rg, "web").etag == etag

    body = topo.scale_set_body(topo.version_id("1.0.0"), 1)
    body["sku"]["name"] = "Standard_B2s"
    scale_sets.begin_create_or_update(topo.rg, "nozone", body).result()  # restricted in a zone it does not use
    with pytest.raises(HttpResponseError) as refused:
        scale_sets.begin_create_or_update(topo.rg, "zoned", {**body, "zones": ["1", "2"]}).result()
    assert arm_error(refused.value).code == "SkuNotAvailable" and "zones '1,2'" in arm_error(refused.value).message
    assert sorted(s.name for s in scale_sets.list(topo.rg)) == ["nozone", "web"]  # "zoned" was not written


def test_the_sku_control_route_validates_its_input(sku_restrictions: httpx.Client) -> None:
    unknown = sku_restrictions.put("/switchyard/skus", json={"Standard_Z99": {"restricted_locations": ["westus"]}})
    assert unknown.status_code == 400 and "Standard_B1s" in unknown.json()["error"]["message"]
    wrong = sku_restrictions.put("/switchyard/skus", json={"Standard_B1s": {"restricted_locations": "westus"}})
    assert wrong.status_code == 400
    assert sku_restrictions.get("/switchyard/skus").json() == {}
