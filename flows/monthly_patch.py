"""The monthly patch: every service of the fleet rebuilt on this month's patch level, and released.

The runbook, per service:
  1. find what production runs now (gateway -> live scale set -> gallery tags); a service with
     nothing live there is reported and skipped;
  2. rebuild that image (same base, app version and commit) on this month's patch level: a forced
     build gets the next rebuild revision of the month, scanned and published like any other;
  3. release it to each environment in order (staging, then production), stopping this service at
     its first environment that does not go live; the other services of its wave carry on.
Services go in waves (each service's `patch_wave`, 1 first): a wave starts once the one before it
is done, and a wave in which a service failed holds back the waves after it.
A Markdown artifact (`monthly-patch`) shows the fleet: old -> new version and each environment's
outcome. The run fails when any service failed, after every service had its turn.

How the services fan out. A monthly patch started from its deployment (the schedule, the UI)
runs on a worker, and gives each service its own run of the `patch-service` deployment: the work
pool spreads them over its workers (and machines), and each shows in the UI as a subflow run with
its own logs and a `patch-<service>` artifact. The parent waits for them all and reads each
service's outcome back from that artifact, which lives in Prefect's database, so a child that ran
on another machine reports just the same. Started in-process instead (the command line, tests,
where there may be no worker), the services run here as tasks in threads, MAX_PARALLEL at once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
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
from switchyard.core.routine import ServicePatch, StageOutcome, chain_failure, held_back, patch_waves
from tasks.history import change_tags
from tasks.routine import check_environments, fleet_services, patch_waves_of, production_image

# In-process, builds and releases of different services run side by side, a few at a time: one
# process's threads share one machine's Packer builds and the Prefect database.
MAX_PARALLEL = 4
# The deployment of one service's patch (prefect.yaml): flow name / deployment name.
PATCH_SERVICE_DEPLOYMENT = "patch-service/patch-service"
# How often the parent looks at its children: one query for all of them.
CHILD_POLL_S = 1.0


class ServicePatchFailed(Exception):
    """This service could not be patched; its `patch-<service>` artifact says why."""


def patch_key(service: str) -> str:
    return f"patch-{service}"


def _patch(service: str, environments: list[str]) -> ServicePatch:
    """Rebuild what production runs on this month's patch level and release it down the chain.

    Never raises: a failure is this service's result, so the other services carry on."""
    logger = get_run_logger()
    production = environments[-1]
    try:
        live = production_image(service, production)
    except Exception as error:
        return ServicePatch(service=service, result="failed", detail=f"could not read {production}: {error}")
    if live.image is None:
        logger.info("%s: skipped: %s", service, live.reason)
        return ServicePatch(service=service, result="skipped", detail=f"nothing in {production}: {live.reason}")
    image = live.image
    patch = ServicePatch(service=service, result="failed", old_version=image.gallery_version)
    with tags(*change_tags(commit=image.git_commit, change_at=datetime.now(UTC), trigger="monthly-patch")):
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
        patch.stages = release_through(service, published.gallery_version, environments)
    failed = chain_failure(patch.stages)
    if failed is None:
        patch.result = "patched"
        patch.detail = f"patch level {published.patch_level}"
    else:
        patch.detail = f"stopped in {failed.environment}: {failed.outcome}"
    return patch


@task(name="patch one service", cache_policy=NO_CACHE)
def patch_service(service: str, environments: list[str]) -> ServicePatch:
    """One service's patch in this process (the in-process fan-out)."""
    return _patch(service, environments)


@flow(name="patch-service", log_prints=True)
def patch_service_flow(service: str, environments: list[str] = DEFAULT_ENVIRONMENTS) -> ServicePatch:
    """One service's monthly patch, as its own run (the monthly patch starts one per service).
    Its outcome is kept as the table artifact `patch-<service>`; the run fails when the service
    could not be patched."""
    environments = check_environments(environments)
    result = _patch(service, environments)
    create_table_artifact(
        key=patch_key(service),
        table=[json.loads(result.model_dump_json())],
        description=f"Monthly patch of {service}: {result.result}",
    )
    if result.result == "failed":
        raise ServicePatchFailed(f"{service} not patched: {result.detail}")
    return result


# (Prefect's own annotation of task_runner is narrower than the runners it ships.)
@flow(name="monthly-patch", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL))  # type: ignore[arg-type]
def monthly_patch(
    services: list[str] | None = None,
    environments: list[str] = DEFAULT_ENVIRONMENTS,
) -> list[ServicePatch]:
    """Rebuild `services` (default: every service block) on this month's patch level, with the app
    version and commit their production runs, and release them to `environments` in order (the
    last one is production: what it runs is what gets patched)."""
    logger = get_run_logger()
    environments = check_environments(environments)
    names = sorted(set(services)) if services is not None else fleet_services()
    waves = patch_waves(patch_waves_of(names))
    logger.info(
        "patching %d service(s) in %d wave(s): %s",
        len(names),
        len(waves),
        " | ".join(", ".join(wave) for wave in waves) or "none",
    )
    results: list[ServicePatch] = []
    for number, wave in enumerate(waves, start=1):
        logger.info("wave %d of %d: %s", number, len(waves), ", ".join(wave))
        if current_deployment.id is not None:
            done = _patch_as_deployment_runs(wave, environments)
        else:
            done = _patch_in_threads(wave, environments)
        results += done
        logger.info(
            "%d of %d service(s) done: %s",
            len(results),
            len(names),
            ", ".join(f"{r.service} {r.result}" for r in done),
        )
        failed = [r for r in done if r.result == "failed"]
        if failed and number < len(waves):
            # A wave that failed stops the waves after it: a bad patch level or a broken base image
            # shows in the first services, before it reaches the rest of the fleet.
            later = [service for rest in waves[number:] for service in rest]
            logger.warning("wave %d failed; holding back %d service(s): %s", number, len(later), ", ".join(later))
            results += held_back(later, failed)
            break
    _publish(results, environments)
    failed = [r for r in results if r.result in ("failed", "held")]
    if failed:
        raise MonthlyPatchFailed(
            f"{len(failed)} of {len(results)} service(s) not patched: "
            + "; ".join(f"{r.service}: {r.detail}" for r in failed),
            results,
        )
    return results


def _patch_in_threads(names: list[str], environments: list[str]) -> list[ServicePatch]:
    futures = [patch_service.submit(name, environments) for name in names]
    wait(futures)
    results: list[ServicePatch] = []
    for name, future in zip(names, futures, strict=True):
        try:
            results.append(future.result())
        except Exception as error:  # the task itself broke; still report the service
            results.append(ServicePatch(service=name, result="failed", detail=f"{type(error).__name__}: {error}"))
    return results


def _patch_as_deployment_runs(names: list[str], environments: list[str]) -> list[ServicePatch]:
    """One `patch-service` run per service, all scheduled at once; wait for all, read each outcome.

    The idempotency key ties each child to this run and service: a retry of this run finds the
    children it already started instead of patching twice."""
    logger = get_run_logger()
    parent = current_flow_run.id
    children: dict[str, FlowRun] = {}
    for name in names:
        # (called from a sync flow, run_deployment returns the FlowRun itself)
        children[name] = run_deployment(  # type: ignore[assignment]
            PATCH_SERVICE_DEPLOYMENT,
            parameters={"service": name, "environments": environments},
            timeout=0,
            idempotency_key=f"monthly-patch-{parent}-{name}",
            flow_run_name=f"patch-{name}",
        )
    logger.info("started %d patch-service run(s); waiting for them", len(children))
    finished = _wait_for_runs({run.id: name for name, run in children.items()})
    return [_child_outcome(name, finished[children[name].id]) for name in names]


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
