"""The canary judge: golden-signal evidence in, a classified verdict with reasons out.

Kayenta-like, but small enough to read in one sitting. Pure: no I/O, no clock, no randomness.

What the judge checks
---------------------
*SLO checks* look at the canary alone, against absolute limits from the policy: error rate,
p95 and p99 latency, mean CPU. A breach is a breach even when the baseline is just as bad: an
SLO is a promise to users, and "the old version broke it too" does not keep it.

*Comparisons* look at the canary against the baseline (the live color) over the same window:

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

This rule needs no distributional assumption and, because the counts it uses can only grow, the
answer can never flip as more data arrives: a flow may call the judge as often as it likes during
the window and abort on the first FAIL without inflating its false-failure rate (the classic
"peeking" problem of repeated significance tests). At or above the minimum, SLOs are judged on
the measured values of the window: that is what the SLO promises.

Comparisons are fixed-sample tests at level alpha: judge a window once, at its end. Calling the
judge repeatedly and failing on the first significant comparison raises the false-failure rate.

Overall: FAIL if any check fails or breaches an SLO; else INCONCLUSIVE if any is inconclusive;
else PASS.

The split check (`verify_split`) is separate: the instance-ratio canary only *aims* at a share of
traffic, so the delivered share is verified, with an exact binomial confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    computed_field,
    model_validator,
)

from switchyard.core.stats import (
    allowed_exceedances,
    clopper_pearson_interval,
    format_p_value,
    mean,
    nearest_rank_percentile,
)

# Below this expected count in any cell of the 2x2 error table, the z-test's normal approximation
# is not trusted (the usual rule of thumb for chi-square / z tests on proportions).
_MIN_EXPECTED_CELL_COUNT = 5.0

NonNegativeFiniteFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: importing it costs seconds, and every flow run process
    imports this module (through the release policy) while only a canary's judge needs it."""
    from scipy import stats

    return stats


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Inputs


class AnalysisWindow(_Model):
    """The time range the evidence was collected over (both sides, same range)."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _end_after_start(self) -> AnalysisWindow:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        return self

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


class SideEvidence(_Model):
    """What one color did during the window."""

    color: str | None = Field(default=None, description="e.g. 'blue'; only used for display")
    latency_ms: list[NonNegativeFiniteFloat] = Field(
        default_factory=list, description="per-request time taken, from the gateway access log"
    )
    request_count: NonNegativeInt
    error_count: NonNegativeInt = Field(description="responses with a 5xx status")
    cpu_percent: list[NonNegativeFiniteFloat] = Field(
        default_factory=list, description="CPU % samples, one per instance per sampling interval"
    )

    @model_validator(mode="after")
    def _errors_within_requests(self) -> SideEvidence:
        if self.error_count > self.request_count:
            raise ValueError(f"error_count ({self.error_count}) cannot exceed request_count ({self.request_count})")
        return self


class CanaryEvidence(_Model):
    window: AnalysisWindow
    baseline: SideEvidence = Field(description="the live color")
    canary: SideEvidence = Field(description="the new color")


InsufficientDataAction = Literal["inconclusive", "fail"]


class CanaryPolicy(_Model):
    """SLOs and statistical settings of a canary analysis.

    Short data can be INCONCLUSIVE (the flow decides: wait longer, or roll back) or FAIL; there
    is deliberately no "pass" option: a canary never passes on missing evidence."""

    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0, description="SLO: share of 5xx")
    max_p95_ms: float | None = Field(default=500.0, gt=0.0, description="SLO; None disables the check")
    max_p99_ms: float | None = Field(default=1000.0, gt=0.0, description="SLO; None disables the check")
    max_cpu_percent: float | None = Field(
        default=80.0, gt=0.0, description="SLO on the mean CPU % of canary instances; None disables"
    )
    min_requests: int = Field(default=200, ge=1, description="per side, for error-rate judgements")
    min_latency_samples: int = Field(default=200, ge=1, description="per side, for latency judgements")
    min_cpu_samples: int = Field(default=3, ge=1, description="canary CPU samples for the CPU SLO")
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="significance level of comparisons")
    latency_relative_tolerance: float = Field(
        default=0.2, ge=0.0, description="canary median may be this fraction slower than baseline"
    )
    latency_absolute_tolerance_ms: float = Field(
        default=5.0, ge=0.0, description="floor of the latency tolerance, in ms"
    )
    error_rate_tolerance: float = Field(
        default=0.005, ge=0.0, le=1.0, description="tolerated absolute error-rate increase"
    )
    on_insufficient_data: InsufficientDataAction = "inconclusive"

    @model_validator(mode="after")
    def _p99_not_below_p95(self) -> CanaryPolicy:
        if self.max_p95_ms is not None and self.max_p99_ms is not None and self.max_p99_ms < self.max_p95_ms:
            raise ValueError(
                f"max_p99_ms ({self.max_p99_ms}) cannot be lower than max_p95_ms ({self.max_p95_ms}):"
                " the 99th percentile is never below the 95th"
            )
        return self


# --------------------------------------------------------------------------------------------
# Outputs


class CanaryOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Classification(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SLO_BREACH = "slo_breach"


class Metric(StrEnum):
    ERROR_RATE = "error_rate"
    LATENCY = "latency"  # the whole distribution (comparison)
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"
    CPU = "cpu"


class CheckKind(StrEnum):
    SLO = "slo"  # canary against an absolute limit
    COMPARISON = "comparison"  # canary against baseline


class Reason(_Model):
    metric: Metric
    check: CheckKind
    classification: Classification
    message: str = Field(description="a sentence for people, with the numbers")
    observed: float | None = Field(default=None, description="the canary value the check judged")
    threshold: float | None = Field(default=None, description="the limit or tolerance it was held to")
    certain: bool = Field(
        default=False,
        description="an SLO breach decided before the minimum sample, which no more data can undo",
    )
    test: str | None = Field(default=None, description="statistical test, when one ran")
    statistic: float | None = None
    p_value: float | None = None

    @property
    def label(self) -> str:
        return _CHECK_LABELS[(self.metric, self.check)]


_CHECK_LABELS: dict[tuple[Metric, CheckKind], str] = {
    (Metric.ERROR_RATE, CheckKind.SLO): "error rate SLO",
    (Metric.LATENCY_P95, CheckKind.SLO): "p95 latency SLO",
    (Metric.LATENCY_P99, CheckKind.SLO): "p99 latency SLO",
    (Metric.CPU, CheckKind.SLO): "CPU SLO",
    (Metric.LATENCY, CheckKind.COMPARISON): "latency vs baseline",
    (Metric.ERROR_RATE, CheckKind.COMPARISON): "error rate vs baseline",
}

MetricUnit = Literal["count", "ms", "ratio", "percent"]


class MetricRow(_Model):
    key: str
    label: str
    unit: MetricUnit = Field(description="ratio: 0..1 shown as %; percent: already in %")
    baseline: float | None
    canary: float | None


class Verdict(_Model):
    outcome: CanaryOutcome
    reasons: list[Reason]
    metrics: list[MetricRow]
    window: AnalysisWindow
    policy: CanaryPolicy
    baseline_color: str | None = None
    canary_color: str | None = None

    @property
    def failing_reasons(self) -> list[Reason]:
        return [r for r in self.reasons if r.classification in (Classification.FAIL, Classification.SLO_BREACH)]

    @property
    def summary(self) -> str:
        """One line for logs and event payloads, e.g. 'FAIL: error rate SLO (slo_breach)'."""
        if self.outcome is CanaryOutcome.PASS:
            return f"PASS: all {len(self.reasons)} checks passed"
        wanted = (
            self.failing_reasons
            if self.outcome is CanaryOutcome.FAIL
            else [r for r in self.reasons if r.classification is Classification.INCONCLUSIVE]
        )
        details = ", ".join(f"{r.label} ({r.classification.value})" for r in wanted)
        return f"{self.outcome.value.upper()}: {details}"

    def metric(self, key: str) -> MetricRow:
        for row in self.metrics:
            if row.key == key:
                return row
        raise KeyError(f"no metric row {key!r}; rows are {[row.key for row in self.metrics]}")

    def markdown(self) -> str:
        """A report for the Prefect UI (markdown artifact): outcome, evidence table, reasons."""
        baseline_name = f"Baseline ({self.baseline_color})" if self.baseline_color else "Baseline"
        canary_name = f"Canary ({self.canary_color})" if self.canary_color else "Canary"
        minutes = self.window.duration_s / 60.0
        lines = [
            f"## Canary verdict: **{self.outcome.value.upper()}**",
            "",
            f"Window {self.window.start.isoformat()} to {self.window.end.isoformat()} ({minutes:.1f} min). "
            f"Significance level alpha = {self.policy.alpha}; minimum per side: "
            f"{self.policy.min_requests} requests, {self.policy.min_latency_samples} latency samples.",
            "",
            f"| Metric | {baseline_name} | {canary_name} |",
            "|---|---:|---:|",
        ]
        for row in self.metrics:
            baseline_value = _format_value(row.baseline, row.unit)
            canary_value = _format_value(row.canary, row.unit)
            lines.append(f"| {row.label} | {baseline_value} | {canary_value} |")
        lines += ["", "| Check | Result | Detail |", "|---|---|---|"]
        for reason in self.reasons:
            detail = reason.message.replace("|", "\\|")
            lines.append(f"| {reason.label} | {reason.classification.value.upper()} | {detail} |")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The judge


class _Side:
    """Derived numbers of one side, computed once."""

    def __init__(self, evidence: SideEvidence) -> None:
        self.evidence = evidence
        self.latency = np.asarray(evidence.latency_ms, dtype=float)
        self.cpu = np.asarray(evidence.cpu_percent, dtype=float)
        self.requests = evidence.request_count
        self.errors = evidence.error_count
        self.p50 = nearest_rank_percentile(self.latency, 0.50)
        self.p95 = nearest_rank_percentile(self.latency, 0.95)
        self.p99 = nearest_rank_percentile(self.latency, 0.99)
        self.cpu_mean = mean(self.cpu)
        self.cpu_max = float(self.cpu.max()) if self.cpu.size else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def judge_canary(evidence: CanaryEvidence, policy: CanaryPolicy, *, compare_with_baseline: bool = True) -> Verdict:
    """Judge a canary window. Deterministic: the same evidence and policy give the same verdict.

    With `compare_with_baseline=False` only the SLO checks run: after a promotion the new version
    holds all traffic, so there is no baseline serving beside it, but the SLOs still hold."""
    baseline = _Side(evidence.baseline)
    canary = _Side(evidence.canary)

    reasons: list[Reason] = [
        reason for check in _SLO_CHECKS if (reason := _judge_slo(check, baseline, canary, policy)) is not None
    ]
    if compare_with_baseline:
        reasons.append(_latency_comparison(baseline, canary, policy))
        reasons.append(_error_rate_comparison(baseline, canary, policy))

    classes = {reason.classification for reason in reasons}
    if classes & {Classification.FAIL, Classification.SLO_BREACH}:
        outcome = CanaryOutcome.FAIL
    elif Classification.INCONCLUSIVE in classes:
        outcome = CanaryOutcome.INCONCLUSIVE
    else:
        outcome = CanaryOutcome.PASS

    return Verdict(
        outcome=outcome,
        reasons=reasons,
        metrics=_metric_rows(baseline, canary),
        window=evidence.window,
        policy=policy,
        baseline_color=evidence.baseline.color,
        canary_color=evidence.canary.color,
    )


def _short_data(
    metric: Metric, check: CheckKind, message: str, policy: CanaryPolicy, threshold: float | None = None
) -> Reason:
    if policy.on_insufficient_data == "fail":
        return Reason(
            metric=metric,
            check=check,
            classification=Classification.FAIL,
            message=f"{message} The policy treats too little data as a failure.",
            threshold=threshold,
        )
    return Reason(
        metric=metric,
        check=check,
        classification=Classification.INCONCLUSIVE,
        message=message,
        threshold=threshold,
    )


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


@dataclass(frozen=True)
class _SloCheck:
    metric: Metric
    limit: Callable[[CanaryPolicy], float | None]  # None: the policy disables the check
    minimum: Callable[[CanaryPolicy], int]
    samples: Callable[[_Side], int]
    read: Callable[[_Side, _Side, float, int], _Reading]  # (baseline, canary, limit, n)
    # Messages, formatted with the reading's facts:
    breached: str  # at or above the minimum sample, above the limit
    within: str  # at or above the minimum sample, within the limit
    certain: str  # below the minimum sample, breached whatever the missing samples do
    short: str  # below the minimum sample, nothing decided yet


def _read_error_rate(baseline: _Side, canary: _Side, limit: float, n: int) -> _Reading:
    requests, errors = canary.requests, canary.errors
    return _Reading(
        observed=errors / requests if requests else None,
        breached=errors / n > limit,
        facts={
            "errors": errors,
            "requests": requests,
            "n": n,
            "missing": n - requests,
            "rate": _pct(errors / requests) if requests else "n/a",
            "rate_over_n": _pct(errors / n),
            "limit": _pct(limit),
            "budget": _error_budget(limit, n),
            "baseline_note": _baseline_error_note(baseline, limit),
        },
    )


def _read_percentile(quantile: float) -> Callable[[_Side, _Side, float, int], _Reading]:
    name = f"p{round(quantile * 100)}"

    def read(baseline: _Side, canary: _Side, limit_ms: float, n: int) -> _Reading:
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
                "value": _ms(value),
                "limit": _ms(limit_ms),
                "slow": slow,
                "samples": samples,
                "allowed": allowed,
                "n": n,
                "missing": n - samples,
                "baseline_note": f"; baseline {name} is {_ms(baseline_value)}" if baseline_value is not None else "",
            },
        )

    return read


def _read_cpu(baseline: _Side, canary: _Side, limit: float, n: int) -> _Reading:
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
_SLO_CHECKS: tuple[_SloCheck, ...] = (
    _SloCheck(
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
    _SloCheck(
        metric=Metric.LATENCY_P95,
        limit=lambda policy: policy.max_p95_ms,
        minimum=lambda policy: policy.min_latency_samples,
        samples=lambda side: int(side.latency.size),
        read=_read_percentile(0.95),
        **_LATENCY_MESSAGES,
    ),
    _SloCheck(
        metric=Metric.LATENCY_P99,
        limit=lambda policy: policy.max_p99_ms,
        minimum=lambda policy: policy.min_latency_samples,
        samples=lambda side: int(side.latency.size),
        read=_read_percentile(0.99),
        **_LATENCY_MESSAGES,
    ),
    _SloCheck(
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
)


def _judge_slo(check: _SloCheck, baseline: _Side, canary: _Side, policy: CanaryPolicy) -> Reason | None:
    """The one SLO classifier: PASS or SLO_BREACH on the measured sample; below the minimum, a
    certain SLO_BREACH or short data. None when the policy disables the check."""
    limit = check.limit(policy)
    if limit is None:
        return None
    minimum = check.minimum(policy)
    samples = check.samples(canary)
    if samples >= minimum:
        reading = check.read(baseline, canary, limit, samples)
        return Reason(
            metric=check.metric,
            check=CheckKind.SLO,
            classification=Classification.SLO_BREACH if reading.breached else Classification.PASS,
            message=(check.breached if reading.breached else check.within).format(**reading.facts),
            observed=reading.observed,
            threshold=limit,
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
    return _short_data(check.metric, CheckKind.SLO, check.short.format(**reading.facts), policy, threshold=limit)


def _error_budget(limit: float, minimum: int) -> int:
    """The most errors `minimum` requests may hold within the SLO, decided the same way the check
    decides (errors / minimum > limit), so binary rounding of limit * minimum cannot be off by one."""
    budget = math.floor(limit * minimum)
    while (budget + 1) / minimum <= limit:
        budget += 1
    while budget > 0 and budget / minimum > limit:
        budget -= 1
    return budget


def _baseline_error_note(baseline: _Side, limit: float) -> str:
    rate = baseline.error_rate
    if rate is None:
        return ""
    if rate > limit:
        return f"; the baseline is at {_pct(rate)}, also above it, which does not excuse the canary"
    return f"; the baseline is at {_pct(rate)}"


def _latency_comparison(baseline: _Side, canary: _Side, policy: CanaryPolicy) -> Reason:
    minimum = policy.min_latency_samples
    n_baseline, n_canary = int(baseline.latency.size), int(canary.latency.size)
    if n_baseline < minimum or n_canary < minimum:
        return _short_data(
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

    result = _scipy_stats().mannwhitneyu(canary.latency, baseline.latency, alternative="greater")
    u_statistic = float(result.statistic)
    p_value = float(result.pvalue)
    if math.isnan(p_value):
        # Only when every sample on both sides is identical: no difference to find.
        p_value = 1.0
    significant = p_value < policy.alpha
    test_text = f"Mann-Whitney U = {u_statistic:.4g}, one-sided p = {format_p_value(p_value)}"
    medians = f"median {_ms(canary.p50)} vs {_ms(baseline.p50)}, {_signed_ms(shift)}{relative}"
    tolerance_text = (
        f"the tolerance of {_ms(tolerance)} (max of {policy.latency_relative_tolerance:.0%} of the baseline "
        f"median and {_ms(policy.latency_absolute_tolerance_ms)})"
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
            f"Canary is measurably slower ({test_text}) but only by {_signed_ms(shift)} at the median, "
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


def _error_rate_comparison(baseline: _Side, canary: _Side, policy: CanaryPolicy) -> Reason:
    minimum = policy.min_requests
    if baseline.requests < minimum or canary.requests < minimum:
        return _short_data(
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
    rates = f"canary {_pct(rate_c)} ({e_c}/{n_c}) vs baseline {_pct(rate_b)} ({e_b}/{n_b})"
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
            odds_ratio, p = _scipy_stats().fisher_exact([[e_c, n_c - e_c], [e_b, n_b - e_b]], alternative="greater")
            test = "Fisher exact (one-sided, canary higher)"
            statistic = float(odds_ratio) if math.isfinite(odds_ratio) else None
            p_value = float(p)
            test_text = f"Fisher's exact test (too few errors for the z-test), one-sided p = {format_p_value(p_value)}"
        else:
            standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
            z = increase / standard_error
            test = "two-proportion z-test (one-sided, canary higher)"
            statistic = z
            p_value = float(_scipy_stats().norm.sf(z))
            test_text = f"two-proportion z = {z:.2f}, one-sided p = {format_p_value(p_value)}"
    significant = p_value < policy.alpha

    if significant and increase > tolerance:
        classification = Classification.FAIL
        message = (
            f"Canary error rate is higher than the baseline: {rates}, {_pp(increase)}, beyond the tolerance "
            f"of {_pp(tolerance, signed=False)}; {test_text} < alpha {policy.alpha}."
        )
    elif significant:
        classification = Classification.PASS
        message = (
            f"Canary error rate is measurably higher ({test_text}) but by {_pp(increase)}, within the "
            f"tolerance of {_pp(tolerance, signed=False)}: {rates}."
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


def _metric_rows(baseline: _Side, canary: _Side) -> list[MetricRow]:
    total = baseline.requests + canary.requests
    return [
        MetricRow(key="requests", label="Requests", unit="count", baseline=baseline.requests, canary=canary.requests),
        MetricRow(
            key="traffic_share",
            label="Traffic share",
            unit="ratio",
            baseline=baseline.requests / total if total else None,
            canary=canary.requests / total if total else None,
        ),
        MetricRow(key="errors", label="Errors (5xx)", unit="count", baseline=baseline.errors, canary=canary.errors),
        MetricRow(
            key="error_rate",
            label="Error rate",
            unit="ratio",
            baseline=baseline.error_rate,
            canary=canary.error_rate,
        ),
        MetricRow(
            key="latency_samples",
            label="Latency samples",
            unit="count",
            baseline=baseline.latency.size,
            canary=canary.latency.size,
        ),
        MetricRow(key="latency_p50_ms", label="Latency p50", unit="ms", baseline=baseline.p50, canary=canary.p50),
        MetricRow(key="latency_p95_ms", label="Latency p95", unit="ms", baseline=baseline.p95, canary=canary.p95),
        MetricRow(key="latency_p99_ms", label="Latency p99", unit="ms", baseline=baseline.p99, canary=canary.p99),
        MetricRow(
            key="cpu_mean_percent",
            label="CPU mean",
            unit="percent",
            baseline=baseline.cpu_mean,
            canary=canary.cpu_mean,
        ),
        MetricRow(
            key="cpu_max_percent",
            label="CPU max",
            unit="percent",
            baseline=baseline.cpu_max,
            canary=canary.cpu_max,
        ),
    ]


# --------------------------------------------------------------------------------------------
# Split verification


SplitOutcome = Literal["match", "mismatch", "inconclusive"]


class SplitCheck(_Model):
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
    band = f"{_pct(expected_share)} +/- {_pct(tolerance)}"
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
            f"the canary served {canary_requests} of {total_requests} requests ({_pct(delivered)}); "
            f"the true share is within [{_pct(low)}, {_pct(high)}] at {confidence:.0%} confidence"
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
                z = float(_scipy_stats().norm.ppf(1 - (1 - confidence) / 2))
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


# --------------------------------------------------------------------------------------------
# Formatting


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _pp(difference: float, signed: bool = True) -> str:
    """A difference of two rates in percentage points."""
    return f"{difference * 100:+.2f} pp" if signed else f"{difference * 100:.2f} pp"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 10:
        return f"{value:.2f} ms"
    if abs(value) < 1000:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def _signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "-") + _ms(abs(value))


def _format_value(value: float | None, unit: MetricUnit) -> str:
    if value is None:
        return "-"
    if unit == "count":
        return f"{round(value):,}"
    if unit == "ratio":
        return _pct(value)
    if unit == "percent":
        return f"{value:.1f}%"
    return _ms(value)
