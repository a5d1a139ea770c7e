"""The ARM wire basics every client relies on: auth, api-versions, error bodies, case-insensitive
paths, paging with nextLink, request ids. Real emulator process, real HTTPS."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from switchyard_emulator.testing import (
    EmulatorClients,
    EmulatorHandle,
    SampleTopology,
    StaticTokenCredential,
    arm_error,
)


def test_calls_without_or_with_a_wrong_token_get_401_with_an_arm_error_body(emulator: EmulatorHandle) -> None:
    path = f"/subscriptions/{emulator.subscription_id}/resourcegroups?api-version=2025-04-01"
    with httpx.Client(base_url=emulator.endpoint, verify=emulator.ca_bundle) as raw:
        missing = raw.get(path)
        wrong = raw.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AuthenticationFailed"
    assert "Authorization" in missing.json()["error"]["message"]
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "not-the-token" not in wrong.text  # a presented secret is never echoed
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")

    from azure.mgmt.resource.resources import ResourceManagementClient

    bad = ResourceManagementClient(
        StaticTokenCredential("wrong"),
        emulator.subscription_id,
        base_url=emulator.endpoint,
        connection_verify=emulator.ca_bundle,
    )
    with pytest.raises(ClientAuthenticationError):
        bad.resource_groups.get("anything")
    bad.close()


def test_tls_is_verified_with_the_emulators_ca_only(emulator: EmulatorHandle) -> None:
    with pytest.raises(httpx.ConnectError), httpx.Client(base_url=emulator.endpoint) as untrusting:
        untrusting.get("/")


def test_unknown_or_missing_api_version_is_refused_like_arm(http: httpx.Client, topo: SampleTopology) -> None:
    path = f"{topo.rg_id()}/providers/Microsoft.Compute/virtualMachineScaleSets/x"
    unknown = http.get(path, params={"api-version": "2099-01-01"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "NoRegisteredProviderFound"
    assert "2026-04-01" in unknown.json()["error"]["message"]  # names the supported versions
    malformed = http.get(path, params={"api-version": "latest"})
    assert malformed.json()["error"]["code"] == "InvalidApiVersionParameter"
    missing = http.get(path)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"


def test_everything_needs_an_existing_resource_group(clients: EmulatorClients, topo: SampleTopology) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        clients.compute.galleries.get(topo.rg, "nope")
    assert arm_error(raised.value).code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError):
        clients.compute.galleries.begin_create_or_update(topo.rg, "g1", {"location": "westus"}).result()
    assert not clients.resource.resource_groups.check_existence(topo.rg)
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus", "tags": {"a": "1"}})
    assert clients.resource.resource_groups.check_existence(topo.rg)
    group = clients.resource.resource_groups.get(topo.rg.upper())
    assert group.name == topo.rg  # the casing it was created with
    assert group.tags == {"a": "1"}
    with pytest.raises(ResourceNotFoundError) as raised:
        clients.compute.galleries.get(topo.rg, "nope")
    assert arm_error(raised.value).code == "ResourceNotFound"


def test_paths_and_names_are_case_insensitive_and_keep_their_creation_casing(
    clients: EmulatorClients, topo: SampleTopology, http: httpx.Client
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    clients.compute.galleries.begin_create_or_update(topo.rg, "MyGallery", {"location": "westus"}).result()
    shouted = http.get(
        f"/SUBSCRIPTIONS/{topo.sub.upper()}/RESOURCEGROUPS/{topo.rg.upper()}/PROVIDERS/MICROSOFT.COMPUTE/"
        "GALLERIES/mygallery",
        params={"api-version": "2026-03-03"},
    )
    assert shouted.status_code == 200
    assert shouted.json()["name"] == "MyGallery"
    assert shouted.json()["id"] == f"{topo.rg_id()}/providers/Microsoft.Compute/galleries/MyGallery"
    # an update through another casing updates the same resource
    clients.compute.galleries.begin_create_or_update(
        topo.rg.upper(), "MYGALLERY", {"location": "westus", "tags": {"x": "y"}}
    ).result()
    listed = list(clients.compute.galleries.list_by_resource_group(topo.rg))
    assert [(g.name, g.tags) for g in listed] == [("MyGallery", {"x": "y"})]


def test_lists_page_with_a_next_link_that_keeps_the_api_version(
    clients: EmulatorClients, topo: SampleTopology, http: httpx.Client
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    names = [f"g{i}" for i in range(7)]
    for name in names:
        clients.compute.galleries.begin_create_or_update(topo.rg, name, {"location": "westus"}).result()
    first = http.get(f"{topo.rg_id()}/providers/Microsoft.Compute/galleries", params={"api-version": "2026-03-03"})
    body = first.json()
    assert len(body["value"]) == 3  # the module's emulator pages by 3
    assert "api-version=2026-03-03" in body["nextLink"]
    second = http.get(body["nextLink"])
    assert [g["name"] for g in second.json()["value"]] == names[3:6]
    # the SDK follows nextLink to the end
    assert sorted(g.name for g in clients.compute.galleries.list_by_resource_group(topo.rg)) == names


def test_answers_carry_request_ids_and_unknown_paths_answer_arm_errors(http: httpx.Client) -> None:
    response = http.get("/subscriptions/x/nothing/here", params={"api-version": "2025-04-01"})
    assert response.status_code == 404
    assert set(response.json()["error"]) >= {"code", "message"}
    assert response.headers["x-ms-request-id"]
    wrong_sub = http.get(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/x",
        params={"api-version": "2025-04-01"},
    )
    assert wrong_sub.status_code == 404
    assert wrong_sub.json()["error"]["code"] == "SubscriptionNotFound"


def test_a_method_the_resource_does_not_have_is_405(http: httpx.Client, topo: SampleTopology) -> None:
    response = http.post(
        f"{topo.rg_id()}/providers/Microsoft.Compute/galleries/g", params={"api-version": "2026-03-03"}
    )
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_sdk_errors_carry_the_arm_error(clients: EmulatorClients, topo: SampleTopology) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    with pytest.raises(HttpResponseError) as raised:
        clients.compute.galleries.begin_create_or_update(topo.rg, "bad-name", {"location": "westus"}).result()
    assert raised.value.status_code == 400
    assert arm_error(raised.value).code == "InvalidGalleryName"


def test_deleting_a_group_deletes_only_what_is_in_it_even_when_names_differ_by_a_wildcard(
    clients: EmulatorClients,
) -> None:
    """'_' is a LIKE wildcard: deleting group rg_1 once took rgx1's resources with it."""
    for group in ("rg_1", "rgx1"):
        clients.resource.resource_groups.create_or_update(group, {"location": "westus"})
        clients.compute.galleries.begin_create_or_update(group, "g1", {"location": "westus"}).result()
    clients.resource.resource_groups.begin_delete("rg_1").result()

    assert not clients.resource.resource_groups.check_existence("rg_1")
    assert clients.compute.galleries.get("rgx1", "g1").name == "g1"


def test_bodies_over_4_mb_are_refused_before_anything_is_written(http: httpx.Client, emulator: EmulatorHandle) -> None:
    group = f"/subscriptions/{emulator.subscription_id}/resourcegroups/huge"
    padding = "x" * (4 * 1024 * 1024 + 1)
    body = json.dumps({"location": "westus", "tags": {"padding": padding}})
    refused = http.put(group, params={"api-version": "2025-04-01"}, content=body)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "RequestEntityTooLarge"
    assert http.get(group, params={"api-version": "2025-04-01"}).status_code == 404

    # Without a Content-Length (chunked), the limit holds while reading.
    def chunks() -> Iterator[bytes]:
        yield body.encode()

    chunked = http.put(group, params={"api-version": "2025-04-01"}, content=chunks())
    assert chunked.status_code == 413
    assert http.put("/switchyard/faults", content=json.dumps({"rate": 0, "pad": padding})).status_code == 413
    assert http.get("/switchyard/faults").json()["rate"] == 0
