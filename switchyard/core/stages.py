"""Test stages before users: what the performance stage asks of the new color, and how it is judged.

The stages run against the idle color through the gateway's test listener, after the smoke tests
and before any user request (flows/release.py): smoke (health, version, the policy's checks), then
`integration` (a command the service provides: its own tests against the test URL; see
ServiceConfig.integration_test), then `performance` (this module): a steady load at a configured
rate for a configured time, judged on its error rate and its 95th percentile latency.

Why switchyard's own generator (switchyard.stages.traffic) rather than Locust: the stage needs an
open-model constant rate (requests are due on a schedule whether or not the last one answered) and
latencies counted from when each request was due, so that a stalling server shows up as latency
instead of as a lower send rate ("coordinated omission", the correction wrk2 makes). Locust's users
are a closed model (each waits for its answer before the next), which hides exactly that, and
would add gevent to the worker. The generator records every request, so the judgement below reads
plain numbers and stays pure.

Pure: no I/O; tasks/stages.py runs the load and calls `judge_performance`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.stats import interpolated_percentile


class PerformanceTest(BaseModel):
    """A steady load against the new color before users meet it, and what it must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_per_s: float = Field(gt=0, le=2000, description="Requests per second, steady (an open model).")
    duration_s: float = Field(gt=0, le=3600, description="How long the load runs.")
    path: str = Field("/", pattern=r"^/", description="Request path (GET), e.g. /work/echo.")
    connections: int = Field(4, ge=1, le=64, description="Keep-alive connections the rate is spread over.")
    max_p95_ms: float = Field(gt=0, description="95th percentile latency, from when each request was due.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Share of requests that failed (5xx or no answer).")
    min_delivered: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the planned requests that must have been sent and answered in time: a generator "
        "that could not keep the rate (a starved worker) proves nothing.",
    )

    def describe(self) -> str:
        return f"{self.rate_per_s:g}/s for {self.duration_s:g} s to {self.path}"


class StageResult(BaseModel):
    """One test stage's outcome, for the timeline, the summary and the error that stops a release."""

    model_config = ConfigDict(frozen=True)

    stage: str  # "integration", "performance"
    passed: bool
    detail: str  # one line


def judge_performance(test: PerformanceTest, *, latencies_s: Sequence[float], failed: int, sent: int) -> StageResult:
    """The load's numbers against the test's limits; every broken limit is named."""
    planned = test.rate_per_s * test.duration_s
    answered = sent - failed
    error_rate = failed / sent if sent else 1.0
    p95 = interpolated_percentile(sorted(latencies_s), 0.95)
    p95_ms = p95 * 1000 if p95 is not None else None
    measured = f"{sent} request(s) of {planned:.0f} planned, {failed} failed ({error_rate:.2%}), " + (
        f"p95 {p95_ms:.1f} ms" if p95_ms is not None else "no latency"
    )
    broken: list[str] = []
    if sent < test.min_delivered * planned:
        broken.append(f"only {sent} of {planned:.0f} planned requests were sent (min {test.min_delivered:.0%})")
    if error_rate > test.max_error_rate:
        broken.append(f"error rate {error_rate:.2%} above {test.max_error_rate:.2%}")
    if p95_ms is None or answered == 0:
        broken.append("no request was answered")
    elif p95_ms > test.max_p95_ms:
        broken.append(f"p95 {p95_ms:.1f} ms above {test.max_p95_ms:g} ms")
    if broken:
        return StageResult(stage="performance", passed=False, detail=f"{measured}: " + "; ".join(broken))
    return StageResult(stage="performance", passed=True, detail=measured)
