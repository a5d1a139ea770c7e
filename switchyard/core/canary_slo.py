"""The canary judge's SLO checks: the canary alone, against absolute limits from the policy.

Error rate, p95 and p99 latency, mean CPU, peak memory. A breach is a breach even when the baseline is just as
bad: an SLO is a promise to users, and "the old version broke it too" does not keep it.

What "at once" means: certain breaches
--------------------------------------
A judgement needs a minimum sample (requests, latency samples, CPU samples per side). Below it,
comparisons are INCONCLUSIVE (or FAIL, if the policy says short data fails). SLO checks below the
minimum fail only when the breach is *certain*: when the SLO would be breached over the minimum
sample whatever the requests still missing from it do. Concretely, with a minimum of M:

* error rate: errors / M > max error rate (the error budget of the minimum sample is spent);
* p95 / p99: the nearest-rank percentile meets a limit L exactly when at most M - ceil(q*M)
  requests are slower than L, so more slow requests than that is certain;
* CPU: sum of samples / M > max CPU % (the missing samples could at best be 0%).
* memory: the highest sample > max memory % (a maximum can only grow with more samples).

This rule needs no distributional assumption and, because the counts it uses can only grow, the
answer can never flip as more data arrives: a flow may call the judge as often as it likes during
the window and abort on the first FAIL without inflating its false-failure rate (the classic
"peeking" problem of repeated significance tests). At or above the minimum, SLOs are judged on
the measured values of the window: that is what the SLO promises.

Above the minimum: a sequential test
------------------------------------
Once more requests than the minimum have been counted, no breach is certain any more: later
successes can dilute any share. On Azure's one-minute grains the first grain a canary's metrics
show often already holds more than the minimum, and a watch that acted only on certain breaches
would let a failing canary serve until its window's grains were complete, minutes later. So an
error-rate or latency breach above the minimum also carries an always-valid p-value
(switchyard.core.stats.anytime_share_p_value) against "the canary's true share of errors (or of
requests slower than the limit) is within the SLO"; a watch may act on it before its data is
complete when it is at most the policy's `sequential_alpha` (switchyard.core.analysis,
`breach_known_early`). That test, unlike a fixed-sample one, keeps its level however often it is
asked, so the peeking problem stays solved; its price is the level itself (0.1 % by default): the
chance of stopping a canary whose true error rate is within the SLO. It assumes the requests
counted so far are a fair sample of the canary's, which holds while Azure Monitor publishes a
grain's errors and successes together. CPU and memory have no such test: a mean or a peak of a
few samples is not a share of independent trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from switchyard.core.canary_format import ms, pct
from switchyard.core.canary_inputs import CanaryPolicy, SideNumbers
from switchyard.core.canary_verdict import CheckKind, Classification, Metric, Reason, short_data
from switchyard.core.stats import allowed_exceedances, anytime_share_p_value, format_p_value, nearest_rank_percentile

# SLO checks: one table, one classifier.
#
# Every SLO check asks one question: over a sample of n, is the canary's value above the policy's
# limit? At or above the minimum sample, n is what was measured. Below it, n is the minimum and the
# samples not seen yet count at their best (no error, 0 ms, 0 % CPU): a breach even so is certain,
# and more data can never undo it (the module docstring). What differs per metric (how the value is
# measured, how the messages put it) is one row of the table.


@dataclass(frozen=True)
class _Reading:
    """What one SLO check measured on the canary over n samples."""

    observed: float | None  # the canary's value, as the reason reports it
    breached: bool  # above the limit over n samples, the missing ones at their best
    facts: dict[str, object]  # what the check's messages quote
    # (hits, trials, allowed share) for the sequential test, for a value that is a share of
    # independent requests; None where it is not (CPU, memory).
    share: tuple[int, int, float] | None = None


@dataclass(frozen=True)
class SloCheck:
    metric: Metric
    limit: Callable[[CanaryPolicy], float | None]  # None: the policy disables the check
    minimum: Callable[[CanaryPolicy], int]
    samples: Callable[[SideNumbers], int]
    read: Callable[[SideNumbers, SideNumbers, float, int], _Reading]  # (baseline, canary, limit, n)
    # Messages, formatted with the reading's facts:
    breached: str  # at or above the minimum sample, above the limit
    within: str  # at or above the minimum sample, within the limit
    certain: str  # below the minimum sample, breached whatever the missing samples do
    short: str  # below the minimum sample, nothing decided yet


def _read_error_rate(baseline: SideNumbers, canary: SideNumbers, limit: float, n: int) -> _Reading:
    requests, errors = canary.requests, canary.errors
    return _Reading(
        observed=errors / requests if requests else None,
        breached=errors / n > limit,
        facts={
            "errors": errors,
            "requests": requests,
            "n": n,
            "missing": n - requests,
            "rate": pct(errors / requests) if requests else "n/a",
            "rate_over_n": pct(errors / n),
            "limit": pct(limit),
            "budget": _error_budget(limit, n),
            "baseline_note": _baseline_error_note(baseline, limit),
        },
        share=(errors, requests, limit),
    )


def _read_percentile(quantile: float) -> Callable[[SideNumbers, SideNumbers, float, int], _Reading]:
    name = f"p{round(quantile * 100)}"

    def read(baseline: SideNumbers, canary: SideNumbers, limit_ms: float, n: int) -> _Reading:
        samples = int(canary.latency.size)
        slow = int(np.count_nonzero(canary.latency > limit_ms))
        allowed = allowed_exceedances(quantile, n)
        value = nearest_rank_percentile(canary.latency, quantile)
        baseline_value = nearest_rank_percentile(baseline.latency, quantile)
        return _Reading(
            observed=value,
            # More slow requests than the budget is exactly "nearest-rank percentile > limit",
            # stated in requests: 0 ms for the missing ones leaves the count as it is.
            breached=slow > allowed,
            facts={
                "name": name,
                "value": ms(value),
                "limit": ms(limit_ms),
                "slow": slow,
                "samples": samples,
                "allowed": allowed,
                "n": n,
                "missing": n - samples,
                "baseline_note": f"; baseline {name} is {ms(baseline_value)}" if baseline_value is not None else "",
            },
            # "p95 <= L" holds for the canary's true latency exactly when at most 5 % of its requests
            # are slower than L.
            share=(slow, samples, 1.0 - quantile),
        )

    return read


def _read_cpu(baseline: SideNumbers, canary: SideNumbers, limit: float, n: int) -> _Reading:
    total = float(canary.cpu.sum())
    return _Reading(
        observed=canary.cpu_mean,
        breached=total / n > limit,  # the missing samples at 0 %
        facts={
            "mean": canary.cpu_mean,
            "mean_over_n": total / n,
            "total": total,
            "limit": limit,
            "samples": int(canary.cpu.size),
            "n": n,
            "baseline_note": f"; baseline mean is {baseline.cpu_mean:.1f}%" if baseline.cpu_mean is not None else "",
        },
    )


def _read_memory(baseline: SideNumbers, canary: SideNumbers, limit: float, n: int) -> _Reading:
    peak = canary.memory_max
    return _Reading(
        observed=peak,
        breached=peak is not None and peak > limit,  # the missing samples cannot lower a maximum
        facts={
            "peak": peak if peak is not None else 0.0,
            "limit": limit,
            "samples": int(canary.memory.size),
            "over": int(np.count_nonzero(canary.memory > limit)),
            "n": n,
            "baseline_note": f"; baseline peak is {baseline.memory_max:.1f}%"
            if baseline.memory_max is not None
            else "",
        },
    )


_LATENCY_MESSAGES = {
    "breached": "Canary {name} latency {value} is above the SLO of {limit}: {slow} of {samples} requests took "
    "longer, {allowed} would have been allowed{baseline_note}.",
    "within": "Canary {name} latency {value} is within the SLO of {limit} ({slow} of {samples} requests slower, "
    "{allowed} allowed){baseline_note}.",
    "certain": "Canary already has {slow} requests slower than {limit} among its first {samples}: a {name} within "
    "the SLO over the minimum sample of {n} allows only {allowed}, so the SLO is breached whatever the next "
    "{missing} do.",
    "short": "Only {samples} canary latency samples, fewer than the minimum of {n}; {slow} slower than {limit} so "
    "far, {allowed} allowed over the minimum sample.",
}

# In the order the verdict lists them.
SLO_CHECKS: tuple[SloCheck, ...] = (
    SloCheck(
        metric=Metric.ERROR_RATE,
        limit=lambda policy: policy.max_error_rate,
        minimum=lambda policy: policy.min_requests,
        samples=lambda side: side.requests,
        read=_read_error_rate,
        breached="Canary error rate {rate} ({errors} of {requests} requests) is above the SLO of "
        "{limit}{baseline_note}.",
        within="Canary error rate {rate} ({errors} of {requests} requests) is within the SLO of {limit}.",
        certain="Canary already has {errors} errors in {requests} requests: even if the next {missing} requests "
        "all succeed, the error rate over the minimum sample of {n} requests is at least {rate_over_n}, above "
        "the SLO of {limit}.",
        short="Only {requests} canary requests, fewer than the minimum of {n}; {errors} errors so far, within "
        "the budget of {budget} errors over the minimum sample.",
    ),
    SloCheck(
        metric=Metric.LATENCY_P95,
        limit=lambda policy: policy.max_p95_ms,
        minimum=lambda policy: policy.min_latency_samples,
        samples=lambda side: int(side.latency.size),
        read=_read_percentile(0.95),
        **_LATENCY_MESSAGES,
    ),
    SloCheck(
        metric=Metric.LATENCY_P99,
        limit=lambda policy: policy.max_p99_ms,
        minimum=lambda policy: policy.min_latency_samples,
        samples=lambda side: int(side.latency.size),
        read=_read_percentile(0.99),
        **_LATENCY_MESSAGES,
    ),
    SloCheck(
        metric=Metric.CPU,
        limit=lambda policy: policy.max_cpu_percent,
        minimum=lambda policy: policy.min_cpu_samples,
        samples=lambda side: int(side.cpu.size),
        read=_read_cpu,
        breached="Canary mean CPU {mean:.1f}% over {samples} samples is above the SLO of {limit:.1f}%{baseline_note}.",
        within="Canary mean CPU {mean:.1f}% over {samples} samples is within the SLO of {limit:.1f}%{baseline_note}.",
        certain="Canary CPU samples already sum to {total:.1f}% over {samples} samples: the mean over the minimum "
        "of {n} samples is at least {mean_over_n:.1f}%, above the SLO of {limit:.1f}%.",
        short="Only {samples} canary CPU samples, fewer than the minimum of {n}.",
    ),
    SloCheck(
        metric=Metric.MEMORY,
        limit=lambda policy: policy.max_memory_percent,
        minimum=lambda policy: policy.min_memory_samples,
        samples=lambda side: int(side.memory.size),
        read=_read_memory,
        breached="Canary memory use peaked at {peak:.1f}% ({over} of {samples} samples above), above the SLO "
        "of {limit:.1f}%{baseline_note}.",
        within="Canary memory use peaked at {peak:.1f}% over {samples} samples, within the SLO of "
        "{limit:.1f}%{baseline_note}.",
        certain="Canary memory use already reached {peak:.1f}% in its first {samples} samples, above the SLO "
        "of {limit:.1f}%: a peak no later sample can lower.",
        short="Only {samples} canary memory samples, fewer than the minimum of {n}.",
    ),
)


def judge_slo(check: SloCheck, baseline: SideNumbers, canary: SideNumbers, policy: CanaryPolicy) -> Reason | None:
    """The one SLO classifier: PASS or SLO_BREACH on the measured sample; below the minimum, a
    certain SLO_BREACH or short data. None when the policy disables the check."""
    limit = check.limit(policy)
    if limit is None:
        return None
    minimum = check.minimum(policy)
    samples = check.samples(canary)
    if samples >= minimum:
        reading = check.read(baseline, canary, limit, samples)
        anytime_p, evidence = _sequential_evidence(reading, policy) if reading.breached else (None, "")
        return Reason(
            metric=check.metric,
            check=CheckKind.SLO,
            classification=Classification.SLO_BREACH if reading.breached else Classification.PASS,
            message=(check.breached if reading.breached else check.within).format(**reading.facts) + evidence,
            observed=reading.observed,
            threshold=limit,
            anytime_p_value=anytime_p,
        )
    reading = check.read(baseline, canary, limit, minimum)
    if reading.breached:
        return Reason(
            metric=check.metric,
            check=CheckKind.SLO,
            classification=Classification.SLO_BREACH,
            message=check.certain.format(**reading.facts),
            observed=reading.observed,
            threshold=limit,
            certain=True,
        )
    return short_data(check.metric, CheckKind.SLO, check.short.format(**reading.facts), policy, threshold=limit)


def _sequential_evidence(reading: _Reading, policy: CanaryPolicy) -> tuple[float | None, str]:
    """For a breach above the minimum sample: the sequential test's always-valid p-value (None where
    the reading is no share, or the policy turns the test off) and what the reason says of it."""
    if reading.share is None or policy.sequential_alpha is None:
        return None, ""
    hits, trials, allowed_share = reading.share
    if allowed_share >= 1.0:
        return None, ""  # a limit of 100 %: nothing is ever above it
    p_value = anytime_share_p_value(hits, trials, allowed_share)
    if p_value > policy.sequential_alpha:
        return p_value, ""
    return p_value, (
        " A sequential test (valid however often it looks) puts the chance of this from a canary within the SLO"
        f" at p = {format_p_value(p_value)}, at or below the policy's {policy.sequential_alpha:g}: enough to act"
        " on before the window ends."
    )


def _error_budget(limit: float, minimum: int) -> int:
    """The most errors `minimum` requests may hold within the SLO, decided the same way the check
    decides (errors / minimum > limit), so binary rounding of limit * minimum cannot be off by one."""
    budget = math.floor(limit * minimum)
    while (budget + 1) / minimum <= limit:
        budget += 1
    while budget > 0 and budget / minimum > limit:
        budget -= 1
    return budget


def _baseline_error_note(baseline: SideNumbers, limit: float) -> str:
    rate = baseline.error_rate
    if rate is None:
        return ""
    if rate > limit:
        return f"; the baseline is at {pct(rate)}, also above it, which does not excuse the canary"
    return f"; the baseline is at {pct(rate)}"
