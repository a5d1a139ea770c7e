"""Release history from Prefect's own records, for DORA metrics.

Where the facts come from (the choice, and why):

* The release flow runs (flow name "release"): their parameters say what was released where
  (service, environment, image_version), their state says how it ended (Completed, Failed,
  Crashed, Cancelled), their tags say which change it was (below).
* Their task runs say what the release really did and when: "shift canary traffic" and "switch
  production" (users reached the new version), "finalize release" (it held full traffic: the
  outcome is known), "roll back" (traffic back on the stable version; the task verifies the
  gateway before it ends). The failure was detected when the step before the rollback ended.
  Task runs are kept as long as their flow runs; Prefect prunes events after its retention period
  (7 days by default), so the `switchyard.release.*` events are not used: a 30-day report would
  silently lose data. The markdown artifact is for people, not parsed.
* The runs of the rollback flow ("rollback"): a person's rollback after a promotion turns that
  promotion into a change failure (switchyard.core.dora.apply_manual_rollbacks). A promoted
  release of an older image is a rollback too, and is folded the same way
  (switchyard.core.dora.rollback_releases).
* The change behind a release: tags the routine flows put on every flow run they start
  (`switchyard.change-at=<ISO time>`, `switchyard.commit=<sha>`, `switchyard.trigger=merge|monthly-patch`):
  release-on-merge records the merge commit's time, the monthly patch the start of the rebuild.
  A release started by hand has no such tags: its image's gallery tags give the commit and the
  build time; failing those, the release's own start (then lead time is a lower bound).
* The change type (app, patch, rollback: switchyard.core.dora.classify_change): the trigger tag
  above, and the image production ran before the release. The release flow records no previous
  version of its own, so it is replayed from the history itself
  (switchyard.core.dora.live_versions_before): the release runs and rollback runs of the last
  PREVIOUS_LOOKBACK days. The gallery cannot say it: an image's tags say when it first held full
  traffic somewhere, not what a given environment ran. A release whose predecessor is not in that
  history, and that carries no trigger tag, is of unknown type, and the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import TagsContext
from pydantic import AwareDatetime, BaseModel, Field

from blocks import load_environment, load_service
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.dora import (
    ManualRollback,
    ReleaseRecord,
    ReleaseRun,
    RunState,
    RunStep,
    StepKind,
    apply_manual_rollbacks,
    live_versions_before,
    record_from_run,
    rollback_releases,
)
from switchyard.core.image_metadata import ImageMetadata, ImageMetadataError
from tasks.canary import set_canary_split
from tasks.release import finalize, promote
from tasks.rollback import roll_back

RELEASE_FLOW = "release"
ROLLBACK_FLOW = "rollback"

TAG_CHANGE_AT = "switchyard.change-at="
TAG_COMMIT = "switchyard.commit="
TAG_TRIGGER = "switchyard.trigger="

# The release flow's tasks that matter to DORA, by their Prefect task name (imported, so a rename
# follows). Every other task of the run counts as a plain step.
STEP_KINDS: dict[str, StepKind] = {
    set_canary_split.name: StepKind.SPLIT,
    promote.name: StepKind.PROMOTE,
    finalize.name: StepKind.FINALIZE,
    roll_back.name: StepKind.ROLLBACK,
}

# A rollback can concern a release promoted before the period: read that far back for them.
ROLLBACK_LOOKBACK = timedelta(days=14)
# The version a release replaced is found in the runs before it. The monthly patch releases every
# live service each month, so a month and a half back almost always holds the run that put the
# live version there; further back costs reading more runs for little.
PREVIOUS_LOOKBACK = timedelta(days=45)
# Prefect records task runs from their state events, asynchronously: a run that ended moments ago
# may not have its last steps in the database yet (the local stack's server records them in
# batches, every second; a busy server later). Its steps are read once it has been over this long.
TASK_RUNS_SETTLE = timedelta(seconds=5)
_PAGE = 200
_TERMINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
_RUN_STATES = {
    StateType.COMPLETED: RunState.COMPLETED,
    StateType.FAILED: RunState.FAILED,
    StateType.CRASHED: RunState.CRASHED,
    StateType.CANCELLED: RunState.CANCELLED,
}


# Tags: how the routine flows mark the change a run ships ----------------------------------------


def change_tags(*, commit: str, change_at: datetime, trigger: str) -> list[str]:
    """The tags that put a change's identity on every flow run started inside `prefect.tags(...)`
    (the flows they start keep them off their task runs: `change_tags_on_flow_runs_only`)."""
    if change_at.tzinfo is None:
        raise ValueError(f"change time {change_at.isoformat()} has no timezone")
    return [
        f"{TAG_CHANGE_AT}{change_at.astimezone(UTC).isoformat()}",
        f"{TAG_COMMIT}{commit}",
        f"{TAG_TRIGGER}{trigger}",
    ]


def is_change_tag(tag: str) -> bool:
    return tag.startswith((TAG_CHANGE_AT, TAG_COMMIT, TAG_TRIGGER))


@contextmanager
def change_tags_on_flow_runs_only() -> Iterator[None]:
    """Inside a flow run: its task runs (and anything it starts) without the change tags it was
    started under; any other tags stay.

    The history reads the change from the release's flow run alone, and Prefect makes every tagged
    task run take and give back a slot of each of its tags' concurrency limits: two calls to the
    server, each on a new client, for every task of every release. A fleet's monthly patch runs
    thousands of task runs, so those calls were a good part of its CPU, for limits nobody sets on a
    change's commit or time."""
    current = TagsContext.get().current_tags
    with TagsContext(current_tags={tag for tag in current if not is_change_tag(tag)}):
        yield


class ChangeTags(BaseModel):
    commit: str | None = None
    change_at: AwareDatetime | None = None
    trigger: str | None = None


def parse_change_tags(tags: Iterable[str]) -> ChangeTags:
    """The change a run's tags describe; a malformed time is treated as absent."""
    found = ChangeTags()
    for tag in tags:
        if tag.startswith(TAG_CHANGE_AT):
            try:
                moment = datetime.fromisoformat(tag.removeprefix(TAG_CHANGE_AT))
            except ValueError:
                continue
            if moment.tzinfo is not None:
                found.change_at = moment
        elif tag.startswith(TAG_COMMIT):
            found.commit = tag.removeprefix(TAG_COMMIT) or None
        elif tag.startswith(TAG_TRIGGER):
            found.trigger = tag.removeprefix(TAG_TRIGGER) or None
    return found


# Reading ----------------------------------------------------------------------------------------


class ReleaseHistory(BaseModel):
    """What the reader found: the records, plus notes on where the facts came from."""

    records: list[ReleaseRecord]
    release_runs: int = Field(description="finished release runs read")
    no_change_runs: int = Field(description="runs whose image already served production (not deployments)")
    manual_rollbacks: int
    change_time_sources: dict[str, int] = Field(default_factory=dict)
    change_types: dict[str, int] = Field(default_factory=dict, description="releases in the period, by type")
    problems: list[str] = Field(default_factory=list, description="runs that could not be read, and why")

    def notes_markdown(self) -> str:
        sources = {
            "merge": "the merge commit's time",
            "monthly-patch": "the start of the patch rebuild",
            "tagged": "the time the routine flow recorded",
            "image": "the image's build time (release started by hand)",
            "release-start": "the release's own start (unknown change: lead time is a lower bound)",
        }
        lines = [
            "### How this was measured",
            "",
            f"- {self.release_runs} finished run(s) of the `release` flow read from Prefect, with their task runs "
            f"(split, switch, finalize, roll back); {self.no_change_runs} changed nothing (the image already "
            "served production).",
            f"- {self.manual_rollbacks} run(s) of the `rollback` flow: a rollback after a promotion counts as a "
            "change failure of that release.",
        ]
        for source, count in sorted(self.change_time_sources.items()):
            lines.append(f"- Lead time of {count} release(s) starts at {sources.get(source, source)}.")
        if self.change_types:
            counts = ", ".join(f"{count} {kind}" for kind, count in sorted(self.change_types.items()))
            lines.append(
                f"- Change types (all environments): {counts}. The type comes from the routine flow's trigger "
                f"tag, or from the version the release replaced, replayed from the runs of the last "
                f"{PREVIOUS_LOOKBACK.days} days."
            )
            if self.change_types.get("unknown"):
                lines.append(
                    "- unknown: released by hand, and no earlier run of that service in that environment "
                    "shows what it replaced (a first release, or one older than the history read)."
                )
        for problem in self.problems:
            lines.append(f"- Not counted: {problem}")
        return "\n".join(lines) + "\n"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _flow_runs(client: SyncPrefectClient, flow_name: str, since: datetime, until: datetime) -> Iterator[FlowRun]:
    """Finished runs of `flow_name` that ended in [since, until), newest first, every page."""
    offset = 0
    while True:
        page = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                end_time=FlowRunFilterEndTime.model_validate({"after_": since, "before_": until}),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_TERMINAL)),
            ),
            sort=FlowRunSort.END_TIME_DESC,
            limit=_PAGE,
            offset=offset,
        )
        yield from page
        if len(page) < _PAGE:
            return
        offset += _PAGE


def settle_wait_s(flow_runs: Iterable[FlowRun], now: datetime) -> float:
    """How long to wait before reading the steps of `flow_runs`: until the newest of them ended
    TASK_RUNS_SETTLE ago (0 when it did already, as for any report of a past period)."""
    ends = [end for end in (_aware(run.end_time) for run in flow_runs) if end is not None]
    if not ends:
        return 0.0
    return max(0.0, (max(ends) + TASK_RUNS_SETTLE - now).total_seconds())


def _task_runs(client: SyncPrefectClient, flow_run_ids: list[UUID]) -> dict[UUID, list[TaskRun]]:
    by_run: dict[UUID, list[TaskRun]] = {run_id: [] for run_id in flow_run_ids}
    for first in range(0, len(flow_run_ids), 50):
        chunk = flow_run_ids[first : first + 50]
        offset = 0
        while True:
            page = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=chunk)),
                limit=_PAGE,
                offset=offset,
            )
            for task_run in page:
                if task_run.flow_run_id in by_run:
                    by_run[task_run.flow_run_id].append(task_run)
            if len(page) < _PAGE:
                break
            offset += _PAGE
    return by_run


def _task_name(task_run: TaskRun) -> str:
    """A task run is named '<task name>-<suffix>'."""
    return task_run.name.rsplit("-", 1)[0]


def _step(task_run: TaskRun) -> RunStep:
    name = _task_name(task_run)
    return RunStep(
        kind=STEP_KINDS.get(name, StepKind.OTHER),
        name=name,
        started_at=_aware(task_run.start_time),
        ended_at=_aware(task_run.end_time),
        succeeded=task_run.state_type == StateType.COMPLETED,
    )


class _ImageFacts:
    """The commit and build time of released images, from their gallery tags (once per image)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str, str], ImageMetadata | None] = {}

    def get(self, service: str, environment: str, version: str) -> ImageMetadata | None:
        key = (service, environment, version)
        if key not in self._known:
            self._known[key] = self._read(*key)
        return self._known[key]

    @staticmethod
    def _read(service: str, environment: str, version: str) -> ImageMetadata | None:
        try:
            context = ServiceContext(environment=load_environment(environment), service=load_service(service))
            image = cloud_for(context).gallery.image_version(service, version)
            return ImageMetadata.from_tags(image.tags) if image.exists else None
        except (ValueError, ImageMetadataError):
            return None  # the service, environment or image is gone: the caller falls back
        except Exception as error:  # the cloud is unreachable: same fallback, said in the log
            get_run_logger().warning("could not read %s %s from the gallery: %s", service, version, error)
            return None


def _release_run(flow_run: FlowRun, task_runs: list[TaskRun], images: _ImageFacts) -> tuple[ReleaseRun, str]:
    """The ReleaseRun of a flow run, and where its change time came from."""
    parameters = flow_run.parameters
    for name in ("service", "environment", "image_version"):
        if not isinstance(parameters.get(name), str):
            raise ValueError(f"release run {flow_run.name} ({flow_run.id}) has no {name} parameter")
    service, environment, version = parameters["service"], parameters["environment"], parameters["image_version"]
    start, end = _aware(flow_run.start_time), _aware(flow_run.end_time)
    if start is None or end is None:
        raise ValueError(f"release run {flow_run.name} ({flow_run.id}) has no start or end time")
    change = parse_change_tags(flow_run.tags)
    commit, change_at, source = change.commit, change.change_at, "release-start"
    if change_at is not None:
        source = change.trigger if change.trigger in ("merge", "monthly-patch") else "tagged"
    else:
        image = images.get(service, environment, version)
        if image is not None:
            commit, change_at, source = commit or image.git_commit, image.built_at, "image"
    if commit is None:
        image = images.get(service, environment, version)
        commit = image.git_commit if image is not None else None
    assert flow_run.state_type is not None
    run = ReleaseRun(
        flow_run_id=str(flow_run.id),
        service=service,
        environment=environment,
        image_version=version,
        state=_RUN_STATES[flow_run.state_type],
        started_at=start,
        ended_at=end,
        steps=[_step(t) for t in task_runs],
        git_commit=commit,
        change_at=change_at,
        trigger=change.trigger,
    )
    return run, source


def _manual_rollback(flow_run: FlowRun, task_runs: list[TaskRun]) -> ManualRollback | None:
    parameters = flow_run.parameters
    start, end = _aware(flow_run.start_time), _aware(flow_run.end_time)
    if start is None or end is None or not all(isinstance(parameters.get(k), str) for k in ("service", "environment")):
        return None
    restored = [t for t in task_runs if _task_name(t) == roll_back.name and t.state_type == StateType.COMPLETED]
    restored_at = _aware(restored[0].end_time) if restored else None
    return ManualRollback(
        flow_run_id=str(flow_run.id),
        service=parameters["service"],
        environment=parameters["environment"],
        started_at=start,
        ended_at=restored_at or end,
        succeeded=flow_run.state_type == StateType.COMPLETED and restored_at is not None,
    )


@task(name="read release history", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_release_history(start: datetime, end: datetime) -> ReleaseHistory:
    """Every release that ended in [start, end) as a ReleaseRecord (and the ones a rollback in the
    period concerns, from up to ROLLBACK_LOOKBACK before). Runs from up to PREVIOUS_LOOKBACK before
    are read to know what each release replaced; runs that cannot be read are reported only when
    they ended in the period (an older one is not this period's loss)."""
    logger = get_run_logger()
    since = start - max(ROLLBACK_LOOKBACK, PREVIOUS_LOOKBACK)
    with get_client(sync_client=True) as client:
        releases = list(_flow_runs(client, RELEASE_FLOW, since, end))
        rollbacks = list(_flow_runs(client, ROLLBACK_FLOW, since, end))
        wait_s = settle_wait_s([*releases, *rollbacks], datetime.now(UTC))
        if wait_s > 0:
            logger.info("a run ended moments ago: waiting %.1f s for Prefect to record its steps", wait_s)
            time.sleep(wait_s)
        task_runs = _task_runs(client, [run.id for run in releases + rollbacks])
    images = _ImageFacts()
    records: list[ReleaseRecord] = []
    problems: list[str] = []
    sources: dict[str, int] = {}
    no_change = 0
    runs: list[tuple[FlowRun, ReleaseRun, str]] = []

    def unreadable(flow_run: FlowRun, error: ValueError) -> None:
        if start <= (_aware(flow_run.end_time) or start) < end:
            problems.append(f"release run {flow_run.name} ({flow_run.id}): {error}")

    for flow_run in releases:
        try:
            run, source = _release_run(flow_run, task_runs[flow_run.id], images)
        except ValueError as error:
            unreadable(flow_run, error)
            continue
        runs.append((flow_run, run, source))
    manual = [r for r in (_manual_rollback(run, task_runs[run.id]) for run in rollbacks) if r is not None]
    previous = live_versions_before((run for _, run, _ in runs), manual)
    for flow_run, run, source in runs:
        try:
            record = record_from_run(run.model_copy(update={"previous_version": previous.get(run.flow_run_id)}))
        except ValueError as error:
            unreadable(flow_run, error)
            continue
        if record is None:
            no_change += 1 if start <= (_aware(flow_run.end_time) or start) < end else 0
            continue
        records.append(record)
        if start <= record.ended_at < end:
            sources[source] = sources.get(source, 0) + 1
    records = apply_manual_rollbacks(records, [*manual, *rollback_releases(records)])
    types: dict[str, int] = {}
    for record in records:
        if start <= record.ended_at < end:
            types[record.change_type.value] = types.get(record.change_type.value, 0) + 1
    for problem in problems:
        logger.warning("not counted: %s", problem)
    logger.info("read %d release run(s) and %d rollback run(s) since %s", len(releases), len(manual), since)
    return ReleaseHistory(
        records=records,
        release_runs=sum(1 for r in releases if start <= (_aware(r.end_time) or start) < end),
        no_change_runs=no_change,
        manual_rollbacks=len(manual),
        change_time_sources=sources,
        change_types=types,
        problems=problems,
    )
