"""The monthly patch's waves: every service through staging first, then production in batches, and
no further service once too large a share of those tried failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchyard.core.reports import monthly_patch_report
from switchyard.core.routine import (
    PatchRollout,
    ServicePatch,
    StageOutcome,
    after_production,
    held_back,
    not_run_in,
)

STAGED = ServicePatch(
    service="web",
    result="staged",
    detail="patch level 20261200.1",
    old_version="1000000.20261100.1",
    new_version="1000000.20261200.1",
    stages=[StageOutcome(environment="staging", outcome="promoted")],
)


def outcome(service: str, result: str) -> ServicePatch:
    return ServicePatch.model_validate({"service": service, "result": result})


def test_production_goes_in_batches_of_the_configured_size_lower_waves_first_then_by_name() -> None:
    rollout = PatchRollout(production_batch_size=2)
    waves = {"web": 2, "auth": 1, "billing": 2, "search": 3, "api": 1}
    assert rollout.production_batches(waves) == [["api", "auth"], ["billing", "web"], ["search"]]
    assert PatchRollout(production_batch_size=3).production_batches(waves) == [
        ["api", "auth", "billing"],
        ["web", "search"],
    ]
    assert rollout.production_batches({}) == []


def test_no_further_service_starts_once_more_than_the_share_of_those_tried_failed() -> None:
    rollout = PatchRollout(max_failed_share=0.25)
    # 1 of 4 tried failed: exactly the share, not more; the skipped one was never tried
    tried = [outcome("a", "failed"), outcome("b", "staged"), outcome("c", "patched"), outcome("d", "staged")]
    assert rollout.stop_reason([*tried, outcome("e", "skipped")]) is None
    # 2 of 4: more
    tried[1] = outcome("b", "failed")
    assert rollout.stop_reason(tried) == "2 of 4 service(s) failed (a, b), more than the max_failed_share of 0.25"
    # 0 stops at the first failure; 1 never stops
    assert PatchRollout(max_failed_share=0).stop_reason([outcome("a", "failed"), outcome("b", "staged")])
    assert PatchRollout(max_failed_share=1).stop_reason([outcome("a", "failed")]) is None
    assert rollout.stop_reason([outcome("a", "skipped")]) is None


def test_a_step_takes_as_few_runs_as_services_per_run_allows_each_as_even_as_can_be() -> None:
    fleet = [f"svc-{n:02d}" for n in range(1, 21)]
    groups = PatchRollout(services_per_run=8).run_groups(fleet)
    assert [len(group) for group in groups] == [7, 7, 6]
    assert [service for group in groups for service in group] == fleet  # each once, in order
    assert [len(g) for g in PatchRollout(services_per_run=5).run_groups(fleet)] == [5, 5, 5, 5]
    assert PatchRollout(services_per_run=1).run_groups(["a", "b"]) == [["a"], ["b"]]
    assert PatchRollout(services_per_run=5).run_groups(["a", "b"]) == [["a", "b"]]
    assert PatchRollout().run_groups([]) == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"production_batch_size": 0}, "production_batch_size"),
        ({"max_failed_share": 1.5}, "max_failed_share"),
        ({"max_failed_share": -0.1}, "max_failed_share"),
        ({"services_per_run": 0}, "services_per_run"),
        ({"services_per_run": 11}, "services_per_run"),
    ],
)
def test_impossible_settings_are_refused(settings: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        PatchRollout.model_validate(settings)


def test_a_service_held_back_keeps_its_staging_outcome_and_says_why_production_was_not_started() -> None:
    held = held_back(STAGED, "production", "2 of 3 service(s) failed (a, b), more than the max_failed_share of 0.2")
    assert held.result == "held" and held.new_version == STAGED.new_version
    assert [(s.environment, s.outcome) for s in held.stages] == [("staging", "promoted"), ("production", "not-run")]
    assert held.stages[-1].detail.startswith("held: 2 of 3 service(s) failed")
    assert held.detail.startswith("not released to production: 2 of 3")


def test_production_completes_or_fails_the_chain_the_staging_step_began() -> None:
    patched = after_production(STAGED, [StageOutcome(environment="production", outcome="promoted")])
    assert patched.result == "patched" and patched.detail == STAGED.detail
    assert [s.environment for s in patched.stages] == ["staging", "production"]

    rolled_back = after_production(STAGED, [StageOutcome(environment="production", outcome="rolled-back")])
    assert rolled_back.result == "failed" and rolled_back.detail == "stopped in production: rolled-back"


def test_a_stopped_service_says_why_in_one_line() -> None:
    """The run's summary names each failed service's reason (the first line of its release's error),
    not only where it stopped: twenty services that 'failed' tell a person nothing."""
    error = (
        "release of 1000000.20261201.1 failed: (SubscriptionRequestsThrottled) Number of 'read' requests "
        "exceeded.\nCode: SubscriptionRequestsThrottled\nMessage: " + "x" * 500
    )
    failed = after_production(STAGED, [StageOutcome(environment="production", outcome="failed", detail=error)])
    assert failed.detail == (
        "stopped in production: failed (release of 1000000.20261201.1 failed: (SubscriptionRequestsThrottled) "
        "Number of 'read' requests exceeded.)"
    )
    long = after_production(STAGED, [StageOutcome(environment="production", outcome="failed", detail="y" * 900)])
    assert long.detail == f"stopped in production: failed ({'y' * 200})"


def test_a_service_that_stopped_before_production_records_production_as_not_run() -> None:
    failed = ServicePatch(
        service="web", result="failed", stages=[StageOutcome(environment="staging", outcome="rolled-back")]
    )
    stopped = not_run_in(failed, "production", "stopped: staging rolled-back")
    assert [(s.environment, s.outcome, s.detail) for s in stopped.stages][-1] == (
        "production",
        "not-run",
        "stopped: staging rolled-back",
    )
    assert not_run_in(stopped, "production", "again") == stopped


def test_the_report_counts_the_services_held_back() -> None:
    results = [
        ServicePatch(service="api", result="patched"),
        ServicePatch(service="auth", result="failed", detail="the rebuild failed"),
        held_back(STAGED, "production", "1 of 3 service(s) failed (auth), more than the max_failed_share of 0"),
    ]
    report = monthly_patch_report(results, ["staging", "production"], datetime(2026, 12, 1, tzinfo=UTC))
    assert "1 patched, 0 skipped, 1 failed, 1 held back from production (too many failed)." in report.markdown
    assert (
        f"| web | {STAGED.old_version} | {STAGED.new_version} | ✅ promoted | ⏭️ not-run | **held**: not released "
        "to production: 1 of 3 service(s) failed (auth), more than the max_failed_share of 0 |"
    ) in report.markdown
