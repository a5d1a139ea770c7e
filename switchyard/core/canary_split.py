"""Split verification: did the canary receive the share of traffic the rollout aimed for?

The split check (`verify_split`) is separate from the judge: the instance-ratio canary only *aims* at a share of
traffic, so the delivered share is verified, with an exact binomial confidence interval.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, computed_field

from switchyard.core.canary_format import pct
from switchyard.core.canary_inputs import JudgeModel
from switchyard.core.stats import clopper_pearson_interval, scipy_stats

SplitOutcome = Literal["match", "mismatch", "inconclusive"]


class SplitCheck(JudgeModel):
    """Whether the canary received the share of traffic the rollout aimed for."""

    outcome: SplitOutcome
    expected_share: float
    delivered_share: float | None
    canary_requests: int
    total_requests: int
    tolerance: float
    confidence: float
    interval_low: float | None = Field(default=None, description="exact confidence interval of the true share")
    interval_high: float | None = None
    reason: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def matches(self) -> bool:
        return self.outcome == "match"


def verify_split(
    expected_share: float,
    canary_requests: int,
    total_requests: int,
    tolerance: float,
    confidence: float = 0.95,
) -> SplitCheck:
    """Check the delivered canary share against the expected one, within +/- `tolerance`.

    Model: each request lands on the canary with some true probability; the delivered count is
    binomial. The exact (Clopper-Pearson) confidence interval of that probability is compared
    with the band expected +/- tolerance:

    * inside the band -> "match" (the router demonstrably delivers the intended share);
    * disjoint from it -> "mismatch" (demonstrably not: wrong pool membership, a dead canary...);
    * overlapping -> "inconclusive": too little traffic to tell; wait for more requests.

    Round-robin balancing is less random than binomial, so the interval is conservative for it;
    traffic pinned per connection (keep-alive clients) is more clustered than binomial, which
    makes the interval optimistic: verify with many clients or many connections.
    """
    if not 0.0 <= expected_share <= 1.0:
        raise ValueError(f"expected_share must be within [0, 1], got {expected_share}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be within (0, 1), got {tolerance}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if total_requests < 0 or canary_requests < 0:
        raise ValueError("request counts cannot be negative")
    if canary_requests > total_requests:
        raise ValueError(f"canary_requests ({canary_requests}) cannot exceed total_requests ({total_requests})")

    band_low, band_high = max(0.0, expected_share - tolerance), min(1.0, expected_share + tolerance)
    band = f"{pct(expected_share)} +/- {pct(tolerance)}"
    delivered: float | None = None
    low: float | None = None
    high: float | None = None
    outcome: SplitOutcome
    if total_requests == 0:
        outcome = "inconclusive"
        reason = f"No requests were served, so the split ({band}) cannot be verified yet."
    else:
        delivered = canary_requests / total_requests
        low, high = clopper_pearson_interval(canary_requests, total_requests, confidence)
        observed = (
            f"the canary served {canary_requests} of {total_requests} requests ({pct(delivered)}); "
            f"the true share is within [{pct(low)}, {pct(high)}] at {confidence:.0%} confidence"
        )
        if band_low <= low and high <= band_high:
            outcome = "match"
            reason = f"Split verified: {observed}, inside the expected {band}."
        elif high < band_low or low > band_high:
            outcome = "mismatch"
            reason = f"Split mismatch: {observed}, entirely outside the expected {band}."
        else:
            outcome = "inconclusive"
            reason = f"Split not verified yet: {observed}, which overlaps the expected {band} but is not inside it"
            if 0.0 < expected_share < 1.0:
                z = float(scipy_stats().norm.ppf(1 - (1 - confidence) / 2))
                needed = math.ceil(z * z * expected_share * (1 - expected_share) / (tolerance * tolerance))
                reason += f"; roughly {needed} requests are needed to confirm it"
            reason += "."
    return SplitCheck(
        outcome=outcome,
        expected_share=expected_share,
        delivered_share=delivered,
        canary_requests=canary_requests,
        total_requests=total_requests,
        tolerance=tolerance,
        confidence=confidence,
        interval_low=low,
        interval_high=high,
        reason=reason,
    )
