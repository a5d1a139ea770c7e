"""The rollout planner decides from observed state; these states are what the cloud can look like."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchyard.core.image_metadata import TAG_ROLLED_BACK
from switchyard.core.rollout import (
    TAG_PHASE,
    TAG_PREVIOUS,
    TAG_RELEASE,
    Analyse,
    AnalysePromoted,
    AwaitApproval,
    ClearCanary,
    Done,
    Finalize,
    ImpossiblePlanError,
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
    Strategy,
    canary_instances_for,
    next_action,
    plan_canary_steps,
    reaches_users,
    rollback_target,
)
from switchyard.core.state import (
    ImageObservation,
    PoolObservation,
)
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import V1, V2, observed, scale_set

REQUEST = ReleaseRequest(service="sample", environment="production", image_version=V2, capacity=3)
TARGET = ImageObservation(gallery_version=V2, exists=True, tags={TAG_ROLLED_BACK: "false"})
CANARY = ReleasePolicy(strategy=Strategy.CANARY, canary_steps=[0.25, 0.5])


def test_first_step_prepares_the_idle_color_at_the_live_capacity() -> None:
    action = next_action(
        observed(scale_set(Color.BLUE, V1, 4), scale_set(Color.GREEN, None, 0)),
        TARGET,
        REQUEST,
        CANARY,
        ReleaseProgress(),
    )
    assert isinstance(action, PrepareIdle)
    assert (action.color, action.image_version, action.capacity) == (Color.GREEN, V2, 4)


def test_an_idle_color_that_is_not_healthy_yet_is_prepared_again() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), healthy=False)
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), PrepareIdle)


def test_smoke_tests_come_before_any_user_traffic() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    action = next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress())
    assert isinstance(action, SmokeTest) and action.color is Color.GREEN


def test_canary_steps_snap_to_instance_ratios_and_alternate_split_and_analysis() -> None:
    progress = ReleaseProgress(smoke_passed_for=V2)
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    first = next_action(state, TARGET, REQUEST, CANARY, progress)
    assert isinstance(first, SetSplit)
    assert first.step.canary_instances == 1 and first.step.share == pytest.approx(0.25)

    split = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"])
    assert isinstance(next_action(split, TARGET, REQUEST, CANARY, progress), Analyse)

    progress.passed_steps.append(1)
    second = next_action(split, TARGET, REQUEST, CANARY, progress)
    assert isinstance(second, SetSplit)
    assert second.step.canary_instances == 3 and second.step.share == pytest.approx(0.5)


def test_after_every_step_passed_production_switches() -> None:
    progress = ReleaseProgress(smoke_passed_for=V2, passed_steps=[1, 3])
    state = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        canary=["127.2.0.4", "127.2.0.5", "127.2.0.6"],
    )
    action = next_action(state, TARGET, REQUEST, CANARY, progress)
    assert isinstance(action, Promote) and action.to_color is Color.GREEN


def test_blue_green_switches_right_after_smoke_tests() -> None:
    policy = ReleasePolicy(strategy=Strategy.BLUE_GREEN)
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    action = next_action(state, TARGET, REQUEST, policy, ReleaseProgress(smoke_passed_for=V2))
    assert isinstance(action, Promote)


def test_approval_is_awaited_before_the_switch_when_required() -> None:
    policy = ReleasePolicy(strategy=Strategy.BLUE_GREEN, approval_required=True)
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    assert isinstance(next_action(state, TARGET, REQUEST, policy, ReleaseProgress(smoke_passed_for=V2)), AwaitApproval)
    approved = ReleaseProgress(smoke_passed_for=V2, approved=True)
    assert isinstance(next_action(state, TARGET, REQUEST, policy, approved), Promote)


def test_the_first_release_has_no_baseline_so_it_switches_without_a_canary() -> None:
    state = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, V2, 3))
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress(smoke_passed_for=V2)), Promote)


def test_after_promotion_the_new_color_is_judged_then_finalized_then_done() -> None:
    tags = {TAG_RELEASE: V2, TAG_PHASE: Phase.PROMOTED.value, TAG_PREVIOUS: "blue"}
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.GREEN, tags=tags)
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), AnalysePromoted)
    judged = ReleaseProgress(promoted_analysis_passed=True)
    action = next_action(state, TARGET, REQUEST, CANARY, judged)
    assert isinstance(action, Finalize) and action.live is Color.GREEN
    finalized = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        live=Color.GREEN,
        tags={**tags, TAG_PHASE: Phase.FINALIZED.value},
    )
    done = next_action(finalized, TARGET, REQUEST, CANARY, judged)
    assert isinstance(done, Done) and done.outcome == "promoted"


def test_a_release_whose_image_was_rolled_back_after_promotion_stops_instead_of_promoting_again() -> None:
    """The rollback put production back on blue; the release that was judging green under full
    traffic must not see 'idle ready, steps passed' and promote it again."""
    rolled_back = {TAG_RELEASE: V2, TAG_PHASE: Phase.ROLLED_BACK.value, TAG_PREVIOUS: "blue"}
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), tags=rolled_back)
    everything_passed = ReleaseProgress(smoke_passed_for=V2, passed_steps=[1, 3], promoted_analysis_passed=True)
    action = next_action(state, TARGET, REQUEST, CANARY, everything_passed)
    assert isinstance(action, Stop) and "rolled back" in action.reason


def test_a_release_whose_image_the_gallery_marks_rolled_back_stops_at_any_step() -> None:
    marked = TARGET.model_copy(update={"tags": {TAG_ROLLED_BACK: "true"}})
    mid_canary = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        canary=["127.2.0.4"],
        tags={TAG_RELEASE: V2, TAG_PHASE: Phase.CANARY.value},
    )
    fresh = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0))
    for state in (mid_canary, fresh):
        assert isinstance(next_action(state, marked, REQUEST, CANARY, ReleaseProgress(smoke_passed_for=V2)), Stop)


def test_a_canary_the_guard_interrupted_is_continued_by_running_the_release_again() -> None:
    """The guard takes a dead release's canary out without judging it: that is no rollback."""
    state = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        tags={TAG_RELEASE: V2, TAG_PHASE: Phase.INTERRUPTED.value},
    )
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), SmokeTest)


def test_a_rollback_of_another_image_does_not_stop_this_release() -> None:
    state = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        tags={TAG_RELEASE: "1000500.20261100.1", TAG_PHASE: Phase.ROLLED_BACK.value},
    )
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), SmokeTest)


def test_releasing_what_already_serves_production_changes_nothing() -> None:
    state = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3))
    action = next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress())
    assert isinstance(action, Done) and action.outcome == "already-live"


def test_a_rerun_after_a_crash_mid_canary_takes_the_canary_out_before_smoke_testing_again() -> None:
    state = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        canary=["127.2.0.4"],
        tags={TAG_RELEASE: V2, TAG_PHASE: Phase.CANARY.value},
    )
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), ClearCanary)


def test_a_canary_of_an_older_image_leaves_production_before_the_idle_color_changes() -> None:
    state = observed(
        scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, "1000500.20261100.1", 3), canary=["127.2.0.4"]
    )
    assert isinstance(next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress()), ClearCanary)


def test_unknown_addresses_in_the_live_pool_stop_the_release() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["10.9.9.9"])
    with pytest.raises(InconsistentStateError, match=r"10\.9\.9\.9"):
        next_action(state, TARGET, REQUEST, CANARY, ReleaseProgress(smoke_passed_for=V2))


def test_reachable_shares_are_instance_ratios() -> None:
    steps = plan_canary_steps([0.1, 0.25, 0.5], live_instances=3, canary_capacity=3)
    assert [(s.canary_instances, round(s.share, 3)) for s in steps] == [(1, 0.25), (3, 0.5)]
    assert "25.0% delivered by 1 new beside 3 live" in steps[0].describe()


def test_a_share_beyond_what_the_new_color_can_carry_is_refused_with_the_fix() -> None:
    with pytest.raises(ImpossiblePlanError, match="largest canary share is 50%"):
        plan_canary_steps([0.25, 0.75], live_instances=2, canary_capacity=2)


@pytest.mark.parametrize("steps", [[0.0], [1.0], [0.5, 0.25], [0.3, 0.3], [-0.1]])
def test_malformed_canary_steps_are_refused(steps: list[float]) -> None:
    with pytest.raises(ValidationError):
        ReleasePolicy(canary_steps=steps)


def test_canary_instances_are_the_lowest_instance_ids() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    step = plan_canary_steps([0.4], 3, 3)[0]
    assert canary_instances_for(state, step) == ["0", "1"]


def test_rollback_target_mid_canary_is_the_live_color() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"])
    assert rollback_target(state) is Color.BLUE


@pytest.mark.parametrize("phase", [Phase.PROMOTED, Phase.FINALIZED])
def test_rollback_target_after_promotion_is_the_previous_color(phase: Phase) -> None:
    tags = {TAG_RELEASE: V2, TAG_PHASE: phase.value, TAG_PREVIOUS: "blue"}
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.GREEN, tags=tags)
    assert rollback_target(state) is Color.BLUE


def test_nothing_to_roll_back_when_production_is_stable() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    assert rollback_target(state) is None
    rolled_back = observed(
        scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), tags={TAG_PHASE: Phase.ROLLED_BACK.value}
    )
    assert rollback_target(rolled_back) is None


def test_the_idle_color_retires_only_after_a_finalized_release_and_its_warm_period() -> None:
    from datetime import timedelta

    from switchyard.core.rollout import TAG_RETIRE_AFTER, retirement

    due = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    tags = {TAG_PHASE: Phase.FINALIZED.value, TAG_RETIRE_AFTER: due.isoformat()}
    state = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3), tags=tags)
    assert retirement(state, due - timedelta(seconds=1))[0] is None
    assert retirement(state, due)[0] is Color.GREEN
    in_flight = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3), tags={TAG_PHASE: "promoted"})
    assert retirement(in_flight, due)[0] is None
    canary = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3), tags=tags, canary=["127.2.0.4"])
    assert retirement(canary, due)[0] is None
    # The last release's canary still in the live color's canary pool, which nothing routes to:
    # membership serves nobody, and scaling the color in takes it out of every pool.
    leftover = observed(
        scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3), tags=tags, canary=["127.2.0.4"], routed=False
    )
    assert retirement(leftover, due)[0] is Color.GREEN


def test_the_gateways_tags_alone_say_when_the_idle_color_certainly_stays() -> None:
    from datetime import timedelta

    from switchyard.core.rollout import TAG_RETIRE_AFTER, warm_period_pending

    due = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    finalized = {TAG_PHASE: Phase.FINALIZED.value, TAG_RETIRE_AFTER: due.isoformat()}
    assert (
        warm_period_pending(finalized, due - timedelta(seconds=1), "green")
        == f"green stays warm until {due.isoformat()}"
    )
    assert warm_period_pending(finalized, due, "green") is None  # due: the rest of the rule decides
    assert "not finalized" in str(warm_period_pending({TAG_PHASE: Phase.PROMOTED.value}, due, "green"))
    assert "no retirement time" in str(warm_period_pending({TAG_PHASE: Phase.FINALIZED.value}, due, "green"))


def test_after_the_switch_the_old_colors_canary_instances_are_not_touched() -> None:
    """Green was live and blue its canary; now blue is promoted. Green's instances that were in blue's
    canary pool served users until the switch a moment ago, and are the warm color a rollback returns
    to: taking them out of the pool (an upgrade, which may restart them) would cut requests still in
    flight. Nothing routes there, so the release goes on."""
    just_switched = observed(
        scale_set(Color.BLUE, V2, 3),
        scale_set(Color.GREEN, V1, 3),
        canary=["127.2.0.4"],
        routed=False,
        tags={TAG_RELEASE: V2, TAG_PHASE: Phase.PROMOTED.value, TAG_PREVIOUS: "green"},
    )
    assert just_switched.canary_addresses == ["127.2.0.4"]
    assert isinstance(next_action(just_switched, TARGET, REQUEST, CANARY, ReleaseProgress()), AnalysePromoted)
    finalized = just_switched.model_copy(
        update={
            "gateway": just_switched.gateway.model_copy(
                update={"tags": {TAG_RELEASE: V2, TAG_PHASE: Phase.FINALIZED.value}}
            )
        }
    )
    done = next_action(finalized, TARGET, REQUEST, CANARY, ReleaseProgress())
    assert isinstance(done, Done) and done.outcome == "promoted"


def test_production_on_a_canary_pool_of_a_live_release_goes_back_without_touching_the_instances() -> None:
    routed = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3), canary=["127.2.0.4"])
    action = next_action(routed, TARGET, REQUEST, CANARY, ReleaseProgress())
    assert isinstance(action, ClearCanary) and not action.members_leave


# --- when users see the new version: from then on a failure rolls back -------------------------

STEP = plan_canary_steps([0.25], 3, 3)[0]


def test_preparing_and_smoke_testing_the_idle_color_reaches_no_user() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    assert not reaches_users(state, PrepareIdle(color=Color.GREEN, image_version=V2, capacity=3, reason=""), V2)
    assert not reaches_users(state, SmokeTest(color=Color.GREEN, reason=""), V2)
    assert not reaches_users(state, AwaitApproval(reason=""), V2)


@pytest.mark.parametrize(
    "action", [SetSplit(step=STEP, reason=""), Promote(to_color=Color.GREEN, reason="")], ids=["split", "switch"]
)
def test_a_split_or_the_switch_puts_the_new_version_in_front_of_users(action: SetSplit | Promote) -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    assert reaches_users(state, action, V2)


def test_instances_serving_in_the_live_pool_reach_users_whatever_the_next_action() -> None:
    split = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"])
    assert reaches_users(split, Analyse(step=STEP, reason=""), V2)
    # Even taking them out: until the write lands, users are served by them.
    assert reaches_users(split, ClearCanary(reason=""), V2)


def test_a_version_production_already_runs_reaches_users() -> None:
    promoted = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.GREEN)
    assert reaches_users(promoted, Finalize(live=Color.GREEN, reason=""), V2)
    assert not reaches_users(promoted, Finalize(live=Color.GREEN, reason=""), "1002000.20261100.1")


def test_a_canary_that_is_prepared_but_not_routed_is_routed_before_it_is_judged() -> None:
    """k idle instances sit in the canary pool but production still routes to the live pool (a crash
    between the two writes): users have not met it, so the step sets the split (routes) first."""
    prepared = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"], routed=False)
    smoked = ReleaseProgress(smoke_passed_for=V2)
    action = next_action(prepared, TARGET, REQUEST, CANARY, smoked)
    assert isinstance(action, SetSplit) and action.step.canary_instances == 1
    assert not prepared.canary_serving and not reaches_users(prepared, Analyse(step=action.step, reason=""), V2)
    serving = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"])
    assert serving.canary_serving
    assert isinstance(next_action(serving, TARGET, REQUEST, CANARY, smoked), Analyse)


def test_a_rollback_mid_canary_routes_production_back_to_the_live_pool() -> None:
    serving = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=["127.2.0.4"])
    assert rollback_target(serving) is Color.BLUE
    # Production on the canary pool with no canary in it yet still routes back: nothing else is stable.
    routed_only = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=[], routed=True)
    assert rollback_target(routed_only) is Color.BLUE


def test_the_canary_of_the_last_release_is_stale_membership_not_a_canary() -> None:
    """After green was promoted, its former canary instances still sit in blue's canary pool: nothing
    routes there, so it is no canary of green's; finalize cleans it up."""
    state = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        live=Color.GREEN,
        tags={TAG_RELEASE: V2, TAG_PHASE: Phase.PROMOTED.value, TAG_PREVIOUS: "blue"},
    )
    stale = state.model_copy(
        update={
            "gateway": state.gateway.model_copy(
                update={
                    "pools": {
                        **state.gateway.pools,
                        "blue-and-canary": PoolObservation(
                            name="blue-and-canary", member_addresses=["127.1.0.4", "127.2.0.4"]
                        ),
                    }
                }
            )
        }
    )
    assert stale.stale_canary_addresses == ["127.2.0.4"] and not stale.canary_addresses
    assert isinstance(next_action(stale, TARGET, REQUEST, CANARY, ReleaseProgress()), AnalysePromoted)
