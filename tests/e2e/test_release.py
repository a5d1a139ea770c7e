"""Releases end to end under steady real traffic: canary, blue-green, automatic rollback, crash and
restart, one release at a time, and bad input refused before any change.

Everything is real: the Prefect server and engine, Packer-built images, the emulator's scale sets
(real processes) behind its Application Gateway (a real proxy), Azure Monitor answers computed from
the traffic the test sends, and the azure-mgmt SDK in between.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.events import Event
from prefect.events.worker import EventsWorker

from blocks import UnknownNameError, load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from flows.rollback import rollback
from switchyard.cloud.errors import OperationFailedError
from switchyard.core.config import FaultProfile, ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import ReleaseFailed, ReleaseRefused
from switchyard.core.rollout import Strategy
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color
from switchyard.stack.processes import kill_process_group
from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import EmulatorHandle
from tasks.events import heartbeat
from tasks.release import VerificationFailed
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import (
    autoscale_enabled,
    python_in_a_subprocess,
    release_events,
    service_observation,
    wait_for,
)
from tests.integration.cloud.cloud_support import SDK_REQUEST_LOG, requests_made

pytestmark = pytest.mark.e2e

SERVICE, ENV = "shop", "production"
COMMIT = labelled_commit("release")
RATE = 120.0  # requests per second, steady, like users


def context() -> ServiceContext:
    return ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))


def observe() -> ServiceObservation:
    return service_observation(ENV, SERVICE)


def traffic(fleet: Fleet) -> SteadyTraffic:
    port = fleet.services[SERVICE].ports_in(ENV).production
    return SteadyTraffic("127.0.0.1", port, rate=RATE, connections=8)


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    """Published images: good v1, v2, v4, and v3 that answers 20% of requests with errors."""
    built = {
        "v1": image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=COMMIT),
        "v2": image_pipeline(service=SERVICE, app_version="2.0.0", git_commit=COMMIT),
        "v3": image_pipeline(
            service=SERVICE, app_version="3.0.0", git_commit=COMMIT, fault_profile=FaultProfile(error_rate=0.2)
        ),
        "v4": image_pipeline(service=SERVICE, app_version="4.0.0", git_commit=COMMIT),
        "v5": image_pipeline(service=SERVICE, app_version="5.0.0", git_commit=COMMIT),
    }
    return {name: image.gallery_version for name, image in built.items()}


@pytest.fixture(scope="module")
def v1_live(fleet: Fleet, images: dict[str, str]) -> str:
    provision(service=SERVICE, environment=ENV)
    summary = release(service=SERVICE, environment=ENV, image_version=images["v1"])
    assert summary.outcome == "promoted"
    return images["v1"]


def live_version() -> tuple[Color, str | None]:
    observed = observe()
    live = observed.live_color
    assert live is not None, "production routes nowhere"
    return live, observed.scale_set(live).runs_only


def test_a_good_release_by_canary_is_promoted_with_zero_failed_requests(
    fleet: Fleet, images: dict[str, str], v1_live: str
) -> None:
    with traffic(fleet) as load:
        time.sleep(1)
        summary = release(service=SERVICE, environment=ENV, image_version=images["v2"], strategy=Strategy.CANARY)
        time.sleep(1)
    report = load.report()

    assert summary.outcome == "promoted"
    assert [a.verdict.outcome.value for a in summary.analyses][:2] == ["pass", "pass"]
    assert all(a.split is not None and a.split.matches for a in summary.analyses[:2])
    # Saturation was judged from both sides' own instances (each side's VMs, from the scale sets' metrics).
    for analysis in summary.analyses[:2]:
        rows = {row.key: row for row in analysis.verdict.metrics}
        for key in ("cpu_mean_percent", "memory_max_percent", "network_out_bytes"):
            assert rows[key].baseline is not None and rows[key].canary is not None, (analysis.title, rows[key])
    assert report.rate() >= 100
    assert report.failed == 0, f"{report.failed} of {report.sent} requests failed"
    # users were really served by both versions during the canary, and by v2 only at the end
    assert report.by_version[images["v1"]] > 0 and report.by_version[images["v2"]] > 0
    assert live_version()[1] == images["v2"]
    assert {r.image_version for r in report.records[-20:]} == {images["v2"]}


def test_a_good_release_by_blue_green_is_promoted_with_zero_failed_requests(
    fleet: Fleet, images: dict[str, str], v1_live: str
) -> None:
    before, _ = live_version()
    with traffic(fleet) as load:
        time.sleep(1)
        summary = release(service=SERVICE, environment=ENV, image_version=images["v4"], strategy=Strategy.BLUE_GREEN)
        time.sleep(1)
    report = load.report()

    assert summary.outcome == "promoted"
    assert report.failed == 0, f"{report.failed} of {report.sent} requests failed"
    assert live_version() == (before.other, images["v4"])


def test_a_release_that_returns_errors_is_rolled_back_automatically(
    fleet: Fleet, emulator: EmulatorHandle, images: dict[str, str], v1_live: str
) -> None:
    stable_color, stable_image = live_version()
    with traffic(fleet) as load:
        time.sleep(1)
        started = time.time()
        with pytest.raises(ReleaseFailed) as failure:
            release(service=SERVICE, environment=ENV, image_version=images["v3"], strategy=Strategy.CANARY)
        ended = time.time()
        time.sleep(1)
    summary = failure.value.summary
    assert summary is not None, "a failed release reports what happened"
    during = load.report().between(started, ended)

    assert summary.outcome == "rolled-back"
    assert "error rate" in summary.outcome_detail
    v3 = [r.started for r in during.records if r.image_version == images["v3"] or r.failed]
    verdict = summary.failed_verdict_at.timestamp() if summary.failed_verdict_at else 0
    print(
        f"rollback: {during.failed} of {during.sent} failed; canary served {min(v3) - verdict:.2f}.."
        f"{max(v3) - verdict:.2f} s around the verdict; timeline:",
        [(e.step, round(e.at.timestamp() - verdict, 2)) for e in summary.timeline],
    )
    # Users met v3's own errors and nothing else: no request failed on the stable version, none went
    # unanswered (a gateway 502, a reset) while production moved to the canary and back.
    assert during.by_version[images["v3"]] > 0
    assert set(during.failed_by_version) <= {images["v3"]}, during.failed_by_version
    # Once the release says it rolled back, no user meets v3 again. How soon after the first bad
    # request the verdict comes is a speed, measured by bench/reliability.py on this profile and by
    # bench/azure_profile_release.py at Azure's timing (first_bad_to_verdict_s), not asserted here:
    # a loaded machine moves it by seconds.
    last_bad = load.report().last_answer_from(images["v3"])
    assert last_bad is not None and last_bad < ended
    assert live_version() == (stable_color, stable_image)
    # the image is marked so that nothing picks it again
    clients = emulator.clients()
    try:
        tags = clients.compute.gallery_image_versions.get(
            "switchyard-images", "switchyard_gallery", SERVICE, images["v3"]
        ).tags
    finally:
        clients.close()
    assert ImageMetadata.from_tags(tags).rolled_back
    with pytest.raises(ReleaseRefused, match="rolled back before"):
        release(service=SERVICE, environment=ENV, image_version=images["v3"])


def test_bad_input_fails_before_any_change(fleet: Fleet, images: dict[str, str], v1_live: str) -> None:
    before = observe()
    with pytest.raises(UnknownNameError, match="unknown service 'nosuch'"):
        release(service="nosuch", environment=ENV, image_version=images["v1"])
    with pytest.raises(ReleaseRefused, match="is not in gallery"):
        release(service=SERVICE, environment=ENV, image_version="9000000.20261100.1")
    with pytest.raises(ReleaseRefused, match="not a switchyard gallery version"):
        release(service=SERVICE, environment=ENV, image_version="latest")
    with pytest.raises(ReleaseRefused, match="canary step 95% cannot be reached"):
        release(service=SERVICE, environment=ENV, image_version=images["v5"], policy="impossible-steps")
    after = observe()
    assert after.gateway.etag == before.gateway.etag
    live = before.live_color
    assert live is not None
    # The idle color is what a release prepares: untouched. The live color keeps its image; its
    # capacity belongs to its autoscale setting, which may scale it in meanwhile (as on Azure).
    assert after.scale_set(live.other) == before.scale_set(live.other)
    live_before, live_after = before.scale_set(live), after.scale_set(live)
    assert live_after.image_version == live_before.image_version
    assert {i.image_version for i in live_after.instances} == {live_before.image_version}


def _release_in_a_subprocess(fleet: Fleet, image: str, log: Path) -> subprocess.Popen[bytes]:
    code = (
        "from flows.release import release\n"
        f"release(service={SERVICE!r}, environment={ENV!r}, image_version={image!r}, strategy='canary')\n"
    )
    return python_in_a_subprocess(code, log)


def _wait_for_canary(timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if observe().canary_serving:
            return
        time.sleep(0.3)
    raise AssertionError("the release never reached its canary")


def test_a_second_release_meanwhile_waits_or_is_refused_clearly(
    fleet: Fleet, images: dict[str, str], v1_live: str, tmp_path: Path
) -> None:
    with traffic(fleet):  # the first release's canary needs users to judge
        first = _release_in_a_subprocess(fleet, images["v5"], tmp_path / "first.log")
        try:
            _wait_for_canary()
            with pytest.raises(ReleaseRefused, match="another release of shop in production is running"):
                release(service=SERVICE, environment=ENV, image_version=images["v2"], lock_timeout_s=2)
            assert first.wait(timeout=180) == 0, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            if first.poll() is None:
                kill_process_group(first.pid)
    assert live_version()[1] == images["v5"]


def test_killing_a_release_mid_canary_and_starting_it_again_converges(
    fleet: Fleet, images: dict[str, str], v1_live: str, tmp_path: Path
) -> None:
    target = images["v2"] if live_version()[1] != images["v2"] else images["v4"]
    with traffic(fleet) as load:
        doomed = _release_in_a_subprocess(fleet, target, tmp_path / "doomed.log")
        try:
            _wait_for_canary()
        finally:
            kill_process_group(doomed.pid)
            doomed.wait()
        # the run is gone with traffic split: the gateway holds a whole, consistent configuration
        split = observe()
        assert split.canary_addresses and not split.foreign_addresses
        summary = release(service=SERVICE, environment=ENV, image_version=target, strategy=Strategy.CANARY)
        time.sleep(1)
    report = load.report()

    assert summary.outcome in ("promoted", "rolled-back")
    assert summary.outcome == "promoted"  # a good image converges to promoted
    assert report.failed == 0, f"{report.failed} of {report.sent} requests failed"
    assert live_version()[1] == target


def test_status_shows_the_live_color_the_image_on_each_color_and_health(
    fleet: Fleet, images: dict[str, str], v1_live: str, repo_root: Path
) -> None:
    import json

    live, image = live_version()
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "status", SERVICE, "--env", ENV, "--json"],
        cwd=repo_root, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{SERVICE} in {ENV}: production on {live.value}" in result.stdout
    status = json.loads(result.stdout.strip().splitlines()[-1])
    colors = {c["color"]: c for c in status["colors"]}
    assert status["live_color"] == live.value and status["canary_share"] == 0.0
    assert colors[live.value]["image_version"] == image and colors[live.value]["role"] == "live"
    assert colors[live.value]["healthy"] == colors[live.value]["instances"] > 0


def test_the_old_color_scales_to_zero_only_after_its_warm_period(
    fleet: Fleet, images: dict[str, str], v1_live: str, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.retire import retire_idle_colors

    _, current = live_version()
    target = images["v2"] if current != images["v2"] else images["v4"]
    with traffic(fleet):
        summary = release(service=SERVICE, environment=ENV, image_version=target, strategy=Strategy.BLUE_GREEN)
    assert summary.live_before is not None, "production had a live color before this release"
    old = Color(summary.live_before)
    assert observe().scale_set(old).capacity > 0  # warm: a fast way back
    time.sleep(1.5)  # the test policy keeps the old color warm for 1 s
    results = retire_idle_colors(services=[SERVICE])
    assert "scaled to zero" in results[f"{SERVICE}/{ENV}"]
    after = observe()
    assert after.scale_set(old).capacity == 0 and not after.scale_set(old).instances
    assert live_version() == (old.other, target)

    # Every few minutes from now on, a retired service costs one read of the gateway and a look at
    # its idle scale set: never its live color, never a whole observation (Azure throttles reads).
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)
    again = retire_idle_colors(services=[SERVICE])
    asked = requests_made(caplog)
    assert "already scaled down" in again[f"{SERVICE}/{ENV}"]
    topology = context().topology
    assert sum(f"/applicationGateways/{topology.gateway}" in line for line in asked) == 1, asked
    assert not [line for line in asked if f"/virtualMachineScaleSets/{topology.scale_set(old.other)}" in line], asked


def test_heartbeats_reach_the_prefect_api_the_release_was_given(
    fleet: Fleet, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard takes canaries out of production when a release's heartbeats stop: every beat must
    reach the API the caller chose, also when only its settings (not the environment) name it, as
    in the demo."""
    monkeypatch.delenv("PREFECT_API_URL")
    since = datetime.now(UTC)
    with heartbeat(context(), "1000000.20261100.1", interval_s=0.2):
        time.sleep(1.5)
    EventsWorker.drain_all(timeout=10)
    # The server stores events in batches: wait until they are all there.
    finished = wait_for("the finished event", lambda: at_least(1, "finished", since), timeout_s=30)
    beats = wait_for("five heartbeats", lambda: at_least(5, "heartbeat", since), timeout_s=30)
    assert all(event.payload["image"] == "1000000.20261100.1" for event in beats + finished)


def at_least(count: int, step: str, since: datetime) -> list[Event] | None:
    events = release_events(step, SERVICE, ENV, since)
    return events if len(events) >= count else None


def test_an_image_that_crashes_soon_after_starting_never_meets_a_user(
    fleet: Fleet, images: dict[str, str], v1_live: str
) -> None:
    """The new color must stay healthy for the policy's min_ready_s before smoke tests and traffic:
    a build that passes its first probes and then crashes stops the release right there."""
    crashing = image_pipeline(
        service=SERVICE, app_version="6.0.0", git_commit=COMMIT, fault_profile=FaultProfile(crash_after_s=1.0)
    ).gallery_version
    stable = live_version()
    with traffic(fleet) as load:
        # Seen by the health watch (VerificationFailed), or by the retry's roll-out (OperationFailedError).
        with pytest.raises((VerificationFailed, OperationFailedError)) as failure:
            release(service=SERVICE, environment=ENV, image_version=crashing, strategy=Strategy.CANARY)
        time.sleep(0.5)
    report = load.report()

    assert "exited with code 70" in str(failure.value), failure.value  # names the crash
    assert report.sent > 100 and report.failed == 0
    assert report.by_version[crashing] == 0  # not one user request reached it
    assert live_version() == stable


def test_a_manual_rollback_after_a_release_leaves_autoscale_on_the_serving_color(
    fleet: Fleet, images: dict[str, str], v1_live: str
) -> None:
    """Last in this file on purpose: it rolls production back. The live color has changed several
    times by now; one more release, then a manual rollback: with one autoscale setting per color,
    the serving color's is on and the other's off after each."""
    before, current = live_version()
    target = images["v2"] if current != images["v2"] else images["v4"]
    with traffic(fleet) as load:
        release(service=SERVICE, environment=ENV, image_version=target, strategy=Strategy.BLUE_GREEN)
        assert live_version() == (before.other, target)
        assert autoscale_enabled(context()) == {before.other: True, before: False}
        report = rollback(service=SERVICE, environment=ENV, reason="a person prefers the previous version")
    assert report.stable_color == before and report.abandoned_image == target
    assert live_version() == (before, current)
    assert autoscale_enabled(context()) == {before: True, before.other: False}
    assert load.report().failed == 0
