"""Preflight: everything that can be known before a release changes anything, judged at once.

Pure: the release task reads the gallery, the gateway, the scale sets and the compute quota, and
this module says what is fine (checks, for the timeline) and what stops the release (problems).
Every problem is reported together, so a person fixes them in one go instead of one per attempt.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from switchyard.core.capacity import REGIONAL_VCPUS, ComputeQuota, shortfall
from switchyard.core.config import ServiceContext
from switchyard.core.flags import database_problem
from switchyard.core.image_metadata import ImageMetadata, ImageMetadataError
from switchyard.core.rollout import CanaryStep, ImpossiblePlanError, ReleasePolicy, Strategy, plan_canary_steps
from switchyard.core.state import ImageObservation, ServiceObservation
from switchyard.core.timing import MetricTiming, timing_problems
from switchyard.core.topology import Color
from switchyard.core.versions import ImageVersion, VersionError

# How many of the published versions a "not in the gallery" problem names: the newest few are the
# ones a person most likely meant.
_PUBLISHED_SHOWN = 5


class RecentTraffic(BaseModel):
    """The requests production served in the complete grains before a release (users only: synthetic
    load runs only while switchyard judges a release)."""

    model_config = ConfigDict(frozen=True)

    requests: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def traffic_lookback_s(timing: MetricTiming, policy: ReleasePolicy) -> float:
    """How far back preflight looks at production's traffic: a minute at least, five grains on Azure's
    one-minute grains (one quiet minute says little), and never less than an analysis window."""
    return timing.whole_grains(max(60.0, 5 * timing.grain_s, policy.analysis_window_s))


class Preflight(BaseModel):
    """What preflight found: checks that passed, problems that stop the release, and the plan."""

    model_config = ConfigDict(frozen=True)

    checks: list[str]
    problems: list[str]
    live_color: Color | None
    live_image: str | None  # the version every live instance runs, None when mixed or empty
    canary_plan: list[CanaryStep]
    # A problem that makes every other check moot (no gateway at all): the refusal says only it.
    blocker: str | None = None

    @property
    def refusal(self) -> str | None:
        """Why the release is refused before any change, or None when it may start."""
        if self.blocker is not None:
            return self.blocker
        if self.problems:
            return "release refused before any change:\n- " + "\n- ".join(self.problems)
        return None


def version_refusal(image_version: str) -> str | None:
    """A version that is not a switchyard gallery version is refused before anything is read."""
    try:
        ImageVersion.from_gallery_version(image_version)
    except VersionError as error:
        return f"image version {image_version!r} is not a switchyard gallery version: {error}"
    return None


def check_release(
    context: ServiceContext,
    policy: ReleasePolicy,
    image: ImageObservation,
    published: list[str],
    observed: ServiceObservation,
    quota: ComputeQuota | Exception,
    timing: MetricTiming | Exception,
    traffic: RecentTraffic | Exception | None = None,
) -> Preflight:
    """Judge a release of `image` from what the cloud shows before it starts.

    `published` is the service's gallery versions (only quoted when `image` does not exist);
    `quota` is the location's compute quota, or the error reading it; `timing` what the cloud's
    metrics allow (their finest grain), or the error reading it; `traffic` what production served
    lately, or the error reading it (None: not read, so a canary's data is not checked)."""
    checks: list[str] = []
    problems = _image_problems(context, image, published, checks)
    problems += _timing_problems(context, policy, timing, checks)
    problems += _flag_problems(context, policy, checks)

    gateway = observed.gateway
    live = observed.live_color
    if not gateway.exists:
        return Preflight(
            checks=checks,
            problems=problems,
            live_color=None,
            live_image=None,
            canary_plan=[],
            blocker=f"{context.topology.gateway} does not exist: provision {context.service.name} in "
            f"{context.environment.name} first (`switchyard provision ...` or the provision deployment)",
        )
    if live is None or gateway.test_pool is None or gateway.production_pool == gateway.test_pool:
        problems.append(
            f"gateway {gateway.name} is inconsistent: production -> {gateway.production_pool}, "
            f"test -> {gateway.test_pool}; run provision to repair it"
        )
    if observed.foreign_addresses:
        problems.append(
            f"the gateway's pools hold addresses that are no instance of this service: "
            f"{', '.join(observed.foreign_addresses)}; remove them (switchyard's pools hold scale-set NICs only)"
        )
    plan: list[CanaryStep] = []
    if live is not None:
        live_set = observed.scale_set(live)
        # The gateway probes only the pools its rules route to: mid-canary (a re-run after a crash)
        # the live instances' health is in the canary pool production routes to, not in their own.
        probed = gateway.canary_pool_of(live) if gateway.canary_routed else gateway.pool_of(live)
        unhealthy = [a for a in live_set.addresses if probed.health.get(a) != "Up"]
        if live_set.instances and unhealthy:
            problems.append(f"live color {live.value} is not healthy: {', '.join(unhealthy)} not Up")
        elif live_set.instances:
            checks.append(f"live color {live.value}: {len(live_set.instances)} healthy instance(s)")
        else:
            checks.append(f"no live instances yet: first release of {context.service.name} here")
        # The new color starts at the live color's size (autoscale may have grown it) or more.
        capacity = max(context.service.capacity, live_set.capacity)
        problems += _room_to_double(quota, capacity - observed.scale_set(live.other).capacity, checks)
        outside = sorted(set(live_set.addresses) - set(gateway.canary_pool_of(live).member_addresses))
        if policy.strategy == Strategy.CANARY and live_set.instances and outside:
            # Production moves to the canary pool for a canary: without every live instance in it,
            # users would meet the canary alone (instances an earlier switchyard deployed).
            problems.append(
                f"live instances {', '.join(outside)} are not in the {live.value}-and-canary pool, so a canary "
                "would reach users without them; release with --strategy blue-green once (the new color is "
                "deployed into both its pools), then canaries work"
            )
        if policy.strategy == Strategy.CANARY and live_set.instances:
            try:
                plan = plan_canary_steps(policy.canary_steps, len(live_set.instances), capacity)
                checks += [f"canary step {step.describe()}" for step in plan]
            except ImpossiblePlanError as error:
                problems.append(str(error))
        if plan and traffic is not None:
            problems += _traffic_problems(context, policy, plan, traffic, checks)
    return Preflight(
        checks=checks,
        problems=problems,
        live_color=live,
        live_image=observed.scale_set(live).runs_only if live is not None else None,
        canary_plan=plan,
    )


def _image_problems(
    context: ServiceContext, image: ImageObservation, published: list[str], checks: list[str]
) -> list[str]:
    """The image must exist, have passed its scan gate, never have been rolled back, and be
    replicated to every region the scale sets may start it in."""
    version = image.gallery_version
    if not image.exists:
        newest = sorted(published, key=_version_order)[-_PUBLISHED_SHOWN:]
        return [
            f"image {context.service.name} {version} is not in gallery {context.environment.gallery} "
            f"(published versions: {', '.join(newest) or 'none'}); build it with "
            f"`switchyard image build {context.service.name} --app-version ...`"
        ]
    problems: list[str] = []
    try:
        metadata = ImageMetadata.from_tags(image.tags)
    except ImageMetadataError as error:
        return [f"image {version} was not published by switchyard (its tags say: {error}); it cannot be released"]
    if not metadata.scan_gate_passed:
        problems.append(f"image {version} did not pass its scan gate; it can never be released")
    else:
        checks.append(f"image {version} passed its scan gate ({metadata.scan_summary_text()})")
    if metadata.rolled_back:
        problems.append(f"image {version} was rolled back before; publish a fixed version instead")
    if not image.replicated:
        problems.append(f"image {version} is not replicated everywhere yet: {image.replication or 'unknown'}")
    else:
        checks.append(f"image replicated to {', '.join(image.replication)}")
    return problems


def _version_order(gallery_version: str) -> tuple[int, ...]:
    """Gallery versions sort by their numbers (1.0.10 after 1.0.9), not as text."""
    return tuple(int(part) if part.isdigit() else -1 for part in gallery_version.split("."))


def _timing_problems(
    context: ServiceContext, policy: ReleasePolicy, timing: MetricTiming | Exception, checks: list[str]
) -> list[str]:
    """The analysis windows (and the service's autoscale, on Azure timing) must fit the cloud's metrics."""
    if isinstance(timing, Exception):
        return [f"cannot read the gateway's metric definitions, so the analysis windows cannot be checked: {timing}"]
    autoscale = context.service.autoscale
    problems = timing_problems(
        analysis_window_s=policy.analysis_window_s,
        promoted_analysis_window_s=policy.promoted_analysis_window_s,
        autoscale_window_s=autoscale.time_window_s if autoscale.enabled else None,
        autoscale_cooldown_s=autoscale.cooldown_s if autoscale.enabled else None,
        timing=timing,
    )
    if not problems:
        checks.append(
            f"metrics: {timing.grain_s:g} s grains, complete {timing.delay_s:g} s after they end; analysis windows "
            f"of {timing.whole_grains(policy.analysis_window_s):g} s"
        )
    return problems


def _flag_problems(context: ServiceContext, policy: ReleasePolicy, checks: list[str]) -> list[str]:
    """enable_flags runs after the promotion, where a failure can only be a warning: a flag store that
    cannot work as configured is known now, and refused now."""
    if not policy.enable_flags:
        return []
    problem = database_problem(context.service, context.environment.name)
    if problem is not None:
        return [f"the release policy's enable_flags ({', '.join(policy.enable_flags)}) cannot be set: {problem}"]
    checks.append(f"flags {', '.join(policy.enable_flags)} go on in the service's database once promoted")
    return []


def _traffic_problems(
    context: ServiceContext,
    policy: ReleasePolicy,
    plan: list[CanaryStep],
    traffic: RecentTraffic | Exception,
    checks: list[str],
) -> list[str]:
    """Each canary step is judged on both sides' requests within one analysis window: with too few
    users (a staging environment) and no synthetic load, the judge could only roll the release back
    for want of data (what a new user met: "No requests were served"), so preflight says so first."""
    needed = required_rate(policy, plan)
    synthetic = policy.synthetic_load.rate_per_s if policy.synthetic_load else 0.0
    if isinstance(traffic, Exception):
        if synthetic >= needed:
            checks.append(f"traffic: synthetic load of {synthetic:g}/s covers the {needed:.1f}/s a canary needs")
            return []
        return [f"cannot read production's recent traffic, so whether a canary gets enough data is unknown: {traffic}"]
    available = traffic.rate + synthetic
    seen = f"{traffic.requests} request(s) in the last {traffic.seconds:g} s ({traffic.rate:.1f}/s)"
    if available >= needed:
        load = f" plus synthetic load of {synthetic:g}/s" if synthetic else ""
        checks.append(f"traffic: {seen}{load}; a canary needs about {needed:.1f}/s")
        return []
    if policy.low_traffic == "wait":
        checks.append(f"traffic: {seen}, below the {needed:.1f}/s a canary needs: analyses wait for data (low_traffic)")
        return []
    suggested = math.ceil(needed * 1.5)
    if synthetic:
        fix = f"raise the release policy's synthetic_load.rate_per_s to {suggested} or more"
    else:
        fix = f"give the release policy synthetic load (synthetic_load: {{rate_per_s: {suggested}}})"
    smallest = min(plan, key=lambda step: min(step.share, 1 - step.share))
    return [
        f"too little traffic to judge a canary in {context.environment.name}: production served {seen}"
        + (f" and synthetic load adds {synthetic:g}/s" if synthetic else "")
        + f"; the canary step at {smallest.share:.0%} needs {policy.slo.min_requests} requests on each side within "
        f"{policy.analysis_window_s:g} s, about {needed:.1f}/s. To release here, {fix}, lower slo.min_requests, "
        "release with --strategy blue-green, or set low_traffic: wait to start anyway and let analyses wait for data"
    ]


def required_rate(policy: ReleasePolicy, plan: list[CanaryStep]) -> float:
    """Requests per second production needs for every step's window to hold `min_requests` on the
    smaller side (the canary at a small share, the baseline at a large one)."""
    smaller_side = min(min(step.share, 1 - step.share) for step in plan)
    return policy.slo.min_requests / (policy.analysis_window_s * smaller_side)


def _room_to_double(quota: ComputeQuota | Exception, additional_vms: int, checks: list[str]) -> list[str]:
    """The new color runs beside the live one: the region's quota must hold both at once."""
    if isinstance(quota, Exception):
        return [f"cannot read the compute quota, so room for the new color is unknown: {quota}"]
    problems = shortfall(quota, additional_vms)
    if not problems:
        free = quota.usages[REGIONAL_VCPUS].free if REGIONAL_VCPUS in quota.usages else "unknown"
        checks.append(
            f"quota: room for {max(additional_vms, 0)} more {quota.vm_size} VM(s) in {quota.location} "
            f"({free} regional vCPUs free)"
        )
    return problems
