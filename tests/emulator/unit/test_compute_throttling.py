"""Microsoft.Compute's token buckets (switchyard_emulator/compute_throttling.py) on a clock the test
moves: which requests fall under which policy, the per-resource and per-subscription buckets, the
minute refill of the documented worked example, and the 429 Azure answers."""

from __future__ import annotations

import json

import pytest

from switchyard_emulator.compute_throttling import (
    DELETE_VMSS,
    GET_VMSS_VMS,
    HIGH_COST_GET_VMSS,
    LOW_COST_GET_VMSS,
    PUT_VMSS,
    UPDATE_VMSS,
    UPDATE_VMSS_VMS,
    ComputeThrottle,
    charge_of,
)
from switchyard_emulator.errors import ArmError

SCALE_SETS = "subscriptions/sub-1/resourcegroups/rg/providers/microsoft.compute/virtualmachinescalesets"
BLUE = f"{SCALE_SETS}/blue"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def segments(path: str) -> list[str]:
    return path.lower().split("/")


def never_exists(key: str) -> bool:
    return False


def admit(throttle: ComputeThrottle, method: str, path: str) -> dict[str, str]:
    return throttle.admit(method, segments(path), never_exists)


def refused(throttle: ComputeThrottle, method: str, path: str) -> ArmError:
    with pytest.raises(ArmError) as raised:
        admit(throttle, method, path)
    return raised.value


@pytest.mark.parametrize(
    ("method", "path", "policy", "per_resource"),
    [
        ("GET", BLUE, LOW_COST_GET_VMSS, True),
        ("GET", f"{BLUE}/skus", LOW_COST_GET_VMSS, True),
        ("GET", f"{BLUE}/rollingUpgrades/latest", LOW_COST_GET_VMSS, True),
        ("GET", f"{BLUE}/instanceView", HIGH_COST_GET_VMSS, True),
        ("GET", SCALE_SETS, HIGH_COST_GET_VMSS, False),
        ("PATCH", BLUE, UPDATE_VMSS, True),
        ("POST", f"{BLUE}/restart", UPDATE_VMSS, False),
        ("PUT", f"{BLUE}/extensions/health", UPDATE_VMSS, True),
        ("DELETE", BLUE, DELETE_VMSS, True),
        ("POST", f"{BLUE}/powerOff", DELETE_VMSS, False),
        ("POST", f"{BLUE}/deallocate", DELETE_VMSS, True),
        ("GET", f"{BLUE}/virtualMachines/3", GET_VMSS_VMS, True),
        ("GET", f"{BLUE}/virtualMachines/3/instanceView", GET_VMSS_VMS, True),
        ("POST", f"{BLUE}/virtualMachines/3/restart", UPDATE_VMSS_VMS, True),
    ],
)
def test_each_documented_request_falls_under_its_policy(
    method: str, path: str, policy: object, per_resource: bool
) -> None:
    charge = charge_of(method, segments(path), never_exists)

    assert charge is not None and charge.policy == policy
    assert (charge.resource is not None) == per_resource


def test_a_put_creates_or_updates_as_the_scale_set_does_or_does_not_exist() -> None:
    created = charge_of("PUT", segments(BLUE), never_exists)
    updated = charge_of("PUT", segments(BLUE), lambda key: key == "/" + BLUE)
    assert created is not None and created.policy == PUT_VMSS
    assert updated is not None and updated.policy == UPDATE_VMSS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{BLUE}/virtualMachines"),  # listing a scale set's VMs: not in the page's tables
        ("POST", f"{BLUE}/manualUpgrade"),
        ("GET", "subscriptions/sub-1/resourcegroups/rg/providers/microsoft.network/applicationgateways/gw"),
        ("GET", "subscriptions/sub-1/resourcegroups/rg/providers/microsoft.insights/virtualmachinescalesets/x"),
    ],
)
def test_what_the_page_does_not_place_is_not_throttled(method: str, path: str) -> None:
    assert charge_of(method, segments(path), never_exists) is None


def test_36_reads_of_one_scale_set_pass_the_37th_is_refused_and_another_scale_set_is_not() -> None:
    clock = Clock()
    throttle = ComputeThrottle(enforced=True, clock=clock)

    headers = [admit(throttle, "GET", BLUE)["x-ms-ratelimit-remaining-resource"] for _ in range(36)]
    error = refused(throttle, "GET", BLUE)

    assert headers[0] == "Microsoft.Compute/LowCostGetVMScaleSet;35,Microsoft.Compute/LowCostGetVMScaleSet;2399"
    assert headers[-1].startswith("Microsoft.Compute/LowCostGetVMScaleSet;0,")
    assert (error.status, error.code) == (429, "OperationNotAllowed")
    assert error.headers == {
        "Retry-After": "60",
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/LowCostGetVMScaleSet;0",
    }
    (detail,) = error.details
    assert (detail.code, detail.target) == ("TooManyRequests", "LowCostGetVMScaleSet")
    summary = json.loads(detail.message)
    assert (summary["allowedRequestCount"], summary["measuredRequestCount"]) == (36, 37)
    # the other color's scale set has a bucket of its own; the subscription's is shared
    assert admit(throttle, "GET", f"{SCALE_SETS}/green")["x-ms-ratelimit-remaining-resource"].endswith(";2363")


def test_the_pages_worked_example_twelve_tokens_refilled_by_four_a_minute() -> None:
    """Update VMSS: capacity 12, 4 a minute. The page's minutes 2..6 see 8, 0, 13, 5 and 0 requests
    and throttle 0, 0, 1, 1 and 0 of them (its first minute, with no request, changes nothing)."""
    clock = Clock()
    throttle = ComputeThrottle(enforced=True, clock=clock)
    throttled_per_minute = []
    for minute, requests in enumerate((8, 0, 13, 5, 0)):
        clock.now = 1000.0 + minute * 60  # the bucket, full, is made by the first request
        throttled = 0
        for _ in range(requests):
            try:
                admit(throttle, "PATCH", BLUE)
            except ArmError:
                throttled += 1
            clock.now += 0.5
        throttled_per_minute.append(throttled)

    assert throttled_per_minute == [0, 0, 1, 1, 0]


def test_a_refused_request_spends_no_token_and_retry_after_counts_down_to_the_next_minute() -> None:
    clock = Clock()
    throttle = ComputeThrottle(enforced=True, clock=clock)
    for _ in range(12):
        admit(throttle, "DELETE", BLUE)
    clock.now += 20
    assert refused(throttle, "DELETE", BLUE).headers["Retry-After"] == "40"
    clock.now += 39.5
    assert refused(throttle, "DELETE", BLUE).headers["Retry-After"] == "1"
    clock.now += 1
    assert admit(throttle, "DELETE", BLUE)["x-ms-ratelimit-remaining-resource"].startswith(
        "Microsoft.Compute/DeleteVMScaleSet;3,"
    )
    assert throttle.status()["throttled"] == {"DeleteVMScaleSet": 2}


def test_subscription_only_requests_spend_the_subscriptions_bucket_alone() -> None:
    clock = Clock()
    throttle = ComputeThrottle(enforced=True, clock=clock)

    assert admit(throttle, "POST", f"{BLUE}/restart") == {
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/UpdateVMScaleSet;1499"
    }


def test_off_it_admits_everything_and_says_nothing() -> None:
    throttle = ComputeThrottle(enforced=False, clock=Clock())

    assert all(admit(throttle, "GET", BLUE) == {} for _ in range(100))
    assert throttle.status()["admitted"] == {"LowCostGetVMScaleSet": 100}  # counted all the same
