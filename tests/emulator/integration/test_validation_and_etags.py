"""Strict validation (driven by the SDK's own models), references that must resolve, read-only
fields, ETags with If-Match / If-None-Match. A refused write writes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error, free_port


def _refused(raised: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str, str]:
    error = arm_error(raised.value)
    return error.status, error.code, error.target


def test_unknown_fields_wrong_types_and_missing_fields_are_400_naming_the_field(
    clients: EmulatorClients, topo: SampleTopology, http: httpx.Client
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    url = f"{topo.rg_id()}/providers/Microsoft.Compute/galleries/g1"
    params = {"api-version": "2026-03-03"}
    unknown = http.put(url, params=params, json={"location": "westus", "properties": {"descripton": "typo"}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["target"] == "properties.descripton"
    assert "descripton" in unknown.json()["error"]["message"]
    wrong_type = http.put(url, params=params, json={"location": "westus", "tags": {"a": 1}})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"]["target"] == "tags.a"
    missing = http.put(url, params=params, json={"properties": {}})
    assert missing.status_code == 400
    assert missing.json()["error"]["target"] == "location"
    not_json = http.put(url, params=params, content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    # nothing was written by any of them
    assert http.get(url, params=params).status_code == 404

    with pytest.raises(HttpResponseError) as raised:
        clients.compute.gallery_images.begin_create_or_update(
            topo.rg, "g1", "img", {"location": "westus", "properties": {"osType": "Linux"}}
        ).result()
    assert raised.value.status_code in (400, 404)


def test_a_scale_set_needs_what_it_references_to_exist(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    version = topo.publish("1.0.0", artifacts["1.0.0"])
    missing_version = topo.version_id("7.7.7")
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            topo.rg, "vmss", topo.scale_set_body(missing_version, 1)
        ).result()
    status, _code, target = _refused(raised)
    assert (status, target) == (400, "properties.virtualMachineProfile.storageProfile.imageReference.id")

    body = topo.scale_set_body(version.id, 1, pool="blue")  # no gateway exists
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(topo.rg, "vmss", body).result()
    status, code, target = _refused(raised)
    assert status == 400 and code == "InvalidResourceReference"
    assert target == (
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[0].properties."
        "ipConfigurations[0].properties.applicationGatewayBackendAddressPools[0].id"
    )
    body = topo.scale_set_body(version.id, 1)
    body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"][
        "ipConfigurations"
    ][0]["properties"]["subnet"]["id"] = topo.subnet_id("nosuch")
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(topo.rg, "vmss", body).result()
    assert arm_error(raised.value).target.endswith("ipConfigurations[0].properties.subnet.id")
    assert list(clients.compute.virtual_machine_scale_sets.list(topo.rg)) == []  # nothing written


def test_gateway_internal_references_must_resolve(clients: EmulatorClients, topo: SampleTopology) -> None:
    topo.network()
    body = topo.gateway_body(free_port())
    body["properties"]["requestRoutingRules"][0]["properties"]["backendAddressPool"]["id"] = topo.pool_id("purple")
    with pytest.raises(HttpResponseError) as raised:
        clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", body).result()
    status, code, target = _refused(raised)
    assert (status, code) == (400, "InvalidResourceReference")
    assert target == "properties.requestRoutingRules[0].properties.backendAddressPool.id"
    body = topo.gateway_body(free_port())
    body["properties"]["httpListeners"][0]["properties"]["frontendPort"]["id"] += "-missing"
    with pytest.raises(HttpResponseError) as raised:
        clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", body).result()
    assert arm_error(raised.value).target == "properties.httpListeners[0].properties.frontendPort.id"
    body = topo.gateway_body(free_port())
    body["properties"]["frontendIPConfigurations"][0]["properties"]["publicIPAddress"]["id"] = topo.network_id(
        "publicIPAddresses", "ghost"
    )
    with pytest.raises(HttpResponseError) as raised:
        clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", body).result()
    assert arm_error(raised.value).target == "properties.frontendIPConfigurations[0].properties.publicIPAddress.id"
    with pytest.raises(ResourceNotFoundError):
        clients.network.application_gateways.get(topo.rg, "agw")


def test_read_only_fields_are_ignored_on_input_and_recomputed(
    clients: EmulatorClients, topo: SampleTopology, http: httpx.Client
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    url = f"{topo.rg_id()}/providers/Microsoft.Compute/galleries/g1"
    answer = http.put(
        url,
        params={"api-version": "2026-03-03"},
        json={
            "location": "westus",
            "id": "/subscriptions/forged",
            "name": "forged",
            "type": "Forged/type",
            "properties": {"provisioningState": "Failed", "identifier": {"uniqueName": "forged"}},
        },
    )
    assert answer.status_code == 201
    body = answer.json()
    assert body["id"].endswith("/galleries/g1") and body["name"] == "g1"
    assert body["type"] == "Microsoft.Compute/galleries"
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert body["properties"]["identifier"]["uniqueName"] == f"{topo.sub}-G1"


def test_stale_if_match_is_412_and_the_sdk_raises_resource_modified(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    version = topo.publish("1.0.0", artifacts["1.0.0"])
    scale_sets = clients.compute.virtual_machine_scale_sets
    created = scale_sets.begin_create_or_update(topo.rg, "vmss", topo.scale_set_body(version.id, 1)).result()
    assert created.etag
    fresh = scale_sets.begin_update(
        topo.rg,
        "vmss",
        {"tags": {"stage": "canary"}},
        etag=created.etag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert fresh.tags == {"stage": "canary"} and fresh.etag != created.etag
    with pytest.raises(ResourceModifiedError):
        scale_sets.begin_update(
            topo.rg,
            "vmss",
            {"tags": {"stage": "stale"}},
            etag=created.etag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    with pytest.raises(ResourceExistsError):  # If-None-Match: * on an existing resource
        scale_sets.begin_create_or_update(
            topo.rg, "vmss", topo.scale_set_body(version.id, 1), match_condition=MatchConditions.IfMissing
        ).result()
    assert scale_sets.get(topo.rg, "vmss").tags == {"stage": "canary"}

    # gateways: the network SDK takes If-Match as a header; map 412 as the adapter does
    gateway = clients.network.application_gateways.begin_create_or_update(
        topo.rg, "agw", topo.gateway_body(free_port())
    ).result()
    gateway.tags = {"v": "2"}
    updated = clients.network.application_gateways.begin_create_or_update(
        topo.rg, "agw", gateway, headers={"If-Match": gateway.etag}
    ).result()
    with pytest.raises(ResourceModifiedError):
        clients.network.application_gateways.begin_create_or_update(
            topo.rg,
            "agw",
            gateway,
            headers={"If-Match": gateway.etag},
            error_map={412: ResourceModifiedError},
        ).result()
    assert clients.network.application_gateways.get(topo.rg, "agw").etag == updated.etag


def test_gallery_resources_take_if_match_as_a_header(
    topo: SampleTopology, artifacts: dict[str, Path], http: httpx.Client
) -> None:
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    url = f"{topo.version_id('1.0.0')}"
    params = {"api-version": "2026-03-03"}
    etag = http.get(url, params=params).headers["ETag"]
    ok = http.patch(url, params=params, json={"tags": {"a": "b"}}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.headers["ETag"] != etag
    stale = http.patch(url, params=params, json={"tags": {"a": "c"}}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "PreconditionFailed"
    assert http.get(url, params=params).json()["tags"] == {"a": "b"}


def test_409_conflicts_say_what_is_in_the_way(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    with pytest.raises(ResourceExistsError) as raised:
        clients.compute.galleries.begin_delete(topo.rg, "gallery").result()
    assert raised.value.status_code == 409
    assert "image definitions" in arm_error(raised.value).message
    # a frontend port another process holds cannot be used by a new listener
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(ResourceExistsError) as raised:
            clients.network.application_gateways.begin_create_or_update(
                topo.rg, "agw", topo.gateway_body(holder.getsockname()[1])
            ).result()
        assert arm_error(raised.value).code == "FrontendPortInUse"
        assert str(holder.getsockname()[1]) in arm_error(raised.value).message
    finally:
        holder.close()
