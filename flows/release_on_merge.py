"""Release on merge: a merge to the main branch ships through every environment, in order.

Triggered by the event `switchyard.git.merged` (the merge relay, switchyard/relay/, emits
it from the Git host's webhook; prefect.yaml maps its payload to this flow's parameters). The runbook:
  1. check the parameters (before anything is built), and that the version is newer than what
     every environment of the chain runs now: a redelivered or out-of-order merge is refused, so
     it never puts an older version in front of users;
  2. build, scan and publish the image of the app at that commit (the image pipeline; an
     identical build already published is reused);
  3. release it to each environment in order (staging, then production), stopping at the first
     environment where it does not go live, or does not hold it for that environment's soak time;
  4. publish a summary (artifact `merge-<service>`); the run fails if a stage failed.
Every run it starts is tagged with the change (commit, commit time): the DORA report measures lead
time from the commit time (tasks/history.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact

from flows.image_pipeline import image_pipeline
from flows.release import release
from switchyard.core.outcomes import MergeRefused, ReleaseFailed
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.reports import merge_report
from switchyard.core.routine import MergeRelease, StageOutcome, StageResult, chain_failure
from switchyard.core.versions import AppVersion, versions_not_moving_forward
from tasks.history import change_tags
from tasks.routine import (
    check_app_version,
    check_commit,
    check_committed_at,
    check_environments,
    production_image,
    soak,
)

DEFAULT_ENVIRONMENTS = ["staging", "production"]


class ReleaseChainFailed(Exception):
    """A stage of the chain did not go live; the later stages were not run."""


def release_through(
    service: str, image_version: str, environments: list[str], *, soak_last: bool = False
) -> list[StageOutcome]:
    """Release `image_version` to each environment in order; stop at the first that does not go live.
    Each one holds the version for its soak time before the next starts; so does the last one when
    `soak_last` (the caller releases to another environment next).

    Each release is a subflow run (its own timeline, artifact and lock); a failure is recorded, not
    raised, so the caller reports the whole chain."""
    logger = get_run_logger()
    stages: list[StageOutcome] = []
    for position, environment in enumerate(environments):
        state = release(service=service, environment=environment, image_version=image_version, return_state=True)
        run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        if state.is_completed():
            summary = state.result()
            assert isinstance(summary, ReleaseSummary)
            live: StageResult = "promoted" if summary.outcome == "promoted" else "already-live"
            later = environments[position + 1 :]
            # Staging soak time: the next environment starts only once this one held the version.
            problem = soak(service, environment, image_version) if later or soak_last else None
            if problem is None:
                stages.append(StageOutcome(environment=environment, outcome=live, flow_run_id=run_id))
                logger.info("%s %s in %s: %s", service, image_version, environment, live)
                continue
            detail = f"went live ({live}), then did not hold during its soak: {problem}"
            stages.append(StageOutcome(environment=environment, outcome="failed", detail=detail, flow_run_id=run_id))
            stages += [
                StageOutcome(environment=next_one, outcome="not-run", detail=f"stopped: {environment} failed its soak")
                for next_one in later
            ]
            break
        error = state.result(raise_on_failure=False)
        rolled_back = (
            isinstance(error, ReleaseFailed) and error.summary is not None and error.summary.outcome == "rolled-back"
        )
        outcome: StageResult = "rolled-back" if rolled_back else "failed"
        detail = str(error) if isinstance(error, BaseException) else (state.message or state.name or "")
        stages.append(StageOutcome(environment=environment, outcome=outcome, detail=detail, flow_run_id=run_id))
        logger.error("%s %s in %s: %s: %s", service, image_version, environment, outcome, detail)
        stages += [
            StageOutcome(environment=later, outcome="not-run", detail=f"stopped: {environment} {outcome}")
            for later in environments[position + 1 :]
        ]
        break
    return stages


@flow(name="release-on-merge", log_prints=True)
def release_on_merge(
    service: str,
    app_version: str,
    git_commit: str,
    environments: list[str] = DEFAULT_ENVIRONMENTS,
    committed_at: datetime | None = None,
) -> MergeRelease:
    """Build `service` at `git_commit` (app `app_version`) and release it to `environments` in order.
    `committed_at` (the merge commit's time) is where DORA's lead time starts."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    environments = check_environments(environments)
    git_commit = check_commit(git_commit)
    app_version = check_app_version(app_version)
    committed_at = check_committed_at(committed_at, started)
    _refuse_unless_newer(service, app_version, git_commit, environments)
    if committed_at is None:
        logger.warning("no commit time given: lead time is measured from the start of this run")
    result = MergeRelease(
        service=service,
        app_version=app_version,
        git_commit=git_commit,
        committed_at=committed_at,
        image_version=None,
        stages=[],
    )
    with tags(*change_tags(commit=git_commit, change_at=committed_at or started, trigger="merge")):
        # One gallery serves every stage (fleet.yaml shares it); the last stage's replication
        # targets are the ones the image must reach.
        build = image_pipeline(
            service=service,
            app_version=app_version,
            git_commit=git_commit,
            environment=environments[-1],
            return_state=True,
        )
        if not build.is_completed():
            error = build.result(raise_on_failure=False)
            result.stages = [
                StageOutcome(environment=e, outcome="not-run", detail="the image was not published")
                for e in environments
            ]
            _publish(result, f"The image pipeline failed: {error}")
            raise ReleaseChainFailed(
                f"{service} at {git_commit[:12]} was not released: the image pipeline failed: {error}"
            )
        published = build.result()
        result.image_version = published.gallery_version
        result.stages = release_through(service, published.gallery_version, environments)
    _publish(result, "")
    failed = chain_failure(result.stages)
    if failed is not None:
        raise ReleaseChainFailed(
            f"{service} {result.image_version} (commit {git_commit[:12]}) stopped in {failed.environment}: "
            f"{failed.outcome}: {failed.detail}"
        )
    return result


def _refuse_unless_newer(service: str, app_version: str, git_commit: str, environments: list[str]) -> None:
    running = {}
    for environment in environments:
        live = production_image(service, environment)
        if live.image is not None:
            running[environment] = live.image.app_version
    problems = versions_not_moving_forward(AppVersion.parse(app_version), running)
    if problems:
        raise MergeRefused(
            f"merge of {service} {app_version} (commit {git_commit[:12]}) refused, nothing was built: "
            + "; ".join(problems)
            + ". A redelivered or out-of-order merge never goes back; bump the version to ship this commit"
        )


def _publish(result: MergeRelease, problem: str) -> None:
    report = merge_report(result, problem)
    create_markdown_artifact(key=f"merge-{result.service}", markdown=report.markdown, description=report.description)
