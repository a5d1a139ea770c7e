"""What the canary judge gives back: a verdict, the reason of every check, the evidence table.

Each check (canary_slo, canary_comparisons) gives one `Reason`; switchyard.core.canary combines
them into the `Verdict` and its outcome.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from switchyard.core.canary_format import byte_size, ms, pct
from switchyard.core.canary_inputs import AnalysisWindow, CanaryPolicy, JudgeModel


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
    MEMORY = "memory"
    NETWORK_OUT = "network_out"  # bytes sent per request (comparison)


class CheckKind(StrEnum):
    SLO = "slo"  # canary against an absolute limit
    COMPARISON = "comparison"  # canary against baseline


class Reason(JudgeModel):
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
    anytime_p_value: float | None = Field(
        default=None,
        description="for an SLO breach above the minimum sample: an always-valid p-value against the canary's "
        "true share being within the SLO (switchyard.core.stats.anytime_share_p_value), valid however often "
        "the judge is asked",
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
    (Metric.MEMORY, CheckKind.SLO): "memory SLO",
    (Metric.NETWORK_OUT, CheckKind.COMPARISON): "network out vs baseline",
    (Metric.LATENCY, CheckKind.COMPARISON): "latency vs baseline",
    (Metric.ERROR_RATE, CheckKind.COMPARISON): "error rate vs baseline",
}

MetricUnit = Literal["count", "ms", "ratio", "percent", "bytes"]


class MetricRow(JudgeModel):
    key: str
    label: str
    unit: MetricUnit = Field(description="ratio: 0..1 shown as %; percent: already in %")
    baseline: float | None
    canary: float | None


class Verdict(JudgeModel):
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


def short_data(
    metric: Metric, check: CheckKind, message: str, policy: CanaryPolicy, threshold: float | None = None
) -> Reason:
    """The reason of a check with too little data: INCONCLUSIVE, or FAIL where the policy says so."""
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


def _format_value(value: float | None, unit: MetricUnit) -> str:
    if value is None:
        return "-"
    if unit == "count":
        return f"{round(value):,}"
    if unit == "ratio":
        return pct(value)
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "bytes":
        return byte_size(value)
    return ms(value)
