"""The routine work end to end: the monthly patch, release on merge, and the weekly DORA report.

Everything is real: the Prefect server and engine (subflows, tags, artifacts, flow-run history),
Packer-built images in the emulator's gallery, releases under real traffic through the emulator's
Application Gateway. Each test owns its services (patchy, merger, ghost), registered here as blocks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.sorting import ArtifactSort

from blocks import ServiceBlock, load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.monthly_patch import MonthlyPatchFailed, monthly_patch
from flows.provision import provision
from flows.release import release
from flows.release_on_merge import ReleaseChainFailed, release_on_merge
from flows.weekly_report import weekly_report
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import FaultProfile, FrontendPorts, ServiceConfig, ServiceContext
from switchyard.core.dora import ChangeType
from switchyard.core.fleet import Fleet
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import MergeRefused, ReleaseFailed
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.versions import ImageVersion
from switchyard.stages.traffic import SteadyTraffic, TrafficReport
from switchyard_emulator.testing import free_port
from tasks.history import TAG_COMMIT, parse_change_tags, read_release_history
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import live_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ENVIRONMENTS = ["staging", "production"]
PATCHY_COMMIT = labelled_commit("routine-patchy")
MERGE_COMMIT = labelled_commit("routine-merge")
BAD_COMMIT = labelled_commit("routine-bad")
RATE = 120.0


@pytest.fixture(scope="module")
def services(fleet: Fleet) -> dict[str, ServiceConfig]:
    """patchy (monthly patch), merger (release on merge, DORA), ghost (never provisioned): the sample
    app on their own ports, saved as service blocks."""
    made = {}
    for name in ("patchy", "merger", "ghost"):
        ports = {env: FrontendPorts(production=free_port(), test=free_port()) for env in ENVIRONMENTS}
        config = fleet.services["sample"].model_copy(update={"name": name, "frontend_ports": ports, "capacity": 2})
        ServiceBlock(**config.model_dump()).save(name, overwrite=True)
        made[name] = config
    return made


def traffic(config: ServiceConfig, environment: str = "production") -> SteadyTraffic:
    return SteadyTraffic("127.0.0.1", config.ports_in(environment).production, rate=RATE, connections=8)


def gallery_metadata(service: str, version: str) -> ImageMetadata:
    context = ServiceContext(environment=load_environment("production"), service=load_service(service))
    return ImageMetadata.from_tags(cloud_for(context).gallery.image_version(service, version).tags)


def published_versions(service: str) -> list[str]:
    context = ServiceContext(environment=load_environment("production"), service=load_service(service))
    return [image.gallery_version for image in cloud_for(context).gallery.image_versions(service)]


def latest_artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    assert artifacts, f"no artifact {key}"
    return str(artifacts[0].data)


# Fixtures that make history ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def patchy_v1(services: dict[str, ServiceConfig]) -> str:
    """patchy 1.4.2 serves production (released by hand, as an operator would); staging has nothing."""
    built = image_pipeline(service="patchy", app_version="1.4.2", git_commit=PATCHY_COMMIT)
    for environment in ENVIRONMENTS:
        provision(service="patchy", environment=environment)
    assert (
        release(service="patchy", environment="production", image_version=built.gallery_version).outcome == "promoted"
    )
    return built.gallery_version


class Merged(NamedTuple):
    result: Any
    committed_at: datetime
    live_after: dict[str, str | None]  # what each environment ran right after the merge's releases


@pytest.fixture(scope="module")
def merged(services: dict[str, ServiceConfig]) -> Merged:
    """A merge of merger 2.1.0, committed two hours ago, shipped through staging and production."""
    for environment in ENVIRONMENTS:
        provision(service="merger", environment=environment)
    committed_at = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    result = release_on_merge(service="merger", app_version="2.1.0", git_commit=MERGE_COMMIT, committed_at=committed_at)
    return Merged(
        result, committed_at, {environment: live_image(environment, "merger") for environment in ENVIRONMENTS}
    )


@pytest.fixture(scope="module")
def patched(
    services: dict[str, ServiceConfig], patchy_v1: str, merged: Merged
) -> tuple[list[Any], dict[str, TrafficReport]]:
    """The monthly patch over patchy and merger (both live in production: patched side by side) and
    ghost (nothing anywhere), under traffic: in production, and in merger's staging, where a version
    is live too, so its canary is judged (too little data never passes)."""
    with (
        traffic(services["patchy"]) as patchy_load,
        traffic(services["merger"]) as merger_load,
        traffic(services["merger"], "staging") as merger_staging_load,
    ):
        time.sleep(1)
        results = monthly_patch(services=["patchy", "merger", "ghost"])
        time.sleep(1)
    return results, {
        "patchy": patchy_load.report(),
        "merger": merger_load.report(),
        "merger-staging": merger_staging_load.report(),
    }


@pytest.fixture(scope="module")
def rolled_back(
    services: dict[str, ServiceConfig], patched: tuple[list[Any], dict[str, TrafficReport]]
) -> tuple[ReleaseSummary, datetime]:
    """After the patch: a bad image of merger (30% errors) released by hand to production, rolled
    back automatically."""
    bad = image_pipeline(
        service="merger",
        app_version="2.2.0",
        git_commit=BAD_COMMIT,
        fault_profile=FaultProfile.model_validate({"error_rate": 0.3}),
    )
    with traffic(services["merger"]), pytest.raises(ReleaseFailed) as failure:
        time.sleep(1)
        release(service="merger", environment="production", image_version=bad.gallery_version)
    raised_at = datetime.now(UTC)
    summary = failure.value.summary
    assert summary is not None and summary.outcome == "rolled-back", summary
    return summary, raised_at


# Release on merge ---------------------------------------------------------------------------------


def test_a_merge_is_built_at_its_commit_and_released_to_staging_then_production(merged: Merged) -> None:
    result = merged.result

    assert [(s.environment, s.outcome) for s in result.stages] == [("staging", "promoted"), ("production", "promoted")]
    image = gallery_metadata("merger", result.image_version)
    assert (str(image.app_version), image.git_commit) == ("2.1.0", MERGE_COMMIT)
    assert merged.live_after == {"staging": result.image_version, "production": result.image_version}
    # every release run it started carries the change: DORA's lead time starts at the commit
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"{TAG_COMMIT}{MERGE_COMMIT}"])),
        )
    merge_runs = [r for r in runs if parse_change_tags(r.tags).trigger == "merge"]
    assert sorted(r.parameters["environment"] for r in merge_runs) == ["production", "staging"]
    assert {parse_change_tags(r.tags).change_at for r in merge_runs} == {merged.committed_at}


def test_a_merge_stops_at_the_first_environment_that_fails_and_bad_input_is_refused_before_building(
    merged: Merged,
) -> None:
    before = live_image("production", "merger")
    with pytest.raises(ReleaseChainFailed, match="stopped in qa: failed: unknown environment 'qa'"):
        release_on_merge(
            service="merger", app_version="2.1.1", git_commit=MERGE_COMMIT, environments=["qa", "production"]
        )
    assert "| production | ⏭️ not-run | stopped: qa failed |" in latest_artifact("merge-merger")
    assert live_image("production", "merger") == before

    # A redelivered merge (the same version) and an out-of-order one (older) never go back.
    published = len(published_versions("merger"))
    for version in ("2.1.0", "2.0.5"):
        refused = rf"merger {version} .* refused, nothing was built: staging runs 2\.1\.0"
        with pytest.raises(MergeRefused, match=refused):
            release_on_merge(service="merger", app_version=version, git_commit=MERGE_COMMIT)
    assert len(published_versions("merger")) == published
    assert live_image("production", "merger") == before

    cases: list[tuple[dict[str, Any], str]] = [
        ({"git_commit": "main"}, "git_commit 'main' is not a commit id"),
        ({"app_version": "2.1"}, "app_version '2.1' is invalid"),
        ({"environments": []}, "environments is empty"),
        ({"environments": ["staging", "staging"]}, "lists staging more than once"),
        ({"committed_at": datetime(2026, 11, 1, 10, 0)}, "has no timezone"),
        ({"committed_at": datetime.now(UTC) + timedelta(days=1)}, "is in the future"),
    ]
    for change, message in cases:
        parameters = {"service": "merger", "app_version": "2.1.0", "git_commit": MERGE_COMMIT, **change}
        with pytest.raises(ValueError, match=message):
            release_on_merge(**parameters)


# Monthly patch ------------------------------------------------------------------------------------


def test_the_monthly_patch_rebuilds_what_production_runs_and_releases_it_to_staging_then_production(
    patched: tuple[list[Any], dict[str, TrafficReport]], patchy_v1: str, merged: Merged
) -> None:
    results, loads = patched
    by_service = {r.service: r for r in results}

    for service, before, commit in (
        ("patchy", patchy_v1, PATCHY_COMMIT),
        ("merger", merged.result.image_version, MERGE_COMMIT),
    ):
        patch = by_service[service]
        assert patch.result == "patched", patch
        assert patch.old_version == before
        old, new = ImageVersion.from_gallery_version(before), ImageVersion.from_gallery_version(patch.new_version)
        # a newer patch-level revision of the same month, same base, same app version and commit
        assert new.patch_level > old.patch_level and new.patch_level.same_month(old.patch_level)
        assert (new.base, new.app_version) == (old.base, old.app_version)
        assert gallery_metadata(service, patch.new_version).git_commit == commit
        assert [(s.environment, s.outcome) for s in patch.stages] == [
            ("staging", "promoted"),
            ("production", "promoted"),
        ]
        assert live_image("staging", service) == live_image("production", service) == patch.new_version
        # users saw the old and then the new version, and no request failed
        load = loads[service]
        assert load.failed == 0, f"{service}: {load.failed} of {load.sent} requests failed"
        assert load.by_version[before] > 0 and load.by_version[patch.new_version] > 0
    assert loads["merger-staging"].failed == 0
    # a service with nothing in production is reported and skipped
    assert by_service["ghost"].result == "skipped"
    assert "nothing in production" in by_service["ghost"].detail
    summary = latest_artifact("monthly-patch")
    patchy = by_service["patchy"]
    assert f"| patchy | {patchy_v1} | {patchy.new_version} | ✅ promoted | ✅ promoted | **patched**" in summary
    assert "| ghost | - | - | - | - | **skipped**" in summary


def test_the_monthly_patch_reports_an_unknown_service_as_failed_and_fails_the_run(
    services: dict[str, ServiceConfig],
) -> None:
    with pytest.raises(MonthlyPatchFailed, match="nosuch: could not read production: unknown service 'nosuch'"):
        monthly_patch(services=["nosuch", "ghost"])
    summary = latest_artifact("monthly-patch")
    assert "| nosuch |" in summary and "**failed**" in summary and "| ghost |" in summary


# The weekly DORA report ---------------------------------------------------------------------------


def test_the_weekly_report_counts_what_happened(
    patched: tuple[list[Any], dict[str, TrafficReport]],
    merged: Merged,
    rolled_back: tuple[ReleaseSummary, datetime],
) -> None:
    summary, raised_at = rolled_back

    report = weekly_report(days=7)
    reported_at = datetime.now(UTC)

    # merger in production: the merge and the patch went live, the bad image was rolled back
    production = report.group("merger", "production")
    assert (production.releases, production.promoted, production.failed_in_production) == (3, 2, 1)
    assert production.change_failure_rate == pytest.approx(1 / 3)
    # time to restore: from the failing verdict to traffic back, as the release lived it
    assert production.time_to_restore_median is not None and summary.seconds_to_restore is not None
    restore = production.time_to_restore_median.total_seconds()
    assert summary.failed_verdict_at is not None
    assert restore <= (raised_at - summary.failed_verdict_at).total_seconds()
    assert restore >= summary.seconds_to_restore - 0.5
    # lead time: the merge counts from its commit two hours before, the patch from its rebuild
    # (minutes): the median of the two is over an hour, the 90th percentile near two hours
    assert production.lead_time_median is not None and production.lead_time_p90 is not None
    assert timedelta(hours=1) <= production.lead_time_median
    assert timedelta(hours=1.8) <= production.lead_time_p90 <= reported_at - merged.committed_at
    staging = report.group("merger", "staging")
    assert (staging.releases, staging.promoted, staging.change_failure_rate) == (2, 2, 0.0)
    assert (report.group("patchy", "production").releases, report.group("patchy", "production").promoted) == (2, 2)
    assert report.group("patchy", "staging").promoted == 1
    assert report.group("patchy", "production").change_failure_rate == 0.0
    # the artifact people read
    markdown = latest_artifact("dora-weekly")
    assert "| merger/production | 3 | 2 |" in markdown and "33.3% (1 of 3)" in markdown
    assert "the merge commit's time" in markdown and "the start of the patch rebuild" in markdown
    assert "### By change type (production)" in markdown and "- Change types (all environments): " in markdown
    assert report.change_type(ChangeType.PATCH).promoted >= 2  # patchy's and merger's rebuilds


# The reader is a task called here outside a flow: its logs have no flow run to go to.
@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning")
def test_every_release_of_the_routine_says_what_kind_of_change_it_shipped(
    patched: tuple[list[Any], dict[str, TrafficReport]],
    merged: Merged,
    rolled_back: tuple[ReleaseSummary, datetime],
    patchy_v1: str,
) -> None:
    end = datetime.now(UTC) + timedelta(seconds=1)
    history = read_release_history(end - timedelta(days=7), end)
    kinds = {
        (r.service, r.environment, r.image_version): r.change_type
        for r in history.records
        # the fleet's environments: the merge to an unknown "qa" above was refused, not a change there
        if r.service in ("patchy", "merger") and r.environment in ENVIRONMENTS
    }
    results = {r.service: r for r in patched[0]}
    bad_version = rolled_back[0].image_version
    assert kinds == {
        # patchy's first release, by hand: nothing before it in the history, so unknown, not guessed
        ("patchy", "production", patchy_v1): ChangeType.UNKNOWN,
        ("patchy", "staging", results["patchy"].new_version): ChangeType.PATCH,
        ("patchy", "production", results["patchy"].new_version): ChangeType.PATCH,
        ("merger", "staging", merged.result.image_version): ChangeType.APP,  # the merge's trigger tag
        ("merger", "production", merged.result.image_version): ChangeType.APP,
        ("merger", "staging", results["merger"].new_version): ChangeType.PATCH,
        ("merger", "production", results["merger"].new_version): ChangeType.PATCH,
        # by hand, and newer than the patched image it replaced (read from the runs before it)
        ("merger", "production", bad_version): ChangeType.APP,
    }
