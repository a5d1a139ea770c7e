"""Change types: how a release is classified (app, patch, rollback, unknown), how the version it
replaced is replayed from run history, and the production metrics split by type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchyard.core.dora import (
    ChangeType,
    ManualRollback,
    ReleaseOutcome,
    ReleaseRecord,
    ReleaseRun,
    ReportingPeriod,
    RunState,
    RunStep,
    StepKind,
    apply_manual_rollbacks,
    classify_change,
    dora_report,
    live_versions_before,
    record_from_run,
    rollback_releases,
)
from switchyard.core.versions import ImageVersion

APP, PATCH, ROLLBACK, UNKNOWN = ChangeType.APP, ChangeType.PATCH, ChangeType.ROLLBACK, ChangeType.UNKNOWN


def version(app: str, patch: str = "2026.11", base: str = "debian-12") -> str:
    return ImageVersion.of(base, patch, app).gallery_version


V1_2 = version("1.2.0")
V1_2_PATCHED = version("1.2.0", "2026.12")
V1_3 = version("1.3.0")


# Classification -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "trigger", "previous", "expected"),
    [
        # the routine flows' own statement, with or without a known predecessor
        (V1_2_PATCHED, "monthly-patch", None, PATCH),
        (V1_2_PATCHED, "monthly-patch", V1_2, PATCH),
        (V1_3, "merge", None, APP),
        (V1_3, "merge", V1_2, APP),
        # by hand: the version it replaced decides
        (V1_3, None, V1_2, APP),
        (V1_3, None, V1_2_PATCHED, APP),  # a newer app on an older patch level is still an app change
        (V1_2_PATCHED, None, V1_2, PATCH),
        # older than what it replaced: a rollback, whatever started the run
        (V1_2, None, V1_3, ROLLBACK),
        (V1_2, None, V1_2_PATCHED, ROLLBACK),  # back to the unpatched image of the same app
        (V1_2_PATCHED, "monthly-patch", V1_3, ROLLBACK),  # staging ran a newer app than production
        (V1_2, "merge", V1_3, ROLLBACK),
        # not enough facts: said, not guessed
        (V1_3, None, None, UNKNOWN),  # by hand, predecessor unknown (or a first release)
        (V1_3, "something-else", None, UNKNOWN),
        (version("1.2.0", base="ubuntu-24.04"), None, V1_2, UNKNOWN),  # only the base differs
        ("1.0.0", None, V1_2, UNKNOWN),  # not a switchyard version
    ],
)
def test_classify_change(image: str, trigger: str | None, previous: str | None, expected: ChangeType) -> None:
    assert classify_change(image, trigger=trigger, previous_version=previous) is expected


# The version a release replaced, from run history ----------------------------------------------------

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(
    run_id: str,
    image: str,
    start: float,
    end: float,
    state: RunState = RunState.COMPLETED,
    steps: list[RunStep] | None = None,
    environment: str = "production",
    trigger: str | None = None,
    previous: str | None = None,
) -> ReleaseRun:
    if steps is None and state is RunState.COMPLETED:
        steps = [step(StepKind.PROMOTE, end - 2, end - 1), step(StepKind.FINALIZE, end - 1, end)]
    return ReleaseRun(
        flow_run_id=run_id,
        service="shop",
        environment=environment,
        image_version=image,
        state=state,
        started_at=at(start),
        ended_at=at(end),
        steps=steps or [],
        git_commit="abc1234",
        change_at=at(start - 60),
        trigger=trigger,
        previous_version=previous,
    )


def step(kind: StepKind, start: float, end: float | None, succeeded: bool = True) -> RunStep:
    return RunStep(
        kind=kind,
        name=kind.value,
        started_at=at(start),
        ended_at=at(end) if end is not None else None,
        succeeded=succeeded,
    )


def manual_rollback(start: float, end: float, succeeded: bool = True) -> ManualRollback:
    return ManualRollback(
        flow_run_id=f"rollback-{start}",
        service="shop",
        environment="production",
        started_at=at(start),
        ended_at=at(end),
        succeeded=succeeded,
    )


def test_the_version_a_release_replaced_is_what_the_runs_before_it_left_live() -> None:
    failed_before_users = run(
        "smoke-failed", V1_3, 30, 35, RunState.FAILED, [step(StepKind.OTHER, 31, 34, succeeded=False)]
    )
    rolled_back = run(
        "rolled-back",
        V1_3,
        40,
        50,
        RunState.FAILED,
        [step(StepKind.SPLIT, 42, 43), step(StepKind.ROLLBACK, 48, 49)],
    )
    runs = [
        run("first", V1_2, 0, 10),
        run("patched", V1_2_PATCHED, 20, 25),
        failed_before_users,
        rolled_back,
        run("after", V1_3, 60, 70),
        run("staging", V1_3, 21, 22, environment="staging"),
    ]
    previous = live_versions_before(runs, [])

    assert previous["first"] is None  # nothing before it in the history read
    assert previous["patched"] == V1_2
    # neither a failure before users nor an automatic rollback changes what production runs
    assert previous["smoke-failed"] == previous["rolled-back"] == previous["after"] == V1_2_PATCHED
    assert previous["staging"] is None  # environments do not mix


def test_a_rollback_run_puts_back_the_version_before_and_a_second_one_changes_nothing() -> None:
    runs = [run("a", V1_2, 0, 10), run("b", V1_3, 20, 30), run("c", V1_3, 60, 70), run("d", V1_3, 90, 100)]
    rollbacks = [manual_rollback(40, 41), manual_rollback(50, 51), manual_rollback(80, 81, succeeded=False)]
    previous = live_versions_before(runs, rollbacks)

    assert previous["b"] == V1_2
    assert previous["c"] == V1_2  # the first rollback undid b; the second found nothing to undo
    assert previous["d"] == V1_3  # a failed rollback run restores nothing


def test_a_run_that_died_with_users_on_the_canary_leaves_the_live_version_unknown_until_rolled_back() -> None:
    died = run("died", V1_3, 20, 30, RunState.CRASHED, [step(StepKind.SPLIT, 22, 23)])
    while_split = run("while-split", V1_3, 31, 32, RunState.FAILED)
    runs = [run("a", V1_2, 0, 10), died, while_split, run("b", V1_3, 40, 50)]
    previous = live_versions_before(runs, [manual_rollback(35, 36)])

    assert previous["while-split"] is None  # users were split between two versions
    assert previous["b"] == V1_2  # the rollback flow took the canary out


def test_a_release_record_carries_its_change_type() -> None:
    merged = record_from_run(run("merge", V1_3, 0, 10, trigger="merge"))
    by_hand_back = record_from_run(run("back", V1_2, 20, 30, previous=V1_3))
    by_hand_unknown = record_from_run(run("hand", V1_3, 40, 50))

    assert merged is not None and merged.change_type is APP
    assert by_hand_back is not None and by_hand_back.change_type is ROLLBACK
    assert by_hand_unknown is not None and by_hand_unknown.change_type is UNKNOWN


def test_a_promoted_rollback_release_makes_the_release_it_replaced_a_change_failure_of_its_type() -> None:
    app = record_from_run(run("app", V1_3, 0, 10, trigger="merge", previous=V1_2))
    back = record_from_run(run("back", V1_2, 100, 130, previous=V1_3))
    assert app is not None and back is not None

    records = apply_manual_rollbacks([app, back], rollback_releases([app, back]))
    by_id = {r.flow_run_id: r for r in records}

    assert by_id["app"].outcome is ReleaseOutcome.ROLLED_BACK
    # the failure was known when the rollback release started, restored when it held full traffic
    assert (by_id["app"].failure_detected_at, by_id["app"].traffic_restored_at) == (at(100), at(130))
    assert by_id["back"].outcome is ReleaseOutcome.PROMOTED and by_id["back"].change_type is ROLLBACK


# The split metrics --------------------------------------------------------------------------------

PERIOD = ReportingPeriod(start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 11, 29, tzinfo=UTC))


def day(d: int, hour: float = 0) -> datetime:
    return datetime(2026, 11, d, tzinfo=UTC) + timedelta(hours=hour)


def record(
    change_type: ChangeType,
    outcome: ReleaseOutcome,
    *,
    change_at: datetime,
    started: datetime,
    end: datetime,
    service: str = "shop",
    environment: str = "production",
    failed_at: datetime | None = None,
    restored_at: datetime | None = None,
) -> ReleaseRecord:
    return ReleaseRecord(
        service=service,
        environment=environment,
        image_version=V1_3,
        git_commit="abc1234",
        commit_time=change_at,
        started_at=started,
        ended_at=end,
        outcome=outcome,
        reached_users_at=failed_at,
        failure_detected_at=failed_at,
        traffic_restored_at=restored_at,
        change_type=change_type,
    )


PROMOTED, ROLLED_BACK = ReleaseOutcome.PROMOTED, ReleaseOutcome.ROLLED_BACK


def fleet() -> list[ReleaseRecord]:
    return [
        # app changes: lead times 4 h and 30 h from the commit; one failed, restored in 10 min
        record(APP, PROMOTED, change_at=day(2, 6), started=day(2, 9), end=day(2, 10)),
        record(APP, PROMOTED, change_at=day(5, 0), started=day(6, 4), end=day(6, 6)),
        record(
            APP,
            ROLLED_BACK,
            change_at=day(8, 0),
            started=day(8, 1),
            end=day(8, 3),
            failed_at=day(8, 2),
            restored_at=day(8, 2) + timedelta(minutes=10),
        ),
        # the monthly patch of two services: lead 1.5 h and 2.5 h from the start of the rebuild
        record(PATCH, PROMOTED, change_at=day(12, 0), started=day(12, 1), end=day(12, 1.5)),
        record(PATCH, PROMOTED, change_at=day(12, 0), started=day(12, 2), end=day(12, 2.5), service="cart"),
        # a rollback by releasing the older image: a deployment, but no lead time; its image is old
        record(ROLLBACK, PROMOTED, change_at=day(1, 0) - timedelta(days=40), started=day(20, 0), end=day(20, 1)),
        # released by hand, predecessor unknown
        record(UNKNOWN, PROMOTED, change_at=day(22, 0), started=day(22, 1), end=day(22, 2)),
        # staging is not production: in no row of the split
        record(PATCH, PROMOTED, change_at=day(11, 0), started=day(11, 1), end=day(11, 2), environment="staging"),
    ]


def test_production_is_split_by_change_type() -> None:
    report = dora_report(fleet(), PERIOD)

    assert [m.scope for m in report.by_change_type] == ["app", "patch", "rollback", "unknown"]
    app = report.change_type(APP)
    assert (app.releases, app.promoted, app.failed_in_production, app.services) == (3, 2, 1, 1)
    assert app.deployments_per_day == pytest.approx(2 / 28)
    assert app.lead_time_median == timedelta(hours=17)  # (4 + 30) / 2
    assert app.change_failure_rate == pytest.approx(1 / 3)
    assert app.time_to_restore_median == timedelta(minutes=10)

    patch = report.change_type(PATCH)
    assert (patch.releases, patch.promoted, patch.services) == (2, 2, 2)
    assert patch.deployments_per_day == pytest.approx(2 / 2 / 28)  # per service, like overall
    assert patch.lead_time_median == timedelta(hours=2)  # (1.5 + 2.5) / 2, from the start of the rebuild
    assert patch.change_failure_rate == 0.0 and patch.time_to_restore_median is None

    rollback = report.change_type(ROLLBACK)
    assert (rollback.releases, rollback.promoted) == (1, 1)
    assert rollback.lead_time_median is None and rollback.lead_time_band is None

    assert report.change_type(UNKNOWN).promoted == 1
    with pytest.raises(KeyError, match="no app releases in production"):
        dora_report([], PERIOD).change_type(APP)


def test_the_overall_lead_time_leaves_rollbacks_out_but_counts_them_as_deployments() -> None:
    overall = dora_report(fleet(), PERIOD).overall

    assert overall.releases == 7 and overall.promoted == 6
    # lead times 1.5, 2.5, 4, 30 and 1 (unknown) hours; the rollback's 40-day-old image is not one
    assert overall.lead_time_median == timedelta(hours=2.5)
    assert overall.lead_time_p90 is not None and overall.lead_time_p90 < timedelta(days=2)


def test_markdown_shows_the_split_as_its_own_table() -> None:
    text = dora_report(fleet(), PERIOD).markdown()

    assert "### By change type (production)" in text
    split = text.split("### By change type (production)")[1]
    assert "| Change type | Releases | Deployments | Deployment frequency |" in split
    assert (
        "| app | 3 | 2 | 0.07/day (0.5/week) **medium** | 17.0 h / 27.4 h **elite** "
        "| 33.3% (1 of 3) **low** | 10.0 min **elite** |"
    ) in split
    assert (
        "| patch | 2 | 2 | 0.04/day (0.2/week) per service, 2 services **medium** | 2.0 h / 2.4 h **elite** |" in split
    )
    assert (
        "| rollback | 1 | 1 | 0.04/day (0.2/week) **medium** | n/a (no new change) | 0.0% (0 of 1) **elite** |" in split
    )
    assert "| unknown | 1 | 1 |" in split


def test_markdown_says_when_no_production_release_has_a_type_row() -> None:
    staging_only = [r for r in fleet() if r.environment == "staging"]
    text = dora_report(staging_only, PERIOD).markdown()
    assert "| - | 0 | 0 | - | - | - | - |" in text.split("### By change type (production)")[1]
