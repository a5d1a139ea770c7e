"""Fault injection: a seeded share of ARM calls answers 429 (the SDK retries after Retry-After),
500 or slowly; configurable at start and at runtime through the authenticated admin route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from switchyard_emulator.testing import EmulatorHandle, arm_error, run_emulator


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    args = ["--fault-rate", "0.2", "--fault-kinds", "429", "--fault-seed", "7", "--lro-retry-after", "0"]
    with run_emulator(tmp_path_factory.mktemp("faulty"), extra_args=args) as handle:
        yield handle


@pytest.fixture
def admin(faulty: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=faulty.endpoint, verify=faulty.ca_bundle, headers={"Authorization": f"Bearer {faulty.token}"}
    ) as client:
        yield client


def test_throttled_calls_are_retried_by_the_sdk_and_succeed(faulty: EmulatorHandle, admin: httpx.Client) -> None:
    clients = faulty.clients(polling_interval=0.05)
    clients.resource.resource_groups.create_or_update("rg", {"location": "westus"})
    for i in range(6):
        clients.compute.galleries.begin_create_or_update("rg", f"g{i}", {"location": "westus"}).result()
    assert len(list(clients.compute.galleries.list_by_resource_group("rg"))) == 6
    status = admin.get("/switchyard/faults").json()
    assert status["kinds"] == ["429"] and status["seed"] == 7
    assert status["injected"]["429"] > 0  # faults really happened, and the SDK rode over them
    clients.close()


def test_the_admin_route_needs_the_token_and_validates(faulty: EmulatorHandle, admin: httpx.Client) -> None:
    with httpx.Client(base_url=faulty.endpoint, verify=faulty.ca_bundle) as anonymous:
        assert anonymous.get("/switchyard/faults").status_code == 401
        assert anonymous.put("/switchyard/faults", json={"rate": 0}).status_code == 401
    bad = admin.put("/switchyard/faults", json={"rate": 2})
    assert bad.status_code == 400 and bad.json()["error"]["target"] == "rate"
    unknown = admin.put("/switchyard/faults", json={"rate": 0.1, "kinds": ["boom"]})
    assert unknown.status_code == 400


def test_faults_set_at_runtime_change_what_clients_see(faulty: EmulatorHandle, admin: httpx.Client) -> None:
    no_retries = faulty.clients(retry_total=0)
    # Its own group, made before any fault: the test must not depend on another test's resources.
    admin.put("/switchyard/faults", json={"rate": 0})
    no_retries.resource.resource_groups.create_or_update("runtime", {"location": "westus"})
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["500"], "seed": 1})
    with pytest.raises(HttpResponseError) as raised:
        no_retries.resource.resource_groups.get("runtime")
    assert raised.value.status_code == 500
    assert arm_error(raised.value).code == "InternalServerError"
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["429"], "retry_after_seconds": 7})
    throttled = httpx.get(
        f"{faulty.endpoint}/subscriptions/{faulty.subscription_id}/resourcegroups/runtime",
        params={"api-version": "2025-04-01"},
        verify=faulty.ca_bundle,
        headers={"Authorization": f"Bearer {faulty.token}"},
    )
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["slow"], "slow_seconds": 0.2})
    assert no_retries.resource.resource_groups.get("runtime").name == "runtime"  # slow, but answered
    admin.put("/switchyard/faults", json={"rate": 0})
    assert no_retries.resource.resource_groups.get("runtime").name == "runtime"
    assert admin.get("/switchyard/faults").json()["injected"] == {"429": 0, "500": 0, "slow": 0}
    no_retries.close()


def test_a_faulted_write_writes_nothing(faulty: EmulatorHandle, admin: httpx.Client, tmp_path: Path) -> None:
    clients = faulty.clients(retry_total=0)
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["500"]})
    with pytest.raises(HttpResponseError):
        clients.resource.resource_groups.create_or_update("never", {"location": "westus"})
    admin.put("/switchyard/faults", json={"rate": 0})
    assert not clients.resource.resource_groups.check_existence("never")
    clients.close()


def test_a_fault_aimed_at_log_queries_leaves_resource_manager_alone_and_stops_at_its_limit(
    faulty: EmulatorHandle, admin: httpx.Client
) -> None:
    """A telemetry outage of a known length: the next three queries answer 500, ARM answers as ever."""
    query = f"/v1/workspaces/{faulty.log_analytics_workspace_id}/query"
    body = {"query": "AzureDiagnostics | take 1", "timespan": "PT1H"}
    groups = f"/subscriptions/{faulty.subscription_id}/resourcegroups"
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["500"], "scope": "log-queries", "limit": 3})

    answers = []
    for _ in range(5):
        answers.append(admin.post(query, json=body).status_code)
        assert admin.get(groups, params={"api-version": "2025-04-01"}).status_code == 200

    assert answers == [500, 500, 500, 200, 200]
    assert admin.get("/switchyard/faults").json()["injected"] == {"429": 0, "500": 3, "slow": 0}
    admin.put("/switchyard/faults", json={"rate": 1.0, "kinds": ["500"], "scope": "arm", "limit": 1})
    assert admin.post(query, json=body).status_code == 200
    assert admin.get(groups, params={"api-version": "2025-04-01"}).status_code == 500
    assert admin.get(groups, params={"api-version": "2025-04-01"}).status_code == 200
    bad = admin.put("/switchyard/faults", json={"rate": 1.0, "scope": "gateway"})
    assert bad.status_code == 400 and bad.json()["error"]["target"] == "scope"
    admin.put("/switchyard/faults", json={"rate": 0})
