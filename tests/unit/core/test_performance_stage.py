"""The performance stage's judgement: errors, p95 from when requests were due, and a load that
really ran at its rate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchyard.core.stages import PerformanceTest, judge_performance

TEST = PerformanceTest(rate_per_s=50, duration_s=4, path="/work/echo", max_p95_ms=100, max_error_rate=0.01)


def test_a_load_within_its_limits_passes_and_says_what_it_measured() -> None:
    result = judge_performance(TEST, latencies_s=[0.010] * 190 + [0.090] * 10, failed=0, sent=200)

    assert result.passed
    # 95% of 200 sorted samples, interpolated: 0.05 of the way from the 190th (10 ms) to the 191st (90 ms).
    assert result.detail == "200 request(s) of 200 planned, 0 failed (0.00%), p95 14.0 ms"


def test_a_slow_tail_fails_on_p95() -> None:
    result = judge_performance(TEST, latencies_s=[0.010] * 180 + [0.400] * 20, failed=0, sent=200)

    assert not result.passed
    assert result.detail.endswith("p95 400.0 ms: p95 400.0 ms above 100 ms")


def test_errors_above_the_limit_fail_and_every_broken_limit_is_named() -> None:
    result = judge_performance(TEST, latencies_s=[0.300] * 150, failed=50, sent=200)

    assert not result.passed
    assert "error rate 25.00% above 1.00%" in result.detail and "p95 300.0 ms above 100 ms" in result.detail


def test_a_generator_that_could_not_keep_the_rate_proves_nothing() -> None:
    result = judge_performance(TEST, latencies_s=[0.010] * 100, failed=0, sent=100)

    assert not result.passed
    assert "only 100 of 200 planned requests were sent (min 90%)" in result.detail


def test_nothing_answered_fails() -> None:
    result = judge_performance(TEST, latencies_s=[], failed=200, sent=200)

    assert not result.passed and "no request was answered" in result.detail


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        PerformanceTest(rate_per_s=0, duration_s=4, max_p95_ms=100)
    with pytest.raises(ValidationError):
        PerformanceTest(rate_per_s=10, duration_s=4, max_p95_ms=100, path="work/echo")
