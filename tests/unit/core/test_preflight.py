"""Preflight: what a release checks before it changes anything, and how it says no."""

from __future__ import annotations

from switchyard.core.config import AutoscaleConfig
from switchyard.core.preflight import RecentTraffic, check_release, traffic_lookback_s, version_refusal
from switchyard.core.rollout import ReleasePolicy, Strategy, SyntheticLoad
from switchyard.core.state import ServiceObservation
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import (
    TOPOLOGY,
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

CANARY = ReleasePolicy(strategy=Strategy.CANARY, canary_steps=[0.25, 0.5])
BLUE_GREEN = ReleasePolicy(strategy=Strategy.BLUE_GREEN)
STEADY = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 0))

FAST = MetricTiming.for_grain(1)  # the emulator's fast profile: one-second grains


def test_a_release_everything_is_ready_for_lists_what_was_checked_and_plans_the_canary() -> None:
    found = check_release(context(), CANARY, image(), [], STEADY, quota(), FAST)

    assert found.refusal is None and found.problems == []
    assert found.live_color is Color.BLUE and found.live_image == V1
    assert [(step.canary_instances, step.live_instances) for step in found.canary_plan] == [(1, 3), (3, 3)]
    assert found.checks == [
        f"image {V2} passed its scan gate (vuln C0 H1 M0 L0 U0 | misconfig C0 H0 M0 L0 U0 | secret C0 H0 M0 L0 U0)",
        "image replicated to westeurope",
        "metrics: 1 s grains, complete 0 s after they end; analysis windows of 30 s",
        "live color blue: 3 healthy instance(s)",
        "quota: room for 3 more Standard_B2s VM(s) in westeurope (100 regional vCPUs free)",
        "canary step 25% requested -> 25.0% delivered by 1 new beside 3 live instance(s)",
        "canary step 50% requested -> 50.0% delivered by 3 new beside 3 live instance(s)",
    ]


def test_every_problem_is_reported_at_once() -> None:
    sick = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V1, 0),
        health={address(Color.BLUE, 1): "Down"},
        canary=["10.9.9.9"],
    )
    found = check_release(
        context(), CANARY, image(scan_gate_passed=False, rolled_back=True, replication={}), [], sick, quota(1), FAST
    )

    assert found.refusal == "release refused before any change:\n- " + "\n- ".join(found.problems)
    assert found.problems == [
        f"image {V2} did not pass its scan gate; it can never be released",
        f"image {V2} was rolled back before; publish a fixed version instead",
        f"image {V2} is not replicated everywhere yet: unknown",
        "the gateway's pools hold addresses that are no instance of this service: 10.9.9.9; remove them "
        "(switchyard's pools hold scale-set NICs only)",
        "live color blue is not healthy: 127.1.0.5 not Up",
        "3 more Standard_B2s VM(s) need 6 total regional vCPUs in westeurope, but the quota leaves 1 "
        "(limit 200, in use 199); ask for a quota increase, or lower the service's capacity",
    ]


def test_a_pool_member_whose_instance_just_went_is_foreign_only_if_its_nic_is_another_scale_sets() -> None:
    """The gateway and the scale sets are read one after the other: an idle instance scaled in between
    is still a member but no longer an instance. Its NIC names its scale set, so it is not foreign; an
    address whose NIC belongs to another scale set is."""
    gone = "127.2.0.9"  # no instance of green any more
    base = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 0), canary=[gone], routed=False)

    def owned_by(scale_set_name: str) -> ServiceObservation:
        canary_pool = base.gateway.canary_pool_of(Color.BLUE)
        owners = {a: TOPOLOGY.scale_set(Color.BLUE) for a in canary_pool.member_addresses}
        owners[gone] = scale_set_name
        pools = {**base.gateway.pools, canary_pool.name: canary_pool.model_copy(update={"member_scale_sets": owners})}
        return base.model_copy(update={"gateway": base.gateway.model_copy(update={"pools": pools})})

    scaled_in = owned_by(TOPOLOGY.scale_set(Color.GREEN).upper())  # Azure ids are case-insensitive
    assert scaled_in.foreign_addresses == []
    assert check_release(context(), CANARY, image(), [], scaled_in, quota(), FAST).refusal is None

    stranger = owned_by("vmss-someone-else")
    assert stranger.foreign_addresses == [gone]
    assert check_release(context(), CANARY, image(), [], stranger, quota(), FAST).refusal is not None


def test_a_missing_image_names_the_newest_published_versions_and_how_to_build_it() -> None:
    published = [f"1000000.20261100.{n}" for n in range(1, 8)]
    found = check_release(context(), CANARY, missing_image(), published, STEADY, quota(), FAST)

    [problem] = found.problems
    assert problem == (
        f"image sample {V2} is not in gallery switchyard_gallery (published versions: 1000000.20261100.3, "
        "1000000.20261100.4, 1000000.20261100.5, 1000000.20261100.6, 1000000.20261100.7); build it with "
        "`switchyard image build sample --app-version ...`"
    )
    [nothing_published] = check_release(context(), CANARY, missing_image(), [], STEADY, quota(), FAST).problems
    assert "(published versions: none)" in nothing_published


def test_without_a_gateway_the_refusal_says_to_provision_and_nothing_else() -> None:
    nothing = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0), gateway_exists=False)
    found = check_release(context(), CANARY, missing_image(), [], nothing, quota(), FAST)

    assert found.refusal == (
        f"{nothing.topology.gateway} does not exist: provision sample in production first "
        "(`switchyard provision ...` or the provision deployment)"
    )


def test_a_gateway_that_routes_production_and_tests_to_one_pool_is_inconsistent() -> None:
    tangled = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0), test_pool=Color.BLUE)
    found = check_release(context(), CANARY, image(), [], tangled, quota(), FAST)

    assert found.problems == [
        f"gateway {tangled.topology.gateway} is inconsistent: production -> blue, test -> blue; run provision to "
        "repair it"
    ]


def test_a_first_release_has_nothing_live_and_no_canary_to_plan() -> None:
    empty = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0))
    found = check_release(context(), CANARY, image(), [], empty, quota(), FAST)

    assert found.refusal is None
    assert "no live instances yet: first release of sample here" in found.checks
    assert found.canary_plan == [] and found.live_image is None


def test_blue_green_plans_no_canary_steps_even_where_none_could_be_reached() -> None:
    one = observed(scale_set(Color.BLUE, V1, 1), scale_set(Color.GREEN, None, 0))
    tight = ReleasePolicy(strategy=Strategy.CANARY, canary_steps=[0.95])

    assert check_release(context(1), BLUE_GREEN, image(), [], one, quota(), FAST).refusal is None
    [problem] = check_release(context(1), tight, image(), [], one, quota(), FAST).problems
    assert problem.startswith("canary step 95% cannot be reached")


def test_the_new_color_needs_room_for_the_live_colors_autoscaled_size_minus_what_the_idle_color_holds() -> None:
    # Autoscale grew blue to 5; green still holds 2 warm instances: 3 more VMs, 6 vCPUs.
    grown = observed(scale_set(Color.BLUE, V1, 5), scale_set(Color.GREEN, V1, 2))
    assert check_release(context(), BLUE_GREEN, image(), [], grown, quota(6), FAST).refusal is None
    [problem] = check_release(context(), BLUE_GREEN, image(), [], grown, quota(5), FAST).problems
    assert problem.startswith("3 more Standard_B2s VM(s) need 6 total regional vCPUs")


def test_an_unreadable_quota_is_a_problem_not_a_pass() -> None:
    found = check_release(context(), CANARY, image(), [], STEADY, RuntimeError("403 Forbidden"), FAST)
    assert found.problems == ["cannot read the compute quota, so room for the new color is unknown: 403 Forbidden"]


def test_only_switchyard_gallery_versions_are_released() -> None:
    assert version_refusal(V2) is None
    refusal = version_refusal("latest")
    assert refusal is not None and refusal.startswith("image version 'latest' is not a switchyard gallery version")


def test_windows_shorter_than_a_metric_grain_and_autoscale_outside_azures_limits_are_refused() -> None:
    """On Azure's timing (one-minute grains) a 30 s window holds no whole grain, and Azure refuses an
    autoscale window under 5 minutes or a cooldown under 1 minute: refused before any change."""
    azure = MetricTiming.for_grain(60)
    quick = CANARY.model_copy(update={"analysis_window_s": 30, "promoted_analysis_window_s": 15})
    ctx = context()
    hasty = ctx.model_copy(
        update={
            "service": ctx.service.model_copy(update={"autoscale": AutoscaleConfig(time_window_s=60, cooldown_s=30)})
        }
    )
    problems = check_release(hasty, quick, image(), [], STEADY, quota(), azure).problems
    assert problems == [
        "analysis_window_s 30 is shorter than one metric grain (60 s here): use at least 60",
        "promoted_analysis_window_s 15 is shorter than one metric grain (60 s here): use 0 (no analysis under "
        "full traffic) or at least 60",
        "the service's autoscale time_window_s 60 is under Azure's minimum of 300 s (5 minutes)",
        "the service's autoscale cooldown_s 30 is under Azure's minimum of 60 s",
    ]
    # The same policy is fine where metrics come in seconds (the emulator's fast profile).
    assert check_release(hasty, quick, image(), [], STEADY, quota(), FAST).problems == []
    # And a policy made for Azure passes there, its window rounded to whole grains.
    patient = CANARY.model_copy(update={"analysis_window_s": 90, "promoted_analysis_window_s": 60})
    found = check_release(ctx, patient, image(), [], STEADY, quota(), azure)
    assert found.problems == []
    assert "metrics: 60 s grains, complete 120 s after they end; analysis windows of 120 s" in found.checks


def test_an_image_switchyard_did_not_publish_is_a_problem_not_a_crash() -> None:
    foreign = image().model_copy(update={"tags": {"owner": "someone else"}})
    [problem] = check_release(context(), CANARY, foreign, [], STEADY, quota(), FAST).problems
    assert "was not published by switchyard" in problem


def test_a_canary_is_refused_while_live_instances_are_missing_from_the_canary_pool() -> None:
    """Production moves to the live color's canary pool for a canary: a live instance outside it (an
    earlier switchyard deployed it) would leave users with the canary alone."""
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 0))
    pool = state.gateway.pools["blue-and-canary"]
    partial = pool.model_copy(update={"member_addresses": pool.member_addresses[:2]})
    missing = state.model_copy(
        update={"gateway": state.gateway.model_copy(update={"pools": {**state.gateway.pools, pool.name: partial}})}
    )
    [problem] = check_release(context(), CANARY, image(), [], missing, quota(), FAST).problems
    assert "127.1.0.6 are not in the blue-and-canary pool" in problem and "--strategy blue-green" in problem
    assert check_release(context(), BLUE_GREEN, image(), [], missing, quota(), FAST).problems == []


def test_mid_canary_the_live_color_s_health_is_read_where_production_routes() -> None:
    """The gateway probes only routed pools: while production routes to blue-and-canary, blue's own
    pool has no health at all, and a re-run after a crash must not call blue unhealthy for it."""
    mid_canary = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), canary=[address(Color.GREEN, 0)])
    unprobed = {**mid_canary.gateway.pools, "blue": mid_canary.gateway.pools["blue"].model_copy(update={"health": {}})}
    state = mid_canary.model_copy(update={"gateway": mid_canary.gateway.model_copy(update={"pools": unprobed})})

    found = check_release(context(), CANARY, image(), [], state, quota(), FAST)

    assert found.problems == []
    assert "live color blue: 3 healthy instance(s)" in found.checks

    sick = {**unprobed, "blue-and-canary": unprobed["blue-and-canary"].model_copy(update={"health": {}})}
    state = state.model_copy(update={"gateway": state.gateway.model_copy(update={"pools": sick})})
    assert (
        check_release(context(), CANARY, image(), [], state, quota(), FAST)
        .problems[0]
        .startswith("live color blue is not healthy")
    )


# Traffic: a canary is judged on both sides' requests within one analysis window ------------------

QUIET = RecentTraffic(requests=0, seconds=60)  # a staging environment: nobody uses it
# CANARY's smaller side is the canary at 25%: 200 requests / (30 s x 0.25) = 26.7/s are needed.
BUSY = RecentTraffic(requests=60 * 30, seconds=60)


def test_a_canary_with_too_few_users_and_no_synthetic_load_is_refused_with_what_to_configure() -> None:
    refusing = CANARY.model_copy(update={"low_traffic": "refuse"})

    [problem] = check_release(context(), refusing, image(), [], STEADY, quota(), FAST, QUIET).problems

    assert problem.startswith("too little traffic to judge a canary in production: production served 0 request(s)")
    assert "needs 200 requests on each side within 30 s, about 26.7/s" in problem
    assert "synthetic_load: {rate_per_s: 40}" in problem
    assert "low_traffic: wait" in problem


def test_synthetic_load_that_covers_the_need_lets_a_quiet_environment_release() -> None:
    loaded = CANARY.model_copy(update={"low_traffic": "refuse", "synthetic_load": SyntheticLoad(rate_per_s=30)})

    found = check_release(context(), loaded, image(), [], STEADY, quota(), FAST, QUIET)

    assert found.refusal is None
    assert (
        "traffic: 0 request(s) in the last 60 s (0.0/s) plus synthetic load of 30/s; a canary needs about 26.7/s"
        in found.checks
    )


def test_synthetic_load_below_the_need_is_refused_with_the_rate_to_raise_it_to() -> None:
    thin = CANARY.model_copy(update={"low_traffic": "refuse", "synthetic_load": SyntheticLoad(rate_per_s=10)})

    [problem] = check_release(context(), thin, image(), [], STEADY, quota(), FAST, QUIET).problems

    assert "synthetic load adds 10/s" in problem
    assert "raise the release policy's synthetic_load.rate_per_s to 40 or more" in problem


def test_users_enough_need_no_synthetic_load_and_wait_starts_a_quiet_release_anyway() -> None:
    refusing = CANARY.model_copy(update={"low_traffic": "refuse"})
    assert check_release(context(), refusing, image(), [], STEADY, quota(), FAST, BUSY).refusal is None

    waiting = CANARY.model_copy(update={"low_traffic": "wait"})
    found = check_release(context(), waiting, image(), [], STEADY, quota(), FAST, QUIET)
    assert found.refusal is None
    assert any("analyses wait for data (low_traffic)" in check for check in found.checks)


def test_traffic_is_not_judged_for_blue_green_or_a_first_release() -> None:
    refusing_bg = BLUE_GREEN.model_copy(update={"low_traffic": "refuse"})
    assert check_release(context(), refusing_bg, image(), [], STEADY, quota(), FAST, QUIET).refusal is None
    first = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0))
    refusing = CANARY.model_copy(update={"low_traffic": "refuse"})
    assert check_release(context(), refusing, image(), [], first, quota(), FAST, QUIET).refusal is None


def test_unreadable_traffic_is_a_problem_unless_synthetic_load_alone_covers_the_need() -> None:
    refusing = CANARY.model_copy(update={"low_traffic": "refuse"})
    [problem] = check_release(context(), refusing, image(), [], STEADY, quota(), FAST, RuntimeError("429")).problems
    assert problem.startswith("cannot read production's recent traffic") and "429" in problem

    loaded = refusing.model_copy(update={"synthetic_load": SyntheticLoad(rate_per_s=30)})
    assert check_release(context(), loaded, image(), [], STEADY, quota(), FAST, RuntimeError("429")).refusal is None


def test_the_lookback_is_a_minute_at_least_and_five_grains_on_azure_timing() -> None:
    assert traffic_lookback_s(FAST, CANARY) == 60
    assert traffic_lookback_s(MetricTiming.for_grain(60), CANARY) == 300
