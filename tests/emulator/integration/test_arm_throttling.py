"""Resource Manager's throttling over the wire: a client that reads faster than Azure allows gets
Azure's 429 (SubscriptionRequestsThrottled, Retry-After), the SDK rides over it, and the admin route
turns it on and off. The buckets' arithmetic is in tests/emulator/unit/test_throttling.py."""

from __future__ import annotations

from collections.abc import Iterator

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
    answers = []
    for _ in range(1000):  # 250 at once, and 25 more each second the loop takes
        answer = arm.get(path, params={"api-version": API_VERSION})
        answers.append(answer)
        if answer.status_code == 429:
            break
    refused = answers[-1]

    assert refused.status_code == 429, "1000 reads in a row were never throttled"
    assert len(answers) > 250
    assert {a.status_code for a in answers[:-1]} == {200}
    assert int(answers[0].headers["x-ms-ratelimit-remaining-subscription-reads"]) == 249
    assert refused.headers["Retry-After"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "SubscriptionRequestsThrottled"
    assert f"Number of 'read' requests for subscription '{emulator.subscription_id}'" in error["message"]
    # writes have a bucket of their own
    written = arm.put(f"{path}/still-writable", params={"api-version": API_VERSION}, json={"location": "westus"})
    assert written.status_code in (200, 201)
    assert int(written.headers["x-ms-ratelimit-remaining-subscription-writes"]) == 199
    status = arm.get("/switchyard/throttling").json()
    assert status["enforced"] and status["throttled"]["read"] >= 1


def test_the_sdk_waits_out_the_429s_and_every_read_succeeds(emulator: EmulatorHandle, arm: httpx.Client) -> None:
    clients = emulator.clients()
    try:
        clients.resource.resource_groups.create_or_update("burst", {"location": "westus"})
        names = [clients.resource.resource_groups.get("burst").name for _ in range(300)]
    finally:
        clients.close()

    assert names == ["burst"] * 300
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
