"""Release tasks: each observes, acts through a port, and verifies what it did.

No task trusts what an earlier one remembered: each reads the cloud again, so any task can be
re-run after a crash. Tasks never cache results (a cached observation would be a lie). The canary's
tasks are in tasks/canary.py, the way back in tasks/rollback.py, events in tasks/events.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from blocks import load_environment, load_service, release_policy_for
from switchyard.cloud.errors import StaleStateError
from switchyard.cloud.factory import cloud_for
from switchyard.cloud.readonly import read_release_inputs
from switchyard.core.config import ServiceContext
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import ReleaseRefused
from switchyard.core.plan import ReleasePlan, plan_release
from switchyard.core.polling import FIRST_LOOK_S, pauses
from switchyard.core.preflight import check_release, version_refusal
from switchyard.core.rollout import (
    TAG_PHASE,
    TAG_PREVIOUS,
    TAG_RELEASE,
    TAG_RETIRE_AFTER,
    CanaryStep,
    Phase,
    PrepareIdle,
    ReleasePolicy,
    Strategy,
    already_scaled_down,
    retirement,
    warm_period_pending,
)
from switchyard.core.state import ImageObservation, ScaleSetObservation, ServiceObservation
from switchyard.core.topology import Color, Topology
from switchyard.stages.smoke import run_smoke_tests
from tasks.events import emit, now


class ReleaseContext(ServiceContext):
    policy: ReleasePolicy
    image_version: str


class SmokeTestFailed(Exception):
    """The new color failed its smoke tests; no user traffic reached it."""


class VerificationFailed(Exception):
    """A write went through but the cloud does not show its effect."""


def retry_unless(*hopeless: type[BaseException]) -> Callable[[object, object, State], bool]:
    """A Prefect retry condition: retry on anything but the failures no retry can fix."""

    def condition(task: object, task_run: object, state: State) -> bool:
        try:
            state.result()
        except hopeless:
            return False
        except Exception:
            return True
        return True

    return condition


# Configuration and preflight --------------------------------------------------------------------


@task(name="load release configuration", cache_policy=NO_CACHE)
def load_release_context(
    service: str, environment: str, image_version: str, policy: str | None, strategy: Strategy | None
) -> ReleaseContext:
    """`policy` None: the environment's own release policy."""
    service_config = load_service(service)
    environment_config = load_environment(environment)
    release_policy = release_policy_for(environment_config, policy, strategy)
    service_config.ports_in(environment)  # the service must be deployed to that environment
    return ReleaseContext(
        environment=environment_config,
        service=service_config,
        policy=release_policy,
        image_version=image_version,
    )


class PreflightReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    live_color: Color
    live_image: str | None
    canary_plan: list[CanaryStep]
    checks: list[str]
    plan: ReleasePlan  # what this release will do from here (the first section of its summary)


@task(name="preflight checks", cache_policy=NO_CACHE)
def preflight(context: ReleaseContext) -> PreflightReport:
    """Everything that can be known before the first change; every problem found is reported."""
    logger = get_run_logger()
    refusal = version_refusal(context.image_version)
    if refusal is not None:
        raise ReleaseRefused(refusal)
    # The same reads `switchyard release --plan` makes, so the plan it prints is this one.
    found_inputs = read_release_inputs(cloud_for(context), context, context.policy, context.image_version)
    image, published, observed = found_inputs.image, found_inputs.published, found_inputs.observed
    quota, timing, traffic = found_inputs.quota, found_inputs.timing, found_inputs.traffic
    found = check_release(context, context.policy, image, published, observed, quota, timing, traffic)
    if found.refusal is not None:
        logger.error(found.refusal)
        raise ReleaseRefused(found.refusal)
    for check in found.checks:
        logger.info("preflight: %s", check)
    plan = plan_release(context, context.policy, image, published, observed, quota, timing, traffic)
    logger.info("plan:\n%s", plan.text())
    assert found.live_color is not None  # no problem found: the gateway routes production somewhere
    return PreflightReport(
        live_color=found.live_color,
        live_image=found.live_image,
        canary_plan=found.canary_plan,
        checks=found.checks,
        plan=plan,
    )


# Observe -----------------------------------------------------------------------------------------


@task(name="observe service", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def observe_service(context: ServiceContext) -> ServiceObservation:
    return cloud_for(context).observe(context.topology)


@task(name="observe release", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def observe_release(context: ReleaseContext) -> tuple[ServiceObservation, ImageObservation]:
    """What the planner decides on: the service, and the image being released as the gallery shows
    it now (a rollback elsewhere marks it)."""
    cloud = cloud_for(context)
    observed = cloud.observe(context.topology)
    return observed, cloud.gallery.image_version(context.service.name, context.image_version)


# Act and verify ----------------------------------------------------------------------------------


Members = Callable[[ServiceObservation], list[tuple[str, list[str]]]]


def wait_healthy(
    context: ServiceContext,
    members: Members,
    timeout_s: float,
    *,
    stay_healthy_s: float = 0.0,
) -> ServiceObservation:
    """Wait until the gateway's own probes call every address `members` names healthy in its pool
    (`members` says, from each fresh observation, which addresses in which pools), and keep calling
    them so for `stay_healthy_s` (Kubernetes' minReadySeconds): a crash loop shows here, not to users.

    A gateway probes only the pools its rules route to, so health is read where an address is
    routed: an idle instance in its own pool (the test listener's), a live one in the live pool.
    Each look is about ten ARM reads: it looks soon, then less often (switchyard.core.polling),
    and while the addresses must stay healthy, often enough to see one fall."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    deadline = time.monotonic() + timeout_s
    looks = pauses()
    healthy_since: float | None = None
    said: dict[str, str] | None = None  # the states last logged: a line per change, not per look
    while True:
        observed = cloud.observe(context.topology)
        wanted = members(observed)
        addresses = [a for _, in_pool in wanted for a in in_pool]
        states = {
            f"{a} in {pool}": (
                observed.gateway.pools[pool].health.get(a, "not probed")
                if pool in observed.gateway.pools
                else "no pool"
            )
            for pool, in_pool in wanted
            for a in in_pool
        }
        if addresses and all(state == "Up" for state in states.values()):
            if healthy_since is None:
                healthy_since = time.monotonic()
                if stay_healthy_s:
                    logger.info("%s healthy; they must stay so for %.0f s", addresses, stay_healthy_s)
            if time.monotonic() - healthy_since >= stay_healthy_s:
                return observed
        else:
            if healthy_since is not None:
                logger.warning("%s were healthy and are not any more: %s", addresses, states)
            healthy_since = None
        failed = [
            i
            for color in Color
            for i in observed.scale_set(color).instances
            if i.provisioning_state.lower() == "failed" and i.private_ip in addresses
        ]
        if failed:
            raise VerificationFailed(
                "instance(s) failed: " + "; ".join(f"{i.name}: {i.status_message or 'failed'}" for i in failed)
            )
        if time.monotonic() > deadline:
            raise VerificationFailed(
                f"not healthy for {stay_healthy_s:.0f} s in a row within {timeout_s:.0f} s: {states}"
                if stay_healthy_s
                else f"not healthy after {timeout_s:.0f} s: {states}"
            )
        if healthy_since is None and states != said:
            logger.info("waiting for health: %s", states or "no instances yet")
            said = states
        pause = next(looks)
        if healthy_since is not None:
            pause = min(pause, max(FIRST_LOOK_S, stay_healthy_s / 3))
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))


def own_pool(color: Color) -> Members:
    """Every instance of `color`, in its own pool."""
    return lambda observed: [(Topology.pool(color), observed.scale_set(color).addresses)]


@task(name="prepare idle color", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def prepare_idle_color(context: ReleaseContext, action: PrepareIdle) -> ScaleSetObservation:
    logger = get_run_logger()
    cloud = cloud_for(context)
    cloud.scale_sets.roll_out(
        context.topology,
        action.color,
        image_version=action.image_version,
        capacity=action.capacity,
        progress=logger.info,
    )
    policy = context.policy
    observed = wait_healthy(
        context, own_pool(action.color), policy.healthy_timeout_s, stay_healthy_s=policy.min_ready_s
    )
    scale_set = observed.scale_set(action.color)
    if scale_set.runs_only != action.image_version:
        raise VerificationFailed(f"{scale_set.name} does not run {action.image_version} on every instance")
    emit(context, "prepared", {"color": action.color.value, "image": action.image_version})
    return scale_set


class SmokeReport(BaseModel):
    checks: list[str]


@task(name="smoke test idle color", cache_policy=NO_CACHE)
def smoke_test(context: ReleaseContext, color: Color) -> SmokeReport:
    """Through the test listener, before any user traffic: health, version, the policy's checks."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    observed = cloud.observe(context.topology, with_health=False)
    if observed.gateway.test_pool != Topology.pool(color):
        raise VerificationFailed(f"the test listener routes to {observed.gateway.test_pool}, not {color.value}")
    instances = len(observed.scale_set(color).instances)
    # The test listener is on the gateway's private frontend: only the VNet and the environment's test
    # sources reach it, never the public address users use.
    address = cloud.router.test_address(context.topology)
    result = run_smoke_tests(
        f"http://{address}:{context.service.ports_in(context.environment.name).test}",
        instances=instances,
        health_path=context.service.health_path,
        image_version=context.image_version,
        checks=context.policy.smoke_checks,
    )
    if not result.ok:
        raise SmokeTestFailed(
            f"smoke tests of {context.image_version} on {color.value} failed: " + "; ".join(result.failures)
        )
    for line in result.passed:
        logger.info("smoke: %s", line)
    emit(context, "smoke-tested", {"color": color.value, "image": context.image_version})
    return SmokeReport(checks=result.passed)


@task(name="switch production", cache_policy=NO_CACHE)
def promote(context: ReleaseContext, to_color: Color, observed: ServiceObservation) -> None:
    """Repoint the production rule to the new color: one If-Match-guarded write, then verify."""
    cloud = cloud_for(context)
    assert observed.gateway.etag is not None and observed.live_color is not None
    after = cloud.router.route(
        context.topology,
        production=Topology.pool(to_color),
        test=Topology.pool(to_color.other),
        expect_etag=observed.gateway.etag,
        tags={
            TAG_RELEASE: context.image_version,
            TAG_PHASE: Phase.PROMOTED.value,
            TAG_PREVIOUS: observed.live_color.value,
        },
    )
    if after.production_pool != Topology.pool(to_color):
        raise VerificationFailed(f"production routes to {after.production_pool}, expected {to_color.value}")
    emit(context, "promoted", {"color": to_color.value, "image": context.image_version})


class ReleaseStopped(Exception):
    """Someone else rolled this release's image back while it ran: it stops and undoes nothing."""


def no_longer_finalized(context: ReleaseContext) -> str | None:
    """Why the gateway no longer says this release is finalized (a rollback, or a newer release,
    wrote it since), or None while it does. Read right before anything that belongs to the released
    version only (its flags, its contract migration): a person's rollback pre-empts a release that
    holds the lock, so it can land between finalize and those steps."""
    tags = cloud_for(context).router.routes(context.topology).tags
    if tags.get(TAG_RELEASE) == context.image_version and tags.get(TAG_PHASE) == Phase.FINALIZED:
        return None
    return f"the gateway now says {tags.get(TAG_PHASE)} for {tags.get(TAG_RELEASE)}"


# A stale ETag means someone else wrote the gateway since the planner decided: the flow looks again.
@task(
    name="finalize release",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless(ReleaseStopped, StaleStateError),
)
def finalize(context: ReleaseContext, live: Color, observed: ServiceObservation) -> None:
    """The old color's warm period starts, autoscale follows the new live color, the image becomes
    eligible as latest (the retire-idle-colors flow scales the old color down after the period).

    The gateway write comes first, guarded by the ETag the planner decided on: if a rollback wrote
    the gateway since, it fails and nothing is finalized. The gallery has no ETags, so a rollback
    that lands after that write is caught by looking at the gateway again after the gallery write:
    a rollback writes the gateway before it marks the image, so either this run sees the rollback
    and marks the image again, or the rollback's mark comes after this run's write (rolled back wins).
    """
    logger = get_run_logger()
    cloud = cloud_for(context)
    assert observed.gateway.etag is not None
    image = cloud.gallery.image_version(context.service.name, context.image_version)
    if image.rolled_back:
        raise ReleaseStopped(f"{context.image_version} was marked rolled back: it is not finalized")
    retire_after = now() + timedelta(seconds=context.policy.scale_down_delay_s)
    cloud.router.tag(
        context.topology,
        {TAG_PHASE: Phase.FINALIZED.value, TAG_RETIRE_AFTER: retire_after.isoformat(timespec="seconds")},
        observed.gateway.etag,
    )
    cloud.infrastructure.ensure_autoscale(context.topology, context.service, live)
    logger.info("autoscale: %s's setting enabled, %s's disabled", live.value, live.other.value)
    # This release's canary instances still sit in the old color's canary pool. They serve users
    # now, and leaving a pool is an upgrade of the instance (which may restart it): they are left
    # there. Nothing routes to that pool; the next release that prepares this color as the idle
    # one (roll_out) takes them out, before any user can meet that pool again.
    tags = ImageMetadata.from_tags(image.tags).with_released(now()).to_tags()
    cloud.gallery.update_version(context.service.name, context.image_version, tags=tags, exclude_from_latest=False)
    moved_on = no_longer_finalized(context)
    if moved_on is not None:
        mark_rolled_back.fn(context, context.image_version)
        raise ReleaseStopped(
            f"{context.image_version} was rolled back while it was finalized ({moved_on}); it stays rolled back"
        )
    logger.info("image %s is now eligible as latest", context.image_version)
    logger.info("%s stays warm until %s", context.topology.scale_set(live.other), retire_after.isoformat())
    emit(context, "finalized", {"color": live.value, "image": context.image_version})


@task(name="scale down the old color", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def retire_idle_color(context: ServiceContext) -> str:
    """After the warm period: the idle color scales to zero unless it serves anything again.

    Runs every few minutes for the whole fleet, so it reads as little as it can: the gateway's
    routes first (one read; most services stop there, warm or long retired), then the idle scale
    set, and the whole service only when that color is due and still has instances. Azure throttles
    a principal's reads (docs/failure-modes.md), and a fleet's worth of full looks at once is a
    burst the releases running beside it would pay for."""
    cloud = cloud_for(context)
    topology = context.topology
    routes = cloud.router.routes(topology)
    if routes.live_color is None:
        return "no live color"
    idle_name = topology.scale_set(routes.live_color.other)
    stays = warm_period_pending(routes.tags, now(), idle_name)
    if stays is not None:
        return stays
    scaled_down = already_scaled_down(cloud.scale_sets.observe(topology, routes.live_color.other))
    if scaled_down is not None:
        return scaled_down
    observed = cloud.observe(topology, with_health=False)
    idle, why = retirement(observed, now())
    if idle is not None:
        idle_set = observed.scale_set(idle)
        assert idle_set.etag is not None
        # If-Match: a rollback that scaled this color up again (to serve on it) must not be undone.
        cloud.scale_sets.scale(context.topology, idle, 0, idle_set.etag)
        emit(context, "retired", {"color": idle.value})
        return f"{why}: scaled to zero"
    return why


@task(name="mark image rolled back", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1)
def mark_rolled_back(context: ServiceContext, image_version: str | None) -> str | None:
    """Tag the abandoned version rolled back and exclude it from latest, so nothing picks it again."""
    if not image_version:
        return None
    cloud = cloud_for(context)
    image = cloud.gallery.image_version(context.service.name, image_version)
    if not image.exists:
        return None
    tags = ImageMetadata.from_tags(image.tags).with_rolled_back().to_tags()
    cloud.gallery.update_version(context.service.name, image_version, tags=tags, exclude_from_latest=True)
    return image_version
