"""Microsoft.Compute's own throttling of scale sets and their VMs: a token bucket per policy, per
resource and per subscription, behind Resource Manager's (throttling.py).

What Azure documents:

* "Compute throttling limits" (https://learn.microsoft.com/azure/virtual-machines/compute-throttling-limits,
  ms.date 2024-05-27): requests to scale sets and scale-set VMs fall into policies; each policy has a
  bucket per resource and one per subscription (per region). A bucket starts full when the resource
  is made, every request spends a token, a request finding a bucket empty is throttled (HTTP 429),
  and each minute the bucket gets its refill rate back, up to its capacity (the page's worked
  example: 12 tokens, 4 a minute; 13 requests in a minute with 12 left: one is throttled). The
  tables, per minute (resource refill / capacity, subscription refill / capacity):

  | policy (here)         | the page's category | requests                                   | resource | subscription |
  |---|---|---|---|---|
  | PutVMScaleSet         | Put VMSS            | create a scale set                         | 4 / 12   | 125 / 375    |
  | UpdateVMScaleSet      | Update VMSS         | update, PUT over one, actions, extensions  | 4 / 12   | 500 / 1,500  |
  | DeleteVMScaleSet      | Delete VMSS         | delete, power off, deallocate              | 4 / 12   | 175 / 525    |
  | LowCostGetVMScaleSet  | Low Cost Get VMSS   | GET one, skus, rolling upgrade, OS history | 12 / 36  | 800 / 2,400  |
  | HighCostGetVMScaleSet | High Cost Get VMSS  | instance view; list (subscription only)    | 10 / 30  | 360 / 1,080  |
  | UpdateVMScaleSetVMs   | Update VMSS VMs     | a VM's update, start, restart, reimage     | 4 / 12   | 500 / 1,500  |
  | DeleteVMScaleSetVMs   | Delete VMSS VMs     | a VM's delete, power off, deallocate       | 4 / 12   | 500 / 1,500  |
  | GetVMScaleSetVMs      | Get VMSS VMs        | GET a VM, its instance view                | 12 / 36  | 2,000/6,000  |

  The page's footnote 2: start, restart, redeploy, perform maintenance, reimage (all), power off and
  the lists count against the subscription's bucket only.
* "Troubleshooting API throttling errors"
  (https://learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors):
  every answer carries `x-ms-ratelimit-remaining-resource: Microsoft.Compute/<policy>;<count>`, one
  per policy applied (here comma-joined in one header, which HTTP reads the same); a throttled
  request is answered 429 `OperationNotAllowed` with a `Retry-After` and a `TooManyRequests` detail
  whose message is a JSON summary of the window. The policy names in these headers are not listed
  anywhere; the emulator names them after the page's categories.

Requests the page does not place (listing a scale set's VMs, `manualUpgrade`, deleting instances
through the scale set) are not throttled here. A request refused by Resource Manager never reaches
the provider, so it spends none of these tokens; one refused here spent Resource Manager's.

Enforced with Resource Manager's throttling (the same switch: the `azure` profile, `--arm-throttling`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from switchyard_emulator.errors import ArmError

REMAINING_HEADER = "x-ms-ratelimit-remaining-resource"
MINUTE_S = 60.0


@dataclass(frozen=True)
class Policy:
    name: str
    # (refill per minute, capacity) of each resource's bucket and of the subscription's
    resource: tuple[int, int]
    subscription: tuple[int, int]


PUT_VMSS = Policy("PutVMScaleSet", (4, 12), (125, 375))
UPDATE_VMSS = Policy("UpdateVMScaleSet", (4, 12), (500, 1500))
DELETE_VMSS = Policy("DeleteVMScaleSet", (4, 12), (175, 525))
LOW_COST_GET_VMSS = Policy("LowCostGetVMScaleSet", (12, 36), (800, 2400))
HIGH_COST_GET_VMSS = Policy("HighCostGetVMScaleSet", (10, 30), (360, 1080))
UPDATE_VMSS_VMS = Policy("UpdateVMScaleSetVMs", (4, 12), (500, 1500))
DELETE_VMSS_VMS = Policy("DeleteVMScaleSetVMs", (4, 12), (500, 1500))
GET_VMSS_VMS = Policy("GetVMScaleSetVMs", (12, 36), (2000, 6000))
POLICIES = (
    PUT_VMSS,
    UPDATE_VMSS,
    DELETE_VMSS,
    LOW_COST_GET_VMSS,
    HIGH_COST_GET_VMSS,
    UPDATE_VMSS_VMS,
    DELETE_VMSS_VMS,
    GET_VMSS_VMS,
)

# Scale-set actions (POST .../virtualMachineScaleSets/NAME/ACTION): the policy, and whether only the
# subscription's bucket counts (the page's footnote 2).
_SCALE_SET_ACTIONS: dict[str, tuple[Policy, bool]] = {
    "start": (UPDATE_VMSS, True),
    "restart": (UPDATE_VMSS, True),
    "redeploy": (UPDATE_VMSS, True),
    "performmaintenance": (UPDATE_VMSS, True),
    "reimage": (UPDATE_VMSS, True),
    "reimageall": (UPDATE_VMSS, True),
    "poweroff": (DELETE_VMSS, True),
    "deallocate": (DELETE_VMSS, False),
    "forcerecoveryservicefabricplatformupdatedomainwalk": (UPDATE_VMSS, False),
    "converttosingleplacementgroup": (UPDATE_VMSS, False),
    "setorchestrationservicestate": (UPDATE_VMSS, False),
}
_SCALE_SET_READS = {"skus", "osupgradehistory"}
_VM_ACTIONS: dict[str, Policy] = {
    "start": UPDATE_VMSS_VMS,
    "restart": UPDATE_VMSS_VMS,
    "reimage": UPDATE_VMSS_VMS,
    "reimageall": UPDATE_VMSS_VMS,
    "simulateeviction": UPDATE_VMSS_VMS,
    "poweroff": DELETE_VMSS_VMS,
    "deallocate": DELETE_VMSS_VMS,
    "retrievebootdiagnosticsdata": GET_VMSS_VMS,
}


@dataclass(frozen=True)
class Charge:
    """What one request costs: a token of `policy`, from `resource`'s bucket (unless None) and the
    subscription's."""

    policy: Policy
    resource: str | None


def charge_of(method: str, segments: list[str], scale_set_exists: Callable[[str], bool]) -> Charge | None:
    """The policy a request to Microsoft.Compute's scale sets falls under, or None (not throttled
    here). `segments`: the request path's, lower-cased; `scale_set_exists(key)` tells a PUT that
    creates from one that updates."""
    method = method.upper()
    try:
        at = segments.index("virtualmachinescalesets")
    except ValueError:
        return None
    if segments[at - 1 : at] != ["microsoft.compute"]:
        return None
    rest = segments[at + 1 :]
    if not rest:  # the list of a resource group's, a subscription's or a location's scale sets
        return Charge(HIGH_COST_GET_VMSS, None) if method == "GET" else None
    scale_set = "/" + "/".join(segments[: at + 2])
    rest = rest[1:]
    if not rest:
        if method == "GET":
            return Charge(LOW_COST_GET_VMSS, scale_set)
        if method == "PUT":
            return Charge(UPDATE_VMSS if scale_set_exists(scale_set) else PUT_VMSS, scale_set)
        if method == "PATCH":
            return Charge(UPDATE_VMSS, scale_set)
        if method == "DELETE":
            return Charge(DELETE_VMSS, scale_set)
        return None
    head = rest[0]
    if len(rest) == 1:
        if method == "GET" and head == "instanceview":
            return Charge(HIGH_COST_GET_VMSS, scale_set)
        if method == "GET" and head in _SCALE_SET_READS:
            return Charge(LOW_COST_GET_VMSS, scale_set)
        if method == "POST" and head in _SCALE_SET_ACTIONS:
            policy, subscription_only = _SCALE_SET_ACTIONS[head]
            return Charge(policy, None if subscription_only else scale_set)
        return None
    if head == "rollingupgrades":
        if method == "GET" and rest[1:] == ["latest"]:
            return Charge(LOW_COST_GET_VMSS, scale_set)
        if method == "POST" and rest[1:] == ["cancel"]:
            return Charge(UPDATE_VMSS, scale_set)
        return None
    if head == "extensions" and len(rest) == 2 and method in ("PUT", "PATCH", "DELETE"):
        return Charge(UPDATE_VMSS, scale_set)
    if head == "virtualmachines":
        vm = f"{scale_set}/virtualmachines/{rest[1]}"
        action = rest[2:]
        if not action:
            if method == "GET":
                return Charge(GET_VMSS_VMS, vm)
            if method in ("PUT", "PATCH"):
                return Charge(UPDATE_VMSS_VMS, vm)
            if method == "DELETE":
                return Charge(DELETE_VMSS_VMS, vm)
            return None
        if action == ["instanceview"] and method == "GET":
            return Charge(GET_VMSS_VMS, vm)
        if len(action) == 1 and method == "POST" and action[0] in _VM_ACTIONS:
            return Charge(_VM_ACTIONS[action[0]], vm)
    return None


@dataclass
class MinuteBucket:
    """A bucket refilled by `refill` tokens at each whole minute since it was made, up to `capacity`."""

    refill: int
    capacity: int
    started_at: float
    tokens: int = field(init=False)
    minutes_refilled: int = field(default=0, init=False)
    # this minute's: the tokens it began with and the requests it has seen (for the 429's summary)
    tokens_at_minute_start: int = field(init=False)
    requests_this_minute: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.tokens_at_minute_start = self.capacity

    def top_up(self, now: float) -> None:
        minutes = int((now - self.started_at) // MINUTE_S)
        if minutes > self.minutes_refilled:
            self.tokens = min(self.capacity, self.tokens + (minutes - self.minutes_refilled) * self.refill)
            self.minutes_refilled = minutes
            self.tokens_at_minute_start = self.tokens
            self.requests_this_minute = 0

    def seconds_until_refill(self, now: float) -> int:
        """Retry-After: whole seconds (at least one) until the next minute's tokens."""
        next_refill = self.started_at + (self.minutes_refilled + 1) * MINUTE_S
        return max(1, math.ceil(next_refill - now))


class ComputeThrottle:
    """Microsoft.Compute's buckets; `admit` spends a token of each bucket a request falls under, or
    raises the provider's 429 and spends none. Runs on the server's event loop without awaiting, so
    no two requests interleave in it."""

    def __init__(self, *, enforced: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.configure(enforced)

    def configure(self, enforced: bool) -> None:
        """On or off, every bucket full again and the counts at zero."""
        self.enforced = enforced
        # (policy, resource key or "" for the subscription's) -> bucket
        self._buckets: dict[tuple[str, str], MinuteBucket] = {}
        self.admitted: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()

    def admit(self, method: str, segments: list[str], scale_set_exists: Callable[[str], bool]) -> dict[str, str]:
        """The remaining-calls header for an admitted request ({} when off, or for a request no policy
        covers). Off, the calls are counted all the same, as Resource Manager's are."""
        charge = charge_of(method, segments, scale_set_exists)
        if charge is None:
            return {}
        policy = charge.policy
        if not self.enforced:
            self.admitted[policy.name] += 1
            return {}
        now = self._clock()
        buckets = [self._bucket(policy, "", policy.subscription, now)]
        if charge.resource is not None:
            buckets.insert(0, self._bucket(policy, charge.resource, policy.resource, now))
        for bucket in buckets:
            bucket.top_up(now)
            bucket.requests_this_minute += 1
        empty = next((bucket for bucket in buckets if bucket.tokens < 1), None)
        if empty is not None:
            self.throttled[policy.name] += 1
            raise self._refusal(policy, empty, now)
        for bucket in buckets:
            bucket.tokens -= 1
        self.admitted[policy.name] += 1
        return {REMAINING_HEADER: ",".join(f"Microsoft.Compute/{policy.name};{bucket.tokens}" for bucket in buckets)}

    def _bucket(self, policy: Policy, resource: str, limits: tuple[int, int], now: float) -> MinuteBucket:
        key = (policy.name, resource)
        bucket = self._buckets.get(key)
        if bucket is None:
            refill, capacity = limits
            bucket = self._buckets[key] = MinuteBucket(refill=refill, capacity=capacity, started_at=now)
        return bucket

    def _refusal(self, policy: Policy, bucket: MinuteBucket, now: float) -> ArmError:
        wait = bucket.seconds_until_refill(now)
        # this minute of the bucket: from its last refill to its next
        minute_start = datetime.now(UTC) - timedelta(seconds=(now - bucket.started_at) % MINUTE_S)
        summary = {
            "operationGroup": policy.name,
            "startTime": minute_start.isoformat(),
            "endTime": (minute_start + timedelta(seconds=MINUTE_S)).isoformat(),
            "allowedRequestCount": bucket.tokens_at_minute_start,
            "measuredRequestCount": bucket.requests_this_minute,
        }
        return ArmError(
            429,
            "OperationNotAllowed",
            "The server rejected the request because too many requests have been received for this subscription.",
            details=[ArmError(429, "TooManyRequests", json.dumps(summary), target=policy.name)],
            headers={"Retry-After": str(wait), REMAINING_HEADER: f"Microsoft.Compute/{policy.name};0"},
        )

    def status(self) -> dict[str, object]:
        return {
            "enforced": self.enforced,
            "limits": {
                policy.name: {
                    "resource_per_minute": policy.resource,
                    "subscription_per_minute": policy.subscription,
                }
                for policy in POLICIES
            },
            "admitted": dict(self.admitted),
            "throttled": dict(self.throttled),
        }
