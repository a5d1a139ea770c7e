"""The monthly patch: every service of the fleet rebuilt on this month's patch level, and released.

The runbook, per service (services fan out as tasks, up to MAX_PARALLEL at once):
  1. find what production runs now (gateway -> live scale set -> gallery tags); a service with
     nothing live there is reported and skipped;
  2. rebuild that image (same base, app version and commit) on this month's patch level: a forced
     build gets the next rebuild revision of the month, scanned and published like any other;
  3. release it to each environment in order (staging, then production), stopping this service at
     its first environment that does not go live; the other services carry on.
A Markdown artifact (`monthly-patch`) shows the fleet: old -> new version and each environment's
outcome. The run fails when any service failed, after every service had its turn.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.image_pipeline import image_pipeline
from flows.release_on_merge import DEFAULT_ENVIRONMENTS, release_through
from switchyard.core.reports import monthly_patch_report
from switchyard.core.routine import ServicePatch, StageOutcome, chain_failure
from tasks.history import change_tags
from tasks.routine import check_environments, fleet_services, production_image

# Builds and releases of different services are independent; a few at a time keeps one machine's
# Packer builds and the Prefect database (SQLite locally) comfortable.
MAX_PARALLEL = 4


class MonthlyPatchFailed(Exception):
    """At least one service could not be patched; the artifact says which and why."""


@task(name="patch one service", cache_policy=NO_CACHE)
def patch_service(service: str, environments: list[str]) -> ServicePatch:
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
    logger.info("patching %d service(s): %s", len(names), ", ".join(names) or "none")
    futures = [patch_service.submit(name, environments) for name in names]
    wait(futures)
    results: list[ServicePatch] = []
    for name, future in zip(names, futures, strict=True):
        try:
            results.append(future.result())
        except Exception as error:  # the task itself broke; still report the service
            results.append(ServicePatch(service=name, result="failed", detail=f"{type(error).__name__}: {error}"))
    _publish(results, environments)
    failed = [r for r in results if r.result == "failed"]
    if failed:
        raise MonthlyPatchFailed(
            f"{len(failed)} of {len(results)} service(s) not patched: "
            + "; ".join(f"{r.service}: {r.detail}" for r in failed)
        )
    return results


def _publish(results: list[ServicePatch], environments: list[str]) -> None:
    report = monthly_patch_report(results, environments, datetime.now(UTC))
    create_markdown_artifact(key="monthly-patch", markdown=report.markdown, description=report.description)
