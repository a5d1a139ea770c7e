"""Around the judge: whose signals are whose, and when a watch over a canary is decided."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from switchyard.core.analysis import (
    AccessLogEntry,
    Analysis,
    WatchDecision,
    access_log_caught_up,
    breach_known_early,
    canary_sides,
    certain_breach,
    gateway_errors,
    golden_signals,
    latency_by_backend,
    watch_decision,
)
from switchyard.core.canary import judge_canary
from switchyard.core.canary_inputs import AnalysisWindow, CanaryEvidence, CanaryPolicy, SideEvidence
from switchyard.core.canary_split import verify_split
from switchyard.core.canary_verdict import CanaryOutcome, CheckKind, Verdict
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import OBSERVED_AT, V1, V2, address, observed, scale_set

START, END = OBSERVED_AT, OBSERVED_AT + timedelta(seconds=30)
# Blue serves production on 3 instances; green's first instance serves beside them as the canary.
CANARY = address(Color.GREEN, 0)
SPLIT = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=[CANARY])


@dataclass(frozen=True)
class Counts:
    total: int
    failed: int = 0


def test_during_a_canary_the_baseline_is_the_live_color_and_the_canary_only_its_serving_instances() -> None:
    sides = canary_sides(SPLIT, [CANARY], Color.BLUE, Color.GREEN)

    assert sides.baseline_addresses == [address(Color.BLUE, i) for i in range(3)]
    assert sides.canary_addresses == [CANARY]
    # The idle instances of green serve nobody: their CPU would dilute the canary's.
    assert sides.canary_vm_names == [f"{SPLIT.topology.scale_set(Color.GREEN)}_0"]


def test_each_side_carries_its_colors_vm_size_as_observed() -> None:
    # Memory used is measured against the VM size's memory: the sides say each color's own size,
    # so a look at the metrics needs no read of the scale sets.
    resized = observed(
        scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3, vm_size="Standard_B4ms"), canary=[CANARY]
    )
    sides = canary_sides(resized, [CANARY], Color.BLUE, Color.GREEN)
    assert sides.vm_sizes == {Color.BLUE: "Standard_B2s", Color.GREEN: "Standard_B4ms"}


def test_under_full_traffic_the_whole_live_color_is_the_canary_and_there_is_no_baseline() -> None:
    promoted = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.GREEN)
    live = promoted.scale_set(Color.GREEN).addresses
    sides = canary_sides(promoted, live, Color.GREEN, Color.GREEN)

    assert sides.baseline_addresses == []
    assert sides.canary_addresses == sorted(live)
    assert len(sides.canary_vm_names) == 3


def test_golden_signals_add_up_each_sides_backends_and_ignore_addresses_of_neither() -> None:
    sides = canary_sides(SPLIT, [CANARY], Color.BLUE, Color.GREEN)
    blue = [address(Color.BLUE, i) for i in range(3)]
    counts = {
        blue[0]: Counts(100, 1),
        blue[1]: Counts(110, 0),
        # blue[2] got nothing in the window: no row at all
        CANARY: Counts(90, 9),
        "10.9.9.9": Counts(500, 500),  # a foreign address: neither side's
    }
    latency = {blue[0]: [10.0, 11.0], blue[1]: [12.0], CANARY: [30.0, 31.0], "10.9.9.9": [999.0]}

    blue_vms = [f"{SPLIT.topology.scale_set(Color.BLUE)}_{i}" for i in range(3)]
    green_vms = [f"{SPLIT.topology.scale_set(Color.GREEN)}_{i}" for i in range(3)]
    cpu = {blue_vms[0]: [20.0], blue_vms[1].upper(): [25.0], green_vms[0]: [70.0], green_vms[1]: [5.0]}

    signals = golden_signals(sides, START, END, counts, latency, cpu_by_vm=cpu)

    evidence = signals.evidence
    assert evidence.window == AnalysisWindow(start=START, end=END)
    assert (evidence.baseline.color, evidence.canary.color) == ("blue", "green")
    assert (evidence.baseline.request_count, evidence.baseline.error_count) == (210, 1)
    assert (evidence.canary.request_count, evidence.canary.error_count) == (90, 9)
    assert sorted(evidence.baseline.latency_ms) == [10.0, 11.0, 12.0]
    assert sorted(evidence.canary.latency_ms) == [30.0, 31.0]
    # Each side's VMs' CPU, whatever case Azure Monitor spells their names in; green's idle instance not at all.
    assert (evidence.baseline.cpu_percent, evidence.canary.cpu_percent) == ([20.0, 25.0], [70.0])
    # The split is verified on the two sides' traffic alone.
    assert (signals.canary_requests, signals.total_requests) == (90, 300)


def test_a_window_without_any_traffic_yet_is_empty_evidence_not_an_error() -> None:
    sides = canary_sides(SPLIT, [CANARY], Color.BLUE, Color.GREEN)
    signals = golden_signals(sides, START, END, {}, {}, cpu_by_vm={})
    assert signals.evidence.canary.request_count == 0 and signals.total_requests == 0


def test_under_full_traffic_the_empty_baseline_borrows_no_cpu_memory_or_network_from_the_canary() -> None:
    promoted = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.GREEN)
    sides = canary_sides(promoted, promoted.scale_set(Color.GREEN).addresses, Color.GREEN, Color.GREEN)
    green_vms = sides.canary_vm_names

    signals = golden_signals(
        sides,
        START,
        END,
        {},
        {},
        cpu_by_vm={vm: [60.0] for vm in green_vms},
        memory_by_vm={vm: [40.0] for vm in green_vms},
        network_out={vm: 1000.0 for vm in green_vms},
    )

    baseline, canary = signals.evidence.baseline, signals.evidence.canary
    assert (baseline.cpu_percent, baseline.memory_used_percent, baseline.network_out_bytes) == ([], [], None)
    assert (canary.cpu_percent, canary.memory_used_percent, canary.network_out_bytes) == (
        [60.0] * 3,
        [40.0] * 3,
        3000.0,
    )


# --- when a watch is decided ----------------------------------------------------------------------


def verdict(canary_latency_ms: float, *, requests: int = 400, errors: int = 0) -> Verdict:
    """A judged window: a healthy 20 ms baseline of 400 requests against the canary."""
    baseline = SideEvidence(
        latency_ms=[20.0] * 400,
        request_count=400,
        error_count=0,
        cpu_percent=[30.0] * 3,
        memory_used_percent=[40.0] * 3,
        network_out_bytes=400 * 2000.0,
    )
    canary = SideEvidence(
        latency_ms=[canary_latency_ms] * requests,
        request_count=requests,
        error_count=errors,
        cpu_percent=[30.0] * 3,
        memory_used_percent=[40.0] * 3,
        network_out_bytes=requests * 2000.0,
    )
    evidence = CanaryEvidence(window=AnalysisWindow(start=START, end=END), baseline=baseline, canary=canary)
    return judge_canary(evidence, CanaryPolicy())


BREACHING = verdict(20.0, errors=40)  # 10 % errors against a 1 % SLO
SLOWER = verdict(100.0)  # five times slower than the baseline, yet within every SLO
SHORT = verdict(20.0, requests=20)  # too few requests to judge anything
HEALTHY = verdict(20.0)


def test_the_verdicts_the_watch_is_tested_with_are_what_their_names_say() -> None:
    assert BREACHING.outcome is CanaryOutcome.FAIL
    assert {r.check for r in BREACHING.failing_reasons} == {CheckKind.SLO, CheckKind.COMPARISON}
    assert SLOWER.outcome is CanaryOutcome.FAIL
    assert {r.check for r in SLOWER.failing_reasons} == {CheckKind.COMPARISON}
    assert SHORT.outcome is CanaryOutcome.INCONCLUSIVE and HEALTHY.outcome is CanaryOutcome.PASS


def test_an_slo_breach_stops_the_watch_before_the_window_ends() -> None:
    assert watch_decision(BREACHING, window_ended=False, may_extend=True) is WatchDecision.STOP_EARLY


def test_a_failing_comparison_waits_for_the_end_of_the_window() -> None:
    # A comparison is a fixed-sample test: failing on its first significant look inflates false failures.
    assert watch_decision(SLOWER, window_ended=False, may_extend=True) is WatchDecision.KEEP_WATCHING
    assert watch_decision(SLOWER, window_ended=True, may_extend=True) is WatchDecision.DECIDED


def test_only_a_breach_no_later_data_can_undo_is_acted_on_before_the_grains_complete() -> None:
    # 6 errors in the first 30 requests: over the minimum sample of 40 at least 15 %, whatever comes.
    certain = verdict(20.0, requests=30, errors=6)
    assert certain_breach(certain)
    # Nothing wrong in 30 requests is not a breach; a measured 10 % on a full sample is a breach, but
    # of data still arriving, so it waits for complete grains.
    assert not certain_breach(verdict(20.0, requests=30, errors=0))
    assert not certain_breach(BREACHING) and not certain_breach(SLOWER) and not certain_breach(HEALTHY)


def test_above_the_minimum_a_breach_the_sequential_test_shows_is_acted_on_before_the_grains_complete() -> None:
    # 10 % errors in 400 requests against a 1 % SLO: not certain (later successes could dilute it),
    # but no canary within the SLO shows that, however often the watch looked.
    assert not certain_breach(BREACHING)
    assert breach_known_early(BREACHING, sequential_alpha=0.001)
    [errors] = [r for r in BREACHING.failing_reasons if r.check is CheckKind.SLO]
    assert errors.anytime_p_value is not None and errors.anytime_p_value < 1e-20
    assert "A sequential test (valid however often it looks) puts the chance" in errors.message
    # 2 % of 400 is above the SLO as measured, yet well within chance for a canary at 1 %: the watch
    # waits for complete grains, as it does for every breach when the policy turns the test off.
    marginal = verdict(20.0, errors=8)
    assert marginal.outcome is CanaryOutcome.FAIL and not breach_known_early(marginal, 0.001)
    assert not breach_known_early(BREACHING, None)
    assert breach_known_early(verdict(20.0, requests=30, errors=6), None)  # certain needs no test
    assert not breach_known_early(SLOWER, 0.001) and not breach_known_early(HEALTHY, 0.001)


@pytest.mark.parametrize("current", [HEALTHY, SHORT])
def test_a_window_that_has_not_ended_keeps_being_watched(current: Verdict) -> None:
    assert watch_decision(current, window_ended=False, may_extend=True) is WatchDecision.KEEP_WATCHING


def test_an_inconclusive_window_is_extended_once_then_decided() -> None:
    assert watch_decision(SHORT, window_ended=True, may_extend=True) is WatchDecision.EXTEND
    assert watch_decision(SHORT, window_ended=True, may_extend=False) is WatchDecision.DECIDED


@pytest.mark.parametrize("final", [HEALTHY, BREACHING])
def test_a_window_that_ended_is_decided_whatever_its_verdict(final: Verdict) -> None:
    # An SLO breach found at the very end is a verdict of the whole window, not an early stop.
    assert watch_decision(final, window_ended=True, may_extend=True) is WatchDecision.DECIDED


# --- what passes -------------------------------------------------------------------------------------


def test_a_canary_passes_on_a_pass_verdict_and_the_traffic_it_was_meant_to_get() -> None:
    matched = verify_split(0.25, canary_requests=1000, total_requests=4000, tolerance=0.05)
    starved = verify_split(0.25, canary_requests=0, total_requests=4000, tolerance=0.05)
    unverified = verify_split(0.25, canary_requests=3, total_requests=10, tolerance=0.05)

    assert Analysis(verdict=HEALTHY, split=matched, decided_at=END).passed
    assert Analysis(verdict=HEALTHY, decided_at=END).passed  # under full traffic there is no split
    assert not Analysis(verdict=HEALTHY, split=starved, decided_at=END).passed
    assert not Analysis(verdict=HEALTHY, split=unverified, decided_at=END).passed
    assert not Analysis(verdict=SLOWER, split=matched, decided_at=END).passed
    assert not Analysis(verdict=SHORT, split=matched, decided_at=END).passed


def test_failures_the_gateway_produced_itself_count_against_the_canary_but_not_in_the_split() -> None:
    """A backend that dies mid-request makes the gateway answer 502: no backend's counts hold it, so
    the pool's FailedRequests minus the backends' 5xx are the gateway's own, held against the canary."""
    sides = canary_sides(SPLIT, [CANARY], Color.BLUE, Color.GREEN)
    blue = [address(Color.BLUE, i) for i in range(3)]
    counts = {blue[0]: Counts(100, 1), blue[1]: Counts(100, 0), blue[2]: Counts(100, 0), CANARY: Counts(100, 0)}
    own = gateway_errors(pool_failed=6, counts=counts)
    assert own == 5 and gateway_errors(pool_failed=0, counts=counts) == 0

    signals = golden_signals(sides, START, END, counts, {}, {}, gateway_errors=own)
    assert (signals.evidence.canary.request_count, signals.evidence.canary.error_count) == (105, 5)
    assert (signals.canary_requests, signals.total_requests, signals.gateway_errors) == (100, 400, 5)


def test_a_window_is_judged_only_once_the_access_log_holds_every_request_the_metrics_counted() -> None:
    sides = canary_sides(SPLIT, [CANARY], Color.BLUE, Color.GREEN)
    blue = address(Color.BLUE, 0)
    counts = {blue: Counts(2), CANARY: Counts(1)}
    behind = golden_signals(sides, START, END, counts, {blue: [10.0], CANARY: [30.0]}, {})
    arrived = golden_signals(sides, START, END, counts, {blue: [10.0, 11.0], CANARY: [30.0]}, {})
    assert not access_log_caught_up(behind) and access_log_caught_up(arrived)


def test_one_read_of_the_access_log_gives_each_window_within_it_its_own_requests() -> None:
    """A look reads the log once over the grains still arriving; the complete grains take theirs:
    a request logged at a window's start is in it, one logged at its end is the next window's."""
    middle = START + timedelta(seconds=10)
    entries = [
        AccessLogEntry(at=START, backend=CANARY, latency_ms=5.0),
        AccessLogEntry(at=middle - timedelta(microseconds=1), backend="10.0.0.4", latency_ms=7.0),
        AccessLogEntry(at=middle, backend=CANARY, latency_ms=9.0),
        AccessLogEntry(at=END, backend=CANARY, latency_ms=11.0),
    ]

    assert latency_by_backend(entries, START, middle) == {CANARY: [5.0], "10.0.0.4": [7.0]}
    assert latency_by_backend(entries, middle, END) == {CANARY: [9.0]}
    assert latency_by_backend(entries, START, END) == {CANARY: [5.0, 9.0], "10.0.0.4": [7.0]}
    assert latency_by_backend([], START, END) == {}
