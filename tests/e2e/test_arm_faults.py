"""Releases while ARM misbehaves: 10% of ARM calls answer 429 (with Retry-After), 500, or a second late.

An emulator of its own, switched to faults at runtime through its admin route once v1 is live;
under steady user traffic a good v2 released by canary still promotes with no failed request, and a
bad v3 still rolls back with production back on v2 and no request lost. The emulator's own count of
injected faults proves they happened. Then bad input to the release flow: each case is refused with
an error naming what is wrong, and the whole cloud is as it was. Last, the canary's judge when Log
Analytics fails: a short outage is ridden over, a lasting one rolls the release back, and a failing
canary is still judged on its errors, which metrics count. Setup and
judgements are bench/battery.py's, shared with bench/reliability.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.battery import (
    ARM_FAULTS,
    BAD_ERROR_RATE,
    COMMIT,
    Battery,
    arm_faults,
    bad_inputs,
    build_images,
    faults_injected,
    gateway_problems,
    observe,
    register_blocks,
    release_under_faults,
    slo_changed,
    try_bad_input,
)
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.core.config import FaultProfile, FrontendPorts
from switchyard.core.fleet import Fleet
from switchyard.core.topology import Color
from switchyard_emulator.faults import FaultConfig
from switchyard_emulator.testing import run_emulator
from tasks.canary import TELEMETRY_FAILURES_IN_A_ROW

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    args = ["--lro-retry-after", "0"]
    with run_emulator(tmp_path_factory.mktemp("arm-faults"), extra_args=args, profile="fast") as emulator:
        yield Battery(emulator)


@pytest.fixture(scope="module")
def ports(fleet: Fleet, battery: Battery) -> FrontendPorts:
    return register_blocks(battery, fleet)


@pytest.fixture(scope="module")
def images(battery: Battery, ports: FrontendPorts) -> dict[str, str]:
    """v2 and v3 are built under the same ARM faults: the image pipeline rides over them too."""
    built, injected = build_images(battery, ARM_FAULTS)
    assert sum(injected.values()) > 0, injected
    return built


@pytest.fixture(scope="module")
def v1_live(battery: Battery, images: dict[str, str]) -> Color:
    provision(service=battery.service, environment=battery.environment)
    first = release(service=battery.service, environment=battery.environment, image_version=images["v1"])
    assert first.outcome == "promoted" and first.live_after is not None
    assert faults_injected(battery.emulator) == {"429": 0, "500": 0, "slow": 0}  # v1 met no fault
    return Color(first.live_after)


def test_the_fault_switch_really_injects_faults(battery: Battery, v1_live: Color) -> None:
    """Reads through switchyard's adapter under faults still answer, and the emulator counts what it injected."""
    with arm_faults(battery.emulator) as injected:
        for _ in range(30):
            assert observe(battery).live_color == v1_live
    assert sum(injected.values()) > 0, injected
    assert faults_injected(battery.emulator) == {"429": 0, "500": 0, "slow": 0}  # switched off again


def test_under_arm_faults_a_good_canary_still_promotes_with_no_failed_request(
    battery: Battery, ports: FrontendPorts, images: dict[str, str], v1_live: Color
) -> None:
    result = release_under_faults(
        battery, ports, "good v2", images["v2"], serving_after=images["v2"], expected="promoted"
    )

    assert result.outcome == "promoted", (result.error, result.summary and result.summary.timeline)
    assert result.faults["429"] > 0 and result.faults["500"] > 0 and result.faults["slow"] > 0, result.faults
    assert result.report.failed == 0, f"{result.report.failed} of {result.report.sent} failed: {result.as_dict()}"
    assert result.report.by_version[images["v1"]] > 0 and result.report.by_version[images["v2"]] > 0
    assert result.gateway_problems == [] and result.lost_writes == [], result.as_dict()
    assert result.live_after == (v1_live.other, images["v2"])


def test_under_arm_faults_a_bad_canary_still_rolls_back_and_no_request_is_lost(
    battery: Battery, ports: FrontendPorts, images: dict[str, str], v1_live: Color
) -> None:
    stable = (v1_live.other, images["v2"])
    assert observe(battery).live_color == stable[0]  # after the good release

    result = release_under_faults(
        battery,
        ports,
        "bad v3",
        images["v3"],
        serving_after=images["v2"],
        expected="rolled-back",
        bad_version=images["v3"],
    )

    assert result.outcome == "rolled-back", (result.error, result.summary and result.summary.timeline)
    assert result.summary is not None and "error rate" in result.summary.outcome_detail
    assert sum(result.faults.values()) > 0, result.faults
    assert result.live_after == stable
    assert result.gateway_problems == [] and result.lost_writes == [], result.as_dict()
    assert result.no_answer == 0 and result.failed_outside_canary == 0, result.as_dict()
    # Only v3's canary failed requests: at most its error rate on its half of the traffic.
    assert 0 < result.report.failed < result.report.sent * BAD_ERROR_RATE * 0.5 * 1.5, result.as_dict()
    assert gateway_problems(observe(battery)) == []


def test_bad_input_to_the_release_flow_is_refused_clearly_and_changes_nothing(
    battery: Battery, images: dict[str, str], v1_live: Color
) -> None:
    """After the rollback above v3 is marked rolled back: releasing it again is one of the cases."""
    results = [try_bad_input(battery, case, release) for case in bad_inputs(battery, images)]

    assert len(results) == 7
    for result in results:
        assert result.clear, (result.name, result.raised, result.message)
        assert not result.changed, result.name


def test_a_failing_canary_is_rolled_back_for_its_errors_while_log_analytics_is_down(
    battery: Battery, ports: FrontendPorts, bad_image: str
) -> None:
    """The errors are counted by metrics, read at every look whatever the access log does (its
    failing queries are sent from a thread of their own): a failing version is judged on them, not
    rolled back later for a judge that could not read. With nothing known early, neither certain
    (a minimum sample of one request: nothing is below it) nor past the policy's sequential test
    (off; it would find the breach in the grains still arriving, as test_azure_profile.py's bad
    canary shows), the breach is found in its complete grains, judged without the access log: the
    path a breach no sequential test covers (CPU, memory) takes."""
    before = observe(battery)
    assert before.live_color is not None
    serving = before.scale_set(before.live_color).runs_only
    assert serving is not None

    with slo_changed(battery, sequential_alpha=None, min_requests=1):
        result = release_under_faults(
            battery,
            ports,
            "bad v6, access log down",
            bad_image,
            serving_after=serving,
            expected="rolled-back",
            bad_version=bad_image,
            faults=LASTING_LOG_ANALYTICS_OUTAGE,
        )

    assert result.outcome == "rolled-back", (result.error, result.summary and result.summary.timeline)
    assert result.summary is not None
    detail = result.summary.outcome_detail
    assert "error rate" in detail and "could not be read" not in detail, detail
    assert "sequential test" not in detail, detail  # the policy's test was off, as this test means it to be
    assert result.live_after[1] == serving
    assert result.no_answer == 0 and result.failed_outside_canary == 0, result.as_dict()
    assert problems_but_the_warm_canary(result.gateway_problems) == [] and result.lost_writes == [], result.as_dict()


# The query client sends a query four times before it gives up (azure-core's three retries of a 500):
# eight faults fail two reads of the golden signals in a row, fewer than the judge rides over.
SHORT_LOG_ANALYTICS_OUTAGE = FaultConfig(rate=1.0, kinds=["500"], scope="log-queries", limit=8)
LASTING_LOG_ANALYTICS_OUTAGE = FaultConfig(rate=1.0, kinds=["500"], scope="log-queries")


def problems_but_the_warm_canary(problems: list[str]) -> list[str]:
    """The battery's gateway problems, less idle instances in the live color's canary pool: after this
    file's fourth release the idle color's instances still sit where v2's canary put them, which the
    design allows (ServiceObservation.canary_addresses: nothing routes there, and the next release
    that prepares that color takes them out first)."""
    return [problem for problem in problems if not problem.startswith("idle instances still in the canary pool")]


@pytest.fixture(scope="module")
def good_images(battery: Battery, v1_live: Color) -> list[str]:
    """Two more good versions, after the battery's own releases."""
    return [
        image_pipeline(
            service=battery.service, app_version=version, git_commit=COMMIT, environment=battery.environment
        ).gallery_version
        for version in ("4.0.0", "5.0.0")
    ]


@pytest.fixture(scope="module")
def bad_image(battery: Battery, good_images: list[str]) -> str:
    """One more version that answers errors (SOMETIMES_FAILING_ERROR_RATE), after the good ones."""
    return image_pipeline(
        service=battery.service,
        app_version="6.0.0",
        git_commit=COMMIT,
        environment=battery.environment,
        fault_profile=FaultProfile(error_rate=SOMETIMES_FAILING_ERROR_RATE),
    ).gallery_version


# One of ten requests fails: ten times the SLO's 1 %, but the canary's first look (its first three or
# so requests) seldom holds an error, so the judge seldom knows at once; over the window's ~120
# canary requests it cannot miss it.
SOMETIMES_FAILING_ERROR_RATE = 0.1


def test_a_short_log_analytics_outage_during_the_canary_does_not_roll_a_good_version_back(
    battery: Battery, ports: FrontendPorts, good_images: list[str]
) -> None:
    assert SHORT_LOG_ANALYTICS_OUTAGE.limit is not None
    assert SHORT_LOG_ANALYTICS_OUTAGE.limit // 4 < TELEMETRY_FAILURES_IN_A_ROW
    image = good_images[0]

    result = release_under_faults(
        battery, ports, "good v4", image, serving_after=image, expected="promoted", faults=SHORT_LOG_ANALYTICS_OUTAGE
    )

    assert result.outcome == "promoted", (result.error, result.summary and result.summary.timeline)
    assert result.faults == {"429": 0, "500": 8, "slow": 0}  # every query of the outage failed, nothing else
    assert result.summary is not None
    noted = [w for w in result.summary.warnings if "read(s) of the golden signals failed" in w]
    assert len(noted) == 1 and noted[0].startswith("Canary ") and "InternalServerError" in noted[0], noted
    assert "Promoted, with a warning" in result.summary.outcome_detail
    assert result.report.failed == 0, result.as_dict()
    assert result.live_after[1] == image
    assert problems_but_the_warm_canary(result.gateway_problems) == [] and result.lost_writes == [], result.as_dict()


def test_a_lasting_log_analytics_outage_rolls_the_canary_back_rather_than_promote_it_unjudged(
    battery: Battery, ports: FrontendPorts, good_images: list[str]
) -> None:
    serving = good_images[0]
    image = good_images[1]

    result = release_under_faults(
        battery,
        ports,
        "good v5, judged blind",
        image,
        serving_after=serving,
        expected="rolled-back",
        faults=LASTING_LOG_ANALYTICS_OUTAGE,
    )

    assert result.outcome == "rolled-back", (result.error, result.summary and result.summary.timeline)
    assert result.summary is not None
    detail = result.summary.outcome_detail
    assert f"could not be read {TELEMETRY_FAILURES_IN_A_ROW} times in a row" in detail, detail
    # The split was set; it is the analysis that failed, and the reason says so.
    assert "the analysis of the canary" in detail and "reached no verdict" in detail, detail
    assert "set split failed" not in detail, detail
    assert result.faults["500"] >= TELEMETRY_FAILURES_IN_A_ROW * 4 and result.faults["429"] == 0, result.faults
    assert result.live_after[1] == serving
    assert result.report.failed == 0, result.as_dict()
    assert problems_but_the_warm_canary(result.gateway_problems) == [] and result.lost_writes == [], result.as_dict()
