"""What `switchyard release --plan` and `switchyard fleet status` read, against a real emulator through
the real Azure SDK adapter: they plan and report from the cloud, and they change nothing in it.

"Nothing" is checked on the whole cloud, twice over: everything the adapter can observe (gateway with
backend health, both scale sets and their instances, every gallery version with its tags), and the
emulator's own ARM store (every resource's body and ETag, every scale-set model and instance record).

Blue runs V1 and is live; green runs V2 on the test listener.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.ports import Cloud
from switchyard.cloud.readonly import read_fleet_row, read_release_plan
from switchyard.core.config import AzureEnvironment, ServiceContext
from switchyard.core.findings import ScanSummary
from switchyard.core.fleet_status import FleetMember
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, ReleasePolicy, Strategy
from switchyard.core.topology import Color, Topology
from switchyard.core.versions import ImageVersion
from switchyard_emulator.testing import EmulatorHandle
from tests.integration.cloud.cloud_support import V1, V2, deploy_both_colors, eventually, publish, service_in

POLICY = ReleasePolicy(strategy=Strategy.CANARY, canary_steps=[0.25, 0.5], analysis_window_s=8)
BUILT_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def metadata_tags(cloud: AzureCloud, version: str) -> dict[str, str]:
    """The tags the image pipeline writes, so preflight and the fleet row read a real history."""
    return ImageMetadata(
        service=cloud.service.name,
        version=ImageVersion.from_gallery_version(version),
        git_commit="0123abcd" * 5,
        scan_summary=ScanSummary(),
        scan_gate_passed=True,
        sbom_sha256="ab" * 32,
        built_at=BUILT_AT,
    ).to_tags()


@pytest.fixture(scope="module", autouse=True)
def deployed(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    for version in (V1, V2):
        publish(cloud, artifacts[version], version, **metadata_tags(cloud, version))
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)


@pytest.fixture
def context(cloud: AzureCloud) -> ServiceContext:
    return ServiceContext(environment=cloud.environment, service=cloud.service)


def the_whole_cloud(cloud: AzureCloud, topology: Topology, emulator: EmulatorHandle) -> dict[str, Any]:
    """Everything there is to compare: the adapter's view and the emulator's ARM store."""
    observed = cloud.observe(topology).model_dump(mode="json", exclude={"observed_at"})
    gallery = [v.model_dump(mode="json") for v in cloud.gallery.image_versions(topology.service)]
    # Read-only and straight from the file: the emulator's own record of every ARM resource.
    store = sqlite3.connect(f"file:{emulator.state_dir / 'arm.sqlite'}?mode=ro", uri=True)
    try:
        resources = store.execute("SELECT key, etag, body FROM resources ORDER BY key").fetchall()
        models = store.execute("SELECT vmss_key, version, profile FROM vmss_models ORDER BY 1, 2").fetchall()
        instances = store.execute("SELECT * FROM instances ORDER BY vmss_key, instance_id").fetchall()
    finally:
        store.close()
    return {"observed": observed, "gallery": gallery, "resources": resources, "models": models, "instances": instances}


def settled(cloud: AzureCloud, topology: Topology, emulator: EmulatorHandle) -> dict[str, Any]:
    """The cloud once two looks in a row agree (health probes settle after a routing change)."""
    previous: list[dict[str, Any]] = [the_whole_cloud(cloud, topology, emulator)]

    def same_twice() -> dict[str, Any] | None:
        now = the_whole_cloud(cloud, topology, emulator)
        same = now == previous[0]
        previous[0] = now
        return now if same else None

    return eventually(same_twice, timeout_s=30, interval_s=0.5)


def test_the_plan_of_a_canary_reads_the_cloud_and_changes_nothing(
    cloud: AzureCloud, topology: Topology, context: ServiceContext, emulator: EmulatorHandle
) -> None:
    before = settled(cloud, topology, emulator)
    assert len(before["resources"]) > 5 and len(before["instances"]) == 4  # the comparison is not vacuous

    plan = read_release_plan(cloud, context, POLICY, V2)

    assert the_whole_cloud(cloud, topology, emulator) == before
    assert all(check.passed for check in plan.checks), plan.text()
    assert plan.live_color == "blue" and plan.live_image == V1
    # Green already runs V2 on every instance, healthy: the plan starts with the smoke tests.
    assert [step.kind for step in plan.steps] == [
        "smoke_test",
        "set_split",
        "set_split",
        "promote",
        "analyse_promoted",
        "finalize",
    ]
    assert [(s.canary_instances, s.live_instances) for s in plan.steps if s.kind == "set_split"] == [(1, 2), (2, 2)]
    assert plan.outcome == "promoted"


def test_the_plan_of_a_missing_image_is_refused_and_changes_nothing(
    cloud: AzureCloud, topology: Topology, context: ServiceContext, emulator: EmulatorHandle
) -> None:
    before = settled(cloud, topology, emulator)

    plan = read_release_plan(cloud, context, POLICY, "5000000.20261100.1")

    assert the_whole_cloud(cloud, topology, emulator) == before
    assert plan.refused and plan.steps == []
    assert f"published versions: {V1}, {V2}" in plan.outcome_detail


@pytest.fixture
def mid_canary(cloud: AzureCloud, topology: Topology) -> Iterator[None]:
    """Green instance 0 in blue's canary pool and production routed there, tagged as a release of V2
    in its canary phase: what a release run that died mid-canary leaves behind."""
    green = cloud.scale_sets.observe(topology, Color.GREEN)
    cloud.scale_sets.set_canary(topology, Color.GREEN, ["0"], str(green.etag))
    gateway = cloud.router.observe(topology, with_health=False)
    cloud.router.route(
        topology,
        production="blue-and-canary",
        test="green",
        expect_etag=str(gateway.etag),
        tags={TAG_RELEASE: V2, TAG_PHASE: "canary"},
    )
    yield
    gateway = cloud.router.observe(topology, with_health=False)
    cloud.router.route(
        topology, production="blue", test="green", expect_etag=str(gateway.etag), tags={TAG_PHASE: "rolled-back"}
    )
    green = cloud.scale_sets.observe(topology, Color.GREEN)
    cloud.scale_sets.set_canary(topology, Color.GREEN, [], str(green.etag))


@pytest.mark.usefixtures("mid_canary")
def test_mid_canary_the_plan_and_the_fleet_row_start_from_where_it_stands_and_change_nothing(
    cloud: AzureCloud, topology: Topology, context: ServiceContext, emulator: EmulatorHandle
) -> None:
    before = settled(cloud, topology, emulator)

    plan = read_release_plan(cloud, context, POLICY, V2)
    row = read_fleet_row(FleetMember(service="shop", environment="porttest", context=context), _this(cloud), _now())

    assert the_whole_cloud(cloud, topology, emulator) == before
    assert "mid-canary: 1 green instance(s) serve 33.3% of users" in plan.situation
    assert f"the release of {V2} is canary" in plan.note
    assert row.state == "ok" and row.live_color == "blue" and row.image_version == V1
    assert row.release_in_flight == f"{V2} canary 33%"
    # A new run takes the canary out first, then smoke-tests green again, as the planner says.
    assert [step.kind for step in plan.steps][:2] == ["clear_canary", "smoke_test"], plan.text()
    assert all(check.passed for check in plan.checks), plan.text()


def test_the_fleet_row_of_a_live_service_reads_its_image_history_and_changes_nothing(
    cloud: AzureCloud, topology: Topology, context: ServiceContext, emulator: EmulatorHandle
) -> None:
    before = settled(cloud, topology, emulator)

    row = read_fleet_row(FleetMember(service="shop", environment="porttest", context=context), _this(cloud), _now())

    assert the_whole_cloud(cloud, topology, emulator) == before
    assert (row.state, row.live_color, row.image_version) == ("ok", "blue", V1)
    assert (row.base, row.patch_level, row.app_version) == ("debian-12", "2026.11", "1.0.0")
    assert (row.healthy, row.total) == (2, 2)
    assert row.built_at == BUILT_AT and row.release_in_flight is None


def test_an_unprovisioned_service_and_an_unreachable_cloud_are_rows_not_errors(
    cloud: AzureCloud, topology: Topology, environment: AzureEnvironment, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    before = settled(cloud, topology, emulator)
    ghost = ServiceContext(environment=environment, service=service_in(environment, name="ghost"))
    nowhere = environment.model_copy(update={"emulator_file": str(tmp_path / "no-emulator.json")})
    lost = ServiceContext(environment=nowhere, service=cloud.service)

    unprovisioned = read_fleet_row(
        FleetMember(service="ghost", environment="porttest", context=ghost), _adapter, _now()
    )
    unreachable = read_fleet_row(FleetMember(service="shop", environment="porttest", context=lost), _adapter, _now())

    assert the_whole_cloud(cloud, topology, emulator) == before
    assert unprovisioned.state == "not-provisioned"
    assert unreachable.state == "unreachable" and "no-emulator.json does not exist" in unreachable.note


def _adapter(context: ServiceContext) -> Cloud:
    """A new adapter per context, as switchyard.cloud.factory.cloud_for builds them."""
    return AzureCloud(context.environment, context.service)


def _this(cloud: AzureCloud) -> Any:
    return lambda _context: cloud


def _now() -> datetime:
    return datetime.now(UTC)
