"""Azure Resource Manager's request throttling: a token bucket per subscription and operation type.

What Azure documents ("Understand how Azure Resource Manager throttles requests",
https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling,
"Regional throttling and token bucket algorithm", in force since 2024):

* limits apply per subscription, per security principal and per operation type: reads (GET) have a
  bucket of 250 tokens refilled at 25 per second, writes and deletes 200 refilled at 10 per second;
* a request beyond the bucket is answered **429** with a `Retry-After` in seconds; a request sent
  before that time is not processed either;
* reads answer `x-ms-ratelimit-remaining-subscription-reads`, writes
  `x-ms-ratelimit-remaining-subscription-writes` (the "Remaining requests" table), deletes
  `x-ms-ratelimit-remaining-subscription-deletes`.

The 429's body is ARM's (code `SubscriptionRequestsThrottled`, quoted from a real answer in
velero-io/velero#9171): "Number of 'read' requests for subscription '...' actor '...' exceeded.
Please try again after '1' seconds after additional tokens are available. Refer to
https://aka.ms/arm-throttling for additional information."

The emulator has one principal (its token) and one subscription, so one bucket per operation type.
The per-subscription limit across principals (15 times one principal's) can never be the tighter one
here. Behind it, Microsoft.Compute throttles scale sets and their VMs per resource
(compute_throttling.py); Microsoft.Network's limits (10,000 reads per 5 minutes) are looser than
ARM's over any window a release lasts and are not modelled.

Whether the emulator enforces it is part of its timing profile (profiles.py): the `azure` profile
does; the `fast` profile, whose operations finish in milliseconds and whose clients poll them every
50 ms, does not unless asked (`--arm-throttling`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from switchyard_emulator.errors import ArmError, validated_settings

OperationType = Literal["read", "write", "delete"]

# The documented bucket sizes and refill rates (tokens per second), per subscription and principal.
LIMITS: dict[OperationType, tuple[int, float]] = {
    "read": (250, 25.0),
    "write": (200, 10.0),
    "delete": (200, 10.0),
}
REMAINING_HEADER: dict[OperationType, str] = {
    "read": "x-ms-ratelimit-remaining-subscription-reads",
    "write": "x-ms-ratelimit-remaining-subscription-writes",
    "delete": "x-ms-ratelimit-remaining-subscription-deletes",
}
# Who the emulator says was throttled: its only principal, the holder of its token.
EMULATOR_ACTOR = "switchyard-emulator-principal"


def resource_type_of(method: str, lowered: list[str]) -> str:
    """What a request is about, without names: its method and the resource type path below the last
    `providers` segment (`GET microsoft.compute/virtualmachinescalesets/virtualmachines`), so that a
    client's reads can be told apart by what they read."""
    if "providers" not in lowered:
        return f"{method} {'/'.join(lowered[2:3]) or '/'}"
    at = len(lowered) - 1 - lowered[::-1].index("providers")
    provider, *rest = lowered[at + 1 :] or ["?"]
    # Below the provider, types and names alternate: type/name/type/name[/action]
    types = rest[0::2]
    return f"{method} {'/'.join([provider, *types])}"


def operation_type(method: str) -> OperationType:
    """ARM counts GET (and HEAD) as reads, DELETE as deletes, and every other method as a write."""
    upper = method.upper()
    if upper in ("GET", "HEAD"):
        return "read"
    if upper == "DELETE":
        return "delete"
    return "write"


@dataclass
class TokenBucket:
    size: int
    refill_per_s: float
    tokens: float
    updated_at: float

    def take(self, now: float) -> float | None:
        """Spend a token: the tokens left, or None and nothing spent when the bucket is empty."""
        self.tokens = min(float(self.size), self.tokens + (now - self.updated_at) * self.refill_per_s)
        self.updated_at = now
        if self.tokens < 1.0:
            return None
        self.tokens -= 1.0
        return self.tokens

    def seconds_until_a_token(self) -> int:
        """Retry-After: whole seconds (at least one) until the next token is in the bucket."""
        return max(1, math.ceil((1.0 - self.tokens) / self.refill_per_s))


class ThrottleConfig(BaseModel):
    """What `PUT /switchyard/throttling` takes."""

    model_config = ConfigDict(extra="forbid")

    enforced: bool


class ArmThrottle:
    """The subscription's buckets; `admit` spends a token or raises ARM's 429.

    `admit` runs on the server's event loop and never awaits, so no two requests interleave in it.
    """

    def __init__(self, subscription_id: str, *, enforced: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.subscription_id = subscription_id
        self._clock = clock
        self.configure(enforced)

    def configure(self, enforced: bool) -> None:
        """Turn enforcement on or off, with full buckets and the counts at zero."""
        self.enforced = enforced
        now = self._clock()
        self._buckets = {
            kind: TokenBucket(size=size, refill_per_s=rate, tokens=float(size), updated_at=now)
            for kind, (size, rate) in LIMITS.items()
        }
        self.admitted: dict[OperationType, int] = {"read": 0, "write": 0, "delete": 0}
        self.throttled: dict[OperationType, int] = {"read": 0, "write": 0, "delete": 0}
        self.admitted_by_resource_type: Counter[str] = Counter()

    def admit(self, method: str, lowered: list[str]) -> dict[str, str]:
        """The remaining-requests header for an admitted request ({} when throttling is off: the call
        is counted all the same, since how fast a client reads, and what, is worth knowing)."""
        kind = operation_type(method)
        remaining = self._spend(kind) if self.enforced else {}
        self.admitted[kind] += 1
        self.admitted_by_resource_type[resource_type_of(method, lowered)] += 1
        return remaining

    def _spend(self, kind: OperationType) -> dict[str, str]:
        """A token of `kind`'s bucket, or ARM's 429 when it is empty."""
        bucket = self._buckets[kind]
        left = bucket.take(self._clock())
        if left is None:
            self.throttled[kind] += 1
            wait = bucket.seconds_until_a_token()
            raise ArmError(
                429,
                "SubscriptionRequestsThrottled",
                f"Number of '{kind}' requests for subscription '{self.subscription_id}' actor '{EMULATOR_ACTOR}' "
                f"exceeded. Please try again after '{wait}' seconds after additional tokens are available. "
                "Refer to https://aka.ms/arm-throttling for additional information.",
                headers={"Retry-After": str(wait), REMAINING_HEADER[kind]: "0"},
            )
        return {REMAINING_HEADER[kind]: str(math.floor(left))}

    def configure_from_json(self, data: object) -> ThrottleConfig:
        config = validated_settings(ThrottleConfig, data, "InvalidThrottlingConfiguration")
        self.configure(config.enforced)
        return config

    def status(self) -> dict[str, object]:
        """The admin route's answer: whether it is enforced, the limits, and how often it said yes and no."""
        return {
            "enforced": self.enforced,
            "limits": {kind: {"bucket": size, "refill_per_s": rate} for kind, (size, rate) in LIMITS.items()},
            "admitted": dict(self.admitted),
            "throttled": dict(self.throttled),
            "admitted_by_resource_type": dict(self.admitted_by_resource_type.most_common()),
        }
