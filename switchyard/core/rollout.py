"""The rollout planner: observed state + release request + policy -> the next action.

Every release step is observe -> decide -> act -> verify. The decision is this pure function, so
a release run that crashed and is started again decides from where things really stand in the
cloud (docs/decisions/0004-truth-lives-in-the-cloud.md), not from anything it remembered.

The canary is an instance ratio (docs/decisions/0003-canary-on-app-gateway-is-an-instance-ratio.md):
k instances of the new color serve in the live pool beside the N live ones, so the reachable
shares are k/(N+k). Steps are snapped to the nearest reachable share and the plan says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard.core.canary_inputs import CanaryPolicy
from switchyard.core.flags import check_enable_flags
from switchyard.core.hooks import ReleaseHooks
from switchyard.core.stages import PerformanceTest
from switchyard.core.state import ImageObservation, ScaleSetObservation, ServiceObservation
from switchyard.core.topology import Color

# Gateway tags that carry a release's phase, written in the same PUT as the routing change, so
# that the phase is as durable as the routing itself.
TAG_RELEASE = "switchyard.release"
TAG_PHASE = "switchyard.phase"
TAG_PREVIOUS = "switchyard.previous"
TAG_RETIRE_AFTER = "switchyard.retireAfter"  # when the old color may scale to zero (ISO 8601, UTC)


class Phase(StrEnum):
    CANARY = "canary"
    PROMOTED = "promoted"
    FINALIZED = "finalized"
    # Judged and undone (by the release itself or a person): the release of that image is over.
    ROLLED_BACK = "rolled-back"
    # The guard took a dead release's canary out without judging it: running the release again continues it.
    INTERRUPTED = "interrupted"


class Strategy(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blue-green"


class HttpCheck(BaseModel):
    """A smoke check run through the test listener before any user traffic."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(pattern=r"^/", description="Request path, e.g. /work/echo")
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    expect_body_contains: str | None = None


class SyntheticLoad(BaseModel):
    """Requests switchyard sends through the production listener while a canary is judged, for
    environments whose users are too few to judge it on (Flagger's load tester does the same)."""

    model_config = ConfigDict(extra="forbid")

    rate_per_s: float = Field(gt=0, le=2000, description="Requests per second, steady.")
    path: str = Field("/", pattern=r"^/", description="Request path; a read-only one (GET).")
    connections: int = Field(4, ge=1, le=64, description="Keep-alive connections the rate is spread over.")

    def for_service(self, path: str | None) -> SyntheticLoad:
        """This load aimed at one service: its own path (ServiceConfig.synthetic_load_path) when it names
        one. The policy is the environment's, shared by services whose APIs differ."""
        return self if path is None else self.model_copy(update={"path": path})


LowTraffic = Literal["refuse", "wait"]


class ReleasePolicy(BaseModel):
    """How a release proceeds and what it takes to pass."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Strategy.CANARY
    canary_steps: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        description="Shares of production traffic the new version gets, one analysis each.",
    )
    analysis_window_s: float = Field(30.0, gt=0, description="Length of each canary analysis.")
    check_interval_s: float = Field(1.0, gt=0, description="How often SLO breaches are looked for.")
    promoted_analysis_window_s: float = Field(
        15.0, ge=0, description="Analysis under full traffic after the switch (SLOs only)."
    )
    metrics_delay_s: float | None = Field(
        None,
        ge=0,
        description="How long after a metric grain ends its data is complete (default: at once for "
        "second grains, two grains for minute grains: Azure publishes a minute a minute or two late).",
    )
    log_ingestion_timeout_s: float = Field(
        600.0,
        gt=0,
        description="How long a finished window waits for the access log to hold every request the metrics "
        "counted (Log Analytics ingests with a delay of minutes) before it is judged with what arrived.",
    )
    split_tolerance: float = Field(
        0.1, gt=0, lt=1, description="Largest tolerated gap between planned and delivered share."
    )
    slo: CanaryPolicy = Field(default_factory=CanaryPolicy)
    smoke_checks: list[HttpCheck] = Field(default_factory=list)
    healthy_timeout_s: float = Field(300.0, gt=0, description="Wait for new instances to be healthy.")
    min_ready_s: float = Field(
        0.0,
        ge=0,
        description="How long new instances must stay healthy before smoke tests and user traffic "
        "(an instance that passes one probe and then crashes is caught before anyone uses it).",
    )
    scale_down_delay_s: float = Field(600.0, ge=0, description="How long the old color stays warm after a release.")
    approval_required: bool = Field(False, description="Pause for a person before production switches.")
    approval_timeout_s: float = Field(3600.0, gt=0, description="No answer by then: roll back.")
    hooks: ReleaseHooks = Field(
        default_factory=ReleaseHooks,
        description="pre_deploy (expand migrations) and post_promote (contract migrations): a command or an HTTP call.",
    )
    enable_flags: list[str] = Field(
        default_factory=list,
        description="Feature flags to turn on once the new version is promoted and finalized (before post_promote), "
        "in the service's database for the environment; never after a rollback. A failure is an alert and a "
        "warning: the release stays promoted.",
    )
    performance_test: PerformanceTest | None = Field(
        None, description="A load test of the new color through the test listener, after smoke and integration tests."
    )
    synthetic_load: SyntheticLoad | None = Field(
        None, description="Load switchyard drives through the production listener while it judges a release."
    )
    low_traffic: LowTraffic = Field(
        "wait",
        description="When recent traffic (users plus synthetic load) cannot give a canary step the requests the SLO "
        "needs: refuse the release before any change, or start anyway and wait for data in each analysis.",
    )
    low_traffic_wait_s: float = Field(
        300.0,
        gt=0,
        description="With low_traffic 'wait': how long a canary analysis keeps extending its window for data "
        "before it judges what it has.",
    )

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        for step in steps:
            if not 0 < step < 1:
                raise ValueError(f"canary step {step} is not a share between 0 and 1 (exclusive); e.g. 0.25 for 25%")
        if any(later <= earlier for earlier, later in pairwise(steps)):
            raise ValueError(f"canary steps must increase: {steps}")
        return steps

    @field_validator("enable_flags")
    @classmethod
    def _flags(cls, names: list[str]) -> list[str]:
        return check_enable_flags(names)

    @model_validator(mode="after")
    def _canary_has_steps(self) -> Self:
        if self.strategy == Strategy.CANARY and not self.canary_steps:
            raise ValueError("a canary release needs at least one canary step (or use blue-green)")
        return self


class CanaryStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    requested_share: float
    canary_instances: int
    live_instances: int

    @property
    def share(self) -> float:
        return self.canary_instances / (self.live_instances + self.canary_instances)

    def describe(self) -> str:
        return (
            f"{self.requested_share:.0%} requested -> {self.share:.1%} delivered by "
            f"{self.canary_instances} new beside {self.live_instances} live instance(s)"
        )


class ImpossiblePlanError(ValueError):
    """The policy asks for something this topology cannot do."""


def plan_canary_steps(steps: list[float], live_instances: int, canary_capacity: int) -> list[CanaryStep]:
    """Snap each requested share to the nearest k/(N+k) with 1 <= k <= canary_capacity."""
    if live_instances < 1:
        raise ImpossiblePlanError("a canary needs live instances to compare against")
    highest = canary_capacity / (live_instances + canary_capacity)
    planned: list[CanaryStep] = []
    for share in steps:
        if share > highest + 1e-9:
            raise ImpossiblePlanError(
                f"canary step {share:.0%} cannot be reached: with {live_instances} live instance(s) and "
                f"{canary_capacity} new one(s) the largest canary share is {highest:.0%}. "
                "Lower the step, or raise the service's capacity"
            )
        k = min(
            range(1, canary_capacity + 1),
            key=lambda k: (abs(k / (live_instances + k) - share), k),
        )
        step = CanaryStep(requested_share=share, canary_instances=k, live_instances=live_instances)
        if planned and planned[-1].canary_instances == k:
            continue  # two requested shares snap to the same instance count: analyse it once
        planned.append(step)
    return planned


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    image_version: str
    capacity: int = Field(ge=1)


class ReleaseProgress(BaseModel):
    """What this run has established that the cloud cannot tell: checks that passed."""

    smoke_passed_for: str | None = None  # image version whose smoke tests passed on the idle color
    passed_steps: list[int] = Field(default_factory=list)  # canary instance counts judged PASS
    approved: bool = False
    promoted_analysis_passed: bool = False
    pre_deploy_passed_for: str | None = None  # image version whose pre_deploy hook passed in this run


# Actions ----------------------------------------------------------------------------------------


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str


class PrepareIdle(_Action):
    kind: Literal["prepare_idle"] = "prepare_idle"
    color: Color
    image_version: str
    capacity: int


class ClearCanary(_Action):
    """Production back to the live color's own pool, then (unless `members_leave` is off) the idle
    instances out of the live color's canary pool, before anything touches them."""

    kind: Literal["clear_canary"] = "clear_canary"
    # Off when the idle instances stay as they are (the release is already live): leaving the pool
    # is an upgrade that may restart them, and nothing is about to change or test them.
    members_leave: bool = True


class SmokeTest(_Action):
    kind: Literal["smoke_test"] = "smoke_test"
    color: Color


class SetSplit(_Action):
    kind: Literal["set_split"] = "set_split"
    step: CanaryStep


class Analyse(_Action):
    kind: Literal["analyse"] = "analyse"
    step: CanaryStep


class AwaitApproval(_Action):
    kind: Literal["await_approval"] = "await_approval"


class Promote(_Action):
    kind: Literal["promote"] = "promote"
    to_color: Color


class AnalysePromoted(_Action):
    kind: Literal["analyse_promoted"] = "analyse_promoted"
    color: Color


class Finalize(_Action):
    kind: Literal["finalize"] = "finalize"
    live: Color


class Done(_Action):
    kind: Literal["done"] = "done"
    outcome: Literal["promoted", "already-live"]


class Stop(_Action):
    """Someone else decided this release is over (a rollback of its image): go no further, undo nothing."""

    kind: Literal["stop"] = "stop"


Action = Annotated[
    PrepareIdle
    | ClearCanary
    | SmokeTest
    | SetSplit
    | Analyse
    | AwaitApproval
    | Promote
    | AnalysePromoted
    | Finalize
    | Done
    | Stop,
    Field(discriminator="kind"),
]


class InconsistentStateError(RuntimeError):
    """The cloud is in a state no release step leads to; a person must look."""


def next_action(
    observed: ServiceObservation,
    target_image: ImageObservation,
    request: ReleaseRequest,
    policy: ReleasePolicy,
    progress: ReleaseProgress,
) -> Action:
    """The next step of the release of `request.image_version` (`target_image`, as the gallery shows
    it now) from what the cloud shows now."""
    gateway = observed.gateway
    if not gateway.exists or observed.live_color is None:
        raise InconsistentStateError(
            f"gateway {observed.topology.gateway} does not exist or has no production rule: run provision"
        )
    live = observed.live_color
    idle = live.other
    target = request.image_version
    live_set = observed.scale_set(live)
    idle_set = observed.scale_set(idle)
    phase = gateway.tags.get(TAG_PHASE)
    tagged_release = gateway.tags.get(TAG_RELEASE)

    # A rollback wins over the release it rolled back, whoever ran it and whenever this run looks
    # again: nothing below may prepare, split or promote that image any more.
    if tagged_release == target and phase == Phase.ROLLED_BACK:
        return Stop(reason=f"{target} was rolled back on {gateway.name} while this release ran; it stops here")
    if target_image.rolled_back:
        return Stop(reason=f"{target} is marked rolled back in the gallery; it never goes to users again")

    if observed.foreign_addresses:
        raise InconsistentStateError(
            f"{gateway.name}'s pools hold addresses that are no instance of {live.value} or {idle.value}: "
            f"{', '.join(observed.foreign_addresses)}; remove them (switchyard's pools hold scale-set NICs only)"
        )
    canary_prepared_or_serving = bool(observed.canary_addresses) or gateway.canary_routed

    # The target already serves production.
    if live_set.exists and live_set.runs_only == target and live_set.instances:
        if gateway.canary_routed:
            return ClearCanary(
                members_leave=False, reason=f"{live.value} already runs {target}; production leaves the canary pool"
            )
        # Idle instances may still sit in the live color's canary pool: after a switch, those of the
        # last release's canary, which served users until a moment ago and are now the warm color a
        # rollback returns to. Nothing routes to that pool, so they stay: leaving a pool is an
        # upgrade of the instance, which may restart it under requests still in flight, and in the
        # middle of the warm period. The next release that prepares this color takes them out first.
        if tagged_release == target and phase == Phase.PROMOTED:
            if not progress.promoted_analysis_passed and policy.promoted_analysis_window_s > 0:
                return AnalysePromoted(color=live, reason=f"{target} holds full traffic: check the SLOs")
            return Finalize(live=live, reason=f"{target} passed under full traffic")
        if tagged_release == target and phase == Phase.FINALIZED:
            return Done(outcome="promoted", reason=f"{target} is live on {live.value} and finalized")
        return Done(outcome="already-live", reason=f"{target} already serves production on {live.value}")

    # The idle color must run the target, at the live color's size, before anything else.
    capacity = max(request.capacity, live_set.capacity if live_set.exists else 0)
    idle_ready = (
        idle_set.exists
        and idle_set.runs_only == target
        and len(idle_set.instances) == capacity
        and gateway.pool_of(idle).healthy(idle_set.addresses)
    )
    if not idle_ready:
        if canary_prepared_or_serving:
            return ClearCanary(reason=f"{idle.value} must change; its canary leaves production first")
        return PrepareIdle(
            color=idle,
            image_version=target,
            capacity=capacity,
            reason=f"{idle.value} runs {idle_set.runs_only or 'nothing'}; it must run {target} on {capacity} "
            f"healthy instance(s)",
        )

    if progress.smoke_passed_for != target:
        if canary_prepared_or_serving:
            # A re-run after a crash mid-canary: prove the idle color again before users see it.
            return ClearCanary(reason="re-run: smoke tests come before user traffic again")
        return SmokeTest(color=idle, reason=f"{target} on {idle.value} has not been smoke tested by this run")

    live_serving = len(live_set.instances) if live_set.exists else 0
    if policy.strategy == Strategy.CANARY and live_serving > 0:
        for step in plan_canary_steps(policy.canary_steps, live_serving, len(idle_set.instances)):
            if step.canary_instances in progress.passed_steps:
                continue
            if len(observed.canary_addresses) != step.canary_instances or not gateway.canary_routed:
                return SetSplit(step=step, reason=f"canary step: {step.describe()}")
            return Analyse(step=step, reason=f"judge the canary at {step.share:.1%}")

    if policy.approval_required and not progress.approved:
        return AwaitApproval(reason="the release policy requires a person to approve the switch")

    return Promote(
        to_color=idle,
        reason=(
            f"{target} passed smoke tests"
            + (" and every canary step" if policy.strategy == Strategy.CANARY and live_serving else "")
            + f"; production moves to {idle.value}"
        ),
    )


def pre_deploy_due(observed: ServiceObservation, action: Action, image_version: str, progress: ReleaseProgress) -> bool:
    """Is `action` the first preparation of the idle color for `image_version`, so that the release's
    pre_deploy hook runs now, before it?

    Only when no idle instance runs the image yet: a re-run after a crash that finds the image
    (partly) on the idle color has passed pre_deploy before, since nothing is prepared until it
    passes. Hooks must be idempotent anyway: a crash between the hook and the first write runs it
    again."""
    if not isinstance(action, PrepareIdle) or action.image_version != image_version:
        return False
    if progress.pre_deploy_passed_for == image_version:
        return False
    return not any(i.image_version == image_version for i in observed.scale_set(action.color).instances)


def reaches_users(observed: ServiceObservation, action: Action, image_version: str) -> bool:
    """Do users see `image_version` once `action` runs? From then on a failure rolls back instead
    of just stopping.

    They do when a canary serves (production routes to the canary pool and it holds new instances),
    when the action puts it there (a split) or points production at them (the switch), or when
    production already runs it."""
    live = observed.live_color
    return (
        observed.canary_serving
        or isinstance(action, SetSplit | Promote)
        or (live is not None and observed.scale_set(live).runs_only == image_version)
    )


def retirement(observed: ServiceObservation, now: datetime) -> tuple[Color | None, str]:
    """Should the idle color scale to zero now? (the color, or None) and why.

    Only after a finalized release whose warm period has passed, and never while the idle color
    serves anything: a canary, or a release in flight (the gateway says canary or promoted).
    """
    idle = observed.idle_color
    if idle is None:
        return None, "no live color"
    scale_set = observed.scale_set(idle)
    scaled_down = already_scaled_down(scale_set)
    if scaled_down is not None:
        return None, scaled_down
    if observed.canary_serving:
        return None, f"{scale_set.name} serves a canary"
    stays = warm_period_pending(observed.gateway.tags, now, scale_set.name)
    if stays is not None:
        return None, stays
    due = _retire_after(observed.gateway.tags)
    assert due is not None  # warm_period_pending found it
    return idle, f"{scale_set.name} was kept warm until {due.isoformat()}"


def already_scaled_down(idle_set: ScaleSetObservation) -> str | None:
    """The part of `retirement` the idle scale set alone answers: nothing left to scale down."""
    if not idle_set.exists or idle_set.capacity == 0:
        return f"{idle_set.name} is already scaled down"
    return None


def warm_period_pending(tags: Mapping[str, str], now: datetime, idle_scale_set: str) -> str | None:
    """Why the idle color stays, by the gateway's tags alone (None: a finalized release's warm period
    is over). The part of `retirement` a look at the gateway's routes can answer: most of the time
    it does, and nothing else needs to be read."""
    if tags.get(TAG_PHASE) != Phase.FINALIZED:
        return f"{idle_scale_set} stays: the last release is {tags.get(TAG_PHASE) or 'unknown'}, not finalized"
    due = _retire_after(tags)
    if due is None:
        return f"{idle_scale_set} stays: no retirement time on the gateway"
    if now < due:
        return f"{idle_scale_set} stays warm until {due.isoformat()}"
    return None


def _retire_after(tags: Mapping[str, str]) -> datetime | None:
    """When finalize said the old color may scale to zero (the gateway's retire-after tag), if it says."""
    try:
        return datetime.fromisoformat(tags.get(TAG_RETIRE_AFTER, ""))
    except ValueError:
        return None


def canary_instances_for(observed: ServiceObservation, step: CanaryStep) -> list[str]:
    """Which instances of the idle color serve the canary (instance ids): the lowest ids, stably, so
    a larger step keeps the instances of the smaller one."""
    idle = observed.idle_color
    if idle is None:
        return []
    return [i.instance_id for i in observed.scale_set(idle).instances][: step.canary_instances]


def rollback_target(observed: ServiceObservation) -> Color | None:
    """The color production must go back to, or None when production is already stable.

    While a canary runs, production routes to the live color's canary pool: rolling back means
    routing it to the live color's own pool. After a promotion (finalized or not), the stable color
    is the previous one; after a rollback there is nothing left to undo.
    """
    live = observed.live_color
    if live is None:
        return None
    phase = observed.gateway.tags.get(TAG_PHASE)
    if observed.gateway.canary_routed:
        return live
    if phase in (Phase.PROMOTED, Phase.FINALIZED):
        previous = observed.gateway.tags.get(TAG_PREVIOUS)
        return Color(previous) if previous in (Color.BLUE, Color.GREEN) else live.other
    return None
