"""The judge's saturation rows beside CPU: memory (an SLO on the peak) and network out (bytes sent
per request, canary against baseline)."""

from __future__ import annotations

from datetime import UTC, datetime

from switchyard.core.canary import judge_canary
from switchyard.core.canary_inputs import AnalysisWindow, CanaryEvidence, CanaryPolicy, SideEvidence
from switchyard.core.canary_verdict import CanaryOutcome, CheckKind, Classification, Metric, Reason, Verdict

WINDOW = AnalysisWindow(start=datetime(2026, 11, 26, 10, 0, tzinfo=UTC), end=datetime(2026, 11, 26, 10, 5, tzinfo=UTC))


def healthy(
    *, requests: int = 400, memory: list[float] | None = None, bytes_per_request: float | None = 2000.0
) -> SideEvidence:
    return SideEvidence(
        latency_ms=[20.0] * requests,
        request_count=requests,
        error_count=0,
        cpu_percent=[30.0] * 4,
        memory_used_percent=[45.0, 46.0, 44.0, 45.5] if memory is None else memory,
        network_out_bytes=None if bytes_per_request is None else bytes_per_request * requests,
    )


def judge(baseline: SideEvidence, canary: SideEvidence, policy: CanaryPolicy | None = None) -> Verdict:
    return judge_canary(CanaryEvidence(window=WINDOW, baseline=baseline, canary=canary), policy or CanaryPolicy())


def reason(verdict: Verdict, metric: Metric) -> Reason:
    [found] = [r for r in verdict.reasons if r.metric is metric]
    return found


def test_a_healthy_canary_passes_memory_and_network_and_the_table_shows_them() -> None:
    verdict = judge(healthy(), healthy(bytes_per_request=2100.0))
    assert verdict.outcome is CanaryOutcome.PASS, verdict.summary
    memory = reason(verdict, Metric.MEMORY)
    assert memory.check is CheckKind.SLO and memory.observed == 46.0 and memory.threshold == 90.0
    assert "peaked at 46.0%" in memory.message
    network = reason(verdict, Metric.NETWORK_OUT)
    assert network.check is CheckKind.COMPARISON and network.classification is Classification.PASS
    assert verdict.metric("memory_max_percent").canary == 46.0
    assert verdict.metric("network_out_per_request_bytes").baseline == 2000.0
    assert verdict.metric("network_out_per_request_bytes").canary == 2100.0
    report = verdict.markdown()
    assert "| Memory used, peak | 46.0% | 46.0% |" in report
    assert "| Network out per request | 2.0 KiB | 2.1 KiB |" in report
    assert "| memory SLO | PASS |" in report and "| network out vs baseline | PASS |" in report


def test_one_instance_near_its_memory_limit_breaches_the_slo_though_the_mean_is_low() -> None:
    verdict = judge(healthy(), healthy(memory=[40.0, 41.0, 93.5, 40.0]))
    memory = reason(verdict, Metric.MEMORY)
    assert verdict.outcome is CanaryOutcome.FAIL
    assert memory.classification is Classification.SLO_BREACH and memory.observed == 93.5
    assert memory.message.startswith("Canary memory use peaked at 93.5% (1 of 4 samples above), above the SLO of 90.0%")
    assert verdict.summary == "FAIL: memory SLO (slo_breach)"


def test_a_memory_peak_above_the_slo_is_certain_before_the_minimum_sample() -> None:
    verdict = judge(healthy(), healthy(memory=[95.0]), CanaryPolicy(min_memory_samples=3))
    memory = reason(verdict, Metric.MEMORY)
    assert memory.classification is Classification.SLO_BREACH and memory.certain
    assert "no later sample can lower" in memory.message


def test_missing_memory_data_is_inconclusive_or_fails_as_the_policy_says() -> None:
    short = judge(healthy(), healthy(memory=[50.0]))
    assert short.outcome is CanaryOutcome.INCONCLUSIVE
    memory = reason(short, Metric.MEMORY)
    assert memory.classification is Classification.INCONCLUSIVE
    assert memory.message == "Only 1 canary memory samples, fewer than the minimum of 3."
    none = judge(healthy(), healthy(memory=[]), CanaryPolicy(on_insufficient_data="fail"))
    assert reason(none, Metric.MEMORY).classification is Classification.FAIL
    assert none.outcome is CanaryOutcome.FAIL


def test_a_canary_that_sends_much_more_per_request_fails_the_network_comparison() -> None:
    verdict = judge(healthy(), healthy(bytes_per_request=6000.0))
    network = reason(verdict, Metric.NETWORK_OUT)
    assert verdict.outcome is CanaryOutcome.FAIL
    assert network.classification is Classification.FAIL
    assert network.observed == 4000.0 and network.threshold == 1024.0  # max(50 % of 2000, 1 KiB)
    assert network.message == (
        "Canary sends more per request than the baseline: canary 5.9 KiB per request vs baseline 2.0 KiB, "
        "+3.9 KiB (+200%), beyond the tolerance of 1.0 KiB (max of 50% of the baseline and 1.0 KiB)."
    )


def test_small_responses_growing_within_the_absolute_floor_pass() -> None:
    # +150 % but only 300 bytes more per request: below the 1 KiB floor.
    verdict = judge(healthy(bytes_per_request=200.0), healthy(bytes_per_request=500.0))
    assert reason(verdict, Metric.NETWORK_OUT).classification is Classification.PASS


def test_a_larger_canary_share_does_not_look_like_a_network_regression() -> None:
    # Per request, not in total: a canary serving three times the baseline's requests is not sending more.
    verdict = judge(healthy(requests=300), healthy(requests=900))
    assert reason(verdict, Metric.NETWORK_OUT).classification is Classification.PASS


def test_missing_network_data_is_inconclusive_and_never_a_pass() -> None:
    verdict = judge(healthy(), healthy(bytes_per_request=None))
    network = reason(verdict, Metric.NETWORK_OUT)
    assert verdict.outcome is CanaryOutcome.INCONCLUSIVE
    assert network.classification is Classification.INCONCLUSIVE
    assert "No network out data (Network Out Total) for the canary" in network.message
    few = judge(healthy(requests=50), healthy(requests=50), CanaryPolicy(min_requests=100))
    assert reason(few, Metric.NETWORK_OUT).classification is Classification.INCONCLUSIVE


def test_the_network_comparison_can_be_disabled_and_is_not_run_after_promotion() -> None:
    off = judge(healthy(), healthy(bytes_per_request=None), CanaryPolicy(network_out_relative_tolerance=None))
    assert Metric.NETWORK_OUT not in {r.metric for r in off.reasons}
    assert off.outcome is CanaryOutcome.PASS
    promoted = judge_canary(
        CanaryEvidence(window=WINDOW, baseline=SideEvidence(request_count=0, error_count=0), canary=healthy()),
        CanaryPolicy(),
        compare_with_baseline=False,
    )
    assert Metric.NETWORK_OUT not in {r.metric for r in promoted.reasons}
    assert promoted.outcome is CanaryOutcome.PASS
