"""Resource Manager's throttling over the wire: a client that reads faster than Azure allows gets
Azure's 429 (SubscriptionRequestsThrottled, Retry-After), the SDK rides over it, and the admin route
turns it on and off. The buckets' arithmetic is in tests/emulator/unit/test_throttling.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from switchyard_emulator.testing import EmulatorHandle, run_emulator

API_VERSION = "2025-04-01"  # resource groups


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """This module's own (conftest's `http` client talks to it): a fast emulator that throttles."""
    with run_emulator(tmp_path_factory.mktemp("throttled"), extra_args=["--arm-throttling"], storage=False) as handle:
        yield handle


@pytest.fixture
def arm(http: httpx.Client) -> httpx.Client:
    """A raw client (no SDK retries), with Resource Manager's buckets full again."""
    assert http.put("/switchyard/throttling", json={"enforced": True}).status_code == 200
    return http


def groups_path(emulator: EmulatorHandle) -> str:
    return f"/subscriptions/{emulator.subscription_id}/resourcegroups"


def test_reads_beyond_the_bucket_get_azures_429_and_writes_still_pass(
    emulator: EmulatorHandle, arm: httpx.Client
) -> None:
    path = groups_path(emulator)
    # Eight at a time, so that the reads outpace the refill (25 a second) however slow this machine
    # answers one: 250 pass at once, and some of the rest are refused.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: arm.get(path, params={"api-version": API_VERSION}), range(600)))
    passed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]

    assert len(passed) + len(refused) == len(answers)
    assert refused, "600 reads, eight at a time, were never throttled"
    assert len(passed) >= 250
    assert max(int(a.headers["x-ms-ratelimit-remaining-subscription-reads"]) for a in passed) == 249
    assert {a.headers["Retry-After"] for a in refused} == {"1"}
    error = refused[0].json()["error"]
    assert error["code"] == "SubscriptionRequestsThrottled"
    assert f"Number of 'read' requests for subscription '{emulator.subscription_id}'" in error["message"]
    # writes have a bucket of their own
    written = arm.put(f"{path}/still-writable", params={"api-version": API_VERSION}, json={"location": "westus"})
    assert written.status_code in (200, 201)
    assert int(written.headers["x-ms-ratelimit-remaining-subscription-writes"]) == 199
    status = arm.get("/switchyard/throttling").json()
    assert status["enforced"] and status["throttled"]["read"] == len(refused)


def test_the_sdk_waits_out_the_429s_and_every_read_succeeds(emulator: EmulatorHandle, arm: httpx.Client) -> None:
    clients = emulator.clients()
    try:
        clients.resource.resource_groups.create_or_update("burst", {"location": "westus"})
        with ThreadPoolExecutor(max_workers=4) as pool:
            names = list(pool.map(lambda _: clients.resource.resource_groups.get("burst").name, range(400)))
    finally:
        clients.close()

    assert names == ["burst"] * 400
    assert arm.get("/switchyard/throttling").json()["throttled"]["read"] > 0  # it was throttled, and rode over it


def test_the_admin_route_turns_it_off_and_refuses_what_it_does_not_know(
    emulator: EmulatorHandle, arm: httpx.Client
) -> None:
    assert arm.put("/switchyard/throttling", json={"enforced": "sometimes"}).status_code == 400
    unknown = arm.put("/switchyard/throttling", json={"enforced": False, "reads": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "InvalidThrottlingConfiguration"
    with httpx.Client(base_url=emulator.endpoint, verify=emulator.ca_bundle) as anonymous:
        assert anonymous.put("/switchyard/throttling", json={"enforced": False}).status_code == 401
    assert arm.get("/switchyard/throttling").json()["enforced"]  # nothing changed

    arm.put("/switchyard/throttling", json={"enforced": False})
    path = groups_path(emulator)
    answers = [arm.get(path, params={"api-version": API_VERSION}) for _ in range(300)]

    assert {a.status_code for a in answers} == {200}
    assert "x-ms-ratelimit-remaining-subscription-reads" not in answers[-1].headers


def test_reads_of_one_scale_set_beyond_microsoft_computes_bucket_get_its_429_while_another_passes(
    emulator: EmulatorHandle, arm: httpx.Client
) -> None:
    """Compute throttling limits: Low Cost Get VMSS, 36 per scale set (refilled by 12 a minute), far
    below Resource Manager's 250 reads (switchyard_emulator/compute_throttling.py)."""
    group = f"{groups_path(emulator)}/compute-throttled"
    assert arm.put(group, params={"api-version": API_VERSION}, json={"location": "westus"}).status_code in (200, 201)
    scale_sets = f"{group}/providers/Microsoft.Compute/virtualMachineScaleSets"
    compute_version = {"api-version": "2024-11-01"}

    answers = [arm.get(f"{scale_sets}/blue", params=compute_version) for _ in range(37)]
    other = arm.get(f"{scale_sets}/green", params=compute_version)

    assert [a.status_code for a in answers[:36]] == [404] * 36  # none made: the provider still counts them
    assert (
        answers[0].headers["x-ms-ratelimit-remaining-resource"].startswith("Microsoft.Compute/LowCostGetVMScaleSet;35,")
    )
    refused = answers[36]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ms-ratelimit-remaining-resource"] == "Microsoft.Compute/LowCostGetVMScaleSet;0"
    assert int(refused.headers["x-ms-ratelimit-remaining-subscription-reads"]) > 150  # not Resource Manager's
    error = refused.json()["error"]
    assert error["code"] == "OperationNotAllowed"
    assert error["details"][0]["code"] == "TooManyRequests"
    assert json.loads(error["details"][0]["message"])["operationGroup"] == "LowCostGetVMScaleSet"
    assert other.status_code == 404  # green has a bucket of its own
    status = arm.get("/switchyard/throttling").json()["compute"]
    assert status["enforced"] and status["throttled"] == {"LowCostGetVMScaleSet": 1}


def test_log_analytics_refuses_a_users_201st_query_within_30_seconds(
    emulator: EmulatorHandle, arm: httpx.Client
) -> None:
    query = f"/v1/workspaces/{emulator.log_analytics_workspace_id}/query"
    body = {"query": "AzureDiagnostics | take 1", "timespan": "PT1H"}

    answers = [arm.post(query, json=body) for _ in range(201)]

    assert [a.status_code for a in answers[:200]] == [200] * 200
    refused = answers[200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "ThrottledError"
    assert "200 in the last 30 seconds" in refused.json()["error"]["message"]
    assert (
        arm.get(
            f"/subscriptions/{emulator.subscription_id}/resourcegroups", params={"api-version": API_VERSION}
        ).status_code
        == 200
    )  # Resource Manager's own budget is another
    status = arm.get("/switchyard/throttling").json()["log_queries"]
    assert status["enforced"] and status["admitted"] == 200 and status["throttled"]["rate"] == 1
