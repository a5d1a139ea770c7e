"""DORA metrics from release history, checked against expectations computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from switchyard.core.dora import (
    DoraReport,
    PerformanceBand,
    ReleaseOutcome,
    ReleaseRecord,
    ReportingPeriod,
    change_failure_rate_band,
    deployment_frequency_band,
    dora_report,
    lead_time_band,
    restore_time_band,
)

# November 2026, first four weeks: exactly 28 days.
PERIOD = ReportingPeriod(start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 11, 29, tzinfo=UTC))


def at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


_counter = iter(range(1, 10_000))


def release(
    outcome: ReleaseOutcome,
    *,
    commit: datetime,
    end: datetime,
    service: str = "sample",
    environment: str = "production",
    reached_users_at: datetime | None = None,
    failure_detected_at: datetime | None = None,
    traffic_restored_at: datetime | None = None,
) -> ReleaseRecord:
    number = next(_counter)
    return ReleaseRecord(
        service=service,
        environment=environment,
        image_version=f"1004002.20261100.{number}",
        git_commit=f"{number:040x}",
        commit_time=commit,
        started_at=commit + (end - commit) / 2,
        ended_at=end,
        outcome=outcome,
        reached_users_at=reached_users_at,
        failure_detected_at=failure_detected_at,
        traffic_restored_at=traffic_restored_at,
    )


PROMOTED, ROLLED_BACK, FAILED, CANCELLED = (
    ReleaseOutcome.PROMOTED,
    ReleaseOutcome.ROLLED_BACK,
    ReleaseOutcome.FAILED,
    ReleaseOutcome.CANCELLED,
)


def sample_production() -> list[ReleaseRecord]:
    """Eight releases in the period and two just outside it."""
    return [
        release(PROMOTED, commit=at(2, 8), end=at(2, 10)),  # lead 2 h
        release(PROMOTED, commit=at(5), end=at(6)),  # lead 24 h
        release(
            ROLLED_BACK,
            commit=at(10, 9),
            end=at(10, 10, 30),
            reached_users_at=at(10, 10, 10),
            failure_detected_at=at(10, 10, 20),
            traffic_restored_at=at(10, 10, 25),  # restored in 5 min
        ),
        release(PROMOTED, commit=at(12), end=at(15)),  # lead 72 h
        release(FAILED, commit=at(16), end=at(16, 1)),  # smoke test failed on the test listener: no users
        release(CANCELLED, commit=at(18), end=at(18, 2), reached_users_at=at(18, 1)),
        release(PROMOTED, commit=at(20), end=at(20, 6)),  # lead 6 h
        release(
            FAILED,
            commit=at(22, 10),
            end=at(22, 13),
            reached_users_at=at(22, 11),
            failure_detected_at=at(22, 12),
            traffic_restored_at=at(22, 12, 45),  # restored in 45 min
        ),
        release(PROMOTED, commit=at(30, month=10), end=at(31, 23, month=10)),  # before the period
        release(PROMOTED, commit=at(28), end=at(29)),  # ends exactly at period end: excluded
    ]


def billing_production() -> list[ReleaseRecord]:
    return [
        release(PROMOTED, service="billing", commit=at(3), end=at(3, 1)),  # lead 1 h
        release(PROMOTED, service="billing", commit=at(9), end=at(9, 3)),  # lead 3 h
    ]


def sample_staging() -> list[ReleaseRecord]:
    return [release(PROMOTED, environment="staging", commit=at(day), end=at(day, 1)) for day in range(1, 28, 3)] + [
        release(PROMOTED, environment="staging", commit=at(27, 5), end=at(27, 6))
    ]


def fleet() -> list[ReleaseRecord]:
    return sample_production() + billing_production() + sample_staging()


def test_one_service_in_production() -> None:
    report = dora_report(fleet(), PERIOD)
    metrics = report.group("sample", "production")

    assert metrics.releases == 8
    assert metrics.promoted == 4
    # 4 deployments in 28 days: 1/7 per day, exactly once a week -> high.
    assert metrics.deployments_per_day == pytest.approx(4 / 28)
    assert metrics.deployments_per_week == pytest.approx(1.0)
    assert metrics.deployment_frequency_band is PerformanceBand.HIGH
    # Lead times 2, 6, 24, 72 h: median (6 + 24) / 2 = 15 h;
    # p90 at (0-based) rank 0.9 * 3 = 2.7: 24 + 0.7 * (72 - 24) = 57.6 h.
    assert metrics.lead_time_median == timedelta(hours=15)
    assert metrics.lead_time_p90 == timedelta(hours=57.6)
    assert metrics.lead_time_band is PerformanceBand.ELITE
    # Two failures after reaching users, out of 4 promoted + 2 failed;
    # the cancelled release and the failure before users don't count.
    assert metrics.failed_in_production == 2
    assert metrics.change_failure_rate == pytest.approx(2 / 6)
    assert metrics.change_failure_rate_band is PerformanceBand.LOW
    assert metrics.failed_before_users == 1
    assert metrics.cancelled == 1
    # Restores of 5 and 45 min: median 25 min.
    assert metrics.time_to_restore_median == timedelta(minutes=25)
    assert metrics.time_to_restore_band is PerformanceBand.ELITE
    assert metrics.unrestored_failures == 0


def test_overall_pools_production_environments_per_service() -> None:
    report = dora_report(fleet(), PERIOD)
    overall = report.overall

    assert overall.services == 2
    assert overall.releases == 10  # 8 sample + 2 billing; staging is not production
    assert overall.promoted == 6
    # 6 deployments / 2 services / 28 days = 0.107 per day per service: weekly-to-monthly -> medium.
    assert overall.deployments_per_day == pytest.approx(6 / 2 / 28)
    assert overall.deployment_frequency_band is PerformanceBand.MEDIUM
    # Lead times 1, 2, 3, 6, 24, 72 h: median 4.5 h; p90 at rank 4.5: 24 + 0.5 * 48 = 48 h.
    assert overall.lead_time_median == timedelta(hours=4.5)
    assert overall.lead_time_p90 == timedelta(hours=48)
    assert overall.change_failure_rate == pytest.approx(2 / 8)
    assert overall.time_to_restore_median == timedelta(minutes=25)


def test_every_service_and_environment_gets_its_own_row() -> None:
    report = dora_report(fleet(), PERIOD)
    assert [g.scope for g in report.groups] == ["billing/production", "sample/production", "sample/staging"]

    staging = report.group("sample", "staging")
    assert staging.promoted == 10
    assert staging.deployments_per_day == pytest.approx(10 / 28)
    assert staging.deployment_frequency_band is PerformanceBand.HIGH
    assert staging.change_failure_rate == 0.0
    assert staging.change_failure_rate_band is PerformanceBand.ELITE
    assert staging.time_to_restore_median is None and staging.time_to_restore_band is None

    with pytest.raises(KeyError, match="no releases of sample/qa"):
        report.group("sample", "qa")


def test_all_environments_can_count_as_production() -> None:
    report = dora_report(fleet(), PERIOD, production_environments=None)
    assert report.overall.releases == 20
    assert report.overall.promoted == 16


def test_empty_history_says_there_is_no_data() -> None:
    report = dora_report([], PERIOD)

    assert not report.has_data
    assert report.groups == []
    overall = report.overall
    assert overall.releases == 0
    assert overall.deployments_per_day is None and overall.deployment_frequency_band is None
    assert overall.lead_time_median is None and overall.change_failure_rate is None
    assert overall.time_to_restore_median is None
    assert "no data" in report.markdown()


def test_a_period_without_promotions_has_no_lead_time_and_a_low_frequency() -> None:
    records = [release(FAILED, commit=at(4), end=at(4, 1)), release(CANCELLED, commit=at(5), end=at(5, 1))]
    metrics = dora_report(records, PERIOD).group("sample", "production")

    assert metrics.deployments_per_day == 0.0
    assert metrics.deployment_frequency_band is PerformanceBand.LOW
    assert metrics.lead_time_median is None and metrics.lead_time_band is None
    assert metrics.change_failure_rate is None  # nothing reached users: no division by zero
    assert metrics.failed_before_users == 1 and metrics.cancelled == 1


def test_a_failure_without_a_recorded_restore_is_counted_but_not_timed() -> None:
    records = [
        release(PROMOTED, commit=at(3), end=at(3, 2)),
        release(
            ROLLED_BACK,
            commit=at(4),
            end=at(4, 2),
            reached_users_at=at(4, 1),
            failure_detected_at=at(4, 1, 30),
        ),
    ]
    metrics = dora_report(records, PERIOD).group("sample", "production")
    assert metrics.change_failure_rate == pytest.approx(0.5)
    assert metrics.unrestored_failures == 1
    assert metrics.time_to_restore_median is None
    assert "1 production failures without a recorded restore" in dora_report(records, PERIOD).markdown()


def test_markdown_shows_the_table_with_bands_and_the_source() -> None:
    text = dora_report(fleet(), PERIOD).markdown()

    assert text.startswith("## DORA metrics, 2026-11-01T00:00:00+00:00 to 2026-11-29T00:00:00+00:00 (28 days)")
    assert (
        "DORA, Accelerate State of DevOps Report 2023, performance levels table (https://dora.dev/dora-report-2023)"
        in text
    )
    assert "| Scope | Releases | Deployments | Deployment frequency |" in text
    assert (
        "| sample/production | 8 | 4 | 0.14/day (1.0/week) **high** | 15.0 h / 2.4 d **elite** "
        "| 33.3% (2 of 6) **low** | 25.0 min **elite** |"
    ) in text
    assert "| overall | 10 | 6 | 0.11/day (0.8/week) per service, 2 services **medium** |" in text
    assert "- sample/production: 1 failed before reaching users; 1 cancelled (not counted in the failure rate)." in text


def test_the_report_survives_a_json_round_trip() -> None:
    report = dora_report(fleet(), PERIOD)
    assert DoraReport.model_validate_json(report.model_dump_json()) == report


# --- band boundaries (DORA 2023 table, read as ranges) -------------------------------------------


@pytest.mark.parametrize(
    ("per_day", "band"),
    [
        (3.0, PerformanceBand.ELITE),
        (1.01, PerformanceBand.ELITE),
        (1.0, PerformanceBand.HIGH),  # once a day is "between once per day and once per week"
        (1 / 7, PerformanceBand.HIGH),
        (1 / 7 - 1e-6, PerformanceBand.MEDIUM),
        (1 / 30, PerformanceBand.MEDIUM),
        (1 / 31, PerformanceBand.LOW),
        (0.0, PerformanceBand.LOW),
    ],
)
def test_deployment_frequency_bands(per_day: float, band: PerformanceBand) -> None:
    assert deployment_frequency_band(per_day) is band


@pytest.mark.parametrize(
    ("lead", "band"),
    [
        (timedelta(hours=23, minutes=59), PerformanceBand.ELITE),
        (timedelta(days=1), PerformanceBand.HIGH),
        (timedelta(days=6, hours=23), PerformanceBand.HIGH),
        (timedelta(days=7), PerformanceBand.MEDIUM),
        (timedelta(days=29), PerformanceBand.MEDIUM),
        (timedelta(days=30), PerformanceBand.LOW),
    ],
)
def test_lead_time_bands(lead: timedelta, band: PerformanceBand) -> None:
    assert lead_time_band(lead) is band


@pytest.mark.parametrize(
    ("rate", "band"),
    [
        (0.0, PerformanceBand.ELITE),
        (0.05, PerformanceBand.ELITE),
        (0.06, PerformanceBand.HIGH),
        (0.10, PerformanceBand.HIGH),
        (0.15, PerformanceBand.MEDIUM),
        (0.16, PerformanceBand.LOW),
        (0.64, PerformanceBand.LOW),
    ],
)
def test_change_failure_rate_bands(rate: float, band: PerformanceBand) -> None:
    assert change_failure_rate_band(rate) is band


@pytest.mark.parametrize(
    ("restore", "band"),
    [
        (timedelta(minutes=59), PerformanceBand.ELITE),
        (timedelta(hours=1), PerformanceBand.HIGH),
        (timedelta(hours=23), PerformanceBand.HIGH),
        (timedelta(days=1), PerformanceBand.MEDIUM),
        (timedelta(days=7), PerformanceBand.LOW),
    ],
)
def test_restore_time_bands(restore: timedelta, band: PerformanceBand) -> None:
    assert restore_time_band(restore) is band


# --- bad input -----------------------------------------------------------------------------------


def test_a_restore_before_the_failure_is_rejected() -> None:
    with pytest.raises(ValidationError, match="restored before the failure was detected"):
        release(
            ROLLED_BACK,
            commit=at(4),
            end=at(4, 3),
            failure_detected_at=at(4, 2),
            traffic_restored_at=at(4, 1),
        )


def test_a_promoted_release_cannot_have_a_restore_time() -> None:
    with pytest.raises(ValidationError, match="promoted release has no failure or restore time"):
        release(PROMOTED, commit=at(4), end=at(4, 3), failure_detected_at=at(4, 2), traffic_restored_at=at(4, 2))


def test_a_commit_after_the_release_ended_is_rejected() -> None:
    with pytest.raises(ValidationError, match="commit_time is after the release ended"):
        ReleaseRecord(
            service="sample",
            environment="production",
            image_version="1004002.20261100.1",
            git_commit="abc",
            commit_time=at(5),
            started_at=at(3),
            ended_at=at(4),
            outcome=PROMOTED,
        )


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ReportingPeriod(start=datetime(2026, 11, 1), end=datetime(2026, 11, 29))
    with pytest.raises(ValidationError, match="must be after start"):
        ReportingPeriod(start=PERIOD.end, end=PERIOD.start)
