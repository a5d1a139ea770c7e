"""Manual approval: a release policy may require a person to approve the switch to production.

The run pauses for input that a person gives in the Prefect UI (here: the same API call the UI's
form makes); without an answer in time, what users already see of the new version is rolled back.
"""

from __future__ import annotations

import contextvars
import threading
import time
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseFailed
from switchyard.core.release_report import ReleaseSummary
from switchyard.stages.traffic import SteadyTraffic
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import live_image

pytestmark = pytest.mark.e2e

SERVICE, ENV = "till", "production"
COMMIT = labelled_commit("approval")


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    provision(service=SERVICE, environment=ENV)
    versions = {
        name: image_pipeline(service=SERVICE, app_version=app, git_commit=COMMIT).gallery_version
        for name, app in (("v1", "1.0.0"), ("v2", "2.0.0"), ("v3", "3.0.0"))
    }
    assert release(service=SERVICE, environment=ENV, image_version=versions["v1"]).outcome == "promoted"
    return versions


def paused_release(timeout_s: float = 60) -> UUID:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
        if runs:
            return runs[0].id
        time.sleep(0.5)
    raise AssertionError("no release paused for approval")


def test_a_release_waits_for_approval_and_switches_once_a_person_approves(fleet: Fleet, images: dict[str, str]) -> None:
    outcome: dict[str, ReleaseSummary | BaseException] = {}

    def run() -> None:
        try:
            outcome["summary"] = release(
                service=SERVICE, environment=ENV, image_version=images["v2"], policy="needs-approval"
            )
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error

    # the thread sees this test's Prefect settings (the session's server), as the test itself does
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    worker.start()
    run_id = paused_release()
    assert live_image(ENV, SERVICE) == images["v1"]  # nothing switched while waiting
    resume_flow_run(run_id, run_input={"approve": True, "comment": "looks good"})
    worker.join(timeout=180)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert isinstance(summary, ReleaseSummary) and summary.outcome == "promoted"
    assert any(entry.step == "approved" and "looks good" in entry.detail for entry in summary.timeline)
    assert live_image(ENV, SERVICE) == images["v2"]


def test_no_answer_in_time_rolls_the_canary_back(fleet: Fleet, images: dict[str, str]) -> None:
    before = live_image(ENV, SERVICE)
    port = fleet.services[SERVICE].ports_in(ENV).production
    with SteadyTraffic("127.0.0.1", port, rate=110, connections=6), pytest.raises(ReleaseFailed) as failure:
        release(service=SERVICE, environment=ENV, image_version=images["v3"], policy="approval-times-out")
    summary = failure.value.summary
    assert summary is not None and summary.outcome == "rolled-back"
    assert "no approval within 3 s" in summary.outcome_detail
    assert live_image(ENV, SERVICE) == before
