"""The canary judge: golden-signal evidence in, a classified verdict with reasons out.

Kayenta-like, but small enough to read in one sitting. Pure: no I/O, no clock, no randomness.

What the judge checks
---------------------
*SLO checks* (switchyard.core.canary_slo) look at the canary alone, against absolute limits from
the policy: error rate, p95 and p99 latency, mean CPU, peak memory. Below the minimum sample they fail only on
a *certain* breach, one no more data can undo, so a flow may call the judge as often as it likes
during the window and abort on the first FAIL (canary_slo says why that is sound). Above it, an
error-rate or latency breach carries an always-valid p-value, which a flow may act on before its
data is complete just as safely (canary_slo, "a sequential test"; core.analysis.breach_known_early).

*Comparisons* (switchyard.core.canary_comparisons) look at the canary against the baseline (the
live color) over the same window: latency and error rate, each needing significance AND an effect
beyond the policy's tolerance, and network out per request, held to a tolerance. They are judged
once, at the end of a window.

Overall: FAIL if any check fails or breaches an SLO; else INCONCLUSIVE if any is inconclusive;
else PASS.

What the judge is given is in switchyard.core.canary_inputs, what it gives back in
switchyard.core.canary_verdict. The split check (`verify_split`, switchyard.core.canary_split) is
separate: the instance-ratio canary only *aims* at a share of traffic, so the delivered share is
verified, with an exact binomial confidence interval.
"""

from __future__ import annotations

from switchyard.core.canary_comparisons import error_rate_comparison, latency_comparison, network_out_comparison
from switchyard.core.canary_inputs import CanaryEvidence, CanaryPolicy, SideNumbers
from switchyard.core.canary_slo import SLO_CHECKS, judge_slo
from switchyard.core.canary_verdict import CanaryOutcome, Classification, MetricRow, Reason, Verdict


def judge_canary(evidence: CanaryEvidence, policy: CanaryPolicy, *, compare_with_baseline: bool = True) -> Verdict:
    """Judge a canary window. Deterministic: the same evidence and policy give the same verdict.

    With `compare_with_baseline=False` only the SLO checks run: after a promotion the new version
    holds all traffic, so there is no baseline serving beside it, but the SLOs still hold."""
    baseline = SideNumbers(evidence.baseline)
    canary = SideNumbers(evidence.canary)

    reasons: list[Reason] = [
        reason for check in SLO_CHECKS if (reason := judge_slo(check, baseline, canary, policy)) is not None
    ]
    if compare_with_baseline:
        reasons.append(latency_comparison(baseline, canary, policy))
        reasons.append(error_rate_comparison(baseline, canary, policy))
        network = network_out_comparison(baseline, canary, policy)
        if network is not None:
            reasons.append(network)

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


def _metric_rows(baseline: SideNumbers, canary: SideNumbers) -> list[MetricRow]:
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
        MetricRow(
            key="memory_max_percent",
            label="Memory used, peak",
            unit="percent",
            baseline=baseline.memory_max,
            canary=canary.memory_max,
        ),
        MetricRow(
            key="network_out_bytes",
            label="Network out",
            unit="bytes",
            baseline=baseline.network_out_bytes,
            canary=canary.network_out_bytes,
        ),
        MetricRow(
            key="network_out_per_request_bytes",
            label="Network out per request",
            unit="bytes",
            baseline=baseline.network_out_per_request,
            canary=canary.network_out_per_request,
        ),
    ]
