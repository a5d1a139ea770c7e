"""A person's rollback wins over the release it rolls back, whenever it lands.

The release runs in its own process (as on a worker); the rollback runs here while that release
is mid-canary or judging the new version under full traffic. The rollback must put production
back, the release must stop and say why, the image must stay rolled back, and nothing may promote
it again: the release that was rolled back must not see "idle color ready, steps passed" and
switch production back to the image a person just took out.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks import load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from flows.rollback import rollback
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase
from switchyard.core.state import ServiceObservation
from switchyard.stack.processes import kill_process_group
from switchyard.stages.traffic import SteadyTraffic
from tasks.release import load_release_context, no_longer_finalized
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import python_in_a_subprocess, service_observation, wait_for

pytestmark = pytest.mark.e2e

SERVICE, ENV = "ledger", "production"
COMMIT = labelled_commit("rollback-wins")


def context() -> ServiceContext:
    return ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))


def observe() -> ServiceObservation:
    return service_observation(ENV, SERVICE, with_health=False)


def image_tags(version: str) -> tuple[dict[str, str], bool | None]:
    ctx = context()
    image = cloud_for(ctx).gallery.image_version(SERVICE, version)
    return image.tags, image.exclude_from_latest


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    built = {
        name: image_pipeline(service=SERVICE, app_version=version, git_commit=COMMIT).gallery_version
        for name, version in (("v1", "1.0.0"), ("v2", "2.0.0"), ("v3", "3.0.0"))
    }
    provision(service=SERVICE, environment=ENV)
    assert release(service=SERVICE, environment=ENV, image_version=built["v1"]).outcome == "promoted"
    return built


@pytest.fixture
def users(fleet: Fleet) -> Iterator[SteadyTraffic]:
    port = fleet.services[SERVICE].ports_in(ENV).production
    with SteadyTraffic("127.0.0.1", port, rate=60.0, connections=4) as load:
        yield load


def release_elsewhere(image: str, policy: str, log: Path) -> subprocess.Popen[bytes]:
    """The release in another process; it prints its summary as JSON however it ends."""
    code = (
        "import json\n"
        "from flows.release import release\n"
        "from switchyard.core.outcomes import ReleaseFailed\n"
        "try:\n"
        f"    summary = release(service={SERVICE!r}, environment={ENV!r}, image_version={image!r}, policy={policy!r})\n"
        "except ReleaseFailed as failure:\n"
        "    summary = failure.summary\n"
        "print('SUMMARY ' + summary.model_dump_json())\n"
    )
    return python_in_a_subprocess(code, log)


def summary_of(process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    try:
        process.wait(timeout=180)
    finally:
        if process.poll() is None:
            kill_process_group(process.pid)
    lines = [line for line in log.read_text().splitlines() if line.startswith("SUMMARY ")]
    assert lines, f"the release printed no summary:\n{log.read_text()[-3000:]}"
    return dict(json.loads(lines[-1].removeprefix("SUMMARY ")))


def assert_rolled_back_for_good(image: str, stable_image: str, summary: dict[str, object]) -> None:
    assert summary["outcome"] == "rolled-back", summary
    assert "Stopped" in str(summary["outcome_detail"]) and "rolled back" in str(summary["outcome_detail"])
    tags, excluded = image_tags(image)
    assert tags["switchyard.rolledBack"] == "true" and "switchyard.releasedAt" not in tags
    assert excluded is True
    # Nothing re-promotes it: production stays on the stable image, with no canary, from now on.
    for _ in range(6):
        now = observe()
        assert now.live_color is not None and now.scale_set(now.live_color).runs_only == stable_image
        assert not now.canary_addresses
        assert now.gateway.tags.get(TAG_PHASE) == Phase.ROLLED_BACK
        time.sleep(0.5)


def test_a_rollback_after_promotion_is_not_undone_by_the_release_it_rolled_back(
    images: dict[str, str], users: SteadyTraffic, tmp_path: Path
) -> None:
    stable = observe()
    assert stable.live_color is not None
    stable_image = stable.scale_set(stable.live_color).runs_only
    log = tmp_path / "release.log"
    running = release_elsewhere(images["v2"], "slow-promotion", log)
    try:
        wait_for(
            "the release's promotion",
            lambda: (
                observe().gateway.tags.get(TAG_PHASE) == Phase.PROMOTED
                and observe().gateway.tags.get(TAG_RELEASE) == images["v2"]
            ),
            timeout_s=150,
            interval_s=0.2,
        )
        report = rollback(service=SERVICE, environment=ENV, reason="a person saw a problem", preempt_after_s=1)
    finally:
        summary = summary_of(running, log)

    assert report.stable_color == stable.live_color and report.abandoned_image == images["v2"]
    assert_rolled_back_for_good(images["v2"], str(stable_image), summary)
    assert summary["live_after"] == stable.live_color.value
    assert users.report().failed == 0


def slow_requests(fleet: Fleet, count: int, ms: int) -> tuple[list[threading.Thread], list[tuple[int, str]]]:
    """`count` requests to production, each answered after `ms` milliseconds, started side by side;
    each thread adds (status, the image that answered) to the list (status 0: no answer at all)."""
    port = fleet.services[SERVICE].ports_in(ENV).production
    answers: list[tuple[int, str]] = []

    def ask() -> None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/work/sleep?ms={ms}", timeout=ms / 1000 + 20)
            answers.append((answer.status_code, answer.headers.get("X-Image-Version", "")))
        except httpx.HTTPError:
            answers.append((0, ""))

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


def test_a_rollback_mid_canary_stops_the_release_and_the_image_stays_rolled_back(
    fleet: Fleet, images: dict[str, str], users: SteadyTraffic, tmp_path: Path
) -> None:
    stable = observe()
    assert stable.live_color is not None
    stable_image = stable.scale_set(stable.live_color).runs_only
    log = tmp_path / "release.log"
    running = release_elsewhere(images["v3"], "slow-canary", log)
    try:
        wait_for("the release's canary", lambda: observe().canary_serving, timeout_s=150, interval_s=0.2)
        # Requests that take a while, in flight on both sides when the person rolls back: those on
        # the canary must finish there, although its instances leave the canary pool (an upgrade
        # that replaces their process) a moment after production does. (With the emulator's
        # graceful stop of an instance turned off, they fail: checked.)
        # 24: the gateway takes turns over the canary pool's four members (three live, one canary),
        # so some of them land on the canary whatever the users' requests in between.
        in_flight, answers = slow_requests(fleet, 24, 3000)
        time.sleep(0.5)
        report = rollback(service=SERVICE, environment=ENV, reason="a person saw a problem", preempt_after_s=1)
        for thread in in_flight:
            thread.join()
    finally:
        summary = summary_of(running, log)

    assert report.stable_color == stable.live_color and report.abandoned_image == images["v3"]
    assert_rolled_back_for_good(images["v3"], str(stable_image), summary)
    assert users.report().failed == 0
    assert [status for status, _ in answers] == [200] * 24, answers
    assert any(image == images["v3"] for _, image in answers), answers  # some were on the canary


def test_after_a_rollback_no_release_it_took_out_counts_as_finalized(images: dict[str, str]) -> None:
    """What the release runs right before its flags and its contract migration: a person's rollback
    pre-empts a release holding the lock, so it can land after finalize, and neither may run then.
    (The tests above rolled v2 back after its promotion and v3 mid-canary; the gateway says so.)"""
    for image in (images["v2"], images["v3"]):
        context = load_release_context.fn(SERVICE, ENV, image, policy=None, strategy=None)
        assert no_longer_finalized(context) == f"the gateway now says rolled-back for {images['v3']}"
