"""Test stages before users, end to end: the service's integration tests and the policy's
performance test run against the new color through the test listener, after the smoke tests.

A good image passes both and is promoted; an image that fails half of its work requests passes
the smoke tests (health and version hold) but fails its integration tests; a slow image passes
both of those and fails the performance test on p95. The two failures stop the release before any
user request reaches the new color: production keeps its image and its gateway configuration.
"""

from __future__ import annotations

from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.core.config import FaultProfile
from switchyard.core.fleet import Fleet
from tasks.stages import StageFailed
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import service_observation, wait_for

pytestmark = pytest.mark.e2e

SERVICE, ENV = "pier", "production"
COMMIT = labelled_commit("release-stages")
POLICY = "with-performance-test"
# The task names of the test stages after smoke, as the run shows them.
TEST_STAGE_STEPS = {"integration tests on idle color", "performance test on idle color"}


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    faults = {
        "v1": FaultProfile(),
        "v2": FaultProfile(),
        "failing": FaultProfile(error_rate=1.0),  # every work request fails: no test can miss it
        "slow": FaultProfile(extra_latency_ms=400),
    }
    built = {
        name: image_pipeline(service=SERVICE, app_version=f"{n}.0.0", git_commit=COMMIT, fault_profile=fault)
        for n, (name, fault) in enumerate(faults.items(), start=1)
    }
    provision(service=SERVICE, environment=ENV)
    assert release(service=SERVICE, environment=ENV, image_version=built["v1"].gallery_version).outcome == "promoted"
    return {name: image.gallery_version for name, image in built.items()}


def test_a_good_image_passes_integration_and_performance_tests_then_is_promoted(images: dict[str, str]) -> None:
    summary = release(service=SERVICE, environment=ENV, image_version=images["v2"], policy=POLICY)

    assert summary.outcome == "promoted", summary.outcome_detail
    stages = {entry.step: entry.detail for entry in summary.timeline}
    assert stages["integration tests"].startswith("exit code 0")
    assert "planned, 0 failed (0.00%), p95" in stages["performance tests"]


@pytest.mark.parametrize(
    ("image", "stage", "why"),
    [
        ("failing", "integration", "exit code 1"),
        ("slow", "performance", "ms above 150 ms"),
    ],
)
def test_an_image_that_fails_a_test_stage_never_meets_a_user(
    images: dict[str, str], image: str, stage: str, why: str
) -> None:
    before = service_observation(ENV, SERVICE)
    live = before.live_color
    assert live is not None

    with pytest.raises(StageFailed, match=rf"{stage} tests of {images[image]} failed: .*{why}"):
        release(service=SERVICE, environment=ENV, image_version=images[image], policy=POLICY)

    # no user request reached the image: production still routes to the live color's own pool,
    # which runs the image it ran, and no canary of the failed image joined it
    after = service_observation(ENV, SERVICE)
    assert after.live_color == live and after.gateway.production_pool == before.gateway.production_pool
    assert after.scale_set(live).runs_only == images["v2"]
    assert not after.canary_addresses


def test_a_stage_the_release_does_not_configure_is_not_a_step_of_its_run(images: dict[str, str]) -> None:
    # This policy has no performance test; pier has its integration tests. A stage that is not
    # configured would show in the run as a step that passed.
    before = service_observation(ENV, SERVICE)
    live = before.live_color
    assert live is not None
    image = images["v1"] if before.scale_set(live).runs_only == images["v2"] else images["v2"]
    state = release(
        service=SERVICE, environment=ENV, image_version=image, policy="without-performance-test", return_state=True
    )
    assert state.result().outcome == "promoted"
    run_id = state.state_details.flow_run_id
    assert run_id is not None

    steps = wait_for("the release's steps recorded", lambda: _steps_after_smoke(run_id), timeout_s=30)
    assert steps == ["integration tests on idle color"]


def _steps_after_smoke(run_id: UUID) -> list[str] | None:
    """The test-stage tasks of a flow run (by task name), once its smoke test is recorded."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200)
    names = {run.name.rsplit("-", 1)[0] for run in runs}
    if "smoke test idle color" not in names or "finalize release" not in names:
        return None
    return sorted(names & TEST_STAGE_STEPS)
