"""The release plan: the planner run forward from what the cloud shows, nothing done.

Each case starts from an observation built in cloud_states.py: a fresh topology, a steady one, a
release mid-canary, one already promoted, and ones preflight refuses.
"""

from __future__ import annotations

import json

from switchyard.core.capacity import ComputeQuota
from switchyard.core.plan import ReleasePlan, plan_release
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.reports import release_report
from switchyard.core.rollout import TAG_PHASE, TAG_PREVIOUS, TAG_RELEASE, ReleasePolicy, Strategy
from switchyard.core.state import ImageObservation, ServiceObservation
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import (
    OBSERVED_AT,
    V1,
    V2,
    address,
    context,
    image,
    missing_image,
    observed,
    quota,
    scale_set,
)

# The fleet's default policy (deployments/fleet.yaml), in short.
CANARY = ReleasePolicy(
    strategy=Strategy.CANARY,
    canary_steps=[0.25, 0.5],
    analysis_window_s=8,
    promoted_analysis_window_s=4,
    min_ready_s=3,
    scale_down_delay_s=30,
)
BLUE_GREEN = CANARY.model_copy(update={"strategy": Strategy.BLUE_GREEN})
FAST = MetricTiming.for_grain(1)  # the emulator's fast profile: one-second grains

FRESH = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0))
STEADY = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 3))
MID_CANARY = observed(
    scale_set(Color.BLUE, V1, 3),
    scale_set(Color.GREEN, V2, 3),
    canary=[address(Color.GREEN, 0)],
    tags={TAG_RELEASE: V2, TAG_PHASE: "canary"},
)
PROMOTED = observed(
    scale_set(Color.BLUE, V1, 3),
    scale_set(Color.GREEN, V2, 3),
    live=Color.GREEN,
    tags={TAG_RELEASE: V2, TAG_PHASE: "promoted", TAG_PREVIOUS: "blue"},
)


def plan(
    state: ServiceObservation,
    policy: ReleasePolicy = CANARY,
    *,
    target: ImageObservation | None = None,
    published: tuple[str, ...] = (),
    found_quota: ComputeQuota | Exception | None = None,
    timing: MetricTiming | Exception = FAST,
) -> ReleasePlan:
    """The plan of releasing V2 from `state`, with every other input as a healthy cloud shows it."""
    return plan_release(
        context(),
        policy,
        target or image(),
        list(published),
        state,
        quota() if found_quota is None else found_quota,
        timing,
    )


def kinds(found: ReleasePlan) -> list[str]:
    return [step.kind for step in found.steps]


def test_a_first_release_on_a_fresh_topology_prepares_smokes_and_promotes_without_a_canary() -> None:
    found = plan(FRESH)

    # Nothing is live to compare a canary with: the planner goes straight to the switch.
    assert kinds(found) == ["prepare_idle", "smoke_test", "promote", "analyse_promoted", "finalize"]
    assert found.steps[0].title == f"prepare green: 3 instance(s) of {V2}, healthy for 3 s"
    assert found.outcome == "promoted" and found.note == ""
    assert found.live_color == "blue" and found.live_image is None
    assert found.situation == "production on blue (no instances yet)"
    assert all(check.passed for check in found.checks)
    assert "no live instances yet: first release of sample here" in [c.detail for c in found.checks]


def test_a_canary_from_a_steady_state_lists_each_step_with_the_share_it_delivers() -> None:
    found = plan(STEADY)

    assert kinds(found) == [
        "prepare_idle",
        "smoke_test",
        "set_split",
        "set_split",
        "promote",
        "analyse_promoted",
        "finalize",
    ]
    canary = [s for s in found.steps if s.kind == "set_split"]
    assert [(s.requested_share, s.share, s.canary_instances, s.live_instances) for s in canary] == [
        (0.25, 0.25, 1, 3),
        (0.5, 0.5, 3, 3),
    ]
    assert canary[0].title == "canary at 25.0%: set the split, judge it for 8 s"
    assert canary[0].detail == "canary step: 25% requested -> 25.0% delivered by 1 new beside 3 live instance(s)"
    assert [s.number for s in found.steps] == list(range(1, 8))
    assert found.outcome == "promoted"


def test_a_share_that_snaps_is_planned_at_the_share_the_instances_deliver() -> None:
    found = plan(STEADY, CANARY.model_copy(update={"canary_steps": [0.1, 0.3]}))

    canary = [(s.requested_share, round(s.share or 0, 3)) for s in found.steps if s.kind == "set_split"]
    assert canary == [(0.1, 0.25)]  # 0.1 and 0.3 both snap to 1 new beside 3: analysed once


def test_mid_canary_the_plan_starts_where_the_release_stands() -> None:
    found = plan(MID_CANARY)

    assert found.situation == (
        f"production on blue (3 instance(s) of {V1}); green idle with 3 of {V2}; "
        f"mid-canary: 1 green instance(s) serve 25.0% of users; last release {V2} is canary"
    )
    # A new run knows nothing the dead one proved: the canary goes, the smoke tests run again, and
    # the canary restarts from its first step. Green is already prepared: no prepare step.
    assert kinds(found) == [
        "clear_canary",
        "smoke_test",
        "set_split",
        "set_split",
        "promote",
        "analyse_promoted",
        "finalize",
    ]
    assert found.outcome == "promoted"


def test_after_promotion_only_the_analysis_under_full_traffic_and_finalize_remain() -> None:
    found = plan(PROMOTED)

    assert kinds(found) == ["analyse_promoted", "finalize"]
    assert found.steps[0].title == "judge green under full traffic for 4 s"
    assert found.live_color == "green" and found.live_image == V2
    assert found.outcome == "promoted"


def test_a_finalized_release_has_nothing_left_to_do() -> None:
    done = PROMOTED.model_copy(
        update={"gateway": PROMOTED.gateway.model_copy(update={"tags": {TAG_RELEASE: V2, TAG_PHASE: "finalized"}})}
    )
    found = plan(done)

    assert found.steps == [] and found.outcome == "promoted"
    assert found.outcome_detail == f"{V2} is live on green and finalized"


def test_approval_comes_before_the_switch_when_the_policy_asks_for_it() -> None:
    found = plan(STEADY, BLUE_GREEN.model_copy(update={"approval_required": True}))

    assert kinds(found) == ["prepare_idle", "smoke_test", "await_approval", "promote", "analyse_promoted", "finalize"]
    assert found.steps[2].title == "wait for a person's approval (up to 3600 s)"


def test_blue_green_has_no_canary_and_no_promoted_analysis_when_its_window_is_zero() -> None:
    found = plan(STEADY, BLUE_GREEN.model_copy(update={"promoted_analysis_window_s": 0}))

    assert kinds(found) == ["prepare_idle", "smoke_test", "promote", "finalize"]


def test_a_release_preflight_refuses_plans_no_step_and_says_why() -> None:
    found = plan(STEADY, target=missing_image(), published=(V1,))

    assert found.refused and found.steps == []
    failed = [c.detail for c in found.checks if not c.passed]
    assert failed == [
        f"image sample {V2} is not in gallery switchyard_gallery (published versions: {V1}); build it with "
        "`switchyard image build sample --app-version ...`"
    ]
    assert found.outcome_detail.endswith(failed[0])


def test_an_unprovisioned_service_is_refused_with_the_one_thing_to_do() -> None:
    found = plan(observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0), gateway_exists=False))

    assert found.refused and found.steps == []
    assert found.situation == "sample-production-agw does not exist (not provisioned)"
    assert "provision sample in production first" in found.outcome_detail
    assert found.live_color is None


def test_errors_reading_the_quota_or_metrics_are_failed_checks_not_crashes() -> None:
    found = plan(STEADY, found_quota=RuntimeError("usage.list: 503"), timing=RuntimeError("no definitions"))

    assert found.refused
    assert {c.detail for c in found.checks if not c.passed} == {
        "cannot read the compute quota, so room for the new color is unknown: usage.list: 503",
        "cannot read the gateway's metric definitions, so the analysis windows cannot be checked: no definitions",
    }


def test_an_image_rolled_back_elsewhere_is_refused() -> None:
    found = plan(MID_CANARY, target=image(rolled_back=True))

    assert found.refused
    assert f"image {V2} was rolled back before; publish a fixed version instead" in found.outcome_detail


def test_the_text_names_every_check_and_step_and_says_nothing_changed() -> None:
    text = plan(MID_CANARY).text()
    lines = text.splitlines()

    assert lines[0] == f"Plan: release of sample {V2} to production (canary); nothing has been changed"
    assert lines[1].startswith("Now: production on blue")
    assert "  ok   live color blue: 3 healthy instance(s)" in lines
    assert lines[2] == (
        f"Note: the release of {V2} is canary; if its run is still going, a new run waits for its lock, "
        "and this is what it would do from what the cloud shows now"
    )
    assert "  1. take the canary out (production back to the live pool first)" in lines
    assert "     re-run: smoke tests come before user traffic again" in lines
    assert lines[-1] == f"Ends: promoted: {V2} is live on green and finalized"


def test_the_plan_round_trips_through_json() -> None:
    found = plan(STEADY)

    again = ReleasePlan.model_validate(json.loads(found.model_dump_json()))
    assert again == found
    assert again.observed_at == OBSERVED_AT


def test_the_release_summary_opens_with_the_plan() -> None:
    found = plan(STEADY)
    summary = ReleaseSummary(
        service="sample",
        environment="production",
        image_version=V2,
        strategy="canary",
        started_at=OBSERVED_AT,
        plan=found,
    )
    summary.add(OBSERVED_AT, "preflight", "ok")
    markdown = release_report(summary).markdown

    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Plan", "## Timeline"]
    assert "### Steps" in markdown and "### Preflight" in markdown
    assert "3. **canary at 25.0%: set the split, judge it for 8 s**: canary step: 25% requested" in markdown
    assert markdown.index("## Plan") < markdown.index("## Timeline")


def test_a_summary_without_a_plan_renders_as_before() -> None:
    summary = ReleaseSummary(
        service="sample", environment="production", image_version=V2, strategy="canary", started_at=OBSERVED_AT
    )
    assert "## Plan" not in release_report(summary).markdown
