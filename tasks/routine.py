"""Tasks the routine flows share: monthly patch and release on merge.

Their parameters' checks, which services the fleet has, and which image a service's production
runs now (from the gateway and the gallery: the cloud is the truth,
docs/decisions/0004-truth-lives-in-the-cloud.md). What a chain of releases reports is
switchyard/core/routine.py.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.states import State
from pydantic import BaseModel

from blocks import ServiceBlock, UnknownNameError, load_environment, load_service
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.image_metadata import ImageMetadata, ImageMetadataError
from switchyard.core.routine import soak_problem
from switchyard.core.versions import AppVersion, VersionError

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
# A commit time this far ahead of our clock is a mistake, not skew.
_CLOCK_SKEW = timedelta(minutes=5)


# Input checks: refuse bad parameters before anything is built --------------------------------------


def check_environments(environments: list[str]) -> list[str]:
    if not environments:
        raise ValueError("environments is empty: name at least one, e.g. ['staging', 'production']")
    duplicates = sorted({e for e in environments if environments.count(e) > 1})
    if duplicates:
        raise ValueError(f"environments lists {', '.join(duplicates)} more than once: {environments}")
    return list(environments)


def check_commit(git_commit: str) -> str:
    if not _COMMIT.fullmatch(git_commit):
        raise ValueError(f"git_commit {git_commit!r} is not a commit id: 7 to 64 lower-case hex digits")
    return git_commit


def check_app_version(app_version: str) -> str:
    try:
        return str(AppVersion.parse(app_version))
    except VersionError as error:
        raise ValueError(f"app_version {app_version!r} is invalid: {error}") from None


def check_committed_at(committed_at: datetime | None, now: datetime) -> datetime | None:
    if committed_at is None:
        return None
    if committed_at.tzinfo is None:
        raise ValueError(
            f"committed_at {committed_at.isoformat()} has no timezone: send it as ISO 8601 with an offset, "
            "e.g. 2026-11-26T10:00:00+00:00"
        )
    if committed_at - now > _CLOCK_SKEW:
        raise ValueError(f"committed_at {committed_at.isoformat()} is in the future (now {now.isoformat()})")
    return committed_at.astimezone(UTC)


# The fleet ---------------------------------------------------------------------------------------


@task(name="list the fleet's services", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def fleet_services() -> list[str]:
    """Every service block's name: the fleet as configured in Prefect."""
    with get_client(sync_client=True) as client:
        documents = client.read_block_documents_by_type(ServiceBlock.get_block_type_slug(), include_secrets=False)
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


@task(name="read the services' patch waves", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def patch_waves_of(services: list[str]) -> dict[str, int]:
    """Each service's monthly patch wave (its place in the production batches), from its block (what
    the UI edits); a service whose block is gone since its staging step goes first."""
    waves = {}
    for service in services:
        try:
            waves[service] = load_service(service).patch_wave
        except UnknownNameError:
            waves[service] = 1
    return waves


class ProductionImage(BaseModel):
    """What an environment serves now, or why there is nothing to patch."""

    service: str
    environment: str
    image: ImageMetadata | None = None
    reason: str = ""  # when image is None: why the service is skipped


def _retry_cloud_errors(task: object, task_run: object, state: State) -> bool:
    """Retry what a retry can fix (the cloud's hiccups), not a wrong name or a missing image."""
    try:
        state.result()
    except (ValueError, LookupError):
        return False
    except Exception:
        return True
    return False


@task(
    name="find the image production runs",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_cloud_errors,
)
def production_image(service: str, environment: str) -> ProductionImage:
    """The image every live instance runs, read from the gateway, the scale set and the gallery.

    An unknown service raises (a mistake to report); a service without anything live there is a
    normal answer (skipped)."""
    logger = get_run_logger()
    service_config = load_service(service)  # raises UnknownNameError, naming the known services
    if environment not in service_config.frontend_ports:
        return ProductionImage(
            service=service, environment=environment, reason=f"{service} is not deployed to {environment}"
        )
    context = ServiceContext(environment=load_environment(environment), service=service_config)
    cloud = cloud_for(context)
    gateway = cloud.router.routes(context.topology)
    if not gateway.exists or gateway.live_color is None:
        return ProductionImage(
            service=service, environment=environment, reason=f"{context.topology.gateway} is not provisioned"
        )
    live = cloud.scale_sets.observe(context.topology, gateway.live_color)
    version = live.runs_only
    if version is None:
        reason = (
            f"{live.name} runs no image yet"
            if not live.instances
            else f"{live.name} runs mixed versions {sorted({i.image_version or '?' for i in live.instances})}"
        )
        return ProductionImage(service=service, environment=environment, reason=reason)
    observed = cloud.gallery.image_version(service, version)
    if not observed.exists:
        raise LookupError(f"{service} in {environment} runs {version}, which is not in the gallery any more")
    try:
        metadata = ImageMetadata.from_tags(observed.tags)
    except ImageMetadataError as error:
        raise LookupError(
            f"{service} in {environment} runs {version}, whose gallery tags are unusable: {error}"
        ) from None
    logger.info(
        "%s in %s runs %s (app %s, commit %s)",
        service,
        environment,
        version,
        metadata.app_version,
        metadata.git_commit[:12],
    )
    return ProductionImage(service=service, environment=environment, image=metadata)


@task(name="soak", cache_policy=NO_CACHE)
def soak(service: str, environment: str, image_version: str) -> str | None:
    """Watch `image_version` hold in `environment` for the environment's soak time before a chain
    moves on; the problem that stopped it, or None (also when the environment has no soak time)."""
    logger = get_run_logger()
    context = ServiceContext(environment=load_environment(environment), service=load_service(service))
    soak_s = context.environment.soak_s
    if soak_s <= 0:
        return None
    logger.info("soaking %s %s in %s for %g s before the next environment", service, image_version, environment, soak_s)
    cloud = cloud_for(context)
    # A look every few seconds (a tenth of the soak, between 1 s and 30 s): often enough to stop a chain
    # soon after a person's rollback, rarely enough not to weigh on the cloud's read limits.
    interval = min(30.0, max(1.0, soak_s / 10))
    deadline = time.monotonic() + soak_s
    while True:
        problem = soak_problem(cloud.observe(context.topology), image_version)
        if problem is not None:
            logger.error("%s %s did not hold in %s: %s", service, image_version, environment, problem)
            return problem
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.info("%s %s held in %s for %g s", service, image_version, environment, soak_s)
            return None
        time.sleep(min(interval, remaining))
