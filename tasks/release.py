"""Release tasks: each observes, acts through a port, and verifies what it did.

No task trusts what an earlier one remembered: each reads the cloud again, so any task can be
re-run after a crash. Tasks never cache results (a cached observation would be a lie).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from blocks import load_environment, load_release_policy, load_service
from switchyard.cloud.errors import CloudError, StaleStateError
from switchyard.cloud.factory import cloud_for
from switchyard.core.analysis import (
    Analysis,
    CanarySides,
    GoldenSignals,
    WatchDecision,
    canary_sides,
    golden_signals,
    watch_decision,
)
from switchyard.core.canary import Verdict, judge_canary, verify_split
from switchyard.core.capacity import ComputeQuota
from switchyard.core.config import ServiceContext
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import ReleaseRefused
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
    canary_addresses_for,
    retirement,
    rollback_target,
)
from switchyard.core.state import ImageObservation, ScaleSetObservation, ServiceObservation
from switchyard.core.topology import Color
from switchyard.stages.smoke import run_smoke_tests


class ReleaseContext(ServiceContext):
    policy: ReleasePolicy
    image_version: str


class SmokeTestFailed(Exception):
    """The new color failed its smoke tests; no user traffic reached it."""


class VerificationFailed(Exception):
    """A write went through but the cloud does not show its effect."""


class NothingToRollBackTo(Exception):
    """The first release of a service has no previous version to return to."""


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


def now() -> datetime:
    return datetime.now(UTC)


def emit(context: ServiceContext, step: str, payload: dict[str, object]) -> None:
    """An event per release step, so automations and the UI's event feed can follow a release."""
    topology = context.topology
    emit_event(
        event=f"switchyard.release.{step}",
        resource={
            "prefect.resource.id": f"switchyard.service.{topology.service}.{topology.environment}",
            "prefect.resource.name": f"{topology.service} in {topology.environment}",
            "switchyard.service": topology.service,
            "switchyard.environment": topology.environment,
        },
        payload=payload,
    )


HEARTBEAT_EVENT = "switchyard.release.heartbeat"
FINISHED_EVENT = "switchyard.release.finished"


@contextmanager
def heartbeat(context: ServiceContext, image_version: str, interval_s: float = 5.0) -> Iterator[None]:
    """Emit a heartbeat event every `interval_s` while the release runs, and `finished` at the end.

    If the run dies (a killed process, a lost machine) the heartbeats stop; the guard automation
    (deployments/ and prefect.yaml) notices their absence and takes any canary out of production.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            emit(context, "heartbeat", {"image": image_version, "interval_s": interval_s})

    emit(context, "heartbeat", {"image": image_version, "interval_s": interval_s})
    # The beats run in the caller's context: a Prefect API chosen by temporary_settings (the demo,
    # tests) is a context variable, and a thread without it would send to a temporary server instead.
    caller = contextvars.copy_context()
    thread = threading.Thread(target=caller.run, args=(beat,), name="release-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    except Exception:
        stop.set()
        thread.join(timeout=interval_s)
        emit(context, "finished", {"image": image_version})  # failed, but on its own terms
        raise
    except BaseException:
        # Cancelled or terminated: no `finished`, so the guard treats the run as dead and takes any
        # canary it left out of production.
        stop.set()
        raise
    stop.set()
    thread.join(timeout=interval_s)
    emit(context, "finished", {"image": image_version})


# Configuration and preflight --------------------------------------------------------------------


@task(name="load release configuration", cache_policy=NO_CACHE)
def load_release_context(
    service: str, environment: str, image_version: str, policy: str, strategy: Strategy | None
) -> ReleaseContext:
    release_policy = load_release_policy(policy)
    if strategy is not None:
        release_policy = release_policy.model_copy(update={"strategy": strategy})
    service_config = load_service(service)
    environment_config = load_environment(environment)
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


@task(name="preflight checks", cache_policy=NO_CACHE)
def preflight(context: ReleaseContext) -> PreflightReport:
    """Everything that can be known before the first change; every problem found is reported."""
    logger = get_run_logger()
    refusal = version_refusal(context.image_version)
    if refusal is not None:
        raise ReleaseRefused(refusal)
    cloud = cloud_for(context)
    image = cloud.gallery.image_version(context.service.name, context.image_version)
    # The published versions only matter to say what exists instead of a missing image.
    published = [] if image.exists else [v.gallery_version for v in cloud.gallery.image_versions(context.service.name)]
    observed = cloud.observe(context.topology)
    quota: ComputeQuota | CloudError
    try:
        quota = cloud.scale_sets.compute_quota()
    except CloudError as error:
        quota = error
    found = check_release(context, context.policy, image, published, observed, quota)
    if found.refusal is not None:
        logger.error(found.refusal)
        raise ReleaseRefused(found.refusal)
    for check in found.checks:
        logger.info("preflight: %s", check)
    assert found.live_color is not None  # no problem found: the gateway routes production somewhere
    return PreflightReport(
        live_color=found.live_color,
        live_image=found.live_image,
        canary_plan=found.canary_plan,
        checks=found.checks,
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
    return cloud.observe(context.topology), cloud.gallery.image_version(context.service.name, context.image_version)


# Act and verify ----------------------------------------------------------------------------------


def _wait_healthy(
    context: ServiceContext, color: Color, timeout_s: float, *, stay_healthy_s: float = 0.0
) -> ServiceObservation:
    """Wait until the gateway's own probes call every instance of `color` healthy, and keep calling
    them so for `stay_healthy_s` (Kubernetes' minReadySeconds): a crash loop shows here, not to users."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    deadline = time.monotonic() + timeout_s
    healthy_since: float | None = None
    while True:
        observed = cloud.observe(context.topology)
        scale_set = observed.scale_set(color)
        pool = observed.gateway.pool_of(color)
        if scale_set.addresses and pool.healthy(scale_set.addresses):
            if healthy_since is None:
                healthy_since = time.monotonic()
                if stay_healthy_s:
                    logger.info("%s is healthy; it must stay so for %.0f s", scale_set.name, stay_healthy_s)
            if time.monotonic() - healthy_since >= stay_healthy_s:
                return observed
        else:
            if healthy_since is not None:
                logger.warning("%s was healthy and is not any more: %s", scale_set.name, pool.health)
            healthy_since = None
        failed = [i for i in scale_set.instances if i.provisioning_state.lower() == "failed"]
        if failed:
            raise VerificationFailed(
                f"{scale_set.name}: instance(s) failed: "
                + "; ".join(f"{i.name}: {i.status_message or 'failed'}" for i in failed)
            )
        if time.monotonic() > deadline:
            states = {a: pool.health.get(a, "not in pool") for a in scale_set.addresses}
            raise VerificationFailed(
                f"{scale_set.name} not healthy for {stay_healthy_s:.0f} s in a row within {timeout_s:.0f} s: {states}"
                if stay_healthy_s
                else f"{scale_set.name} not healthy after {timeout_s:.0f} s: {states}"
            )
        if healthy_since is None:
            logger.info("waiting for %s to be healthy: %s", scale_set.name, pool.health or "no probes yet")
        time.sleep(0.5)


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
    observed = _wait_healthy(context, action.color, policy.healthy_timeout_s, stay_healthy_s=policy.min_ready_s)
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
    if observed.gateway.test_pool != color.value:
        raise VerificationFailed(f"the test listener routes to {observed.gateway.test_pool}, not {color.value}")
    instances = len(observed.scale_set(color).instances)
    address = cloud.router.frontend_address(context.topology)
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


class SplitSet(BaseModel):
    canary_addresses: list[str]  # verified: what the live pool serves beside its own instances
    at: datetime  # just before the write: the canary may serve from here on


@task(name="shift canary traffic", cache_policy=NO_CACHE)
def set_canary_split(context: ReleaseContext, step: CanaryStep, observed: ServiceObservation) -> SplitSet:
    """SetWeight: k new instances into the live pool, in one If-Match-guarded gateway write,
    verified from the gateway's own answer to the write (no second look: users are waiting)."""
    cloud = cloud_for(context)
    addresses = canary_addresses_for(observed, step)
    assert observed.gateway.etag is not None
    at = now()
    serving = cloud.router.set_split(
        context.topology,
        addresses,
        observed.gateway.etag,
        tags={TAG_RELEASE: context.image_version, TAG_PHASE: Phase.CANARY.value},
    )
    if sorted(serving) != sorted(addresses):
        raise VerificationFailed(f"the live pool serves {serving}, expected {addresses}")
    emit(context, "split-set", {"share": step.share, "canary_instances": step.canary_instances})
    return SplitSet(canary_addresses=serving, at=at)


@task(name="take canary out of production", cache_policy=NO_CACHE)
def clear_canary(context: ReleaseContext, observed: ServiceObservation) -> ServiceObservation:
    cloud = cloud_for(context)
    assert observed.gateway.etag is not None
    serving = cloud.router.set_split(context.topology, [], observed.gateway.etag)
    if serving:
        raise VerificationFailed(f"canary instances still in the live pool: {serving}")
    return cloud.observe(context.topology, with_health=False)


def _golden_signals(context: ServiceContext, sides: CanarySides, start: datetime, end: datetime) -> GoldenSignals:
    """Golden signals of both sides over [start, end): counts and CPU from metrics, latency from logs."""
    telemetry = cloud_for(context).telemetry
    topology = context.topology
    return golden_signals(
        sides,
        start,
        end,
        counts=telemetry.requests_by_backend(topology, start, end),
        latency_ms=telemetry.latency_by_backend(topology, start, end, topology.production_listener),
        baseline_cpu=telemetry.cpu_percent(topology, sides.baseline_color, start, end, None),
        canary_cpu=telemetry.cpu_percent(topology, sides.canary_color, start, end, sides.canary_vm_names),
    )


def _watch(
    context: ReleaseContext,
    sides: CanarySides,
    window_s: float,
    *,
    start: datetime,
    compare: bool,
    may_extend: bool,
) -> tuple[Verdict, GoldenSignals, bool]:
    """Look at every check interval (core's watch_decision says what each look means) until the
    window that began at `start` is decided; (the verdict, its signals, whether it ended early)."""
    logger = get_run_logger()
    policy = context.policy
    deadline = time.monotonic() + window_s - (now() - start).total_seconds()
    extended = False
    # The first look comes soon: a bad version shows itself in its first requests.
    pause = min(0.1, policy.check_interval_s)
    while True:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = policy.check_interval_s
        signals = _golden_signals(context, sides, start, now())
        verdict = judge_canary(signals.evidence, policy.slo, compare_with_baseline=compare)
        decision = watch_decision(
            verdict, window_ended=time.monotonic() >= deadline, may_extend=may_extend and not extended
        )
        if decision == WatchDecision.STOP_EARLY:
            logger.warning("SLO breach before the window ended: %s", verdict.summary)
            return verdict, signals, True
        if decision == WatchDecision.DECIDED:
            return verdict, signals, False
        if decision == WatchDecision.EXTEND:
            # Same start, more data: the window becomes twice as long.
            logger.info("inconclusive after %.0f s (%s): extending the window once", window_s, verdict.summary)
            deadline += window_s
            extended = True
            pause = min(0.1, policy.check_interval_s)
            continue
        logger.info(
            "analysing: %d canary / %d total requests, %s",
            signals.canary_requests,
            signals.total_requests,
            verdict.summary,
        )


@task(name="analyse canary", cache_policy=NO_CACHE)
def analyse_canary(
    context: ReleaseContext,
    step: CanaryStep,
    observed: ServiceObservation,
    split: SplitSet | None = None,
) -> Analysis:
    """VerifyWeight + judge: the delivered split is measured, then the golden signals are judged.

    `split` is the split just set (the window starts when it was written); without it, the canary
    `observed` shows, from now."""
    logger = get_run_logger()
    live = observed.live_color
    assert live is not None
    canary_addresses = split.canary_addresses if split else observed.canary_addresses
    sides = canary_sides(observed, canary_addresses, live, live.other)
    start = split.at if split else now()
    verdict, signals, early = _watch(
        context, sides, context.policy.analysis_window_s, start=start, compare=True, may_extend=True
    )
    # An early stop has too few requests to verify a split with; the verdict decides alone.
    delivered = (
        None
        if early
        else verify_split(step.share, signals.canary_requests, signals.total_requests, context.policy.split_tolerance)
    )
    analysis = Analysis(verdict=verdict, split=delivered, decided_at=now(), early=early)
    logger.info(
        "canary at %.1f%%: %s%s", step.share * 100, verdict.summary, f"; {delivered.reason}" if delivered else ""
    )
    emit(
        context,
        "analysed",
        {
            "share": step.share,
            "outcome": verdict.outcome.value,
            "summary": verdict.summary,
            "passed": analysis.passed,
        },
    )
    return analysis


@task(name="switch production", cache_policy=NO_CACHE)
def promote(context: ReleaseContext, to_color: Color, observed: ServiceObservation) -> ServiceObservation:
    """Repoint the production rule to the new color: one If-Match-guarded write, then verify."""
    cloud = cloud_for(context)
    assert observed.gateway.etag is not None and observed.live_color is not None
    cloud.router.switch(
        context.topology,
        to_color,
        observed.gateway.etag,
        tags={
            TAG_RELEASE: context.image_version,
            TAG_PHASE: Phase.PROMOTED.value,
            TAG_PREVIOUS: observed.live_color.value,
        },
    )
    after = cloud.observe(context.topology, with_health=False)
    if after.live_color != to_color or after.canary_addresses:
        raise VerificationFailed(f"production routes to {after.live_color}, expected {to_color.value}")
    emit(context, "promoted", {"color": to_color.value, "image": context.image_version})
    return after


@task(name="analyse under full traffic", cache_policy=NO_CACHE)
def analyse_promoted(context: ReleaseContext, observed: ServiceObservation) -> Analysis:
    live = observed.live_color
    assert live is not None
    sides = canary_sides(observed, observed.scale_set(live).addresses, live, live)
    verdict, _, early = _watch(
        context, sides, context.policy.promoted_analysis_window_s, start=now(), compare=False, may_extend=False
    )
    emit(context, "analysed-promoted", {"outcome": verdict.outcome.value, "summary": verdict.summary})
    return Analysis(verdict=verdict, decided_at=now(), early=early)


class ReleaseStopped(Exception):
    """Someone else rolled this release's image back while it ran: it stops and undoes nothing."""


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
    logger.info("autoscale settings now target %s", context.topology.scale_set(live))
    tags = ImageMetadata.from_tags(image.tags).with_released(now()).to_tags()
    cloud.gallery.update_version(context.service.name, context.image_version, tags=tags, exclude_from_latest=False)
    after = cloud.router.observe(context.topology, with_health=False)
    if after.tags.get(TAG_RELEASE) != context.image_version or after.tags.get(TAG_PHASE) != Phase.FINALIZED:
        mark_rolled_back.fn(context, context.image_version)
        raise ReleaseStopped(
            f"{context.image_version} was rolled back while it was finalized (the gateway now says "
            f"{after.tags.get(TAG_PHASE)} for {after.tags.get(TAG_RELEASE)}); it stays rolled back"
        )
    logger.info("image %s is now eligible as latest", context.image_version)
    logger.info("%s stays warm until %s", context.topology.scale_set(live.other), retire_after.isoformat())
    emit(context, "finalized", {"color": live.value, "image": context.image_version})


@task(name="scale down the old color", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def retire_idle_color(context: ServiceContext) -> str:
    """After the warm period: the idle color scales to zero unless it serves anything again."""
    cloud = cloud_for(context)
    observed = cloud.observe(context.topology, with_health=False)
    idle, why = retirement(observed, now())
    if idle is not None:
        cloud.scale_sets.scale(context.topology, idle, 0)
        emit(context, "retired", {"color": idle.value})
        return f"{why}: scaled to zero"
    return why


# Roll back ---------------------------------------------------------------------------------------


class RollbackReport(BaseModel):
    stable_color: Color | None
    action: str
    restored_at: datetime | None
    abandoned_image: str | None  # the version traffic left: to be marked rolled back


@task(
    name="roll back",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=0.2,
    retry_condition_fn=retry_unless(NothingToRollBackTo),
)
def roll_back(context: ServiceContext, reason: str, image_version: str | None) -> RollbackReport:
    """All traffic back on the stable color in one gateway write, verified; the image marked."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    tags = {TAG_PHASE: Phase.ROLLED_BACK.value}
    # Mid-canary the way back needs nothing but the gateway itself: take the canary out first,
    # look around afterwards. Seconds count here.
    removed = cloud.router.clear_canary(context.topology, tags)
    restored_at = now() if removed else None
    observed = cloud.observe(context.topology, with_health=False)
    abandoned = image_version or observed.gateway.tags.get(TAG_RELEASE)
    stable = observed.live_color if removed else rollback_target(observed)
    if removed:
        action = f"canary instances {removed} removed from the {stable.value if stable else '?'} pool"
    elif stable is None:
        action = f"production already stable on {observed.live_color.value if observed.live_color else '-'}"
    else:
        previous = observed.scale_set(stable)
        if not previous.instances:
            if previous.image_version is None:
                raise NothingToRollBackTo(
                    f"{previous.name} has never run an image: this was the first release of "
                    f"{context.service.name} in {context.environment.name}, there is no previous version"
                )
            capacity = max(context.service.capacity, 1)
            logger.warning("%s was scaled down; scaling it to %d first", previous.name, capacity)
            cloud.scale_sets.roll_out(
                context.topology,
                stable,
                image_version=previous.image_version,
                capacity=capacity,
                progress=logger.info,
            )
            observed = _wait_healthy(context, stable, 300)
        assert observed.gateway.etag is not None
        cloud.router.switch(context.topology, stable, observed.gateway.etag, tags=tags)
        restored_at = now()
        action = f"production switched back to {stable.value}"
    after = cloud.observe(context.topology, with_health=False)
    if after.canary_addresses or (stable is not None and after.live_color != stable):
        raise VerificationFailed(f"after rollback production routes to {after.live_color} {after.canary_addresses}")
    logger.warning("rolled back (%s): %s", reason, action)
    emit(context, "rolled-back", {"reason": reason, "action": action, "image": abandoned or ""})
    return RollbackReport(
        stable_color=stable,
        action=action,
        restored_at=restored_at,
        abandoned_image=abandoned if stable is not None else None,
    )


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
