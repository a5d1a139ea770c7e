"""Resource Manager's token buckets (switchyard_emulator/throttling.py) on a clock the test moves."""

from __future__ import annotations

import pytest

from switchyard_emulator.errors import ArmError
from switchyard_emulator.profiles import TimingOverrides, timing_profile
from switchyard_emulator.throttling import ArmThrottle, operation_type

# A request's path segments, lowered, as the app hands them over.
SCALE_SET = [
    "subscriptions",
    "sub-1",
    "resourcegroups",
    "rg",
    "providers",
    "microsoft.compute",
    "virtualmachinescalesets",
    "web",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttled(throttle: ArmThrottle, method: str) -> ArmError:
    with pytest.raises(ArmError) as raised:
        throttle.admit(method, SCALE_SET)
    return raised.value


def test_250_reads_pass_at_once_the_next_is_refused_until_a_token_is_back() -> None:
    clock = Clock()
    throttle = ArmThrottle("sub-1", enforced=True, clock=clock)

    remaining = [throttle.admit("GET", SCALE_SET)["x-ms-ratelimit-remaining-subscription-reads"] for _ in range(250)]
    refused = throttled(throttle, "GET")

    assert remaining[0] == "249" and remaining[-1] == "0"
    assert (refused.status, refused.code) == (429, "SubscriptionRequestsThrottled")
    assert refused.headers["Retry-After"] == "1"
    assert "Number of 'read' requests for subscription 'sub-1'" in refused.message
    assert "after '1' seconds" in refused.message
    clock.now += 0.05  # 25 tokens a second: one token (and a quarter)
    assert throttle.admit("GET", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-reads": "0"}
    assert throttled(throttle, "GET").status == 429
    clock.now += 2.0
    assert throttle.admit("GET", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-reads": "49"}
    assert throttle.status()["throttled"] == {"read": 2, "write": 0, "delete": 0}
    assert throttle.status()["admitted"] == {"read": 252, "write": 0, "delete": 0}


def test_a_bucket_refills_to_its_size_and_no_further() -> None:
    clock = Clock()
    throttle = ArmThrottle("sub-1", enforced=True, clock=clock)
    for _ in range(200):
        throttle.admit("PUT", SCALE_SET)
    clock.now += 3600
    assert throttle.admit("PUT", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-writes": "199"}


def test_reads_writes_and_deletes_have_buckets_of_their_own() -> None:
    clock = Clock()
    throttle = ArmThrottle("sub-1", enforced=True, clock=clock)
    for _ in range(200):
        throttle.admit("POST", SCALE_SET)  # an action is a write

    assert throttled(throttle, "PATCH").headers["Retry-After"] == "1"  # 10 a second: a token in 0.1 s
    assert throttle.admit("DELETE", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-deletes": "199"}
    assert throttle.admit("HEAD", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-reads": "249"}


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    clock = Clock()
    throttle = ArmThrottle("sub-1", enforced=True, clock=clock)
    for _ in range(200):
        throttle.admit("DELETE", SCALE_SET)
    bucket = throttle._buckets["delete"]
    bucket.refill_per_s = 0.25  # one token every four seconds: the wait rounds up, never down

    assert throttled(throttle, "DELETE").headers["Retry-After"] == "4"
    clock.now += 1.5
    assert throttled(throttle, "DELETE").headers["Retry-After"] == "3"


def test_off_it_admits_everything_and_says_nothing() -> None:
    throttle = ArmThrottle("sub-1", enforced=False, clock=Clock())
    assert all(throttle.admit("GET", SCALE_SET) == {} for _ in range(1000))
    assert throttle.status()["admitted"] == {"read": 1000, "write": 0, "delete": 0}  # still counted
    throttle.configure(True)
    assert throttle.admit("GET", SCALE_SET) == {"x-ms-ratelimit-remaining-subscription-reads": "249"}


@pytest.mark.parametrize(
    ("method", "kind"),
    [("GET", "read"), ("HEAD", "read"), ("PUT", "write"), ("PATCH", "write"), ("POST", "write"), ("DELETE", "delete")],
)
def test_the_method_decides_the_operation_type(method: str, kind: str) -> None:
    assert operation_type(method) == kind


def test_the_azure_profile_throttles_and_the_fast_one_only_when_asked() -> None:
    assert timing_profile("azure").arm_throttling
    assert not timing_profile("fast").arm_throttling
    assert timing_profile("fast", TimingOverrides(arm_throttling=True)).arm_throttling
    assert not timing_profile("azure", TimingOverrides(arm_throttling=False)).arm_throttling


def test_admitted_requests_are_counted_by_what_they_are_about_without_names() -> None:
    throttle = ArmThrottle("sub-1", enforced=False)
    instance_view = [*SCALE_SET, "virtualmachines", "0", "instanceview"]
    operation = [
        "subscriptions",
        "sub-1",
        "providers",
        "microsoft.network",
        "locations",
        "westeurope",
        "operations",
        "abc",
    ]

    for path in (SCALE_SET, SCALE_SET, instance_view, operation):
        throttle.admit("GET", path)
    throttle.admit("PUT", SCALE_SET)

    assert throttle.status()["admitted_by_resource_type"] == {
        "GET microsoft.compute/virtualmachinescalesets": 2,
        "GET microsoft.compute/virtualmachinescalesets/virtualmachines/instanceview": 1,
        "GET microsoft.network/locations/operations": 1,
        "PUT microsoft.compute/virtualmachinescalesets": 1,
    }
