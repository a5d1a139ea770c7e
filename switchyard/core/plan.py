"""`switchyard release ... --plan`: the steps a release would take, from what the cloud shows now.

Pure. The plan is not a second planner: it runs the release's own planner (rollout.next_action)
forward, from the observation, over what each action would leave behind in the cloud had it
succeeded (every analysis passes, a person approves). So a release mid-canary or already promoted
is planned from where it stands, exactly as a release run started now would continue it
(docs/decisions/0004-truth-lives-in-the-cloud.md), and the plan cannot drift from the planner.
Preflight's checks come from preflight.check_release, the same judgement the release makes first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from switchyard.core.capacity import ComputeQuota
from switchyard.core.config import ServiceContext
from switchyard.core.preflight import RecentTraffic, check_release
from switchyard.core.rollout import (
    TAG_PHASE,
    TAG_PREVIOUS,
    TAG_RELEASE,
    Action,
    Analyse,
    AnalysePromoted,
    AwaitApproval,
    CanaryStep,
    ClearCanary,
    Done,
    Finalize,
    InconsistentStateError,
    Phase,
    PrepareIdle,
    Promote,
    ReleasePolicy,
    ReleaseProgress,
    ReleaseRequest,
    SetSplit,
    SmokeTest,
    Stop,
    canary_instances_for,
    next_action,
)
from switchyard.core.state import (
    ImageObservation,
    InstanceObservation,
    PoolObservation,
    ScaleSetObservation,
    ServiceObservation,
)
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Topology

# The release flow gives up after this many steps (flows/release.py MAX_STEPS); a plan that does
# not end by then says so instead of looping.
MAX_PLANNED_STEPS = 40

PlanOutcome = Literal["promoted", "already-live", "refused", "stopped", "inconsistent", "does-not-converge"]


class PlanCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    detail: str


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    kind: str  # the planner's action kind (rollout.Action)
    title: str
    detail: str  # the planner's own reason
    # Canary steps: the share asked for, the share k/(N+k) the instances deliver, and k and N.
    requested_share: float | None = None
    share: float | None = None
    canary_instances: int | None = None
    live_instances: int | None = None


class ReleasePlan(BaseModel):
    """What a release of `image_version` would do if started now; nothing in it was done."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    image_version: str
    strategy: str
    observed_at: datetime
    live_color: str | None
    live_image: str | None
    situation: str  # where things stand now, in one sentence
    note: str = ""  # what the reader must know to read the plan (a release that may still be running)
    checks: list[PlanCheck]
    steps: list[PlanStep]
    outcome: PlanOutcome
    outcome_detail: str

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"

    def text(self) -> str:
        lines = [
            f"Plan: release of {self.service} {self.image_version} to {self.environment} "
            f"({self.strategy}); nothing has been changed",
            f"Now: {self.situation}",
            *([f"Note: {self.note}"] if self.note else []),
            "Preflight:",
            *(f"  {'ok  ' if c.passed else 'FAIL'} {c.detail}" for c in self.checks),
        ]
        if self.steps:
            lines.append("Steps:")
            width = len(str(self.steps[-1].number))
            for step in self.steps:
                lines.append(f"  {step.number:>{width}}. {step.title}")
                lines.append(f"  {'':>{width}}  {step.detail}")
        lines.append(f"Ends: {self.outcome}: {self.outcome_detail}")
        return "\n".join(lines)

    def markdown(self, heading: str = "##") -> str:
        """A section of its own (the release's artifact opens with it)."""
        lines = [
            f"{heading} Plan",
            "",
            f"Planned at {self.observed_at:%Y-%m-%d %H:%M:%S} UTC from what the cloud showed: {_md(self.situation)}",
            "",
            *([f"_{_md(self.note)}_", ""] if self.note else []),
            f"{heading}# Preflight",
            "",
            *(f"- {'✅' if c.passed else '❌'} {_md(c.detail)}" for c in self.checks),
            "",
        ]
        if self.steps:
            lines += [f"{heading}# Steps", ""]
            lines += [f"{step.number}. **{_md(step.title)}**: {_md(step.detail)}" for step in self.steps]
            lines.append("")
        lines.append(f"**Ends: {self.outcome}.** {_md(self.outcome_detail)}")
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Free text in a Markdown list item: a newline would end the item."""
    return text.replace("\n", " ")


def plan_release(
    context: ServiceContext,
    policy: ReleasePolicy,
    image: ImageObservation,
    published: list[str],
    observed: ServiceObservation,
    quota: ComputeQuota | Exception,
    timing: MetricTiming | Exception,
    traffic: RecentTraffic | Exception | None = None,
) -> ReleasePlan:
    """The release's plan from the inputs its preflight reads (tasks/release.py gathers them)."""
    preflight = check_release(context, policy, image, published, observed, quota, timing, traffic)
    checks = [PlanCheck(passed=True, detail=c) for c in preflight.checks]
    checks += [PlanCheck(passed=False, detail=p) for p in preflight.problems]
    if preflight.blocker is not None:
        checks.append(PlanCheck(passed=False, detail=preflight.blocker))
    common = {
        "service": context.service.name,
        "environment": context.environment.name,
        "image_version": image.gallery_version,
        "strategy": policy.strategy.value,
        "observed_at": observed.observed_at,
        "live_color": preflight.live_color.value if preflight.live_color else None,
        "live_image": preflight.live_image,
        "situation": situation(observed),
        "note": _in_flight_note(observed),
        "checks": checks,
    }
    if preflight.refusal is not None:
        return ReleasePlan(
            **common,
            steps=[],
            outcome="refused",
            outcome_detail="preflight refuses this release before any change, so no step would run: "
            + "; ".join(c.detail for c in checks if not c.passed),
        )
    request = ReleaseRequest(
        service=context.service.name,
        environment=context.environment.name,
        image_version=image.gallery_version,
        capacity=context.service.capacity,
    )
    steps, outcome, detail = simulate(observed, image, request, policy)
    return ReleasePlan(**common, steps=steps, outcome=outcome, outcome_detail=detail)


def situation(observed: ServiceObservation) -> str:
    """Where the service stands: the live color and its image, and a release under way."""
    live = observed.live_color
    if not observed.gateway.exists:
        return f"{observed.gateway.name} does not exist (not provisioned)"
    if live is None:
        return f"{observed.gateway.name} routes production nowhere"
    live_set = observed.scale_set(live)
    idle_set = observed.scale_set(live.other)
    parts = [
        f"production on {live.value}"
        + (
            f" ({len(live_set.instances)} instance(s) of {live_set.runs_only or 'mixed versions'})"
            if live_set.instances
            else " (no instances yet)"
        )
    ]
    if idle_set.instances:
        parts.append(f"{live.other.value} idle with {len(idle_set.instances)} of {idle_set.runs_only or 'mixed'}")
    canary = observed.canary_addresses
    if observed.canary_serving:
        share = len(canary) / (len(live_set.instances) + len(canary))
        parts.append(f"mid-canary: {len(canary)} {live.other.value} instance(s) serve {share:.1%} of users")
    elif canary:
        parts.append(f"{len(canary)} {live.other.value} instance(s) in the canary pool, not serving")
    tags = observed.gateway.tags
    if TAG_RELEASE in tags:
        parts.append(f"last release {tags[TAG_RELEASE]} is {tags.get(TAG_PHASE) or 'of unknown phase'}")
    return "; ".join(parts)


def _in_flight_note(observed: ServiceObservation) -> str:
    """The gateway says a release is under way; whether its run is still alive only Prefect knows."""
    tags = observed.gateway.tags
    if tags.get(TAG_PHASE) not in (Phase.CANARY, Phase.PROMOTED):
        return ""
    return (
        f"the release of {tags.get(TAG_RELEASE)} is {tags.get(TAG_PHASE)}; if its run is still going, a new run "
        "waits for its lock, and this is what it would do from what the cloud shows now"
    )


def simulate(
    observed: ServiceObservation, image: ImageObservation, request: ReleaseRequest, policy: ReleasePolicy
) -> tuple[list[PlanStep], PlanOutcome, str]:
    """Ask the planner for each next action and apply what that action would do, until it is done.

    The progress starts empty, as in a release run started now: a run that died mid-canary left
    nothing but the cloud behind, so a new run takes its canary out and smoke-tests again."""
    progress = ReleaseProgress()
    steps: list[PlanStep] = []
    for _ in range(MAX_PLANNED_STEPS):
        try:
            action = next_action(observed, image, request, policy, progress)
        except InconsistentStateError as error:
            return steps, "inconsistent", f"the planner stops: {error}"
        if isinstance(action, Done):
            return steps, action.outcome, action.reason
        if isinstance(action, Stop):
            return steps, "stopped", action.reason
        steps.append(_step(len(steps) + 1, action, policy))
        observed, progress = _after(observed, action, request.image_version, progress)
    return steps, "does-not-converge", f"the planner did not finish within {MAX_PLANNED_STEPS} steps"


def _step(number: int, action: Action, policy: ReleasePolicy) -> PlanStep:
    title: str
    canary: CanaryStep | None = None
    if isinstance(action, PrepareIdle):
        title = f"prepare {action.color.value}: {action.capacity} instance(s) of {action.image_version}"
        if policy.min_ready_s:
            title += f", healthy for {policy.min_ready_s:g} s"
    elif isinstance(action, ClearCanary):
        title = (
            "take the canary out (production back to the live pool first)"
            if action.members_leave
            else "production back to the live pool (its canary instances stay warm as they are)"
        )
    elif isinstance(action, SmokeTest):
        own = f" and the policy's {len(policy.smoke_checks)} check(s)" if policy.smoke_checks else ""
        title = f"smoke-test {action.color.value} through the test listener: health, /version{own}"
    elif isinstance(action, SetSplit | Analyse):
        step = action.step
        verb = "set the split, judge it" if isinstance(action, SetSplit) else "judge it"
        title = f"canary at {step.share:.1%}: {verb} for {policy.analysis_window_s:g} s"
        canary = step
    elif isinstance(action, AwaitApproval):
        title = f"wait for a person's approval (up to {policy.approval_timeout_s:g} s)"
    elif isinstance(action, Promote):
        title = f"promote: production moves to {action.to_color.value} in one guarded gateway write"
    elif isinstance(action, AnalysePromoted):
        title = f"judge {action.color.value} under full traffic for {policy.promoted_analysis_window_s:g} s"
    elif isinstance(action, Finalize):
        title = (
            f"finalize: autoscale follows {action.live.value}, the image becomes eligible as latest, "
            f"{action.live.other.value} stays warm for {policy.scale_down_delay_s:g} s"
        )
        if policy.enable_flags:
            title += f"; then flags {', '.join(policy.enable_flags)} go on"
    else:  # Done and Stop end the plan before they get here
        raise AssertionError(f"no plan step for {action.kind}")
    return PlanStep(
        number=number,
        kind=action.kind,
        title=title,
        detail=action.reason,
        requested_share=canary.requested_share if canary else None,
        share=canary.share if canary else None,
        canary_instances=canary.canary_instances if canary else None,
        live_instances=canary.live_instances if canary else None,
    )


# What each action leaves behind once it succeeded -------------------------------------------------


def _after(
    observed: ServiceObservation, action: Action, target: str, progress: ReleaseProgress
) -> tuple[ServiceObservation, ReleaseProgress]:
    """The observation and the run's progress after `action` did what its task does (tasks/release.py,
    tasks/canary.py), with every check passing."""
    live = observed.live_color
    assert live is not None  # next_action refuses an observation without a live color
    idle = live.other
    if isinstance(action, PrepareIdle):
        # roll_out: `capacity` instances of the image, each in its own color's two pools only.
        prepared = _prepared(observed.scale_set(action.color), action.image_version, action.capacity)
        observed = _with_scale_set(observed, prepared)
        addresses = prepared.addresses
        observed = _with_pools(
            observed,
            {
                Topology.pool(action.color): addresses,
                Topology.canary_pool(action.color): addresses,
                Topology.canary_pool(action.color.other): _without(
                    observed.gateway.canary_pool_of(action.color.other).member_addresses, set(addresses)
                ),
            },
        )
        return observed, progress
    if isinstance(action, ClearCanary):
        observed = _routed(observed, production=Topology.pool(live), test=Topology.pool(idle), tags={})
        leaving = set(observed.canary_addresses) if action.members_leave else set()
        observed = _with_pools(
            observed,
            {Topology.canary_pool(live): _without(observed.gateway.canary_pool_of(live).member_addresses, leaving)},
        )
        return observed, progress
    if isinstance(action, SmokeTest):
        return observed, progress.model_copy(update={"smoke_passed_for": target})
    if isinstance(action, SetSplit | Analyse):
        if isinstance(action, SetSplit):
            wanted = set(canary_instances_for(observed, action.step))
            idle_set = observed.scale_set(idle)
            joining = [i.private_ip for i in idle_set.instances if i.instance_id in wanted and i.private_ip]
            idle_addresses = set(idle_set.addresses)
            members = _without(observed.gateway.canary_pool_of(live).member_addresses, idle_addresses)
            observed = _with_pools(observed, {Topology.canary_pool(live): [*members, *joining]})
            observed = _routed(
                observed,
                production=Topology.canary_pool(live),
                test=Topology.pool(idle),
                tags={TAG_RELEASE: target, TAG_PHASE: Phase.CANARY.value},
            )
        # The release sets a split and judges it in one go; the plan assumes the verdict passes.
        passed = [*progress.passed_steps, action.step.canary_instances]
        return observed, progress.model_copy(update={"passed_steps": passed})
    if isinstance(action, AwaitApproval):
        return observed, progress.model_copy(update={"approved": True})
    if isinstance(action, Promote):
        observed = _routed(
            observed,
            production=Topology.pool(action.to_color),
            test=Topology.pool(action.to_color.other),
            tags={TAG_RELEASE: target, TAG_PHASE: Phase.PROMOTED.value, TAG_PREVIOUS: live.value},
        )
        return observed, progress
    if isinstance(action, AnalysePromoted):
        return observed, progress.model_copy(update={"promoted_analysis_passed": True})
    if isinstance(action, Finalize):
        return _routed(observed, tags={TAG_PHASE: Phase.FINALIZED.value}), progress
    raise AssertionError(f"no effect known for {action.kind}")


def _prepared(scale_set: ScaleSetObservation, image_version: str, capacity: int) -> ScaleSetObservation:
    """The scale set after roll_out: existing instances keep their ids and addresses, new ones get
    placeholder addresses (the plan only needs them to be distinct)."""
    instances = [
        InstanceObservation(
            instance_id=existing.instance_id if existing else str(index),
            name=existing.name if existing else f"{scale_set.name}_{index}",
            private_ip=(existing.private_ip if existing else None) or f"planned:{scale_set.name}:{index}",
            image_version=image_version,
            latest_model_applied=True,
            provisioning_state="Succeeded",
        )
        for index, existing in (
            (i, scale_set.instances[i] if i < len(scale_set.instances) else None) for i in range(capacity)
        )
    ]
    return scale_set.model_copy(
        update={"exists": True, "capacity": capacity, "image_version": image_version, "instances": instances}
    )


def _with_scale_set(observed: ServiceObservation, scale_set: ScaleSetObservation) -> ServiceObservation:
    return observed.model_copy(update={"scale_sets": {**observed.scale_sets, scale_set.color: scale_set}})


def _with_pools(observed: ServiceObservation, members: dict[str, list[str]]) -> ServiceObservation:
    """Pools with these members, every member Up (a prepared instance is healthy by then)."""
    pools = dict(observed.gateway.pools)
    for name, addresses in members.items():
        pools[name] = PoolObservation(name=name, member_addresses=addresses, health=dict.fromkeys(addresses, "Up"))
    return observed.model_copy(update={"gateway": observed.gateway.model_copy(update={"pools": pools})})


def _routed(
    observed: ServiceObservation,
    *,
    production: str | None = None,
    test: str | None = None,
    tags: dict[str, str],
) -> ServiceObservation:
    """One gateway write: the rules (when given) and merged tags."""
    gateway = observed.gateway
    update: dict[str, object] = {"tags": {**gateway.tags, **tags}}
    if production is not None:
        update["production_pool"] = production
    if test is not None:
        update["test_pool"] = test
    return observed.model_copy(update={"gateway": gateway.model_copy(update=update)})


def _without(addresses: list[str], leaving: set[str]) -> list[str]:
    return [a for a in addresses if a not in leaving]
