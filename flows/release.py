"""Release a new image of a service to an environment: blue-green or canary, with automatic rollback.

The runbook, step by step:
  1. preflight: the image exists, passed its scan gate, is not rolled back, is replicated; the
     gateway is consistent; the live color is healthy; the canary steps are possible; the
     analysis windows fit the cloud's metric grain; there is quota for the new color.
  2. prepare the idle color on the new image, healthy by the gateway's own probes.
  3. test it through the private test listener, before any user traffic: smoke tests, then the
     service's integration tests and the policy's performance test when they are configured.
  4. canary: k new instances join the live color's canary pool, production moves to that pool in
     one write; the delivered split is verified from per-backend metrics, the signals judged.
  5. promote: the production rule moves to the new color in one write; judged again.
  6. finalize: autoscale follows (the new color's setting on, the old one's off), the image
     becomes eligible as latest, the old color scales to zero after the warm period.
The release policy's hooks run around this: pre_deploy (an expand migration) before step 2 changes
anything, and a failure refuses the release; post_promote (a contract migration) once step 6 is
done, and a failure is an alert: the release stays promoted. The policy's enable_flags go on between
step 6 and post_promote, on the same terms: only once promoted, and a failure is an alert.
Any failure after the first user request reached the new color rolls back at once: production
back to the stable pool in one gateway write.

Each pass of the loop observes the cloud, asks the planner for the next action and performs it,
so a re-run after a crash continues from where things really stand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.input import RunInput
from prefect.runtime import flow_run

from switchyard.core.analysis import Analysis
from switchyard.core.canary_verdict import CanaryOutcome
from switchyard.core.outcomes import ReleaseFailed, ReleaseRefused
from switchyard.core.release_report import ReleaseSummary, StepAnalysis
from switchyard.core.reports import release_report
from switchyard.core.rollout import (
    Action,
    Analyse,
    AnalysePromoted,
    AwaitApproval,
    ClearCanary,
    Done,
    Finalize,
    PrepareIdle,
    Promote,
    ReleaseProgress,
    ReleaseRequest,
    SetSplit,
    SmokeTest,
    Stop,
    Strategy,
    next_action,
    pre_deploy_due,
    reaches_users,
)
from switchyard.core.stages import StageResult
from switchyard.core.state import ServiceObservation
from tasks.canary import analyse_canary, analyse_promoted, clear_canary, set_canary_split, synthetic_load
from tasks.events import FLAGS_FAILED_STEP, HOOK_FAILED_STEP, emit, emit_flag_set, heartbeat, now
from tasks.flags import enable_flags
from tasks.history import change_tags_on_flow_runs_only
from tasks.hooks import run_post_promote_hook, run_pre_deploy_hook
from tasks.locks import LockBusy, hold_lock
from tasks.release import (
    ReleaseContext,
    SmokeTestFailed,
    finalize,
    load_release_context,
    mark_rolled_back,
    no_longer_finalized,
    observe_release,
    preflight,
    prepare_idle_color,
    promote,
    smoke_test,
)
from tasks.rollback import NothingToRollBackTo, roll_back
from tasks.stages import StageFailed, stages_after_smoke

MAX_STEPS = 40


class Approval(RunInput):
    approve: bool
    comment: str = ""


def _artifact_key(context: ReleaseContext) -> str:
    return f"release-{context.topology.service}-{context.topology.environment}"


@flow(name="release", log_prints=True)
def release(
    service: str,
    environment: str,
    image_version: str,
    strategy: Strategy | None = None,
    policy: str | None = None,
    lock_timeout_s: float = 600.0,
) -> ReleaseSummary:
    """Release `image_version` (a gallery version, e.g. 1002000.20261100.1) of `service` to
    `environment`. `strategy` overrides the release policy's; `policy` names the release policy
    (default: the environment's, its `release_policy`)."""
    with change_tags_on_flow_runs_only():
        return _release(service, environment, image_version, strategy, policy, lock_timeout_s)


def _release(
    service: str,
    environment: str,
    image_version: str,
    strategy: Strategy | None,
    policy: str | None,
    lock_timeout_s: float,
) -> ReleaseSummary:
    logger = get_run_logger()
    context = load_release_context(service, environment, image_version, policy, strategy)
    topology = context.topology
    summary = ReleaseSummary(
        service=service,
        environment=environment,
        image_version=image_version,
        strategy=context.policy.strategy.value,
        started_at=now(),
    )
    logger.info("waiting up to %.0f s for the release lock %s", lock_timeout_s, topology.release_lock)
    with _release_lock(context, lock_timeout_s), heartbeat(context, image_version):
        report = preflight(context)
        summary.live_before = report.live_color.value
        summary.plan = report.plan
        summary.add(now(), "preflight", "; ".join(report.checks))
        emit(context, "started", {"image": image_version, "strategy": context.policy.strategy.value})
        progress_id = cast(UUID, create_progress_artifact(progress=0.0, key=_artifact_key(context) + "-progress"))
        try:
            _run(context, summary, progress_id)
        finally:
            _publish_summary(context, summary)
    return summary


def _publish_summary(context: ReleaseContext, summary: ReleaseSummary) -> None:
    """The Markdown summary in the Prefect UI (one artifact key per service and environment)."""
    summary.finished_at = now()
    report = release_report(summary)
    create_markdown_artifact(key=_artifact_key(context), markdown=report.markdown, description=report.description)


@contextmanager
def _release_lock(context: ReleaseContext, timeout_s: float) -> Iterator[None]:
    """One release per service and environment; a second one waits, then is refused clearly."""
    topology = context.topology
    try:
        with hold_lock(topology.release_lock, timeout_s):
            yield
    except LockBusy:
        raise ReleaseRefused(
            f"another release of {topology.service} in {topology.environment} is running (lock "
            f"{topology.release_lock} held for more than {timeout_s:.0f} s); nothing was changed. "
            "Wait for it to finish, or start this one with a longer lock_timeout_s"
        ) from None


def _run(context: ReleaseContext, summary: ReleaseSummary, progress_id: UUID) -> None:
    logger = get_run_logger()
    request = ReleaseRequest(
        service=context.service.name,
        environment=context.environment.name,
        image_version=context.image_version,
        capacity=context.service.capacity,
    )
    progress = ReleaseProgress()
    for step_number in range(1, MAX_STEPS + 1):
        observed, target_image = observe_release(context)
        action: Action = next_action(observed, target_image, request, context.policy, progress)
        summary.add(now(), action.kind.replace("_", " "), action.reason)
        logger.info("step %d: %s: %s", step_number, action.kind, action.reason)
        update_progress_artifact(progress_id, progress=min(95.0, step_number * 100.0 / 12))
        if isinstance(action, Done):
            summary.outcome = action.outcome
            if summary.warnings:
                summary.outcome_detail = "Promoted, with a warning: " + "; ".join(summary.warnings)
            summary.live_after = observed.live_color.value if observed.live_color else None
            update_progress_artifact(progress_id, progress=100.0)
            return
        if isinstance(action, Stop):
            _stop(context, summary, observed, action.reason)
        if pre_deploy_due(observed, action, request.image_version, progress):
            _pre_deploy(context, summary)
            progress.pre_deploy_passed_for = request.image_version
        exposed = reaches_users(observed, action, request.image_version)
        if exposed and summary.first_user_request_at is None:
            summary.first_user_request_at = now()
        try:
            failed_analysis = _perform(context, summary, progress, action, observed)
        except Exception as error:
            if not exposed:
                summary.outcome = "failed"
                summary.outcome_detail = f"Failed before any user traffic reached {context.image_version}: {error}"
                raise
            summary.add(now(), "error", f"{type(error).__name__}: {error}")
            failed = str(error) if isinstance(error, NoVerdict) else f"{action.kind.replace('_', ' ')} failed: {error}"
            _roll_back(context, request, progress, summary, None, failed)
        if failed_analysis is not None:
            analysis, reason = failed_analysis
            _roll_back(context, request, progress, summary, analysis, reason)
        if isinstance(action, Finalize):
            # Outside the rollback's reach on purpose: nothing the flags or the hook do undoes the
            # release. Flags first: they belong to the version that just held full traffic and can be
            # turned off in a second, while a contract migration may run long, fail and wait for a
            # person; neither should keep users from the features the release was for. Each only
            # while the release is still the finalized one: after a rollback, flags of the version
            # taken out, or a contract migration the version put back cannot run without, would undo it.
            for step, after_promotion in (("enable flags", _enable_flags), ("post_promote hook", _post_promote)):
                if _still_finalized(context, summary, step):
                    after_promotion(context, summary)
    raise ReleaseFailed(f"the release did not converge in {MAX_STEPS} steps; see the timeline", summary)


def _pre_deploy(context: ReleaseContext, summary: ReleaseSummary) -> None:
    """The policy's pre_deploy hook, before this release's first cloud change; a failure refuses it."""
    try:
        result = run_pre_deploy_hook(context)
    except Exception as error:
        summary.outcome = "failed"
        summary.outcome_detail = f"The pre_deploy hook could not be run: {error}. Nothing was changed."
        raise
    if result is None:
        return
    summary.hooks.append(result)
    summary.add(now(), "pre_deploy hook", f"{result.target}: {result.detail}")
    if result.passed:
        return
    emit(context, HOOK_FAILED_STEP, {"image": context.image_version, "hook": "pre_deploy", "detail": result.detail})
    reason = (
        f"the pre_deploy hook `{result.target}` failed ({result.detail}); nothing of this release was changed "
        f"in the cloud. Fix what it reports (its output is in the run's logs and the release summary) and "
        f"release again"
    )
    summary.outcome = "refused"
    summary.outcome_detail = f"Refused: {reason}."
    raise ReleaseRefused(reason)


def _still_finalized(context: ReleaseContext, summary: ReleaseSummary, step: str) -> bool:
    """The release is still the finalized one; else `step` is skipped, and the timeline says why (the
    next observation stops the release)."""
    moved_on = no_longer_finalized(context)
    if moved_on is None:
        return True
    get_run_logger().warning("%s skipped: %s since finalize (rolled back or replaced)", step, moved_on)
    summary.add(now(), step, f"skipped: {moved_on} since finalize (rolled back or replaced)")
    return False


def _enable_flags(context: ReleaseContext, summary: ReleaseSummary) -> None:
    """The policy's enable_flags, once the release is promoted and finalized (a release that rolled
    back never gets here). A failure is an alert and a warning, never a rollback: the version passed
    under full traffic, and its flags can be turned on by hand (`switchyard flag set`)."""
    names = context.policy.enable_flags
    if not names:
        return
    run_id = flow_run.get_id()
    try:
        changes = enable_flags(context, names, f"release {run_id}" if run_id else "release")
    except Exception as error:
        detail = f"{type(error).__name__}: {error}"
        where = f"{context.service.name} --env {context.environment.name}"
        warning = (
            f"enable_flags could not turn on {', '.join(names)} ({detail}); the release stays promoted. See "
            f"what they read with `switchyard flag list {where}`, and turn them on with `switchyard flag set "
            f"{context.service.name} NAME on --env {context.environment.name}` once fixed"
        )
        get_run_logger().error(warning)
        summary.warnings.append(warning)
        summary.add(now(), "enable flags", f"failed: {detail}")
        emit(context, FLAGS_FAILED_STEP, {"image": context.image_version, "flags": names, "detail": detail})
        return
    summary.flags = changes
    summary.add(now(), "enable flags", "; ".join(change.describe() for change in changes))
    for change in changes:
        emit_flag_set(context, change, {"image": context.image_version})


def _post_promote(context: ReleaseContext, summary: ReleaseSummary) -> None:
    """The policy's post_promote hook, once the release is finalized. Its failure is an alert and a
    warning, never a rollback: the new version passed under full traffic, and the old one may not
    work against what a contract migration already removed."""
    try:
        result = run_post_promote_hook(context)
    except Exception as error:  # a hook that cannot even run is a warning too, for the same reason
        detail = f"could not be run: {type(error).__name__}: {error}"
    else:
        if result is None:
            return
        summary.hooks.append(result)
        summary.add(now(), "post_promote hook", f"{result.target}: {result.detail}")
        if result.passed:
            return
        detail = f"`{result.target}` failed ({result.detail})"
    warning = f"the post_promote hook {detail}; the release stays promoted. Run it again by hand once fixed"
    get_run_logger().error(warning)
    summary.warnings.append(warning)
    emit(context, HOOK_FAILED_STEP, {"image": context.image_version, "hook": "post_promote", "detail": detail})


def _stopped_elsewhere(
    context: ReleaseContext, request: ReleaseRequest, progress: ReleaseProgress
) -> tuple[ServiceObservation, str] | None:
    """Does the cloud say another run rolled this release back meanwhile?"""
    try:
        observed, target_image = observe_release(context)
        action = next_action(observed, target_image, request, context.policy, progress)
    except Exception:  # cannot tell: the caller rolls back, which is safe either way
        return None
    return (observed, action.reason) if isinstance(action, Stop) else None


def _stop(context: ReleaseContext, summary: ReleaseSummary, observed: ServiceObservation, reason: str) -> None:
    """Another run rolled this release's image back: the rollback stands; make sure the image stays
    marked (that run may have died between its gateway write and its mark) and end here."""
    mark_rolled_back(context, context.image_version)
    summary.add(now(), "stopped", reason)
    summary.outcome = "rolled-back"
    summary.outcome_detail = f"Stopped: {reason}. Nothing was undone by this run; the rollback stands."
    summary.live_after = observed.live_color.value if observed.live_color else None
    _publish_summary(context, summary)
    raise ReleaseFailed(f"release of {context.image_version} stopped: {reason}", summary)


def _perform(
    context: ReleaseContext,
    summary: ReleaseSummary,
    progress: ReleaseProgress,
    action: Action,
    observed: ServiceObservation,
) -> tuple[Analysis, str] | None:
    """Do one planned action; a failed analysis comes back as (analysis, reason) to roll back on."""
    if isinstance(action, PrepareIdle):
        prepare_idle_color(context, action)
    elif isinstance(action, ClearCanary):
        clear_canary(context, observed, action.members_leave)
    elif isinstance(action, SmokeTest):
        # The test stages, in order, all before users: a failure stops the release here.
        try:
            smoke = smoke_test(context, action.color)
        except SmokeTestFailed as failed:
            summary.tests.append(StageResult(stage="smoke", passed=False, detail=str(failed)))
            raise
        summary.tests.append(StageResult(stage="smoke", passed=True, detail=f"{len(smoke.checks)} checks passed"))
        for stage in stages_after_smoke(context):
            try:
                result = stage(context, action.color)
            except StageFailed as failed:
                summary.tests.append(failed.result)
                raise
            summary.tests.append(result)
            summary.add(now(), f"{result.stage} tests", result.detail)
        progress.smoke_passed_for = context.image_version
    elif isinstance(action, SetSplit | Analyse):
        # Set the split, then judge it at once: users already reach the new version.
        title = f"Canary {action.step.describe()}"
        with synthetic_load(context):
            split = set_canary_split(context, action.step, observed) if isinstance(action, SetSplit) else None
            with _no_verdict(f"the analysis of the canary {action.step.describe()}"):
                analysis = analyse_canary(context, action.step, observed, split)
        summary.analyses.append(StepAnalysis(title=title, verdict=analysis.verdict, split=analysis.split))
        _note_telemetry_failures(summary, title, analysis)
        if not analysis.passed:
            return analysis, f"canary at {action.step.share:.1%} failed"
        progress.passed_steps.append(action.step.canary_instances)
    elif isinstance(action, AwaitApproval):
        _await_approval(context, summary)
        progress.approved = True
    elif isinstance(action, Promote):
        promote(context, action.to_color, observed)
    elif isinstance(action, AnalysePromoted):
        with synthetic_load(context), _no_verdict("the analysis under full traffic"):
            analysis = analyse_promoted(context, observed)
        summary.analyses.append(StepAnalysis(title="Under full traffic", verdict=analysis.verdict))
        _note_telemetry_failures(summary, "Under full traffic", analysis)
        if analysis.verdict.outcome == CanaryOutcome.FAIL:
            return analysis, "the new version failed under full traffic"
        progress.promoted_analysis_passed = True
    elif isinstance(action, Finalize):
        finalize(context, action.live, observed)
    return None


def _note_telemetry_failures(summary: ReleaseSummary, title: str, analysis: Analysis) -> None:
    """Reads of the golden signals that failed and were read again: the verdict stands on the reads
    that worked, and the person who reads the summary should know the judge had to."""
    failures = analysis.telemetry_failures
    if failures:
        summary.warnings.append(
            f"{title}: {len(failures)} read(s) of the golden signals failed and were read again at a later "
            f"look (last: {failures[-1][:300]})"
        )


def _roll_back(
    context: ReleaseContext,
    request: ReleaseRequest,
    progress: ReleaseProgress,
    summary: ReleaseSummary,
    analysis: Analysis | None,
    reason: str,
) -> None:
    if analysis is not None:
        summary.failed_verdict_at = analysis.decided_at
        reasons = analysis.verdict.failing_reasons or []
        detail = "; ".join(r.message for r in reasons) or (analysis.split.reason if analysis.split else "")
        reason = f"{reason}: {detail}" if detail else reason
    else:
        summary.failed_verdict_at = now()
    try:
        report = roll_back(context, reason, context.image_version)
    except NothingToRollBackTo as error:
        summary.outcome = "failed"
        summary.outcome_detail = f"{reason}. It cannot be rolled back: {error}."
        _publish_summary(context, summary)
        raise ReleaseFailed(f"release of {context.image_version} failed: {reason}; {error}", summary) from None
    if report.restored_at is None:
        # Nothing was left to undo. A failed write or a failed analysis may have met someone else's
        # rollback (a canary that left the pool serves nothing): if so, that rollback stands.
        stopped = _stopped_elsewhere(context, request, progress)
        if stopped is not None:
            _stop(context, summary, *stopped)
    mark_rolled_back(context, report.abandoned_image)
    summary.traffic_restored_at = report.restored_at or now()
    summary.add(now(), "rolled back", report.action)
    summary.outcome = "rolled-back"
    summary.outcome_detail = f"Rolled back: {reason}"
    summary.live_after = report.stable_color.value if report.stable_color else None
    _publish_summary(context, summary)
    raise ReleaseFailed(f"release of {context.image_version} rolled back: {reason}", summary)


def _await_approval(context: ReleaseContext, summary: ReleaseSummary) -> None:
    logger = get_run_logger()
    emit(context, "awaiting-approval", {"image": context.image_version})
    logger.info("waiting up to %.0f s for approval in the Prefect UI", context.policy.approval_timeout_s)
    try:
        answer = pause_flow_run(wait_for_input=Approval, timeout=int(context.policy.approval_timeout_s))
    except Exception as error:  # a timeout: nobody approved
        raise ApprovalMissing(f"no approval within {context.policy.approval_timeout_s:.0f} s") from error
    if not answer.approve:
        raise ApprovalMissing(f"release rejected: {answer.comment or 'no comment'}")
    summary.add(now(), "approved", answer.comment or "approved in the UI")


class ApprovalMissing(Exception):
    """Nobody approved the switch in time, or someone rejected it."""


class NoVerdict(Exception):
    """An analysis that ended in an error instead of a verdict: the rollback names the analysis, not
    the step it was part of (a split that was set is not what failed)."""


@contextmanager
def _no_verdict(analysis: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        raise NoVerdict(f"{analysis} reached no verdict: {error}") from error
