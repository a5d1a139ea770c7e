"""A release that dies and is started again, and an emulator that restarts under a release.

The battery of issue 10: the release run is SIGKILLed at each step of its plan in turn — during
smoke, while the gateway is being switched, right after promotion, during finalize (mid-canary is
test_release.py's) — and started again each time: it converges to promoted, no user request fails
(the image is good), and the gateway is whole between every kill. Then the emulator (Azure's control
plane and data plane at once) restarts in the middle of a canary: its state and instances survive,
and the release ends on its own terms, promoted or rolled back, with production whole and serving.

Each restart waits for the killed run's lock lease to run out (Prefect's minimum, 60 s): that wait
is the price of a lock that lives in the server rather than in a process (tasks/locks.py).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from blocks import load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.rollout import Strategy
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color
from switchyard.stack.processes import kill_process_group
from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import EmulatorHandle
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import python_in_a_subprocess, service_observation, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # four 60 s lease waits

SERVICE, ENV = "kiosk", "production"
COMMIT = labelled_commit("release-restarts")
RATE = 80.0
# The planner's actions the run is killed at, in plan order (flows/release.py logs "step N: KIND: ...").
KILL_POINTS = ("smoke_test", "promote", "analyse_promoted", "finalize")
RESTART_TIMEOUT_S = 240.0  # the lease (60 s) plus the steps up to the next kill point


def context() -> ServiceContext:
    return ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))


def observe() -> ServiceObservation:
    return service_observation(ENV, SERVICE)


def traffic(fleet: Fleet) -> SteadyTraffic:
    port = fleet.services[SERVICE].ports_in(ENV).production
    return SteadyTraffic("127.0.0.1", port, rate=RATE, connections=6)


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    built = {
        name: image_pipeline(service=SERVICE, app_version=f"{n}.0.0", git_commit=COMMIT)
        for n, name in ((1, "v1"), (2, "v2"), (3, "v3"))
    }
    return {name: image.gallery_version for name, image in built.items()}


@pytest.fixture(scope="module")
def v1_live(fleet: Fleet, images: dict[str, str]) -> str:
    provision(service=SERVICE, environment=ENV)
    summary = release(service=SERVICE, environment=ENV, image_version=images["v1"])
    assert summary.outcome == "promoted"
    return images["v1"]


def live_image() -> tuple[Color | None, str | None]:
    observed = observe()
    live = observed.live_color
    return live, observed.scale_set(live).runs_only if live else None


def canary_running(observed: ServiceObservation, image: str) -> list[str]:
    """Addresses in the live color's canary pool of idle instances that run `image`."""
    idle = observed.idle_color
    if idle is None:
        return []
    runs = {i.private_ip: i.image_version for i in observed.scale_set(idle).instances}
    return [address for address in observed.canary_addresses if runs.get(address) == image]


def assert_gateway_whole(observed: ServiceObservation, why: str) -> None:
    """One consistent configuration: written completely, every routed address a known instance's."""
    assert observed.gateway.provisioning_state == "Succeeded", f"{why}: {observed.gateway.provisioning_state}"
    assert observed.live_color is not None, f"{why}: production routes nowhere"
    assert not observed.foreign_addresses, f"{why}: the gateway routes to {observed.foreign_addresses}"


def start_release(image: str, log: Path, policy: str | None = None) -> subprocess.Popen[bytes]:
    code = (
        "from flows.release import release\n"
        f"release(service={SERVICE!r}, environment={ENV!r}, image_version={image!r}, strategy='canary', "
        f"policy={policy!r})\n"
    )
    return python_in_a_subprocess(code, log)


def kill_when_it_plans(run: subprocess.Popen[bytes], log: Path, kind: str) -> None:
    """SIGKILL the run's process group the moment its log says it starts `kind`."""
    started = re.compile(rf"step \d+: {kind}:")
    try:
        wait_for(
            f"the release to start {kind}",
            lambda: True if started.search(log.read_text(errors="replace")) else None,
            timeout_s=RESTART_TIMEOUT_S,
            interval_s=0.05,
        )
    except AssertionError:
        raise AssertionError(f"the release never started {kind}:\n{log.read_text(errors='replace')[-4000:]}") from None
    finally:
        kill_process_group(run.pid)
        run.wait()


def test_a_release_killed_at_each_step_and_started_again_converges_with_no_failed_request(
    fleet: Fleet, images: dict[str, str], v1_live: str, tmp_path: Path
) -> None:
    target = images["v2"]
    with traffic(fleet) as load:
        for number, kind in enumerate(KILL_POINTS, start=1):
            log = tmp_path / f"run-{number}-{kind}.log"
            kill_when_it_plans(start_release(target, log), log, kind)
            assert_gateway_whole(observe(), f"after a kill at {kind}")
        summary = release(service=SERVICE, environment=ENV, image_version=target, strategy=Strategy.CANARY)
        time.sleep(1)
    report = load.report()

    assert summary.outcome == "promoted", summary.outcome_detail
    assert report.failed == 0, f"{report.failed} of {report.sent} requests failed"
    assert live_image()[1] == target
    after = observe()
    assert_gateway_whole(after, "at the end")
    assert not after.canary_addresses


def test_an_emulator_restart_mid_canary_keeps_state_and_instances_and_the_release_ends_cleanly(
    fleet: Fleet, emulator: EmulatorHandle, images: dict[str, str], v1_live: str, tmp_path: Path
) -> None:
    target = images["v3"] if live_image()[1] != images["v3"] else images["v2"]
    before = observe()
    with traffic(fleet):
        log = tmp_path / "release.log"
        run = start_release(target, log, policy="slow-canary")  # a 25 s window the restart lands in
        try:
            wait_for("the canary to serve users", lambda: True if observe().canary_serving else None, 180)
            emulator.restart()
            code = run.wait(timeout=300)
        finally:
            if run.poll() is None:
                kill_process_group(run.pid)
    output = log.read_text(errors="replace")

    after = observe()
    assert_gateway_whole(after, "after the release")
    assert not after.canary_serving, output[-3000:]
    # No canary of the target is left in a pool (the last release's canary, running the image it ran,
    # stays in the live color's canary pool after a switch, serving nothing, until that color changes).
    assert not canary_running(after, target), output[-3000:]
    live, image = live_image()
    assert live is not None and image is not None
    if code == 0:  # promoted: the new version serves; otherwise it rolled back to what served before
        assert image == target, output[-3000:]
    else:
        assert "rolled-back" in output or "rolled back" in output, output[-3000:]
        assert image == before.scale_set(before.live_color).runs_only  # type: ignore[arg-type]
        tags = cloud_for(context()).gallery.image_version(SERVICE, target).tags
        assert ImageMetadata.from_tags(tags).rolled_back
    # the scale sets, their instances and the gallery came through the restart
    serving = after.scale_set(live)
    assert len(serving.instances) >= 1 and all(i.image_version == image for i in serving.instances)
    assert {v for v in images.values()} <= {
        i.gallery_version for i in cloud_for(context()).gallery.image_versions(SERVICE)
    }
    with traffic(fleet) as load:  # users are served again, by the live color
        time.sleep(3)
    report = load.report()
    assert report.sent > 0 and report.failed == 0, f"{report.failed} of {report.sent} failed after the restart"
