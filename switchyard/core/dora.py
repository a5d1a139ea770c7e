"""DORA software delivery metrics from switchyard's release history.

Input: `ReleaseRecord`s as read from Prefect flow-run history, and a reporting period. Output: a
`DoraReport` with the four key metrics per (service, environment) and overall, each with its
DORA performance band, and a markdown rendering for the Prefect UI. Pure: no I/O, no clock.

Definitions used here
---------------------
* A release *belongs to a period* when it ended (its outcome became known) inside
  [period.start, period.end). One attribution rule for all four metrics keeps them consistent.
* A release *reached users* when production traffic was served by the new version: every
  promoted release, and any other release whose `reached_users_at` is set (canary traffic
  counts). Failures before that (build, scan, smoke test on the test listener) are pipeline
  failures, not change failures: they never hurt a user.
* Deployment frequency: promoted releases per day (and per week) over the whole period.
* Lead time for changes: commit time -> promotion (the release's end), median and p90.
* Change failure rate: releases rolled back or failed after reaching users, divided by all
  releases that reached users and concluded (promoted + failed after users). A release that was
  cancelled is neither a success nor a failure of the change: it is left out of the rate and
  counted separately, so an operator's cancel does not make the rate look better or worse.
* Time to restore (DORA 2023: "failed deployment recovery time"): from the failing verdict to
  traffic back on the previous version, median. Failures without a restore time are counted as
  unrestored and left out of the median.
* Percentiles use linear interpolation (the textbook median; Four Keys' PERCENTILE_CONT).

The "overall" scope pools the production environments (`production_environments`, by default
{"production"}); DORA describes one application's delivery, so the overall deployment frequency
is given per service (pooled promotions / services with releases / days), to stay comparable with
the bands; the fleet-wide count is reported beside it.

Performance bands: DORA Accelerate State of DevOps Report 2023, "How do you compare?" table
(performance levels elite / high / medium / low). The report describes clusters, not per-metric
cut points, so the bands below read each metric's column as ranges, with these boundaries:

| band   | deployment frequency | lead time for changes | change failure rate | recovery time |
|--------|----------------------|-----------------------|---------------------|---------------|
| elite  | more than once a day | less than one day     | at most 5%          | < one hour    |
| high   | at least once a week | less than one week    | at most 10%         | < one day     |
| medium | at least once a month| less than one month   | at most 15%         | < one week    |
| low    | less than monthly    | a month or more       | above 15%           | a week or more|

In the 2023 table the low cluster shares medium's throughput ranges and is set apart by its
stability (64% failure rate, one to six months to recover); here anything slower than the medium
range is low, and the gaps between published ranges (e.g. one week to one month of recovery)
go to the lower band. A month is 30 days.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from switchyard.core.stats import interpolated_percentile

DORA_BENCHMARK_SOURCE = "DORA Accelerate State of DevOps Report 2023, performance levels table"

_HOUR = 3600.0
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_MONTH = 30 * _DAY


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReleaseOutcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ReleaseRecord(_Model):
    """One finished release run, as read from Prefect flow-run history."""

    service: str
    environment: str
    image_version: str = Field(description="gallery image version, e.g. 1004002.20261100.1")
    git_commit: str
    commit_time: AwareDatetime
    started_at: AwareDatetime
    ended_at: AwareDatetime = Field(description="when the outcome was known; promoted: full traffic held")
    outcome: ReleaseOutcome
    reached_users_at: AwareDatetime | None = Field(
        default=None, description="first production (user) traffic on the new version, canary included"
    )
    failure_detected_at: AwareDatetime | None = Field(
        default=None, description="the failing verdict (rolled_back / failed after reaching users)"
    )
    traffic_restored_at: AwareDatetime | None = Field(
        default=None, description="all user traffic back on the previous version"
    )
    flow_run_id: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseRecord:
        where = f"release of {self.service}/{self.environment} {self.image_version}"
        if self.ended_at < self.started_at:
            raise ValueError(f"{where}: ended_at is before started_at")
        if self.commit_time > self.ended_at:
            raise ValueError(f"{where}: commit_time is after the release ended (clock skew or wrong commit?)")
        if self.outcome is ReleaseOutcome.PROMOTED and (
            self.failure_detected_at is not None or self.traffic_restored_at is not None
        ):
            raise ValueError(f"{where}: a promoted release has no failure or restore time")
        if self.traffic_restored_at is not None:
            if self.failure_detected_at is None:
                raise ValueError(f"{where}: traffic_restored_at needs failure_detected_at")
            if self.traffic_restored_at < self.failure_detected_at:
                raise ValueError(f"{where}: traffic was restored before the failure was detected")
        return self

    @property
    def reached_users(self) -> bool:
        return self.outcome is ReleaseOutcome.PROMOTED or self.reached_users_at is not None

    @property
    def failed_in_production(self) -> bool:
        """A change failure in DORA's sense: it reached users and had to be rolled back or failed."""
        return self.reached_users and self.outcome in (ReleaseOutcome.ROLLED_BACK, ReleaseOutcome.FAILED)


class ReportingPeriod(_Model):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _end_after_start(self) -> ReportingPeriod:
        if self.end <= self.start:
            raise ValueError(f"period end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        return self

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / _DAY

    def contains(self, moment: AwareDatetime) -> bool:
        return self.start <= moment < self.end


class PerformanceBand(StrEnum):
    ELITE = "elite"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


def deployment_frequency_band(per_day: float) -> PerformanceBand:
    if per_day > 1.0:
        return PerformanceBand.ELITE
    if per_day >= _DAY / _WEEK:
        return PerformanceBand.HIGH
    if per_day >= _DAY / _MONTH:
        return PerformanceBand.MEDIUM
    return PerformanceBand.LOW


def lead_time_band(duration: timedelta) -> PerformanceBand:
    return _duration_band(duration.total_seconds(), elite=_DAY, high=_WEEK, medium=_MONTH)


def restore_time_band(duration: timedelta) -> PerformanceBand:
    return _duration_band(duration.total_seconds(), elite=_HOUR, high=_DAY, medium=_WEEK)


def change_failure_rate_band(rate: float) -> PerformanceBand:
    if rate <= 0.05:
        return PerformanceBand.ELITE
    if rate <= 0.10:
        return PerformanceBand.HIGH
    if rate <= 0.15:
        return PerformanceBand.MEDIUM
    return PerformanceBand.LOW


def _duration_band(seconds: float, *, elite: float, high: float, medium: float) -> PerformanceBand:
    if seconds < elite:
        return PerformanceBand.ELITE
    if seconds < high:
        return PerformanceBand.HIGH
    if seconds < medium:
        return PerformanceBand.MEDIUM
    return PerformanceBand.LOW


class DoraMetrics(_Model):
    """The four keys for one scope. A metric is None (and so is its band) when nothing measured it."""

    scope: str = Field(description="'service/environment' or 'overall'")
    services: int = Field(description="services with releases in this scope and period")
    releases: int
    promoted: int
    failed_in_production: int
    failed_before_users: int
    cancelled: int
    unrestored_failures: int

    deployments_per_day: float | None
    deployments_per_week: float | None
    deployment_frequency_band: PerformanceBand | None

    lead_time_median: timedelta | None
    lead_time_p90: timedelta | None
    lead_time_band: PerformanceBand | None

    change_failure_rate: float | None
    change_failure_rate_band: PerformanceBand | None

    time_to_restore_median: timedelta | None
    time_to_restore_band: PerformanceBand | None

    @property
    def has_data(self) -> bool:
        return self.releases > 0


class DoraReport(_Model):
    period: ReportingPeriod
    production_environments: list[str]
    overall: DoraMetrics
    groups: list[DoraMetrics] = Field(description="one per service/environment, sorted")
    benchmark: str = DORA_BENCHMARK_SOURCE

    @property
    def has_data(self) -> bool:
        return bool(self.groups)

    def group(self, service: str, environment: str) -> DoraMetrics:
        scope = f"{service}/{environment}"
        for metrics in self.groups:
            if metrics.scope == scope:
                return metrics
        raise KeyError(f"no releases of {scope} in this period; scopes are {[g.scope for g in self.groups]}")

    def markdown(self) -> str:
        period = f"{self.period.start.isoformat()} to {self.period.end.isoformat()} ({self.period.days:g} days)"
        lines = [f"## DORA metrics, {period}", ""]
        if not self.has_data:
            lines.append("No releases ended in this period: there is no data to compute DORA metrics from.")
            return "\n".join(lines) + "\n"
        environments = ", ".join(self.production_environments) if self.production_environments else "all"
        lines += [
            f"Overall pools the production environments ({environments}); its deployment frequency is per "
            f"service. Bands: {self.benchmark}.",
            "",
            "| Scope | Releases | Deployments | Deployment frequency | Lead time (median / p90) "
            "| Change failure rate | Time to restore (median) |",
            "|---|---:|---:|---|---|---|---|",
        ]
        for metrics in [self.overall, *self.groups]:
            lines.append(_markdown_row(metrics))
        notes = _markdown_notes([self.overall, *self.groups])
        if notes:
            lines += ["", *notes]
        return "\n".join(lines) + "\n"


def dora_report(
    records: Iterable[ReleaseRecord],
    period: ReportingPeriod,
    production_environments: Iterable[str] | None = ("production",),
) -> DoraReport:
    """Compute the DORA report for `period`. `production_environments=None` pools every environment
    into the overall scope."""
    in_period = [record for record in records if period.contains(record.ended_at)]
    production = None if production_environments is None else sorted(set(production_environments))

    by_group: dict[tuple[str, str], list[ReleaseRecord]] = defaultdict(list)
    for record in in_period:
        by_group[(record.service, record.environment)].append(record)
    groups = [
        _metrics(f"{service}/{environment}", releases, period)
        for (service, environment), releases in sorted(by_group.items())
    ]
    overall_records = [r for r in in_period if production is None or r.environment in production]
    return DoraReport(
        period=period,
        production_environments=production or [],
        overall=_metrics("overall", overall_records, period),
        groups=groups,
    )


def _metrics(scope: str, releases: list[ReleaseRecord], period: ReportingPeriod) -> DoraMetrics:
    services = len({r.service for r in releases})
    promoted = [r for r in releases if r.outcome is ReleaseOutcome.PROMOTED]
    failed_in_production = [r for r in releases if r.failed_in_production]
    failed_before_users = [
        r for r in releases if r.outcome in (ReleaseOutcome.ROLLED_BACK, ReleaseOutcome.FAILED) and not r.reached_users
    ]
    cancelled = [r for r in releases if r.outcome is ReleaseOutcome.CANCELLED]

    per_day: float | None = None
    if releases:
        per_day = len(promoted) / services / period.days

    lead_seconds = [(r.ended_at - r.commit_time).total_seconds() for r in promoted]
    lead_median = _seconds(interpolated_percentile(lead_seconds, 0.5))
    lead_p90 = _seconds(interpolated_percentile(lead_seconds, 0.9))

    concluded_with_users = len(promoted) + len(failed_in_production)
    failure_rate = len(failed_in_production) / concluded_with_users if concluded_with_users else None

    restore_seconds = [
        (r.traffic_restored_at - r.failure_detected_at).total_seconds()
        for r in failed_in_production
        if r.traffic_restored_at is not None and r.failure_detected_at is not None
    ]
    restore_median = _seconds(interpolated_percentile(restore_seconds, 0.5))

    return DoraMetrics(
        scope=scope,
        services=services,
        releases=len(releases),
        promoted=len(promoted),
        failed_in_production=len(failed_in_production),
        failed_before_users=len(failed_before_users),
        cancelled=len(cancelled),
        unrestored_failures=len(failed_in_production) - len(restore_seconds),
        deployments_per_day=per_day,
        deployments_per_week=per_day * 7 if per_day is not None else None,
        deployment_frequency_band=deployment_frequency_band(per_day) if per_day is not None else None,
        lead_time_median=lead_median,
        lead_time_p90=lead_p90,
        lead_time_band=lead_time_band(lead_median) if lead_median is not None else None,
        change_failure_rate=failure_rate,
        change_failure_rate_band=change_failure_rate_band(failure_rate) if failure_rate is not None else None,
        time_to_restore_median=restore_median,
        time_to_restore_band=restore_time_band(restore_median) if restore_median is not None else None,
    )


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


# --------------------------------------------------------------------------------------------
# Release records from run history
#
# The history reader (tasks/history.py) turns Prefect flow runs into the plain models below; the
# rules that make a ReleaseRecord out of them live here, where they can be tested without Prefect.
# The steps are the release flow's task runs: durable (unlike events, which Prefect prunes after
# its retention period, 7 days by default) and timed by the engine itself.


class StepKind(StrEnum):
    """What a step of a release run did, as far as DORA cares."""

    SPLIT = "split"  # canary instances put into the live pool: users reach the new version
    PROMOTE = "promote"  # the production rule moved to the new version
    FINALIZE = "finalize"  # the new version held full traffic and was made "latest"
    ROLLBACK = "rollback"  # all traffic put back on the stable version
    OTHER = "other"


class RunState(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"


class RunStep(_Model):
    """One step (task run) of a release run."""

    kind: StepKind
    name: str
    started_at: AwareDatetime | None
    ended_at: AwareDatetime | None
    succeeded: bool


class ReleaseRun(_Model):
    """A finished run of the release flow, with its steps and what is known about the change it shipped."""

    flow_run_id: str
    service: str
    environment: str
    image_version: str
    state: RunState
    started_at: AwareDatetime
    ended_at: AwareDatetime
    steps: list[RunStep] = Field(default_factory=list)
    git_commit: str | None = None
    change_at: AwareDatetime | None = Field(
        default=None,
        description="when the change entered the pipeline: the merge commit's time, or the start of the "
        "patch rebuild; None: unknown (the release's start is used, so lead time is a lower bound)",
    )


class ManualRollback(_Model):
    """A run of the rollback flow: a person put traffic back after a release had been promoted."""

    flow_run_id: str
    service: str
    environment: str
    started_at: AwareDatetime
    ended_at: AwareDatetime
    succeeded: bool


def record_from_run(run: ReleaseRun) -> ReleaseRecord | None:
    """The ReleaseRecord of one release run, or None when the run changed nothing (the image was
    already live). Raises ValueError when the run's times contradict each other.

    Rules, from the steps the run really performed:
    * promoted: the run completed and switched production (or finalized); it ended when it was
      finalized (not when the old color was retired, later).
    * reached users: the first canary split or production switch started.
    * rolled back: a rollback step succeeded; the failure was detected when the step before the
      rollback ended (the failing analysis, or the step that raised), traffic was restored when
      the rollback step ended (it verifies the gateway before it ends).
    * failed: the run failed otherwise (crashed, or the rollback itself failed).
    * cancelled: the run was cancelled.
    """
    steps = sorted(_started(run.steps), key=_start_of)
    user_steps = [s for s in steps if s.kind in (StepKind.SPLIT, StepKind.PROMOTE)]
    reached_users_at = user_steps[0].started_at if user_steps else None
    rollbacks = [s for s in steps if s.kind is StepKind.ROLLBACK]
    failure_detected_at = traffic_restored_at = None
    ended_at = run.ended_at

    if run.state is RunState.COMPLETED:
        switched = [s for s in steps if s.kind in (StepKind.PROMOTE, StepKind.FINALIZE) and s.succeeded]
        if not switched:
            return None  # the image already served production: nothing was deployed
        # Finalizing is when the outcome is known; a run that stopped short of it ends at the switch.
        finalized = [s.ended_at for s in switched if s.kind is StepKind.FINALIZE and s.ended_at is not None]
        promoted = [s.ended_at for s in switched if s.ended_at is not None]
        ended_at = max(finalized or promoted or [run.ended_at])
        outcome = ReleaseOutcome.PROMOTED
        reached_users_at = None  # implied by the promotion
    elif run.state is RunState.CANCELLED:
        outcome = ReleaseOutcome.CANCELLED
    elif rollbacks:
        rollback = rollbacks[0]
        assert rollback.started_at is not None
        before = [
            s.ended_at
            for s in steps
            if s.kind is not StepKind.ROLLBACK and s.ended_at is not None and s.ended_at <= rollback.started_at
        ]
        failure_detected_at = max(before) if before else rollback.started_at
        # A rollback means users were exposed, even if an earlier (crashed) run made the split.
        reached_users_at = reached_users_at or run.started_at
        restored = [s.ended_at for s in rollbacks if s.succeeded and s.ended_at is not None]
        if restored:
            outcome = ReleaseOutcome.ROLLED_BACK
            traffic_restored_at = ended_at = restored[0]
        else:
            outcome = ReleaseOutcome.FAILED
    else:
        outcome = ReleaseOutcome.FAILED
        if reached_users_at is not None:
            failure_detected_at = run.ended_at

    ended_at = max(ended_at, run.started_at)
    return ReleaseRecord(
        service=run.service,
        environment=run.environment,
        image_version=run.image_version,
        git_commit=run.git_commit or "unknown",
        commit_time=run.change_at or run.started_at,
        started_at=run.started_at,
        ended_at=ended_at,
        outcome=outcome,
        reached_users_at=reached_users_at,
        failure_detected_at=failure_detected_at,
        traffic_restored_at=traffic_restored_at,
        flow_run_id=run.flow_run_id,
    )


def _started(steps: Iterable[RunStep]) -> list[RunStep]:
    return [step for step in steps if step.started_at is not None]


def _start_of(step: RunStep) -> datetime:
    assert step.started_at is not None
    return step.started_at


def apply_manual_rollbacks(
    records: Iterable[ReleaseRecord], rollbacks: Iterable[ManualRollback]
) -> list[ReleaseRecord]:
    """Fold runs of the rollback flow into the release records they concern.

    A rollback acts on the release that last changed what users get: the latest release of that
    service and environment that reached users and ended before the rollback started.
    * If it was promoted, a person found it bad later: it becomes a change failure, detected when
      the rollback started and restored when it ended (its outcome became known then).
    * If it failed in production without a restore (its run died mid-canary), the rollback is the
      restore.
    * Otherwise (already rolled back) the rollback changed nothing that DORA counts.
    Failed rollback runs restore nothing and are ignored."""
    result = list(records)
    for rollback in sorted(rollbacks, key=lambda r: r.started_at):
        if not rollback.succeeded:
            continue
        candidates = [
            index
            for index, record in enumerate(result)
            if (record.service, record.environment) == (rollback.service, rollback.environment)
            and record.reached_users
            and record.ended_at <= rollback.started_at
        ]
        if not candidates:
            continue
        index = max(candidates, key=lambda i: result[i].ended_at)
        latest = result[index]
        if latest.outcome is ReleaseOutcome.PROMOTED:
            update = {
                "outcome": ReleaseOutcome.ROLLED_BACK,
                "ended_at": rollback.ended_at,
                "reached_users_at": latest.ended_at,
                "failure_detected_at": rollback.started_at,
                "traffic_restored_at": rollback.ended_at,
            }
        elif latest.failed_in_production and latest.traffic_restored_at is None:
            update = {
                "failure_detected_at": latest.failure_detected_at or latest.ended_at,
                "traffic_restored_at": rollback.ended_at,
            }
        else:
            continue
        result[index] = ReleaseRecord.model_validate({**latest.model_dump(), **update})
    return result


# --------------------------------------------------------------------------------------------
# Markdown


def _markdown_row(metrics: DoraMetrics) -> str:
    if metrics.deployments_per_day is None:
        frequency = "-"
    else:
        frequency = f"{metrics.deployments_per_day:.2f}/day ({metrics.deployments_per_week:.1f}/week)"
        if metrics.scope == "overall" and metrics.services > 1:
            frequency += f" per service, {metrics.services} services"
        frequency += _band(metrics.deployment_frequency_band)
    lead = "-"
    if metrics.lead_time_median is not None:
        lead = f"{_duration(metrics.lead_time_median)} / {_duration(metrics.lead_time_p90)}"
        lead += _band(metrics.lead_time_band)
    failure_rate = (
        f"{metrics.change_failure_rate:.1%} ({metrics.failed_in_production} of "
        f"{metrics.promoted + metrics.failed_in_production}){_band(metrics.change_failure_rate_band)}"
        if metrics.change_failure_rate is not None
        else "-"
    )
    restore = (
        f"{_duration(metrics.time_to_restore_median)}{_band(metrics.time_to_restore_band)}"
        if metrics.time_to_restore_median is not None
        else "-"
    )
    return (
        f"| {metrics.scope} | {metrics.releases} | {metrics.promoted} | {frequency} | {lead} "
        f"| {failure_rate} | {restore} |"
    )


def _markdown_notes(scopes: list[DoraMetrics]) -> list[str]:
    notes = []
    for metrics in scopes:
        parts = []
        if metrics.failed_before_users:
            parts.append(f"{metrics.failed_before_users} failed before reaching users")
        if metrics.cancelled:
            parts.append(f"{metrics.cancelled} cancelled (not counted in the failure rate)")
        if metrics.unrestored_failures:
            parts.append(f"{metrics.unrestored_failures} production failures without a recorded restore")
        if parts:
            notes.append(f"- {metrics.scope}: " + "; ".join(parts) + ".")
    return notes


def _band(band: PerformanceBand | None) -> str:
    return f" **{band.value}**" if band is not None else ""


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < _HOUR:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * _DAY:
        return f"{seconds / _HOUR:.1f} h"
    return f"{seconds / _DAY:.1f} d"
