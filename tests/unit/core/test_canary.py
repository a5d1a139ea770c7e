"""The canary judge: verdicts a release engineer would see, on seeded synthetic golden signals."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from switchyard.core.canary import judge_canary
from switchyard.core.canary_inputs import AnalysisWindow, CanaryEvidence, CanaryPolicy, SideEvidence
from switchyard.core.canary_split import verify_split
from switchyard.core.canary_verdict import CanaryOutcome, CheckKind, Classification, Metric, Reason, Verdict
from switchyard.core.stats import (
    allowed_exceedances,
    format_p_value,
    interpolated_percentile,
    nearest_rank,
    nearest_rank_percentile,
)

WINDOW = AnalysisWindow(start=datetime(2026, 11, 26, 10, 0, tzinfo=UTC), end=datetime(2026, 11, 26, 10, 10, tzinfo=UTC))
MEDIAN_MS = 33.0  # exp(3.5): a typical small web request


def side(
    rng: np.random.Generator,
    *,
    color: str,
    requests: int,
    error_rate: float = 0.002,
    slowdown: float = 1.0,
    median_ms: float = MEDIAN_MS,
    cpu: tuple[float, ...] = (30.0, 31.0, 29.0, 32.0),
    memory: tuple[float, ...] = (40.0, 41.0, 40.5),
    bytes_per_request: float = 2000.0,
) -> SideEvidence:
    """Log-normal latencies (right-skewed like real ones) and binomial 5xx errors."""
    latency = rng.lognormal(math.log(median_ms), 0.4, requests) * slowdown
    return SideEvidence(
        color=color,
        latency_ms=latency.tolist(),
        request_count=requests,
        error_count=int(rng.binomial(requests, error_rate)),
        cpu_percent=list(cpu),
        memory_used_percent=list(memory),
        network_out_bytes=bytes_per_request * requests,
    )


def evidence(baseline: SideEvidence, canary: SideEvidence) -> CanaryEvidence:
    return CanaryEvidence(window=WINDOW, baseline=baseline, canary=canary)


def reason(verdict: Verdict, metric: Metric, check: CheckKind) -> Reason:
    [found] = [r for r in verdict.reasons if r.metric is metric and r.check is check]
    return found


def fixed_side(
    *,
    latency_ms: list[float],
    requests: int | None = None,
    errors: int = 0,
    cpu: list[float] | None = None,
    memory: list[float] | None = None,
    network_out_bytes: float | None = -1.0,
) -> SideEvidence:
    """`network_out_bytes` -1: 2 KB per request; None: no network data."""
    count = len(latency_ms) if requests is None else requests
    return SideEvidence(
        latency_ms=latency_ms,
        request_count=count,
        error_count=errors,
        cpu_percent=[30.0, 30.0, 30.0] if cpu is None else cpu,
        memory_used_percent=[40.0, 40.0, 40.0] if memory is None else memory,
        network_out_bytes=2000.0 * count if network_out_bytes == -1.0 else network_out_bytes,
    )


# --- the verdicts the brief asks for ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_a_canary_from_the_same_distributions_as_the_baseline_passes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=3000), side(rng, color="green", requests=1000)),
        CanaryPolicy(),
    )

    assert verdict.outcome is CanaryOutcome.PASS, verdict.summary
    assert all(r.classification is Classification.PASS for r in verdict.reasons)
    latency = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    assert latency.test is not None and "Mann-Whitney" in latency.test
    assert latency.p_value is not None and 0.0 < latency.p_value <= 1.0


def test_a_canary_with_twenty_percent_errors_fails_on_the_error_rate() -> None:
    rng = np.random.default_rng(7)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=3000), side(rng, color="green", requests=1000, error_rate=0.2)),
        CanaryPolicy(),
    )

    assert verdict.outcome is CanaryOutcome.FAIL
    canary_rate = verdict.metric("error_rate").canary
    assert canary_rate is not None and 0.17 < canary_rate < 0.23
    slo = reason(verdict, Metric.ERROR_RATE, CheckKind.SLO)
    assert slo.classification is Classification.SLO_BREACH
    assert f"{canary_rate * 100:.2f}%" in slo.message and "1.00%" in slo.message
    comparison = reason(verdict, Metric.ERROR_RATE, CheckKind.COMPARISON)
    assert comparison.classification is Classification.FAIL
    assert comparison.p_value is not None and comparison.p_value < 1e-10
    assert "z-test" in (comparison.test or "")
    assert "error rate SLO (slo_breach)" in verdict.summary


@pytest.mark.parametrize("seed", range(10))
def test_a_canary_fifty_percent_slower_fails_on_latency_with_its_p_value(seed: int) -> None:
    rng = np.random.default_rng(seed)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=3000), side(rng, color="green", requests=1000, slowdown=1.5)),
        CanaryPolicy(),
    )

    assert verdict.outcome is CanaryOutcome.FAIL
    # Only the comparison fails: 50 ms medians are far inside the absolute p95/p99 SLOs.
    assert [r.label for r in verdict.failing_reasons] == ["latency vs baseline"]
    latency = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    assert latency.p_value is not None and latency.p_value < 0.05
    assert "one-sided p = " in latency.message
    assert latency.statistic is not None and latency.statistic > 1000 * 3000 / 2  # U above its H0 mean
    assert latency.observed is not None and latency.threshold is not None
    assert latency.observed > latency.threshold


def test_tiny_samples_are_inconclusive() -> None:
    rng = np.random.default_rng(3)
    verdict = judge_canary(
        evidence(
            side(rng, color="blue", requests=30, error_rate=0.0),
            side(rng, color="green", requests=12, error_rate=0.0),
        ),
        CanaryPolicy(),
    )

    assert verdict.outcome is CanaryOutcome.INCONCLUSIVE
    comparison = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    assert comparison.classification is Classification.INCONCLUSIVE
    assert "baseline has 30, the canary 12" in comparison.message
    assert comparison.p_value is None  # no test ran on too little data
    assert reason(verdict, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.INCONCLUSIVE


def test_a_policy_can_make_short_data_fail_instead() -> None:
    rng = np.random.default_rng(3)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=30), side(rng, color="green", requests=12, error_rate=0.0)),
        CanaryPolicy(on_insufficient_data="fail"),
    )

    assert verdict.outcome is CanaryOutcome.FAIL
    assert "treats too little data as a failure" in reason(verdict, Metric.LATENCY, CheckKind.COMPARISON).message


def test_an_slo_breach_fails_even_when_the_baseline_is_equally_bad() -> None:
    rng = np.random.default_rng(11)
    # Both colors: median 700 ms, so p99 is around 1.7 s, above the 1 s SLO; no difference between them.
    baseline = side(rng, color="blue", requests=3000, median_ms=700.0)
    canary = side(rng, color="green", requests=1000, median_ms=700.0)
    verdict = judge_canary(evidence(baseline, canary), CanaryPolicy(max_p95_ms=None, max_p99_ms=1000.0))

    assert verdict.outcome is CanaryOutcome.FAIL
    p99 = reason(verdict, Metric.LATENCY_P99, CheckKind.SLO)
    assert p99.classification is Classification.SLO_BREACH
    assert "baseline p99 is" in p99.message
    assert reason(verdict, Metric.LATENCY, CheckKind.COMPARISON).classification is Classification.PASS
    baseline_p99 = verdict.metric("latency_p99_ms").baseline
    assert baseline_p99 is not None and baseline_p99 > 1000.0


def test_an_error_slo_breach_names_a_baseline_that_breaches_too() -> None:
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=[20.0] * 400, errors=12), fixed_side(latency_ms=[20.0] * 400, errors=12)),
        CanaryPolicy(),
    )

    slo = reason(verdict, Metric.ERROR_RATE, CheckKind.SLO)
    assert slo.classification is Classification.SLO_BREACH
    assert "baseline is at 3.00%, also above it" in slo.message
    assert reason(verdict, Metric.ERROR_RATE, CheckKind.COMPARISON).classification is Classification.PASS
    assert verdict.outcome is CanaryOutcome.FAIL


def test_markdown_holds_the_evidence_table_and_the_reasons() -> None:
    rng = np.random.default_rng(7)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=3000), side(rng, color="green", requests=1000, error_rate=0.2)),
        CanaryPolicy(),
    )
    text = verdict.markdown()
    baseline, canary = verdict.metric("error_rate").baseline, verdict.metric("error_rate").canary
    assert baseline is not None and canary is not None

    assert text.startswith("## Canary verdict: **FAIL**")
    assert "| Metric | Baseline (blue) | Canary (green) |" in text
    assert "| Requests | 3,000 | 1,000 |" in text
    assert "| Traffic share | 75.00% | 25.00% |" in text
    assert f"| Error rate | {baseline * 100:.2f}% | {canary * 100:.2f}% |" in text
    for label in ("Latency p50", "Latency p95", "Latency p99", "CPU mean"):
        assert f"| {label} | " in text
    assert "| Check | Result | Detail |" in text
    assert "| error rate SLO | SLO_BREACH | Canary error rate" in text
    assert "| latency vs baseline | PASS |" in text


# --- what "at once" means: certain breaches before the minimum sample ---------------------------


def test_errors_that_spend_the_whole_budget_of_the_minimum_sample_fail_at_once() -> None:
    policy = CanaryPolicy(min_requests=200, max_error_rate=0.01)  # budget: 2 errors in 200 requests
    healthy = fixed_side(latency_ms=[20.0] * 500)

    three_errors = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 40, errors=3)), policy)
    slo = reason(three_errors, Metric.ERROR_RATE, CheckKind.SLO)
    assert three_errors.outcome is CanaryOutcome.FAIL
    assert slo.classification is Classification.SLO_BREACH and slo.certain
    assert "even if the next 160 requests all succeed" in slo.message
    assert "at least 1.50%" in slo.message

    two_errors = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 40, errors=2)), policy)
    assert reason(two_errors, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.INCONCLUSIVE
    assert two_errors.outcome is CanaryOutcome.INCONCLUSIVE


def test_the_error_budget_is_counted_exactly_despite_binary_rounding() -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point, yet 29 errors in 100 requests meet a 29% SLO.
    policy = CanaryPolicy(min_requests=100, max_error_rate=0.29)
    healthy = fixed_side(latency_ms=[20.0] * 500)
    short = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 50, errors=29)), policy)
    slo = reason(short, Metric.ERROR_RATE, CheckKind.SLO)
    assert slo.classification is Classification.INCONCLUSIVE
    assert "within the budget of 29 errors" in slo.message
    spent = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 50, errors=30)), policy)
    assert reason(spent, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.SLO_BREACH


def test_a_certain_error_breach_never_flips_as_more_good_traffic_arrives() -> None:
    """The peeking-safe property: once certain, the minimum-sample judgement stays a breach."""
    policy = CanaryPolicy(min_requests=200, max_error_rate=0.01)
    healthy = fixed_side(latency_ms=[20.0] * 500)
    for requests in (40, 100, 199, 200):
        verdict = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * requests, errors=3)), policy)
        assert reason(verdict, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.SLO_BREACH


def test_slow_requests_beyond_the_percentile_budget_of_the_minimum_sample_fail_at_once() -> None:
    # Over 200 samples a p99 <= 1 s allows 200 - ceil(0.99 * 200) = 2 slower requests.
    policy = CanaryPolicy(min_latency_samples=200, max_p95_ms=500.0, max_p99_ms=1000.0)
    healthy = fixed_side(latency_ms=[20.0] * 500)

    three_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 47 + [1500.0] * 3)), policy)
    p99 = reason(three_slow, Metric.LATENCY_P99, CheckKind.SLO)
    assert p99.classification is Classification.SLO_BREACH and p99.certain
    assert "allows only 2" in p99.message
    assert three_slow.outcome is CanaryOutcome.FAIL

    two_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 48 + [1500.0] * 2)), policy)
    assert reason(two_slow, Metric.LATENCY_P99, CheckKind.SLO).classification is Classification.INCONCLUSIVE


def test_cpu_that_already_exceeds_the_mean_limit_over_the_minimum_fails_at_once() -> None:
    policy = CanaryPolicy(min_cpu_samples=6, max_cpu_percent=80.0)
    healthy = fixed_side(latency_ms=[20.0] * 500)
    # 5 x 100 % = 500; even a sixth sample at 0 % leaves the mean at 83.3 %.
    hot = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 500, cpu=[100.0] * 5)), policy)
    cpu = reason(hot, Metric.CPU, CheckKind.SLO)
    assert cpu.classification is Classification.SLO_BREACH and cpu.certain
    assert "at least 83.3%" in cpu.message

    warm = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 500, cpu=[90.0] * 5)), policy)
    assert reason(warm, Metric.CPU, CheckKind.SLO).classification is Classification.INCONCLUSIVE


# --- SLO arithmetic -----------------------------------------------------------------------------


def test_p95_slo_means_at_least_95_percent_of_requests_within_the_limit() -> None:
    policy = CanaryPolicy(min_latency_samples=100, max_p95_ms=500.0, max_p99_ms=None)
    healthy = fixed_side(latency_ms=[20.0] * 500)

    five_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 95 + [900.0] * 5)), policy)
    p95 = reason(five_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.PASS and p95.observed == 20.0

    six_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 94 + [900.0] * 6)), policy)
    p95 = reason(six_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.SLO_BREACH and p95.observed == 900.0
    assert "6 of 100 requests took longer, 5 would have been allowed" in p95.message


def test_an_error_rate_exactly_at_the_slo_is_within_it() -> None:
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=[20.0] * 300), fixed_side(latency_ms=[20.0] * 300, errors=3)),
        CanaryPolicy(max_error_rate=0.01, min_requests=300),
    )
    assert reason(verdict, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.PASS


def test_disabled_slos_are_not_checked() -> None:
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=[20.0] * 300), fixed_side(latency_ms=[20.0] * 300)),
        CanaryPolicy(
            max_p95_ms=None,
            max_p99_ms=None,
            max_cpu_percent=None,
            max_memory_percent=None,
            network_out_relative_tolerance=None,
        ),
    )
    assert {r.metric for r in verdict.reasons} == {Metric.ERROR_RATE, Metric.LATENCY}


# --- comparisons: significance AND effect size ---------------------------------------------------


def test_a_faster_canary_is_not_slower_by_the_one_sided_test() -> None:
    rng = np.random.default_rng(4)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=2000), side(rng, color="green", requests=2000, slowdown=0.5)),
        CanaryPolicy(),
    )
    latency = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    # One-sided (H1: canary slower): a much faster canary sits at the far end, p close to 1.
    assert latency.p_value is not None and latency.p_value > 0.999
    assert latency.classification is Classification.PASS
    assert "No significant latency increase" in latency.message


def test_a_significant_but_small_slowdown_within_tolerance_passes() -> None:
    rng = np.random.default_rng(5)
    verdict = judge_canary(
        evidence(side(rng, color="blue", requests=20000), side(rng, color="green", requests=20000, slowdown=1.05)),
        CanaryPolicy(),
    )
    latency = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    assert latency.p_value is not None and latency.p_value < 0.05  # the test alone would fail it
    assert latency.classification is Classification.PASS
    assert "measurably slower" in latency.message and "within the tolerance" in latency.message


def test_the_absolute_floor_keeps_sub_millisecond_noise_from_failing_a_fast_service() -> None:
    rng = np.random.default_rng(9)
    # 0.2 ms vs 0.5 ms medians: +150 %, highly significant, but 0.3 ms is below the 5 ms floor.
    verdict = judge_canary(
        evidence(
            side(rng, color="blue", requests=2000, median_ms=0.2),
            side(rng, color="green", requests=2000, median_ms=0.5),
        ),
        CanaryPolicy(),
    )
    latency = reason(verdict, Metric.LATENCY, CheckKind.COMPARISON)
    assert latency.p_value is not None and latency.p_value < 1e-10
    assert latency.threshold == 5.0
    assert latency.classification is Classification.PASS
    assert verdict.outcome is CanaryOutcome.PASS


def test_an_error_increase_within_the_slo_but_beyond_tolerance_fails_the_comparison() -> None:
    latency = [20.0] * 1000
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=latency, errors=10), fixed_side(latency_ms=latency, errors=30)),
        CanaryPolicy(max_error_rate=0.05),
    )
    comparison = reason(verdict, Metric.ERROR_RATE, CheckKind.COMPARISON)
    # By hand: pooled p = 40/2000 = 0.02; se = sqrt(0.02 * 0.98 * (1/1000 + 1/1000)); z = 0.02 / se.
    expected_z = 0.02 / math.sqrt(0.02 * 0.98 * 0.002)
    assert comparison.statistic == pytest.approx(expected_z, rel=1e-9)
    assert comparison.p_value == pytest.approx(0.5 * math.erfc(expected_z / math.sqrt(2)), rel=1e-9)
    assert comparison.classification is Classification.FAIL
    assert "+2.00 pp" in comparison.message
    assert reason(verdict, Metric.ERROR_RATE, CheckKind.SLO).classification is Classification.PASS
    assert verdict.outcome is CanaryOutcome.FAIL


def test_few_errors_use_fishers_exact_test_instead_of_the_z_test() -> None:
    latency = [20.0] * 500
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=latency, errors=0), fixed_side(latency_ms=latency, errors=3)),
        CanaryPolicy(),
    )
    comparison = reason(verdict, Metric.ERROR_RATE, CheckKind.COMPARISON)
    # By hand: all 3 errors land on the canary with probability C(500,3) / C(1000,3).
    assert comparison.p_value == pytest.approx(math.comb(500, 3) / math.comb(1000, 3), rel=1e-9)
    assert comparison.test is not None and comparison.test.startswith("Fisher")
    # The z-test would have said p = 0.04 here and failed the release on three errors.
    assert comparison.classification is Classification.PASS
    assert verdict.outcome is CanaryOutcome.PASS


def test_no_errors_on_either_side_needs_no_test() -> None:
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=[20.0] * 300), fixed_side(latency_ms=[20.0] * 300)), CanaryPolicy()
    )
    comparison = reason(verdict, Metric.ERROR_RATE, CheckKind.COMPARISON)
    assert comparison.p_value == 1.0 and comparison.test is None
    # Identical constant latencies: Mann-Whitney has no variance to work with; no difference found.
    assert reason(verdict, Metric.LATENCY, CheckKind.COMPARISON).p_value == 1.0
    assert verdict.outcome is CanaryOutcome.PASS


# --- the verdict as data -------------------------------------------------------------------------


def test_the_verdict_is_deterministic_and_survives_a_json_round_trip() -> None:
    rng = np.random.default_rng(21)
    data = evidence(side(rng, color="blue", requests=2000), side(rng, color="green", requests=700, slowdown=1.5))
    first, second = judge_canary(data, CanaryPolicy()), judge_canary(data, CanaryPolicy())
    assert first == second
    assert Verdict.model_validate_json(first.model_dump_json()) == first


# --- bad input -----------------------------------------------------------------------------------


def test_more_errors_than_requests_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"error_count \(5\) cannot exceed request_count \(4\)"):
        SideEvidence(request_count=4, error_count=5)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_impossible_latencies_are_rejected(bad: float) -> None:
    with pytest.raises(ValidationError):
        SideEvidence(latency_ms=[10.0, bad], request_count=2, error_count=0)


def test_a_p99_limit_below_the_p95_limit_is_rejected() -> None:
    with pytest.raises(ValidationError, match="max_p99_ms"):
        CanaryPolicy(max_p95_ms=800.0, max_p99_ms=500.0)


def test_windows_must_be_timezone_aware_and_forward() -> None:
    with pytest.raises(ValidationError, match="must be after start"):
        AnalysisWindow(start=WINDOW.end, end=WINDOW.start)
    with pytest.raises(ValidationError):
        AnalysisWindow(start=datetime(2026, 11, 26, 10), end=datetime(2026, 11, 26, 11))


# --- shared statistics helpers -------------------------------------------------------------------


def test_nearest_rank_is_exact_despite_binary_floating_point() -> None:
    # 0.07 * 100 is 7.000000000000001 in binary floating point; the 7th value is the right answer.
    assert nearest_rank(0.07, 100) == 7
    assert nearest_rank(0.95, 100) == 95
    assert nearest_rank(0.99, 1) == 1
    assert allowed_exceedances(0.99, 200) == 2
    assert nearest_rank_percentile(list(range(1, 101)), 0.07) == 7.0
    assert nearest_rank_percentile([], 0.5) is None


def test_interpolated_percentile_is_the_textbook_median() -> None:
    assert interpolated_percentile([2.0, 6.0, 24.0, 72.0], 0.5) == 15.0
    assert interpolated_percentile([2.0, 6.0, 24.0, 72.0], 0.9) == pytest.approx(57.6)
    assert interpolated_percentile([], 0.5) is None


@pytest.mark.parametrize(("p_value", "text"), [(0.0, "< 1e-300"), (3.2e-133, "3.2e-133"), (0.04123, "0.0412")])
def test_p_values_are_readable(p_value: float, text: str) -> None:
    assert format_p_value(p_value) == text


# --- the split check -----------------------------------------------------------------------------


def test_a_delivered_share_inside_the_band_matches() -> None:
    check = verify_split(expected_share=0.25, canary_requests=1000, total_requests=4000, tolerance=0.05)
    assert check.matches and check.outcome == "match"
    assert check.delivered_share == 0.25
    assert check.interval_low is not None and check.interval_high is not None
    assert 0.20 < check.interval_low < 0.25 < check.interval_high < 0.30
    assert "1000 of 4000 requests (25.00%)" in check.reason


def test_a_canary_that_gets_no_traffic_is_a_mismatch() -> None:
    check = verify_split(expected_share=0.25, canary_requests=0, total_requests=4000, tolerance=0.05)
    assert check.outcome == "mismatch" and not check.matches
    assert "entirely outside" in check.reason


def test_a_canary_that_gets_all_traffic_is_a_mismatch() -> None:
    check = verify_split(expected_share=0.2, canary_requests=500, total_requests=1000, tolerance=0.05)
    assert check.outcome == "mismatch"


def test_too_little_traffic_to_tell_is_inconclusive_with_a_hint() -> None:
    check = verify_split(expected_share=0.25, canary_requests=30, total_requests=100, tolerance=0.05)
    assert check.outcome == "inconclusive" and not check.matches
    # By hand: 1.96^2 * 0.25 * 0.75 / 0.05^2 = 288.1 -> 289 requests.
    assert "roughly 289 requests" in check.reason


def test_no_traffic_at_all_is_inconclusive() -> None:
    check = verify_split(expected_share=0.25, canary_requests=0, total_requests=0, tolerance=0.05)
    assert check.outcome == "inconclusive" and check.delivered_share is None


def test_the_split_check_serialises_whether_it_matched() -> None:
    check = verify_split(expected_share=0.25, canary_requests=1000, total_requests=4000, tolerance=0.05)
    assert check.model_dump()["matches"] is True


@pytest.mark.parametrize(
    ("expected", "canary", "total", "tolerance", "message"),
    [
        (1.5, 1, 2, 0.05, "expected_share"),
        (0.2, 3, 2, 0.05, "cannot exceed"),
        (0.2, 1, 2, 0.0, "tolerance"),
        (0.2, -1, 2, 0.05, "negative"),
    ],
)
def test_the_split_check_rejects_impossible_input(
    expected: float, canary: int, total: int, tolerance: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        verify_split(expected, canary, total, tolerance)


def test_after_promotion_only_the_slos_are_judged() -> None:
    """With no baseline serving beside the new version, the judge checks SLOs and compares nothing."""
    window = AnalysisWindow(start=datetime(2026, 11, 26, tzinfo=UTC), end=datetime(2026, 11, 26, 0, 1, tzinfo=UTC))
    canary = SideEvidence(
        latency_ms=[10.0] * 300,
        request_count=300,
        error_count=0,
        cpu_percent=[20.0] * 5,
        memory_used_percent=[50.0] * 5,
    )
    empty = SideEvidence(request_count=0, error_count=0)
    verdict = judge_canary(
        CanaryEvidence(window=window, baseline=empty, canary=canary), CanaryPolicy(), compare_with_baseline=False
    )
    assert verdict.outcome is CanaryOutcome.PASS
    assert {r.check for r in verdict.reasons} == {CheckKind.SLO}
    breached = canary.model_copy(update={"error_count": 30})
    failed = judge_canary(
        CanaryEvidence(window=window, baseline=empty, canary=breached), CanaryPolicy(), compare_with_baseline=False
    )
    assert failed.outcome is CanaryOutcome.FAIL


# --- every SLO check, every branch: what the release engineer reads -----------------------------


def test_cpu_over_the_full_sample_is_judged_on_its_mean_and_names_the_baseline() -> None:
    policy = CanaryPolicy(min_cpu_samples=3, max_cpu_percent=80.0)
    baseline = fixed_side(latency_ms=[20.0] * 500)  # CPU 30 % on each of 3 samples

    hot = judge_canary(evidence(baseline, fixed_side(latency_ms=[20.0] * 500, cpu=[85.0, 90.0, 95.0])), policy)
    cpu = reason(hot, Metric.CPU, CheckKind.SLO)
    assert cpu.classification is Classification.SLO_BREACH and not cpu.certain
    assert cpu.message == "Canary mean CPU 90.0% over 3 samples is above the SLO of 80.0%; baseline mean is 30.0%."
    assert (cpu.observed, cpu.threshold) == (90.0, 80.0)
    assert hot.outcome is CanaryOutcome.FAIL

    calm = judge_canary(evidence(baseline, fixed_side(latency_ms=[20.0] * 500, cpu=[50.0, 60.0, 70.0])), policy)
    cpu = reason(calm, Metric.CPU, CheckKind.SLO)
    assert cpu.classification is Classification.PASS
    assert cpu.message == "Canary mean CPU 60.0% over 3 samples is within the SLO of 80.0%; baseline mean is 30.0%."


def test_a_canary_without_cpu_samples_is_short_of_data_not_healthy() -> None:
    no_cpu = fixed_side(latency_ms=[20.0] * 500, cpu=[])
    verdict = judge_canary(evidence(no_cpu, no_cpu), CanaryPolicy(min_cpu_samples=3))
    cpu = reason(verdict, Metric.CPU, CheckKind.SLO)
    assert cpu.classification is Classification.INCONCLUSIVE
    assert cpu.message == "Only 0 canary CPU samples, fewer than the minimum of 3."
    assert verdict.outcome is CanaryOutcome.INCONCLUSIVE


def test_an_error_rate_within_the_slo_reports_the_rate_and_the_counts() -> None:
    verdict = judge_canary(
        evidence(fixed_side(latency_ms=[20.0] * 400, errors=12), fixed_side(latency_ms=[20.0] * 400, errors=2)),
        CanaryPolicy(),
    )
    slo = reason(verdict, Metric.ERROR_RATE, CheckKind.SLO)
    assert slo.classification is Classification.PASS
    # A bad baseline is no excuse for a breach, nor worth a word when the canary keeps the SLO.
    assert slo.message == "Canary error rate 0.50% (2 of 400 requests) is within the SLO of 1.00%."
    assert (slo.observed, slo.threshold) == (0.005, 0.01)


def test_a_p95_breach_can_be_certain_before_the_minimum_sample_too() -> None:
    # Over 200 samples a p95 <= 500 ms allows 200 - 190 = 10 slower requests.
    policy = CanaryPolicy(min_latency_samples=200, max_p95_ms=500.0, max_p99_ms=None)
    healthy = fixed_side(latency_ms=[20.0] * 500)

    eleven_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 39 + [900.0] * 11)), policy)
    p95 = reason(eleven_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.SLO_BREACH and p95.certain
    assert p95.message == (
        "Canary already has 11 requests slower than 500.0 ms among its first 50: a p95 within the SLO over the "
        "minimum sample of 200 allows only 10, so the SLO is breached whatever the next 150 do."
    )

    ten_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 40 + [900.0] * 10)), policy)
    p95 = reason(ten_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.INCONCLUSIVE
    assert p95.message == (
        "Only 50 canary latency samples, fewer than the minimum of 200; 10 slower than 500.0 ms so far, "
        "10 allowed over the minimum sample."
    )


def test_a_policy_that_fails_short_data_fails_each_slo_check_short_of_its_minimum() -> None:
    policy = CanaryPolicy(on_insufficient_data="fail", min_requests=200, min_latency_samples=200, min_cpu_samples=3)
    short = fixed_side(latency_ms=[20.0] * 10, cpu=[30.0])
    verdict = judge_canary(evidence(short, short), policy, compare_with_baseline=False)

    assert verdict.outcome is CanaryOutcome.FAIL
    for metric in (Metric.ERROR_RATE, Metric.LATENCY_P95, Metric.LATENCY_P99, Metric.CPU):
        slo = reason(verdict, metric, CheckKind.SLO)
        assert slo.classification is Classification.FAIL and not slo.certain
        assert slo.message.endswith("The policy treats too little data as a failure.")


def test_above_the_minimum_a_p95_breach_carries_the_sequential_tests_p_value() -> None:
    # "p95 <= 500 ms" is "at most 5 % of requests slower than 500 ms": a share the sequential test can judge.
    policy = CanaryPolicy(min_latency_samples=200, max_p95_ms=500.0, max_p99_ms=None)
    healthy = fixed_side(latency_ms=[20.0] * 500)

    fifteen_percent_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 340 + [900.0] * 60)), policy)
    p95 = reason(fifteen_percent_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.SLO_BREACH and not p95.certain
    assert p95.anytime_p_value is not None and p95.anytime_p_value < 1e-6
    assert "from a canary within the SLO at p = " in p95.message

    # 6 % slow is a breach as measured, but no evidence against a true 5 %: nothing to act on early.
    six_percent_slow = judge_canary(evidence(healthy, fixed_side(latency_ms=[20.0] * 376 + [900.0] * 24)), policy)
    p95 = reason(six_percent_slow, Metric.LATENCY_P95, CheckKind.SLO)
    assert p95.classification is Classification.SLO_BREACH
    assert p95.anytime_p_value is not None and p95.anytime_p_value > 0.001
    assert "sequential" not in p95.message
