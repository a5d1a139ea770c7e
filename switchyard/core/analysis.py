"""A canary analysis around the judge: whose signals are whose, and when the watch is decided.

Pure, like the judge (switchyard.core.canary): the analyse task reads the gateway's metrics and
access log and the instances' CPU, and these functions turn them into evidence and decisions.

Who is who: the canary is the new color's instances that serve in the live pool; the baseline is
the live color's instances beside them. Under full traffic (after the switch) the canary is the
whole live color and there is no baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.canary_inputs import AnalysisWindow, CanaryEvidence, SideEvidence
from switchyard.core.canary_split import SplitCheck
from switchyard.core.canary_verdict import CanaryOutcome, CheckKind, Verdict
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color

_V = TypeVar("_V")


class BackendCounts(Protocol):
    """Requests the gateway sent one backend address in a window (the telemetry port's counts)."""

    @property
    def total(self) -> int: ...

    @property
    def failed(self) -> int: ...  # answered 5xx


class AccessLogEntry(BaseModel):
    """One request in the gateway's access log: when it was logged, the backend address that answered
    it, and the gateway's time taken."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    backend: str
    latency_ms: float


def latency_by_backend(entries: Sequence[AccessLogEntry], start: datetime, end: datetime) -> dict[str, list[float]]:
    """Per backend address, the time taken of each request logged in [start, end): a watch reads the
    access log once per look, over the grains still arriving, and judges the complete ones within it."""
    samples: dict[str, list[float]] = {}
    for entry in entries:
        if start <= entry.at < end:
            samples.setdefault(entry.backend, []).append(entry.latency_ms)
    return samples


class CanarySides(BaseModel):
    """Which instances the judge holds against which."""

    model_config = ConfigDict(frozen=True)

    baseline_color: Color
    canary_color: Color
    baseline_addresses: list[str]
    canary_addresses: list[str]
    canary_vm_names: list[str]  # the canary instances' VMs: their CPU, memory and network are the canary's
    baseline_vm_names: list[str] = []  # the baseline instances' VMs
    # Each side's color's VM size, as observed: memory used is measured against the size's memory.
    vm_sizes: dict[Color, str] = {}


def canary_sides(
    observed: ServiceObservation, canary_addresses: list[str], baseline_color: Color, canary_color: Color
) -> CanarySides:
    """The canary is `canary_addresses`; the baseline is the rest of `baseline_color`'s instances."""
    canary = set(canary_addresses)
    baseline = set(observed.scale_set(baseline_color).addresses) - canary
    return CanarySides(
        baseline_color=baseline_color,
        canary_color=canary_color,
        baseline_addresses=sorted(baseline),
        canary_addresses=sorted(canary),
        canary_vm_names=[i.name for i in observed.scale_set(canary_color).instances if i.private_ip in canary],
        baseline_vm_names=[i.name for i in observed.scale_set(baseline_color).instances if i.private_ip in baseline],
        vm_sizes={
            color: size
            for color in (baseline_color, canary_color)
            if (size := observed.scale_set(color).vm_size) is not None
        },
    )


class GoldenSignals(BaseModel):
    """The evidence of one window, and the request counts the split is verified with."""

    model_config = ConfigDict(frozen=True)

    evidence: CanaryEvidence
    canary_requests: int  # answered by a canary backend (the delivered split is verified with these)
    total_requests: int  # answered by the canary's and the baseline's backends
    gateway_errors: int = 0  # 5xx the gateway produced itself in the pool (counted against the canary)


def golden_signals(
    sides: CanarySides,
    start: datetime,
    end: datetime,
    counts: Mapping[str, BackendCounts],
    latency_ms: Mapping[str, list[float]],
    cpu_by_vm: Mapping[str, list[float]],
    gateway_errors: int = 0,
    *,
    memory_by_vm: Mapping[str, list[float]] | None = None,
    network_out: Mapping[str, float] | None = None,
) -> GoldenSignals:
    """Both sides' golden signals over [start, end): counts from the gateway's metrics per backend
    address, latency from its access log per address; CPU and memory samples and bytes sent per VM
    name (any VMs of either color: each side takes only its own VMs', so under full traffic the
    empty baseline borrows nothing from the canary). A side none of whose VMs has a network value has
    no network data (None), never zero.

    `gateway_errors` are 5xx answers the gateway produced itself in the judged pool (a backend that
    died mid-request: 502, 504), which no backend's counts hold and metrics cannot attribute. They
    count against the canary: while it serves, going back to the pool without it is the safe side."""

    cpu = _by_lower_name(cpu_by_vm)
    memory = _by_lower_name(memory_by_vm or {})
    sent = _by_lower_name(network_out or {})

    def side(color: Color, addresses: list[str], vm_names: list[str], extra_errors: int) -> SideEvidence:
        names = [name.lower() for name in vm_names]
        known = [sent[name] for name in names if name in sent]
        return SideEvidence(
            color=color.value,
            latency_ms=[ms for a in addresses for ms in latency_ms.get(a, [])],
            request_count=sum(counts[a].total for a in addresses if a in counts) + extra_errors,
            error_count=sum(counts[a].failed for a in addresses if a in counts) + extra_errors,
            cpu_percent=[value for name in names for value in cpu.get(name, [])],
            memory_used_percent=[value for name in names for value in memory.get(name, [])],
            network_out_bytes=sum(known) if known else None,
        )

    baseline = side(sides.baseline_color, sides.baseline_addresses, sides.baseline_vm_names, 0)
    canary = side(sides.canary_color, sides.canary_addresses, sides.canary_vm_names, gateway_errors)
    served = sum(counts[a].total for a in sides.canary_addresses if a in counts)
    return GoldenSignals(
        evidence=CanaryEvidence(window=AnalysisWindow(start=start, end=end), baseline=baseline, canary=canary),
        canary_requests=served,
        total_requests=served + baseline.request_count,
        gateway_errors=gateway_errors,
    )


def _by_lower_name(by_vm: Mapping[str, _V]) -> dict[str, _V]:
    """VM names as Azure Monitor spells them are not always as the scale set does: compare lower-cased."""
    return {name.lower(): value for name, value in by_vm.items()}


def gateway_errors(pool_failed: int, counts: Mapping[str, BackendCounts]) -> int:
    """The pool's 5xx answers that no backend gave: the gateway's own (FailedRequests counts both)."""
    return max(0, pool_failed - sum(c.failed for c in counts.values()))


def access_log_caught_up(signals: GoldenSignals) -> bool:
    """The access log (which arrives after an ingestion delay) holds a latency sample for every
    request the metrics counted in the window: only then are the percentiles the whole window's."""
    evidence = signals.evidence
    samples = len(evidence.canary.latency_ms) + len(evidence.baseline.latency_ms)
    return samples >= signals.total_requests


class WatchDecision(StrEnum):
    KEEP_WATCHING = "keep-watching"
    # An SLO breach before the window ended: every further second puts users in front of it.
    STOP_EARLY = "stop-early"
    # Inconclusive at the end of the window: too little data is never a pass; look as long again.
    EXTEND = "extend"
    DECIDED = "decided"


def watch_decision(verdict: Verdict, *, window_ended: bool, may_extend: bool) -> WatchDecision:
    """What a watch over a canary does after a look at its verdict so far.

    Only SLO breaches stop a watch early: comparisons are fixed-sample tests, judged once at the end
    (switchyard.core.canary_comparisons). `may_extend` is whether the window may still be extended (once)."""
    if not window_ended:
        if any(reason.check == CheckKind.SLO for reason in verdict.failing_reasons):
            return WatchDecision.STOP_EARLY
        return WatchDecision.KEEP_WATCHING
    if may_extend and verdict.outcome == CanaryOutcome.INCONCLUSIVE:
        return WatchDecision.EXTEND
    return WatchDecision.DECIDED


def certain_breach(verdict: Verdict) -> bool:
    """An SLO breach that no later data can undo: more errors, slow requests or CPU than the SLO
    allows over the minimum sample, or a memory peak above it, counted from data that late arrivals
    can only raise. It may be acted on before the data is complete (switchyard.core.canary_slo, "certain breaches")."""
    return any(reason.check == CheckKind.SLO and reason.certain for reason in verdict.failing_reasons)


def breach_known_early(verdict: Verdict, sequential_alpha: float | None) -> bool:
    """An SLO breach a watch may act on before its data is complete: a certain one, or one above the
    minimum sample whose always-valid p-value is at most the policy's `sequential_alpha`
    (switchyard.core.canary_slo, "a sequential test"). Either keeps its promise however often a
    watch asks."""
    if certain_breach(verdict):
        return True
    if sequential_alpha is None:
        return False
    return any(
        reason.check == CheckKind.SLO
        and reason.anytime_p_value is not None
        and reason.anytime_p_value <= sequential_alpha
        for reason in verdict.failing_reasons
    )


class Analysis(BaseModel):
    """The outcome of one canary analysis (a step, or the check under full traffic)."""

    verdict: Verdict
    split: SplitCheck | None = None  # the delivered share, when one was aimed at and the window ran out
    decided_at: datetime
    early: bool = False  # an SLO breach decided before the window ended
    # Reads of the golden signals that failed and were read again at a later look (tasks/canary.py).
    telemetry_failures: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The judge said PASS and the canary got the traffic it was meant to: a split that cannot
        be verified fails the step too, since a canary that got no traffic proved nothing."""
        return self.verdict.outcome == CanaryOutcome.PASS and (self.split is None or self.split.matches)
