"""What the canary judge is given: the evidence of both colors over one window, and the policy.

The judge itself is switchyard.core.canary; the checks it runs are in canary_slo (the canary
against absolute limits) and canary_comparisons (the canary against the baseline). Pure models,
plus `SideNumbers`, the derived numbers of one side that those checks read.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from switchyard.core.stats import mean, nearest_rank_percentile

NonNegativeFiniteFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class JudgeModel(BaseModel):
    """The base of the judge's models (inputs, verdict, split check): frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AnalysisWindow(JudgeModel):
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


class SideEvidence(JudgeModel):
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
    memory_used_percent: list[Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]] = Field(
        default_factory=list,
        description="memory used % samples (100 x (1 - available / the VM size's memory)), one per instance "
        "per metric grain",
    )
    network_out_bytes: NonNegativeFiniteFloat | None = Field(
        default=None, description="bytes the side's instances sent over the window (Network Out Total); None: no data"
    )

    @model_validator(mode="after")
    def _errors_within_requests(self) -> SideEvidence:
        if self.error_count > self.request_count:
            raise ValueError(f"error_count ({self.error_count}) cannot exceed request_count ({self.request_count})")
        return self


class CanaryEvidence(JudgeModel):
    window: AnalysisWindow
    baseline: SideEvidence = Field(description="the live color")
    canary: SideEvidence = Field(description="the new color")


InsufficientDataAction = Literal["inconclusive", "fail"]


class CanaryPolicy(JudgeModel):
    """SLOs and statistical settings of a canary analysis.

    Short data can be INCONCLUSIVE (the flow decides: wait longer, or roll back) or FAIL; there
    is deliberately no "pass" option: a canary never passes on missing evidence.

    Saturation is CPU, memory and network:
    * CPU: the mean over the canary's samples (CPU is noisy; a short spike is not saturation).
    * Memory: the *highest* per-instance grain average (`max_memory_percent`, default 90 %). Memory
      does not jitter like CPU, and the instance closest to running out is the one that will be
      killed: a leak shows there first, and a mean over healthy instances would hide it.
    * Network: no absolute limit. What a service may send depends on the service (an image
      service sends megabytes, a health API bytes), so one number for a fleet would be wrong for
      most of it, and a VM's bandwidth cap is far above what a canary's share of traffic reaches.
      What a release does change is how much it sends *per request*: a response that lost its
      compression, a debug payload left in, a chatty new call. So the canary's bytes sent per
      request (Network Out Total / requests) are compared with the baseline's over the same
      window, and a rise beyond `network_out_relative_tolerance` (default +50 %) AND the absolute
      floor `network_out_absolute_tolerance_bytes` (default 1 KiB per request, so tiny responses
      growing by a header do not fail a release) fails the canary. Per request, because the
      canary serves only its share of the traffic. A ratio of two totals has no sampling
      distribution to test, so this is a tolerance check, not a significance test; it needs
      `min_requests` on both sides, like the error comparison."""

    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0, description="SLO: share of 5xx")
    max_p95_ms: float | None = Field(default=500.0, gt=0.0, description="SLO; None disables the check")
    max_p99_ms: float | None = Field(default=1000.0, gt=0.0, description="SLO; None disables the check")
    max_cpu_percent: float | None = Field(
        default=80.0, gt=0.0, description="SLO on the mean CPU % of canary instances; None disables"
    )
    min_requests: int = Field(default=200, ge=1, description="per side, for error-rate judgements")
    min_latency_samples: int = Field(default=200, ge=1, description="per side, for latency judgements")
    min_cpu_samples: int = Field(default=3, ge=1, description="canary CPU samples for the CPU SLO")
    max_memory_percent: float | None = Field(
        default=90.0,
        gt=0.0,
        le=100.0,
        description="SLO on the highest memory used % of any canary instance in any grain; None disables",
    )
    min_memory_samples: int = Field(default=3, ge=1, description="canary memory samples for the memory SLO")
    network_out_relative_tolerance: float | None = Field(
        default=0.5,
        ge=0.0,
        description="canary bytes sent per request may exceed the baseline's by this fraction; None disables",
    )
    network_out_absolute_tolerance_bytes: float = Field(
        default=1024.0, ge=0.0, description="floor of the network-out tolerance, in bytes per request"
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="significance level of comparisons")
    sequential_alpha: float | None = Field(
        default=0.001,
        gt=0.0,
        lt=0.5,
        description="the most a watch may risk stopping a canary whose true error rate (or share of requests "
        "above a latency SLO) is within the SLO, when it acts on a breach before the window's data is complete "
        "(an always-valid sequential test); None: act early only on certain breaches",
    )
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


class SideNumbers:
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
        self.memory = np.asarray(evidence.memory_used_percent, dtype=float)
        self.memory_max = float(self.memory.max()) if self.memory.size else None
        self.network_out_bytes = evidence.network_out_bytes

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def network_out_per_request(self) -> float | None:
        if self.network_out_bytes is None or not self.requests:
            return None
        return self.network_out_bytes / self.requests
