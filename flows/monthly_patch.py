"""The monthly patch: every service of the fleet rebuilt on this month's patch level, and released.

The runbook:
  1. staging wave, every service at once: find what production runs now (gateway -> live scale
     set -> gallery tags; a service with nothing live there is reported and skipped), rebuild that
     image (same base, app version and commit) on this month's patch level (a forced build gets the
     next rebuild revision of the month, scanned and published like any other), and release it to
     each environment before production in order, the last one holding it for its soak time; a
     service stops at its first environment that does not go live;
  2. production, in batches of `production_batch_size` (lower `patch_wave` first): the services
     that passed staging; before each batch, once more than `max_failed_share` of the services tried
     failed, no further service is started, and the rest are reported as held.
A Markdown artifact (`monthly-patch`) shows the fleet: old -> new version and each environment's
outcome. The run fails when any service failed or was held, after every service had its turn.

How the services fan out. A monthly patch started from its deployment (the schedule, the UI)
runs on a worker, and splits each step's services (staging, then each production batch) into runs
of the `patch-services` deployment, at most `services_per_run` services each: the work pool spreads
the runs over its workers (and machines), each run patches its services side by side as threads of
its one process, shows in the UI as a subflow run, and leaves a `patch-<service>` artifact per
service. Not a run per service: a run is a process that spends seconds of CPU importing Python,
Prefect and the Azure SDK before it does anything, which on a small machine costs more than the
patch itself. The parent waits for the runs and reads each service's outcome back from its
artifact, which lives in Prefect's database, so a run on another machine reports just the same.
Started in-process instead (the command line, tests, where there may be no worker), the services
run here as tasks in threads, MAX_PARALLEL at once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.futures import wait
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.image_pipeline import image_pipeline
from flows.release_on_merge import DEFAULT_ENVIRONMENTS, release_through
from switchyard.core.outcomes import MonthlyPatchFailed
from switchyard.core.reports import monthly_patch_report
from switchyard.core.routine import (
    MAX_SERVICES_PER_RUN,
    PatchRollout,
    ServicePatch,
    StageOutcome,
    after_production,
    chain_failure,
    held_back,
    not_run_in,
    stopped_detail,
)
from tasks.history import change_tags
from tasks.routine import check_environments, fleet_services, patch_waves_of, production_image

# In-process, builds and releases of different services run side by side, a few at a time: one
# process's threads share one machine's Packer builds and the Prefect database.
MAX_PARALLEL = 4
# The deployment of one step for a group of services (prefect.yaml): flow name / deployment name.
PATCH_SERVICES_DEPLOYMENT = "patch-services/patch-services"
# How often the parent looks at its children: one query for all of them.
CHILD_POLL_S = 1.0


class ServicePatchFailed(Exception):
    """This service could not be patched; its `patch-<service>` artifact says why."""


# A service's part of the monthly patch: rebuilt and released to every environment before
# production ("staging"), or the version staging passed released to production ("production").
PatchStep = Literal["staging", "production"]


def patch_key(service: str) -> str:
    return f"patch-{service}"


def _patch_step(service: str, environments: list[str], step: PatchStep, staged: ServicePatch | None) -> ServicePatch:
    """One step of one service's patch. Never raises for the service's own trouble: a failure is
    this service's result, so the other services carry on."""
    if step == "staging":
        return _rebuild_and_stage(service, environments)
    if staged is None or staged.service != service or staged.result != "staged" or staged.new_version is None:
        raise ValueError(f"the production step of {service} needs the outcome of its staging step, staged")
    return _to_production(staged, environments[-1])


def _rebuild_and_stage(service: str, environments: list[str]) -> ServicePatch:
    """Rebuild what production runs on this month's patch level and release it to every environment
    before production, the last of them holding it for its soak time."""
    logger = get_run_logger()
    *before, production = environments
    try:
        live = production_image(service, production)
    except Exception as error:
        return ServicePatch(service=service, result="failed", detail=f"could not read {production}: {error}")
    if live.image is None:
        logger.info("%s: skipped: %s", service, live.reason)
        return ServicePatch(service=service, result="skipped", detail=f"nothing in {production}: {live.reason}")
    image = live.image
    change_at = datetime.now(UTC)
    patch = ServicePatch(
        service=service,
        result="failed",
        old_version=image.gallery_version,
        git_commit=image.git_commit,
        change_at=change_at,
    )
    with tags(*change_tags(commit=image.git_commit, change_at=change_at, trigger="monthly-patch")):
        build = image_pipeline(
            service=service,
            app_version=str(image.app_version),
            base=str(image.base),
            environment=production,
            force=True,
            git_commit=image.git_commit,
            return_state=True,
        )
        if not build.is_completed():
            patch.detail = f"the rebuild failed: {build.result(raise_on_failure=False)}"
            patch.stages = [StageOutcome(environment=e, outcome="not-run") for e in environments]
            return patch
        published = build.result()
        patch.new_version = published.gallery_version
        patch.stages = release_through(service, published.gallery_version, before, soak_last=True)
    failed = chain_failure(patch.stages)
    if failed is None:
        patch.result = "staged"
        patch.detail = f"patch level {published.patch_level}"
        return patch
    patch.detail = stopped_detail(failed)
    return not_run_in(patch, production, f"stopped: {failed.environment} {failed.outcome}")


def _to_production(staged: ServicePatch, production: str) -> ServicePatch:
    """Release the version staging passed to production, as the same change (commit, start)."""
    assert staged.new_version is not None and staged.git_commit is not None and staged.change_at is not None
    with tags(*change_tags(commit=staged.git_commit, change_at=staged.change_at, trigger="monthly-patch")):
        stages = release_through(staged.service, staged.new_version, [production])
    return after_production(staged, stages)


@task(name="patch one service", cache_policy=NO_CACHE)
def patch_service(
    service: str, environments: list[str], step: PatchStep, staged: ServicePatch | None = None
) -> ServicePatch:
    """One step of one service's patch in this process (the in-process fan-out)."""
    return _patch_step(service, environments, step, staged)


# (Prefect's own annotation of task_runner is narrower than the runners it ships.)
@flow(name="patch-services", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_SERVICES_PER_RUN))  # type: ignore[arg-type]
def patch_services_flow(
    services: list[str],
    step: PatchStep,
    environments: list[str] = DEFAULT_ENVIRONMENTS,
    staged: list[ServicePatch] | None = None,
) -> list[ServicePatch]:
    """One step of the monthly patch for a group of services, side by side, as its own run (the
    monthly patch starts them): `staging` rebuilds what production runs and releases it to every
    environment before the last; `production` releases what each service's staging step passed
    (`staged`: their outcomes) to the last. Each service's outcome so far is kept as the table
    artifact `patch-<service>`; the run fails when any service's step failed."""
    environments = check_environments(environments)
    names = sorted(set(services))
    if not names or len(names) > MAX_SERVICES_PER_RUN:
        raise ValueError(f"a patch-services run takes 1 to {MAX_SERVICES_PER_RUN} services, not {len(names)}")
    outcomes = {patch.service: patch for patch in staged or []}
    results = _patch_in_threads(names, environments, step, outcomes)
    for result in results:
        create_table_artifact(
            key=patch_key(result.service),
            table=[json.loads(result.model_dump_json())],
            description=f"Monthly patch of {result.service}, {step} step: {result.result}",
        )
    failed = [result for result in results if result.result == "failed"]
    if failed:
        raise ServicePatchFailed("; ".join(f"{r.service} not patched: {r.detail}" for r in failed))
    return results


# (Prefect's own annotation of task_runner is narrower than the runners it ships.)
@flow(name="monthly-patch", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL))  # type: ignore[arg-type]
def monthly_patch(
    services: list[str] | None = None,
    environments: list[str] = DEFAULT_ENVIRONMENTS,
    production_batch_size: int = PatchRollout.model_fields["production_batch_size"].default,
    max_failed_share: float = PatchRollout.model_fields["max_failed_share"].default,
    services_per_run: int = PatchRollout.model_fields["services_per_run"].default,
) -> list[ServicePatch]:
    """Rebuild `services` (default: every service block) on this month's patch level, with the app
    version and commit their production runs, and release them to `environments` in order (the
    last one is production: what it runs is what gets patched): every service through the
    environments before production first, then production `production_batch_size` services at a
    time, starting no further service once more than `max_failed_share` of those tried failed.
    From its deployment, each step runs as patch-services runs of `services_per_run` services."""
    logger = get_run_logger()
    environments = check_environments(environments)
    rollout = PatchRollout(
        production_batch_size=production_batch_size,
        max_failed_share=max_failed_share,
        services_per_run=services_per_run,
    )
    production = environments[-1]
    names = sorted(set(services)) if services is not None else fleet_services()
    before = ", ".join(environments[:-1]) or "no environment"
    logger.info("patching %d service(s): rebuilt and released to %s, all at once", len(names), before)
    first = _run_step(names, environments, "staging", {}, rollout)
    results = {patch.service: patch for patch in first}
    ready = [patch.service for patch in first if patch.result == "staged"]
    logger.info(
        "staging wave done: %s", ", ".join(f"{patch.service} {patch.result}" for patch in first) or "no service"
    )
    batches = rollout.production_batches(patch_waves_of(ready))
    for number, batch in enumerate(batches, start=1):
        reason = rollout.stop_reason(list(results.values()))
        if reason is not None:
            waiting = [service for rest in batches[number - 1 :] for service in rest]
            logger.warning("%s: holding back %s from %s", reason, ", ".join(waiting), production)
            for service in waiting:
                results[service] = held_back(results[service], production, reason)
            break
        logger.info("%s batch %d of %d: %s", production, number, len(batches), ", ".join(batch))
        staged = {service: results[service] for service in batch}
        for patched in _run_step(batch, environments, "production", staged, rollout):
            if patched.result == "failed" and not patched.stages:
                # The step itself broke (a crashed run, a task error) before it recorded a stage.
                failure = StageOutcome(environment=production, outcome="failed", detail=patched.detail)
                patched = after_production(results[patched.service], [failure])
            results[patched.service] = patched
    ordered = [results[name] for name in names]
    _publish(ordered, environments)
    unpatched = [r for r in ordered if r.result in ("failed", "held")]
    if unpatched:
        raise MonthlyPatchFailed(
            f"{len(unpatched)} of {len(ordered)} service(s) not patched: "
            + "; ".join(f"{r.service}: {r.detail}" for r in unpatched),
            ordered,
        )
    return ordered


def _run_step(
    names: list[str],
    environments: list[str],
    step: PatchStep,
    staged: dict[str, ServicePatch],
    rollout: PatchRollout,
) -> list[ServicePatch]:
    """One step for each of `names`, side by side (`staged`: the staging step's outcomes, for the
    production step): as deployment runs of `services_per_run` services when this run came from a
    deployment (the work pool spreads them), else as threads of this run."""
    if current_deployment.id is not None:
        return _patch_as_deployment_runs(rollout.run_groups(names), environments, step, staged)
    return _patch_in_threads(names, environments, step, staged)


def _patch_in_threads(
    names: list[str], environments: list[str], step: PatchStep, staged: dict[str, ServicePatch]
) -> list[ServicePatch]:
    futures = [patch_service.submit(name, environments, step, staged.get(name)) for name in names]
    wait(futures)
    results: list[ServicePatch] = []
    for name, future in zip(names, futures, strict=True):
        try:
            results.append(future.result())
        except Exception as error:  # the task itself broke; still report the service
            results.append(ServicePatch(service=name, result="failed", detail=f"{type(error).__name__}: {error}"))
    return results


def _patch_as_deployment_runs(
    groups: list[list[str]], environments: list[str], step: PatchStep, staged: dict[str, ServicePatch]
) -> list[ServicePatch]:
    """One `patch-services` run per group of services, all scheduled at once; wait for all, read
    each service's outcome.

    The idempotency key ties each run to this run, step and group: a retry of this run finds the
    runs it already started instead of patching twice."""
    logger = get_run_logger()
    parent = current_flow_run.id
    children: dict[str, FlowRun] = {}
    for group in groups:
        # (called from a sync flow, run_deployment returns the FlowRun itself)
        run: FlowRun = run_deployment(  # type: ignore[assignment]
            PATCH_SERVICES_DEPLOYMENT,
            parameters={
                "services": group,
                "step": step,
                "environments": environments,
                "staged": [json.loads(staged[name].model_dump_json()) for name in group if name in staged],
            },
            timeout=0,
            idempotency_key=f"monthly-patch-{parent}-{step}-{'+'.join(group)}",
            flow_run_name=f"patch-{step}-{group_label(group)}",
        )
        children |= dict.fromkeys(group, run)
    logger.info("started %d patch-services run(s) (%s) for %d service(s)", len(groups), step, len(children))
    finished = _wait_for_runs({run.id: run.name for run in children.values()})
    return [_child_outcome(name, finished[run.id]) for name, run in children.items()]


def group_label(group: list[str]) -> str:
    """How a run names its services: all of them when few, else the first and how many more."""
    return "-".join(group) if len(group) <= 2 else f"{group[0]}-and-{len(group) - 1}-more"


def _wait_for_runs(runs: dict[UUID, str]) -> dict[UUID, FlowRun]:
    """Poll every child with one query a second until each is in a final state (no timeout: the
    children's own timeouts and the release locks bound them, as they bound the in-process path)."""
    logger = get_run_logger()
    done: dict[UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        while len(done) < len(runs):
            pending = [run_id for run_id in runs if run_id not in done]
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=pending))):
                if run.state is not None and run.state.is_final():
                    done[run.id] = run
                    logger.info("%s: %s", runs[run.id], run.state.name)
            if len(done) < len(runs):
                time.sleep(CHILD_POLL_S)
    return done


def _child_outcome(service: str, run: FlowRun) -> ServicePatch:
    """What the child recorded in its `patch-<service>` artifact; a child that ended without one
    (crashed, cancelled) is this service's failure, with its state."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[patch_key(service)]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])
            ),
            limit=1,
        )
    if artifacts:
        data = artifacts[0].data
        rows = json.loads(data) if isinstance(data, str) else data
        if isinstance(rows, list) and rows:
            return ServicePatch.model_validate(rows[0])
    state = run.state.name if run.state is not None else "unknown"
    message = run.state.message if run.state is not None and run.state.message else "no outcome recorded"
    return ServicePatch(service=service, result="failed", detail=f"run {run.name} ended {state}: {message}")


def _publish(results: list[ServicePatch], environments: list[str]) -> None:
    report = monthly_patch_report(results, environments, datetime.now(UTC))
    create_markdown_artifact(key="monthly-patch", markdown=report.markdown, description=report.description)
