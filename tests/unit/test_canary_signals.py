"""What a look at the metrics makes of them: the gateway's own errors count against the canary in
complete grains only, and complete grains are never judged without the pool's own counts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from switchyard.cloud.ports import RequestCounts
from switchyard.core.analysis import canary_sides
from switchyard.core.topology import Color
from tasks.canary import MetricReads, _signals
from tests.unit.core.cloud_states import OBSERVED_AT, V1, V2, address, observed, scale_set

CANARY = address(Color.GREEN, 0)
SIDES = canary_sides(
    observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=[CANARY]),
    [CANARY],
    Color.BLUE,
    Color.GREEN,
)
# The canary's backend answered 100 requests, 1 with a 5xx; the pool failed 4 more the gateway
# produced itself (a backend that died mid-request: 502), which no backend's counts hold.
BACKENDS = {CANARY: RequestCounts(total=100, failed=1), address(Color.BLUE, 0): RequestCounts(total=300)}
POOL = RequestCounts(total=404, failed=5)


def reads(served: RequestCounts | None) -> MetricReads:
    return MetricReads(
        start=OBSERVED_AT, end=OBSERVED_AT + timedelta(minutes=1), counts=BACKENDS, served=served, every_vm={}
    )


def test_complete_grains_count_the_gateways_own_errors_against_the_canary() -> None:
    signals = _signals(SIDES, reads(POOL), ())
    assert signals.gateway_errors == 4
    assert signals.evidence.canary.error_count == 5 and signals.evidence.canary.request_count == 104


def test_grains_still_arriving_leave_them_out_and_need_no_pool_counts() -> None:
    # Pool failures minus the backends' may arrive apart: over arriving grains they would invent errors.
    for served in (POOL, None):
        signals = _signals(SIDES, reads(served), (), partial=True)
        assert signals.gateway_errors == 0 and signals.evidence.canary.error_count == 1


def test_complete_grains_are_not_judged_without_the_pools_own_counts() -> None:
    with pytest.raises(ValueError, match="need the pool's own counts"):
        _signals(SIDES, reads(None), ())
