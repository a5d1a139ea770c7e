"""The canary judge's comparisons: the canary against the baseline (the live color), same window.

* latency: one-sided Mann-Whitney U (H1: canary latencies are stochastically greater), which
  assumes nothing about the shape of latency distributions (they are skewed and heavy-tailed).
  With thousands of requests the test flags differences nobody would notice, so a failure needs
  BOTH significance (p < alpha) AND an effect beyond the tolerance: the canary median may be
  slower than the baseline median by up to max(relative tolerance x baseline median, absolute
  floor in ms). The floor keeps sub-millisecond jitter on a fast service from failing a release.
* errors: one-sided two-proportion z-test (H1: canary error rate higher), pooled variance; when
  an expected cell count is below 5 the normal approximation is not trustworthy (it is
  anti-conservative with few errors) and the judge uses Fisher's exact test, one-sided, instead.
  Again a failure needs significance AND an increase beyond the absolute tolerance.
* network out: bytes sent per request, canary against baseline, held to a tolerance (relative with
  an absolute floor); CanaryPolicy says why this rule and not an absolute limit. A ratio of two
  totals has no test; it needs `min_requests` per side and network data on both.

Comparisons are fixed-sample tests at level alpha: judge a window once, at its end. Calling the
judge repeatedly and failing on the first significant comparison raises the false-failure rate.
"""

from __future__ import annotations

import math

from switchyard.core.canary_format import byte_size, ms, pct, pp, signed_ms
from switchyard.core.canary_inputs import CanaryPolicy, SideNumbers
from switchyard.core.canary_verdict import CheckKind, Classification, Metric, Reason, short_data
from switchyard.core.stats import format_p_value, scipy_stats

# Below this expected count in any cell of the 2x2 error table, the z-test's normal approximation
# is not trusted (the usual rule of thumb for chi-square / z tests on proportions).
_MIN_EXPECTED_CELL_COUNT = 5.0


def latency_comparison(baseline: SideNumbers, canary: SideNumbers, policy: CanaryPolicy) -> Reason:
    minimum = policy.min_latency_samples
    n_baseline, n_canary = int(baseline.latency.size), int(canary.latency.size)
    if n_baseline < minimum or n_canary < minimum:
        return short_data(
            Metric.LATENCY,
            CheckKind.COMPARISON,
            f"Comparing latency needs {minimum} samples per side; the baseline has {n_baseline}, "
            f"the canary {n_canary}.",
            policy,
        )
    assert baseline.p50 is not None and canary.p50 is not None
    tolerance = max(policy.latency_relative_tolerance * baseline.p50, policy.latency_absolute_tolerance_ms)
    shift = canary.p50 - baseline.p50
    relative = f" ({shift / baseline.p50:+.1%})" if baseline.p50 > 0 else ""

    result = scipy_stats().mannwhitneyu(canary.latency, baseline.latency, alternative="greater")
    u_statistic = float(result.statistic)
    p_value = float(result.pvalue)
    if math.isnan(p_value):
        # Only when every sample on both sides is identical: no difference to find.
        p_value = 1.0
    significant = p_value < policy.alpha
    test_text = f"Mann-Whitney U = {u_statistic:.4g}, one-sided p = {format_p_value(p_value)}"
    medians = f"median {ms(canary.p50)} vs {ms(baseline.p50)}, {signed_ms(shift)}{relative}"
    tolerance_text = (
        f"the tolerance of {ms(tolerance)} (max of {policy.latency_relative_tolerance:.0%} of the baseline "
        f"median and {ms(policy.latency_absolute_tolerance_ms)})"
    )

    if significant and shift > tolerance:
        classification = Classification.FAIL
        message = (
            f"Canary is slower than the baseline: {medians}, beyond {tolerance_text}; "
            f"{test_text} < alpha {policy.alpha}."
        )
    elif significant:
        classification = Classification.PASS
        message = (
            f"Canary is measurably slower ({test_text}) but only by {signed_ms(shift)} at the median, "
            f"within {tolerance_text}: {medians}."
        )
    else:
        classification = Classification.PASS
        message = f"No significant latency increase: {medians}; {test_text} >= alpha {policy.alpha}."
    return Reason(
        metric=Metric.LATENCY,
        check=CheckKind.COMPARISON,
        classification=classification,
        message=message,
        observed=shift,
        threshold=tolerance,
        test="Mann-Whitney U (one-sided, canary greater)",
        statistic=u_statistic,
        p_value=p_value,
    )


def error_rate_comparison(baseline: SideNumbers, canary: SideNumbers, policy: CanaryPolicy) -> Reason:
    minimum = policy.min_requests
    if baseline.requests < minimum or canary.requests < minimum:
        return short_data(
            Metric.ERROR_RATE,
            CheckKind.COMPARISON,
            f"Comparing error rates needs {minimum} requests per side; the baseline has {baseline.requests}, "
            f"the canary {canary.requests}.",
            policy,
        )
    n_b, n_c, e_b, e_c = baseline.requests, canary.requests, baseline.errors, canary.errors
    rate_b, rate_c = e_b / n_b, e_c / n_c
    increase = rate_c - rate_b
    tolerance = policy.error_rate_tolerance
    rates = f"canary {pct(rate_c)} ({e_c}/{n_c}) vs baseline {pct(rate_b)} ({e_b}/{n_b})"
    pooled = (e_b + e_c) / (n_b + n_c)

    test: str | None
    statistic: float | None
    if pooled in (0.0, 1.0):
        # Identical on both sides (no errors at all, or nothing but errors): nothing to test.
        test, statistic, p_value = None, None, 1.0
        test_text = "no test needed, both sides are identical"
    else:
        smallest_expected = min(n_c * pooled, n_c * (1 - pooled), n_b * pooled, n_b * (1 - pooled))
        if smallest_expected < _MIN_EXPECTED_CELL_COUNT:
            odds_ratio, p = scipy_stats().fisher_exact([[e_c, n_c - e_c], [e_b, n_b - e_b]], alternative="greater")
            test = "Fisher exact (one-sided, canary higher)"
            statistic = float(odds_ratio) if math.isfinite(odds_ratio) else None
            p_value = float(p)
            test_text = f"Fisher's exact test (too few errors for the z-test), one-sided p = {format_p_value(p_value)}"
        else:
            standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
            z = increase / standard_error
            test = "two-proportion z-test (one-sided, canary higher)"
            statistic = z
            p_value = float(scipy_stats().norm.sf(z))
            test_text = f"two-proportion z = {z:.2f}, one-sided p = {format_p_value(p_value)}"
    significant = p_value < policy.alpha

    if significant and increase > tolerance:
        classification = Classification.FAIL
        message = (
            f"Canary error rate is higher than the baseline: {rates}, {pp(increase)}, beyond the tolerance "
            f"of {pp(tolerance, signed=False)}; {test_text} < alpha {policy.alpha}."
        )
    elif significant:
        classification = Classification.PASS
        message = (
            f"Canary error rate is measurably higher ({test_text}) but by {pp(increase)}, within the "
            f"tolerance of {pp(tolerance, signed=False)}: {rates}."
        )
    else:
        classification = Classification.PASS
        message = f"No significant error-rate increase: {rates}; {test_text}."
    return Reason(
        metric=Metric.ERROR_RATE,
        check=CheckKind.COMPARISON,
        classification=classification,
        message=message,
        observed=increase,
        threshold=tolerance,
        test=test,
        statistic=statistic,
        p_value=p_value,
    )


def network_out_comparison(baseline: SideNumbers, canary: SideNumbers, policy: CanaryPolicy) -> Reason | None:
    """None when the policy disables it (`network_out_relative_tolerance` None)."""
    relative = policy.network_out_relative_tolerance
    if relative is None:
        return None
    minimum = policy.min_requests
    if baseline.requests < minimum or canary.requests < minimum:
        return short_data(
            Metric.NETWORK_OUT,
            CheckKind.COMPARISON,
            f"Comparing network out per request needs {minimum} requests per side; the baseline has "
            f"{baseline.requests}, the canary {canary.requests}.",
            policy,
        )
    per_baseline, per_canary = baseline.network_out_per_request, canary.network_out_per_request
    if per_baseline is None or per_canary is None:
        missing = " and ".join(
            side for side, value in (("baseline", per_baseline), ("canary", per_canary)) if value is None
        )
        return short_data(
            Metric.NETWORK_OUT,
            CheckKind.COMPARISON,
            f"No network out data (Network Out Total) for the {missing}: bytes sent per request cannot be compared.",
            policy,
        )
    tolerance = max(relative * per_baseline, policy.network_out_absolute_tolerance_bytes)
    increase = per_canary - per_baseline
    change = f" ({increase / per_baseline:+.0%})" if per_baseline > 0 else ""
    numbers = (
        f"canary {byte_size(per_canary)} per request vs baseline {byte_size(per_baseline)}, "
        f"{'+' if increase >= 0 else '-'}{byte_size(abs(increase))}{change}"
    )
    tolerance_text = (
        f"the tolerance of {byte_size(tolerance)} (max of {relative:.0%} of the baseline and "
        f"{byte_size(policy.network_out_absolute_tolerance_bytes)})"
    )
    failed = increase > tolerance
    return Reason(
        metric=Metric.NETWORK_OUT,
        check=CheckKind.COMPARISON,
        classification=Classification.FAIL if failed else Classification.PASS,
        message=(
            f"Canary sends more per request than the baseline: {numbers}, beyond {tolerance_text}."
            if failed
            else f"Canary network out per request is within {tolerance_text}: {numbers}."
        ),
        observed=increase,
        threshold=tolerance,
    )
