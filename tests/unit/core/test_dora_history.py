"""Release records from run history: what a release run's steps say about its outcome and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchyard.core.dora import (
    ManualRollback,
    ReleaseOutcome,
    ReleaseRecord,
    ReleaseRun,
    ReportingPeriod,
    RunState,
    RunStep,
    StepKind,
    apply_manual_rollbacks,
    dora_report,
    record_from_run,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
COMMITTED = T0 - timedelta(hours=3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(kind: StepKind, start: float, end: float | None, succeeded: bool = True, name: str = "") -> RunStep:
    return RunStep(
        kind=kind,
        name=name or kind.value,
        started_at=at(start),
        ended_at=at(end) if end is not None else None,
        succeeded=succeeded,
    )


OTHER, SPLIT, PROMOTE, FINALIZE, ROLLBACK = (
    StepKind.OTHER,
    StepKind.SPLIT,
    StepKind.PROMOTE,
    StepKind.FINALIZE,
    StepKind.ROLLBACK,
)


def run(
    state: RunState, steps: list[RunStep], end: float, *, change_at: datetime | None = COMMITTED, **extra
) -> ReleaseRun:
    return ReleaseRun(
        flow_run_id="run-1",
        service=extra.get("service", "shop"),
        environment=extra.get("environment", "production"),
        image_version="1002000.20261100.1",
        state=state,
        started_at=at(0),
        ended_at=at(end),
        steps=steps,
        git_commit="abc1234",
        change_at=change_at,
    )


CANARY_PROMOTED = [
    step(OTHER, 1, 2, name="preflight checks"),
    step(OTHER, 2, 20, name="prepare idle color"),
    step(OTHER, 20, 21, name="smoke test idle color"),
    step(SPLIT, 21, 22),
    step(OTHER, 22, 30, name="analyse canary"),
    step(SPLIT, 30, 31),
    step(OTHER, 31, 39, name="analyse canary"),
    step(PROMOTE, 39, 40),
    step(OTHER, 40, 44, name="analyse under full traffic"),
    step(FINALIZE, 44, 45),
    step(OTHER, 75, 76, name="scale down the old color"),  # after the warm period
]


def test_a_promoted_canary_ends_when_finalized_not_when_the_old_color_is_retired() -> None:
    record = record_from_run(run(RunState.COMPLETED, CANARY_PROMOTED, end=76))

    assert record is not None
    assert record.outcome is ReleaseOutcome.PROMOTED
    assert record.ended_at == at(45)
    assert record.commit_time == COMMITTED
    assert record.started_at == at(0)
    assert (record.failure_detected_at, record.traffic_restored_at) == (None, None)
    assert record.flow_run_id == "run-1"


def test_a_run_that_found_its_image_already_live_is_no_deployment() -> None:
    steps = [step(OTHER, 1, 2, name="preflight checks"), step(OTHER, 2, 3, name="observe service")]
    assert record_from_run(run(RunState.COMPLETED, steps, end=3)) is None


def test_a_canary_rolled_back_counts_from_the_failing_analysis_to_the_restored_gateway() -> None:
    steps = [
        step(OTHER, 2, 20, name="prepare idle color"),
        step(OTHER, 20, 21, name="smoke test idle color"),
        step(SPLIT, 21, 22),
        step(OTHER, 22, 25.25, name="analyse canary"),  # the failing verdict
        step(ROLLBACK, 25.5, 26.0),
    ]
    record = record_from_run(run(RunState.FAILED, steps, end=26.5))

    assert record is not None
    assert record.outcome is ReleaseOutcome.ROLLED_BACK
    assert record.reached_users_at == at(21)
    assert record.failure_detected_at == at(25.25)
    assert record.traffic_restored_at == record.ended_at == at(26.0)
    report = dora_report([record], ReportingPeriod(start=T0 - timedelta(days=7), end=T0 + timedelta(days=1)))
    metrics = report.group("shop", "production")
    assert (metrics.releases, metrics.promoted, metrics.failed_in_production) == (1, 0, 1)
    assert metrics.change_failure_rate == 1.0
    assert metrics.time_to_restore_median == timedelta(seconds=0.75)


def test_a_failure_under_full_traffic_of_a_blue_green_release_reached_users_at_the_switch() -> None:
    steps = [
        step(OTHER, 20, 21, name="smoke test idle color"),
        step(PROMOTE, 21, 22),
        step(OTHER, 22, 24, name="analyse under full traffic"),
        step(ROLLBACK, 24.1, 24.6),
    ]
    record = record_from_run(run(RunState.FAILED, steps, end=25))

    assert record is not None and record.outcome is ReleaseOutcome.ROLLED_BACK
    assert (record.reached_users_at, record.failure_detected_at, record.traffic_restored_at) == (
        at(21),
        at(24),
        at(24.6),
    )


def test_a_failure_before_any_user_traffic_is_a_pipeline_failure_not_a_change_failure() -> None:
    steps = [step(OTHER, 2, 20, name="prepare idle color"), step(OTHER, 20, 21, succeeded=False, name="smoke test")]
    record = record_from_run(run(RunState.FAILED, steps, end=21.5))

    assert record is not None
    assert record.outcome is ReleaseOutcome.FAILED
    assert not record.reached_users and not record.failed_in_production
    assert record.failure_detected_at is None
    assert record.ended_at == at(21.5)


def test_a_first_release_that_cannot_roll_back_failed_in_production_without_a_restore() -> None:
    steps = [
        step(PROMOTE, 21, 22),
        step(OTHER, 22, 24, name="analyse under full traffic"),
        step(ROLLBACK, 24.1, 24.2, succeeded=False),  # nothing to roll back to
    ]
    record = record_from_run(run(RunState.FAILED, steps, end=25))

    assert record is not None
    assert record.outcome is ReleaseOutcome.FAILED and record.failed_in_production
    assert (record.failure_detected_at, record.traffic_restored_at) == (at(24), None)
    report = dora_report([record], ReportingPeriod(start=T0, end=T0 + timedelta(hours=1)))
    assert report.overall.unrestored_failures == 1 and report.overall.time_to_restore_median is None


def test_a_crashed_run_after_the_split_failed_in_production_at_its_end() -> None:
    steps = [step(SPLIT, 21, 22), step(OTHER, 22, None, succeeded=False, name="analyse canary")]
    record = record_from_run(run(RunState.CRASHED, steps, end=23))

    assert record is not None and record.outcome is ReleaseOutcome.FAILED
    assert (record.reached_users_at, record.failure_detected_at) == (at(21), at(23))


def test_a_cancelled_run_is_counted_as_cancelled() -> None:
    record = record_from_run(run(RunState.CANCELLED, [step(SPLIT, 21, 22)], end=23))
    assert record is not None and record.outcome is ReleaseOutcome.CANCELLED
    assert record.failure_detected_at is None


def test_without_a_known_change_time_lead_time_starts_with_the_release() -> None:
    record = record_from_run(run(RunState.COMPLETED, CANARY_PROMOTED, end=76, change_at=None))
    assert record is not None and record.commit_time == at(0)


def test_a_change_time_after_the_release_ended_is_refused() -> None:
    with pytest.raises(ValueError, match="commit_time is after the release ended"):
        record_from_run(run(RunState.COMPLETED, CANARY_PROMOTED, end=76, change_at=at(3600)))


# Manual rollbacks -----------------------------------------------------------------------------------


def promoted(end: float, environment: str = "production") -> ReleaseRecord:
    record = record_from_run(
        run(RunState.COMPLETED, [step(PROMOTE, end - 2, end - 1), step(FINALIZE, end - 1, end)], end=end + 30)
    )
    assert record is not None
    return record.model_copy(update={"environment": environment})


def rollback(start: float, end: float, succeeded: bool = True, environment: str = "production") -> ManualRollback:
    return ManualRollback(
        flow_run_id="rollback-1",
        service="shop",
        environment=environment,
        started_at=at(start),
        ended_at=at(end),
        succeeded=succeeded,
    )


def test_a_person_rolling_back_a_promoted_release_makes_it_a_change_failure() -> None:
    release = promoted(end=100)
    [record] = apply_manual_rollbacks([release], [rollback(3600, 3601.5)])

    assert record.outcome is ReleaseOutcome.ROLLED_BACK
    assert record.reached_users_at == at(100)
    assert (record.failure_detected_at, record.traffic_restored_at, record.ended_at) == (
        at(3600),
        at(3601.5),
        at(3601.5),
    )


def test_a_rollback_concerns_only_the_latest_release_that_reached_users_in_its_environment() -> None:
    older, latest = promoted(end=100), promoted(end=200)
    before_users = record_from_run(
        run(RunState.FAILED, [step(OTHER, 250, 251, succeeded=False, name="smoke test")], end=300)
    )
    assert before_users is not None
    staging = promoted(end=250, environment="staging")
    records = apply_manual_rollbacks([older, latest, before_users, staging], [rollback(400, 401)])

    outcomes = {(r.environment, r.ended_at): r.outcome for r in records}
    assert outcomes[("production", at(100))] is ReleaseOutcome.PROMOTED
    assert outcomes[("production", at(401))] is ReleaseOutcome.ROLLED_BACK  # the latest, now ended by the rollback
    assert outcomes[("production", at(300))] is ReleaseOutcome.FAILED  # untouched: it never reached users
    assert outcomes[("staging", at(250))] is ReleaseOutcome.PROMOTED


def test_a_rollback_restores_a_release_whose_run_died_in_production_and_ignores_failed_rollbacks() -> None:
    died = record_from_run(run(RunState.CRASHED, [step(SPLIT, 21, 22)], end=23))
    assert died is not None and died.traffic_restored_at is None

    [unchanged] = apply_manual_rollbacks([died], [rollback(60, 61, succeeded=False)])
    [restored] = apply_manual_rollbacks([died], [rollback(60, 61)])

    assert unchanged == died
    assert restored.outcome is ReleaseOutcome.FAILED
    assert (restored.failure_detected_at, restored.traffic_restored_at) == (at(23), at(61))


def test_a_rollback_after_an_automatic_rollback_changes_nothing() -> None:
    steps = [step(SPLIT, 21, 22), step(OTHER, 22, 25, name="analyse canary"), step(ROLLBACK, 25, 26)]
    rolled_back = record_from_run(run(RunState.FAILED, steps, end=27))
    assert rolled_back is not None
    assert apply_manual_rollbacks([rolled_back], [rollback(60, 61)]) == [rolled_back]
