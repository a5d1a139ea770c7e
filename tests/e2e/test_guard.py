"""The release guard on a real local stack: a release run killed mid-canary (SIGKILL of its process
group, as a lost machine would) must not leave production split. The proactive automation in the
Prefect server notices the heartbeats stopped, the worker runs the guard deployment, and the canary
instances leave the live pool; the guard says so in an event and an artifact.

Everything is real: `switchyard up`, the worker's flow-run processes, Packer-built images, the
emulator's gateway under steady traffic, and the gateway observed through the cloud adapter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast
from uuid import uuid4

import httpx
import pytest
from prefect import flow
from prefect.client.schemas.objects import StateType

from switchyard.stack.processes import kill_process_group
from switchyard.stages.traffic import SteadyTraffic
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import (
    SERVICE,
    Stack,
    artifacts,
    build_images,
    deployment_runs,
    flow_run,
    release_events,
    running_stack,
    service_observation,
    start_run,
    wait_for,
)

pytestmark = pytest.mark.e2e

ENV = "production"
COMMIT = labelled_commit("guard")
# The guard's deadline (flows/guard.py): stable traffic within 60 s of the release's death.
GUARD_DEADLINE_S = 60.0
# A resource whose release finished properly: the guard must never run for it.
FINISHED_RESOURCE = "switchyard.service.finished-release.production"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("guard-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def finished_release(stack: Stack) -> str:
    """Heartbeats then `finished`, as a release that ends well emits them (posted to the events API)."""
    for name in ("heartbeat", "heartbeat", "finished"):
        event = {
            "id": str(uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": f"switchyard.release.{name}",
            "resource": {
                "prefect.resource.id": FINISHED_RESOURCE,
                "switchyard.service": "finished-release",
                "switchyard.environment": ENV,
            },
            "payload": {"image": "1000000.20261100.1"},
        }
        assert httpx.post(f"{stack.api_url}/events", json=[event], timeout=10).status_code == 204
        time.sleep(1)
    return FINISHED_RESOURCE


@pytest.fixture(scope="module")
def images(stack: Stack) -> dict[str, str]:
    with stack.client_settings():
        built = build_images("1.0.0", "2.0.0", commit=COMMIT)
    return {"v1": built["1.0.0"], "v2": built["2.0.0"]}


@pytest.fixture(scope="module")
def v1_live(stack: Stack, images: dict[str, str], finished_release: str) -> str:
    with stack.client_settings():
        run = start_run("release", {"service": SERVICE, "environment": ENV, "image_version": images["v1"]})
        assert run.state is not None and run.state.is_completed(), run.state
    return images["v1"]


@flow(name="release-with-late-heartbeats")
def release_with_late_heartbeats() -> None:
    """Stands for a release's run in Prefect's records (created, never executed)."""


def guard_events(since: datetime) -> list[dict[str, object]]:
    return [dict(event.payload) for event in release_events("guarded", SERVICE, ENV, since)]


def test_the_guard_changes_nothing_when_production_is_not_split(stack: Stack, v1_live: str) -> None:
    with stack.client_settings():
        before = service_observation(ENV)
        since = datetime.now(UTC)
        run = start_run("guard", {"service": SERVICE, "environment": ENV, "reason": "asked by a test"}, 120)
        assert run.state is not None and run.state.is_completed(), run.state
        after = service_observation(ENV)
        (event,) = wait_for("the guarded event", lambda: guard_events(since), timeout_s=30)
        (artifact, *_) = artifacts(f"guard-{SERVICE}-{ENV}")
    assert after.gateway.etag == before.gateway.etag  # not one write
    assert after.live_color == before.live_color and not after.canary_serving
    assert event["acted"] is False
    assert artifact.flow_run_id == run.id
    assert "nothing to do" in str(artifact.data)


def test_a_release_killed_mid_canary_leaves_production_on_the_stable_color(
    stack: Stack, images: dict[str, str], v1_live: str
) -> None:
    port = stack.ports(ENV)["production"]
    with stack.client_settings():
        before = service_observation(ENV)
        stable = before.live_color
        assert stable is not None and before.scale_set(stable).runs_only == images["v1"]
        with SteadyTraffic("127.0.0.1", port, rate=100, connections=8) as load:
            time.sleep(1)
            parameters = {"service": SERVICE, "environment": ENV, "image_version": images["v2"], "strategy": "canary"}
            release = start_run("release", parameters, timeout_s=0)  # started, not awaited
            split = wait_for(
                "the release's canary",
                lambda: (lambda o: o.canary_addresses if o.canary_serving else [])(service_observation(ENV)),
                180,
                0.3,
            )
            running = flow_run(release.id)
            assert running.state_type == StateType.RUNNING and running.infrastructure_pid
            pid = int(running.infrastructure_pid.rsplit(":", 1)[-1])
            since = datetime.now(UTC)
            kill_process_group(pid)  # the run's whole process group, as a lost machine
            killed = time.monotonic()
            wait_for(
                f"production back on {stable.value} within the guard's deadline",
                lambda: not service_observation(ENV).canary_serving,
                GUARD_DEADLINE_S,
                0.5,
            )
            restored = time.time()
            print(f"the guard restored the stable color {time.monotonic() - killed:.1f} s after the kill")
            time.sleep(2)
        report = load.report()
        after = service_observation(ENV)

        # Never a color switch: production is where it was, on v1, and v2 serves no user any more.
        assert after.live_color == stable
        assert after.scale_set(stable).runs_only == images["v1"]
        assert not after.canary_addresses
        assert report.by_version[images["v2"]] > 0, "the canary never served users: the test proved nothing"
        assert {r.image_version for r in report.between(restored + 1, time.time()).records} == {images["v1"]}
        # The guard says so: its run (started by the automation, for this service), event and artifact.
        guard_run = wait_for(
            "the guard run to finish",
            lambda: [
                r
                for r in deployment_runs("guard")
                if images["v2"] in str(r.parameters.get("reason")) and r.state_type == StateType.COMPLETED
            ],
            timeout_s=60,
        )[0]
        assert guard_run.parameters["service"] == SERVICE and guard_run.parameters["environment"] == ENV
        (event,) = [e for e in wait_for("the guarded event", lambda: guard_events(since), 30) if e["acted"]]
        assert sorted(cast(list[str], event["removed_addresses"])) == sorted(split)
        assert event["live_color"] == stable.value
        (artifact, *_) = artifacts(f"guard-{SERVICE}-{ENV}")
        assert artifact.flow_run_id == guard_run.id
        assert "restored the stable color" in str(artifact.data)
        # The worker saw its run die.
        assert wait_for(
            "the killed run marked crashed", lambda: flow_run(release.id).state_type == StateType.CRASHED, 60
        )


def test_the_guard_ran_only_for_the_dead_release(stack: Stack, images: dict[str, str], finished_release: str) -> None:
    """A release that finished (the real v1 one, and a synthetic one) never woke the guard."""
    with stack.client_settings():
        runs = deployment_runs("guard")
    reasons = sorted(str(r.parameters.get("reason")) for r in runs)
    assert all(r.parameters["service"] == SERVICE for r in runs), [r.parameters for r in runs]
    assert len(runs) == 2, reasons  # the one the first test asked for, and the one the kill caused
    assert "asked by a test" in reasons[0] and images["v2"] in reasons[1]


def test_the_guard_leaves_a_live_release_alone_when_its_heartbeats_are_30_s_late(
    stack: Stack, images: dict[str, str]
) -> None:
    """A release whose heartbeats arrive 30 s late (event delivery lag, a clock skew, a stalled
    heartbeat thread) while Prefect still says its run runs: the automation wakes the guard after 20 s
    of silence, and the guard must not take the canary out of a release that is alive."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from blocks import load_service_context
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.topology import Topology

    staging = "staging"
    with stack.client_settings():
        run = start_run("release", {"service": SERVICE, "environment": staging, "image_version": images["v1"]})
        assert run.state is not None and run.state.is_completed(), run.state
        # A canary in staging, as a release mid-canary leaves it: one v2 instance in the live canary pool.
        context = load_service_context(SERVICE, staging)
        cloud = cloud_for(context)
        observed = cloud.observe(context.topology, with_health=False)
        live = observed.live_color
        assert live is not None
        idle = cloud.scale_sets.roll_out(context.topology, live.other, image_version=images["v2"], capacity=1)
        assert idle.etag is not None
        cloud.scale_sets.set_canary(context.topology, live.other, [idle.instances[0].instance_id], idle.etag)
        gateway = cloud.router.observe(context.topology, with_health=False)
        assert gateway.etag is not None
        cloud.router.route(
            context.topology,
            production=Topology.canary_pool(live),
            test=Topology.pool(live.other),
            expect_etag=gateway.etag,
        )
        assert service_observation(staging).canary_serving
        # The release's run, running as far as Prefect knows.
        with get_client(sync_client=True) as client:
            late = client.create_flow_run(release_with_late_heartbeats, state=Running())
        resource = {
            "prefect.resource.id": f"switchyard.service.{SERVICE}.{staging}",
            "switchyard.service": SERVICE,
            "switchyard.environment": staging,
        }

        def beat(name: str = "heartbeat") -> None:
            event = {
                "id": str(uuid4()),
                "occurred": datetime.now(UTC).isoformat(),
                "event": f"switchyard.release.{name}",
                "resource": resource,
                "payload": {"image": images["v2"], "flow_run_id": str(late.id)},
            }
            assert httpx.post(f"{stack.api_url}/events", json=[event], timeout=10).status_code == 204

        since = datetime.now(UTC)
        for _ in range(3):
            beat()
            time.sleep(5)
        time.sleep(30)  # the late heartbeats: the automation fires the guard after 20 s of silence
        for _ in range(4):
            beat()
            time.sleep(5)
        guard_run = wait_for(
            "the guard the silence woke",
            lambda: [
                r
                for r in deployment_runs("guard")
                if r.parameters.get("environment") == staging and r.state_type == StateType.COMPLETED
            ],
            timeout_s=60,
        )[0]
        beat("finished")
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(late.id, Completed(), force=True)
        (event,) = wait_for(
            "the guarded event",
            lambda: [dict(x.payload) for x in release_events("guarded", SERVICE, staging, since)],
            30,
        )
        still = service_observation(staging)
    assert guard_run.parameters["service"] == SERVICE
    assert event["acted"] is False and "alive" in str(event["action"])
    assert still.canary_serving, "the guard took the canary of a live release out"
