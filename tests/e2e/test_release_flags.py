"""A release policy's enable_flags end to end: the release flow on the real emulator and Prefect turns
the flags on in the service's database once the new version is promoted and finalized, never after a
rollback, and a flag store that fails leaves the release promoted with a warning and an alert.

The service `flagged` and the policy `enable-new-greeting` are the e2e fleet's (tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blocks import ServiceBlock
from flows.flags import set_feature_flag
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.core.config import FaultProfile
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseFailed
from switchyard.core.rollout import Strategy
from switchyard.flags.sqlite_store import SqliteFlagStore
from switchyard.stages.traffic import SteadyTraffic
from tasks.events import FLAGS_FAILED_STEP
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import live_image, release_events, wait_for

pytestmark = pytest.mark.e2e

SERVICE, ENV, POLICY, FLAG = "flagged", "production", "enable-new-greeting", "new_greeting"
COMMIT = labelled_commit("release-flags")


@pytest.fixture(scope="module")
def flagged(fleet: Fleet, state_dir: Path) -> dict[str, Any]:
    """v1 live; v2 and v4 good, v3 failing half its requests; the service's database file."""
    images = {
        "v1": image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=COMMIT).gallery_version,
        "v2": image_pipeline(service=SERVICE, app_version="2.0.0", git_commit=COMMIT).gallery_version,
        "v3": image_pipeline(
            service=SERVICE, app_version="3.0.0", git_commit=COMMIT, fault_profile=FaultProfile(error_rate=0.5)
        ).gallery_version,
        "v4": image_pipeline(service=SERVICE, app_version="4.0.0", git_commit=COMMIT).gallery_version,
    }
    provision(service=SERVICE, environment=ENV)
    first = release(service=SERVICE, environment=ENV, image_version=images["v1"], strategy=Strategy.BLUE_GREEN)
    assert first.outcome == "promoted" and first.flags == []  # the default policy enables no flag
    database = state_dir / "databases" / f"{SERVICE}-{ENV}.sqlite3"  # {state_dir} of fleet.yaml's URL
    return {"images": images, "database": database, "port": fleet.services[SERVICE].ports_in(ENV).production}


def flag(database: Path) -> tuple[bool, str] | None:
    found = SqliteFlagStore(str(database)).read([FLAG]).get(FLAG)
    return None if found is None else (found.enabled, found.updated_by)


def release_under_traffic(flagged: dict[str, Any], image: str) -> Any:
    """The release, judged on users' requests (the promoted analysis needs them)."""
    with SteadyTraffic("127.0.0.1", flagged["port"], rate=60.0, connections=4):
        time.sleep(1)
        return release(service=SERVICE, environment=ENV, image_version=image, policy=POLICY)


def steps(summary: Any) -> list[str]:
    return [entry.step for entry in summary.timeline]


def test_a_promoted_release_turns_its_flags_on_after_finalize(flagged: dict[str, Any]) -> None:
    assert flag(flagged["database"]) is None  # never set: the service reads it as off

    summary = release_under_traffic(flagged, flagged["images"]["v2"])

    assert summary.outcome == "promoted" and not summary.warnings
    [change] = summary.flags
    assert (change.name, change.enabled, change.previous) == (FLAG, True, None)
    assert change.database == str(flagged["database"])
    timeline = steps(summary)
    assert timeline[timeline.index("enable flags") - 1] == "finalize"  # once promoted and finalized
    on = flag(flagged["database"])
    assert on is not None and on[0] is True and on[1].startswith("release ")  # "release <flow run id>"


def test_a_release_that_rolls_back_never_turns_its_flags_on(flagged: dict[str, Any]) -> None:
    # Off again, by hand, so that the release would have something to turn on.
    set_feature_flag(service=SERVICE, environment=ENV, name=FLAG, enabled=False)
    before = flag(flagged["database"])

    with pytest.raises(ReleaseFailed) as failed:
        release_under_traffic(flagged, flagged["images"]["v3"])

    summary = failed.value.summary
    assert summary is not None and summary.outcome == "rolled-back"
    assert summary.flags == [] and "enable flags" not in steps(summary)
    assert flag(flagged["database"]) == before and before is not None and before[0] is False
    assert live_image(ENV, SERVICE) == flagged["images"]["v2"]


@pytest.fixture
def broken_database(fleet: Fleet, tmp_path: Path) -> Iterator[Path]:
    """`flagged` with a database whose folder is a regular file: the URL is fine, opening it fails."""
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("a file where the database's folder should be\n")
    service = fleet.services[SERVICE]
    broken = service.model_copy(update={"database": {ENV: f"sqlite:///{not_a_folder}/flagged.sqlite3"}})
    asyncio.run(ServiceBlock(**broken.model_dump()).asave(SERVICE, overwrite=True))
    try:
        yield not_a_folder
    finally:
        asyncio.run(ServiceBlock(**service.model_dump()).asave(SERVICE, overwrite=True))


def test_a_flag_store_that_fails_leaves_the_release_promoted_with_a_warning_and_an_alert(
    flagged: dict[str, Any], broken_database: Path
) -> None:
    since = datetime.now(UTC)
    v4 = flagged["images"]["v4"]

    summary = release_under_traffic(flagged, v4)

    assert summary.outcome == "promoted" and summary.flags == []
    [warning] = summary.warnings
    assert warning.startswith(f"enable_flags could not turn on {FLAG} (FlagStoreError: the flag store ")
    assert "the release stays promoted" in warning and f"switchyard flag set {SERVICE} NAME on --env {ENV}" in warning
    assert summary.outcome_detail.startswith("Promoted, with a warning: enable_flags could not turn on")
    assert live_image(ENV, SERVICE) == v4
    events = wait_for(
        "the flags-failed alert event", lambda: release_events(FLAGS_FAILED_STEP, SERVICE, ENV, since), timeout_s=30
    )
    assert events[0].payload["flags"] == [FLAG] and events[0].payload["image"] == v4
