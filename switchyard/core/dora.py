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

Change types
------------
Every release record says what kind of change it shipped (`ChangeType`), and the report splits
the production scope by it, because the three kinds answer different questions: app changes are
the delivery DORA measures, monthly patch rebuilds are operations work on a fixed cadence (their
frequency says nothing about the team's delivery), and rollbacks ship no new change at all.
`classify_change` decides, from facts only, in this order:

1. **rollback**: the image is older than the one production ran before the release (its app
   version is lower, or the same app version with an older patch level). This comes first because
   it describes what users got, whatever started the run: releasing an earlier version by hand is
   a rollback even without the rollback flow. (The rollback *flow* moves traffic back to the color
   that still runs the previous image: it deploys nothing, so it is no release record; it is
   folded into the release it undid as that release's failure and restore,
   `apply_manual_rollbacks`. A promoted rollback release is folded the same way, see
   `rollback_releases`.)
2. **patch**: the run carries the monthly patch's trigger tag (`switchyard.trigger=monthly-patch`):
   that flow rebuilds exactly the app version production runs, with a newer patch level.
3. **app**: the run carries the merge trigger tag (`switchyard.trigger=merge`): release-on-merge
   ships a new app version and refuses one that is not newer.
4. Otherwise (a release by hand) the version live before decides: another app version is **app**,
   the same app version with a newer patch level is **patch**.
5. **unknown** when none of that can be told: no trigger tag and no known previous version (the
   first release of a service in an environment, or one whose predecessor is older than the
   history read), or an image whose only difference is its base. Unknown is reported as such,
   never guessed.

Per type, lead time starts when the change entered the pipeline: an app change at its commit, a
patch rebuild at the start of the rebuild (the time the monthly patch records; a patch released
by hand starts at its image's build time, a lower bound). A rollback has no lead time: its "commit"
is the old image's, and counting it would measure how old the restored version is, not delivery;
rollbacks are left out of every lead time, overall included. They are deployments all the same
(an image was rolled out), so they count in deployment frequency and in the change failure rate.
A change failure is counted in the type of the release that failed, so a patch rolled back shows
in the patch row.

Performance bands: sources and how they were checked
-----------------------------------------------------
Source: DORA / Google Cloud, "Accelerate State of DevOps Report 2023", chapter "How do you
compare?", software delivery performance levels table (https://dora.dev/dora-report-2023).
Its download page was found (its text lists key findings, not the table); the report PDF itself
could not be read where this was written, so every boundary below was checked against tables that
quote it, metric by metric, in Apache DevLake's documentation
(https://devlake.apache.org/docs/Metrics/DeploymentFrequency, .../LeadTimeForChanges,
.../CFR and .../FailedDeploymentRecoveryTime, each "Source: 2023 Accelerate State of DevOps,
Google"), and against the announcement, Google Cloud blog, "2023 State of DevOps Report: Culture is
everything", 5 October 2023
(https://cloud.google.com/blog/products/devops-sre/announcing-the-2023-state-of-devops-report),
which names the four metrics but whose text does not carry the table. The 2023 report renamed
"time to restore service" to "failed deployment recovery time"; it is the same measure here.

The 2023 levels as quoted (deployment frequency; change lead time; change failure rate; failed
deployment recovery time):

* elite: on demand (multiple deploys per day); less than one day; 5%; less than one hour.
* high: between once per day and once per week; between one day and one week; 10%; less than one day.
* medium: between once per week and once per month; between one week and one month; 15%;
  between one day and one week.
* low: between once per week and once per month; between one week and one month; 64%; see below.

Not verified: the low level's recovery time. DevLake's page quotes "more than six months"; this
module used to say "one to six months", from memory, and no source for that was found. Neither
changes a boundary here (low starts at one week either way), but which one the report says could
not be checked against the report.

The report describes clusters, not per-metric cut points, so the bands read each column as ranges:

| band   | deployment frequency | lead time for changes | change failure rate | recovery time |
|--------|----------------------|-----------------------|---------------------|---------------|
| elite  | more than once a day | less than one day     | at most 5%          | < one hour    |
| high   | at least once a week | less than one week    | at most 10%         | < one day     |
| medium | at least once a month| less than one month   | at most 15%         | < one week    |
| low    | less than monthly    | a month or more       | above 15%           | a week or more|

Readings, not quotations: the failure rates are the clusters' typical values, read as upper
bounds; the low cluster shares medium's throughput ranges and is set apart by its stability, so
anything slower than the medium range is low; gaps between published ranges (e.g. one week to
one month of recovery) go to the lower band; once a day exactly is high ("multiple deploys per
day" is elite). A month is 30 days.

Why not the 2024 report (the report itself was not found here, only secondary quotations, e.g.
https://www.dennis-whalen.com/post/measuring-your-teams-software-delivery-performance): its
throughput columns match 2023's, with low at "between once per month and
once every six months" and "between one month and six months", but its change failure rates are
not ordered by level. The quotation found gives elite 5% and high 20%; medium 10% and low 40% are
from memory and unverified. A table in which high fails more often than medium cannot be read as
per-metric bands; the 2023 table can, so the bands stay on 2023 and no boundary changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from switchyard.core.stats import interpolated_percentile
from switchyard.core.versions import ImageVersion, VersionError

# Cited in full (and how it was checked) in the module docstring, "Performance bands".
DORA_BENCHMARK_SOURCE = (
    "DORA, Accelerate State of DevOps Report 2023, performance levels table (https://dora.dev/dora-report-2023)"
)

_HOUR = 3600.0
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_MONTH = 30 * _DAY


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChangeType(StrEnum):
    """What a release shipped (module docstring, "Change types")."""

    APP = "app"
    PATCH = "patch"
    ROLLBACK = "rollback"
    UNKNOWN = "unknown"


# The values of the `switchyard.trigger=` run tag the routine flows set (tasks/history.py).
TRIGGER_MERGE = "merge"
TRIGGER_MONTHLY_PATCH = "monthly-patch"


def classify_change(image_version: str, *, trigger: str | None, previous_version: str | None) -> ChangeType:
    """The change type of a release of `image_version`, from the run's trigger tag (None: started by
    hand or untagged) and the version production ran before it (None: unknown). The rules and their
    order are in the module docstring, "Change types"."""
    new = _parsed(image_version)
    previous = _parsed(previous_version) if previous_version is not None else None
    if new is not None and previous is not None and _age(new) < _age(previous):
        return ChangeType.ROLLBACK
    if trigger == TRIGGER_MONTHLY_PATCH:
        return ChangeType.PATCH
    if trigger == TRIGGER_MERGE:
        return ChangeType.APP
    if new is None or previous is None:
        return ChangeType.UNKNOWN
    if new.app_version != previous.app_version:
        return ChangeType.APP  # newer: an older one was a rollback above
    if new.patch_level > previous.patch_level:
        return ChangeType.PATCH
    return ChangeType.UNKNOWN  # same app and patch level, another base: none of the three


def _parsed(gallery_version: str) -> ImageVersion | None:
    try:
        return ImageVersion.from_gallery_version(gallery_version)
    except VersionError:
        return None  # not a switchyard version: nothing can be told from it


def _age(version: ImageVersion) -> tuple[int, int]:
    """How new an image is to its users: app version first, then patch level. The base is left out:
    a base alone does not make one image older than another."""
    return (version.app_version.encoded, version.patch_level.encoded)


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
    change_type: ChangeType = ChangeType.UNKNOWN

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
    by_change_type: list[DoraMetrics] = Field(
        default_factory=list,
        description="the overall (production) scope split by change type; scope is the type; types with releases",
    )
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

    def change_type(self, change_type: ChangeType) -> DoraMetrics:
        for metrics in self.by_change_type:
            if metrics.scope == change_type.value:
                return metrics
        raise KeyError(
            f"no {change_type.value} releases in production in this period; "
            f"types are {[m.scope for m in self.by_change_type]}"
        )

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
        lines.append(_markdown_row(self.overall, pooled=True))
        lines += [_markdown_row(metrics) for metrics in self.groups]
        notes = _markdown_notes([self.overall, *self.groups])
        if notes:
            lines += ["", *notes]
        lines += ["", *self._change_type_markdown()]
        return "\n".join(lines) + "\n"

    def _change_type_markdown(self) -> list[str]:
        lines = [
            "### By change type (production)",
            "",
            "app: a new app version (lead time from its commit); patch: a monthly patch rebuild (lead time from "
            "the start of the rebuild); rollback: an image older than the one it replaced (no new change, no "
            "lead time); unknown: not enough facts to tell. A failure counts in the type of the release that failed.",
            "",
            "| Change type | Releases | Deployments | Deployment frequency | Lead time (median / p90) "
            "| Change failure rate | Time to restore (median) |",
            "|---|---:|---:|---|---|---|---|",
        ]
        lines += [_markdown_row(metrics, pooled=True) for metrics in self.by_change_type]
        if not self.by_change_type:
            lines.append("| - | 0 | 0 | - | - | - | - |")
        notes = _markdown_notes(self.by_change_type, noun=" releases")
        if notes:
            lines += ["", *notes]
        return lines


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
    by_type: dict[ChangeType, list[ReleaseRecord]] = defaultdict(list)
    for record in overall_records:
        by_type[record.change_type].append(record)
    return DoraReport(
        period=period,
        production_environments=production or [],
        overall=_metrics("overall", overall_records, period),
        groups=groups,
        by_change_type=[_metrics(kind.value, by_type[kind], period) for kind in ChangeType if by_type[kind]],
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

    # A rollback ships no new change: its "commit" is the restored image's (module docstring).
    lead_seconds = [
        (r.ended_at - r.commit_time).total_seconds() for r in promoted if r.change_type is not ChangeType.ROLLBACK
    ]
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
    trigger: str | None = Field(
        default=None, description="the routine flow that started it (merge, monthly-patch); None: by hand"
    )
    previous_version: str | None = Field(
        default=None, description="the image production ran when the run started; None: unknown"
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
        change_type=classify_change(run.image_version, trigger=run.trigger, previous_version=run.previous_version),
    )


def live_versions_before(runs: Iterable[ReleaseRun], rollbacks: Iterable[ManualRollback]) -> dict[str, str | None]:
    """For each release run (by flow_run_id): the image its environment ran when it started, as far
    as the runs given show it, else None (unknown). The facts, replayed in time order per service
    and environment:
    * a run that completed leaves its image live (it promoted it, or found it already live);
    * a run that reached users and did not restore them (it crashed mid-canary, or its rollback
      failed) leaves production in a state no version names: unknown;
    * a succeeded run of the rollback flow puts back what was live before the last such change, once
      (a second rollback finds production already stable);
    * any other run (failed before users, rolled back, cancelled before users) changes nothing.
    Nothing before the first run given is known: the caller reads far enough back."""
    runs = list(runs)
    events: dict[tuple[str, str], list[tuple[datetime, int, str, ReleaseRun | None]]] = defaultdict(list)
    for run in runs:
        scope = (run.service, run.environment)
        # At one instant a change that ended comes before a run that started (order 0 before 1).
        events[scope].append((run.started_at, 1, "start", run))
        if run.state is RunState.COMPLETED or _left_users_unrestored(run):
            events[scope].append((run.ended_at, 0, "live", run))
    for rollback in rollbacks:
        if rollback.succeeded:
            events[(rollback.service, rollback.environment)].append((rollback.ended_at, 0, "rollback", None))

    found: dict[str, str | None] = {}
    for scope_events in events.values():
        # What production ran, oldest first; None is an unknown state. `undoable`: the last entry was
        # put there by a release, so a rollback can take it off.
        live: list[str | None] = []
        undoable = False
        for _, _, kind, subject in sorted(scope_events, key=lambda event: (event[0], event[1])):
            if kind == "start":
                assert subject is not None
                found[subject.flow_run_id] = live[-1] if live else None
            elif kind == "live":
                assert subject is not None
                version = subject.image_version if subject.state is RunState.COMPLETED else None
                if not live or live[-1] != version or version is None:
                    live.append(version)
                    undoable = True
            elif undoable and live:
                live.pop()
                undoable = False
    return found


def _left_users_unrestored(run: ReleaseRun) -> bool:
    steps = _started(run.steps)
    reached = any(s.kind in (StepKind.SPLIT, StepKind.PROMOTE) for s in steps)
    restored = any(s.kind is StepKind.ROLLBACK and s.succeeded for s in steps)
    return run.state is not RunState.COMPLETED and reached and not restored


def rollback_releases(records: Iterable[ReleaseRecord]) -> list[ManualRollback]:
    """Promoted releases of an older image, as the rollbacks they are: each undoes the release
    before it, which `apply_manual_rollbacks` then counts as a change failure restored when the
    rollback release held full traffic. The rollback release stays a deployment of its own."""
    return [
        ManualRollback(
            flow_run_id=record.flow_run_id or "unknown",
            service=record.service,
            environment=record.environment,
            started_at=record.started_at,
            ended_at=record.ended_at,
            succeeded=True,
        )
        for record in records
        if record.change_type is ChangeType.ROLLBACK and record.outcome is ReleaseOutcome.PROMOTED
    ]


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


def _markdown_row(metrics: DoraMetrics, *, pooled: bool = False) -> str:
    """One table row; `pooled`: the scope pools services, so its frequency is per service."""
    if metrics.deployments_per_day is None:
        frequency = "-"
    else:
        frequency = f"{metrics.deployments_per_day:.2f}/day ({metrics.deployments_per_week:.1f}/week)"
        if pooled and metrics.services > 1:
            frequency += f" per service, {metrics.services} services"
        frequency += _band(metrics.deployment_frequency_band)
    lead = "-"
    if metrics.scope == ChangeType.ROLLBACK.value:
        lead = "n/a (no new change)"
    elif metrics.lead_time_median is not None:
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


def _markdown_notes(scopes: list[DoraMetrics], noun: str = "") -> list[str]:
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
            notes.append(f"- {metrics.scope}{noun}: " + "; ".join(parts) + ".")
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
