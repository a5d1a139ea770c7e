"""The scale sets port (AzureScaleSets) against a real emulator: roll-outs leave instances that
really run the version (their own processes answer /version) in their own color's two pools, a
canary is exactly the instances chosen (as the gateway's pools show them), writes decided on a stale
observation change nothing, scaling, failures, quota."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.errors import CloudError, StaleStateError
from switchyard.core.capacity import shortfall
from switchyard.core.state import GatewayObservation, ScaleSetObservation
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import EmulatorHandle
from tests.integration.cloud.cloud_support import BROKEN, V1, V2, get, provision, publish


@pytest.fixture(scope="module", autouse=True)
def published(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    provision(cloud)
    for version in (V1, V2, BROKEN):
        publish(cloud, artifacts[version], version)


def served_by_each_instance(scale_set: ScaleSetObservation, service_port: int) -> list[str]:
    """The gallery version each instance's own process answers with, asked at its private IP."""
    versions = []
    for instance in scale_set.instances:
        assert instance.private_ip, f"{instance.name} has no private IP"
        versions.append(get(instance.private_ip, service_port).json()["gallery_version"])
    return versions


def test_roll_out_creates_instances_that_all_run_the_version(cloud: AzureCloud, topology: Topology) -> None:
    progress: list[str] = []

    rolled = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2, progress=progress.append)

    assert rolled.exists and rolled.capacity == 2 and rolled.image_version == V1
    assert rolled.runs_only == V1
    assert [i.power_state for i in rolled.instances] == ["running", "running"]
    assert len(set(rolled.addresses)) == 2
    assert served_by_each_instance(rolled, cloud.service.service_port) == [V1, V1]
    assert progress == [f"{topology.scale_set(Color.BLUE)}: model -> image {V1}, capacity 2"]
    assert cloud.scale_sets.observe(topology, Color.BLUE) == rolled
    assert rolled.etag
    # Every instance is in its color's own pool and its own canary pool, and in no other.
    gateway = cloud.router.observe(topology, with_health=False)
    assert sorted(gateway.pool_of(Color.BLUE).member_addresses) == sorted(rolled.addresses)
    assert sorted(gateway.canary_pool_of(Color.BLUE).member_addresses) == sorted(rolled.addresses)
    assert gateway.pool_of(Color.GREEN).member_addresses == gateway.canary_pool_of(Color.GREEN).member_addresses == []


def test_rolling_out_the_same_version_again_changes_nothing(cloud: AzureCloud, topology: Topology) -> None:
    before = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2)
    progress: list[str] = []

    again = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2, progress=progress.append)

    assert progress == []  # no write at all
    assert again == before


def test_roll_out_of_a_new_version_moves_every_existing_instance_to_it(cloud: AzureCloud, topology: Topology) -> None:
    before = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2)

    after = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V2, capacity=2)

    assert after.runs_only == V2
    assert all(i.latest_model_applied for i in after.instances)
    # Manual upgrade policy: the same instances were updated in place, none added or replaced.
    assert [i.instance_id for i in after.instances] == [i.instance_id for i in before.instances]
    assert served_by_each_instance(after, cloud.service.service_port) == [V2, V2]


def test_scale_changes_the_instance_count_and_keeps_the_version(cloud: AzureCloud, topology: Topology) -> None:
    cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V1, capacity=1)

    grown = cloud.scale_sets.scale(topology, Color.GREEN, 3, str(cloud.scale_sets.observe(topology, Color.GREEN).etag))

    assert grown.capacity == 3 and len(grown.instances) == 3
    assert grown.runs_only == V1
    assert served_by_each_instance(grown, cloud.service.service_port) == [V1, V1, V1]

    emptied = cloud.scale_sets.scale(topology, Color.GREEN, 0, str(grown.etag))

    assert emptied.exists and emptied.capacity == 0 and emptied.instances == []


def test_a_roll_out_whose_instances_cannot_start_says_why_and_a_good_version_repairs_it(
    cloud: AzureCloud, topology: Topology
) -> None:
    # Azure fails the scale set's long-running operation; the error carries the instance's reason.
    with pytest.raises(CloudError) as failure:
        cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=BROKEN, capacity=1)

    assert f"rolling out {BROKEN} on {topology.scale_set(Color.GREEN)}" in str(failure.value)
    assert "boom: cannot start" in str(failure.value)  # the service's own last words
    failed = cloud.scale_sets.observe(topology, Color.GREEN)
    assert [i.provisioning_state.lower() for i in failed.instances] == ["failed"]

    repaired = cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V1, capacity=1)

    assert repaired.runs_only == V1
    assert served_by_each_instance(repaired, cloud.service.service_port) == [V1]


def test_a_color_never_rolled_out_reads_as_missing(cloud: AzureCloud) -> None:
    elsewhere = Topology(service=cloud.service.name, environment="nowhere")

    missing = cloud.scale_sets.observe(elsewhere, Color.GREEN)

    assert missing.exists is False and missing.instances == [] and missing.capacity == 0


def test_compute_quota_counts_the_instances_running_in_the_location(cloud: AzureCloud, topology: Topology) -> None:
    cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V2, capacity=2)
    running_vms = sum(cloud.scale_sets.observe(topology, color).capacity for color in Color)

    quota = cloud.scale_sets.compute_quota()

    assert (quota.location, quota.vm_size) == ("westeurope", "Standard_B2s")
    assert quota.vcpus_per_vm == 2 and quota.family == "standardBSFamily"
    assert quota.usages["cores"].current == running_vms * 2
    assert quota.usages["cores"].limit > quota.usages["cores"].current

    bigger = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V2, capacity=3)

    assert cloud.scale_sets.compute_quota().usages["cores"].current == quota.usages["cores"].current + 2
    assert bigger.capacity == 3


def test_a_vm_size_the_location_does_not_offer_is_named_in_the_error(cloud: AzureCloud) -> None:
    oversized = AzureCloud(cloud.environment, cloud.service.model_copy(update={"vm_size": "Standard_Z99s_v9"}))

    with pytest.raises(CloudError, match="VM size Standard_Z99s_v9 is not offered in westeurope"):
        oversized.scale_sets.compute_quota()


def canary_members(gateway: GatewayObservation, scale_set: ScaleSetObservation) -> list[str]:
    """Instance ids of `scale_set` (green) that the gateway has in blue's canary pool."""
    by_address = {i.private_ip: i.instance_id for i in scale_set.instances}
    return sorted(by_address[a] for a in gateway.canary_pool_of(Color.BLUE).member_addresses if a in by_address)


def test_set_canary_puts_exactly_the_chosen_instances_in_the_live_colors_canary_pool(
    cloud: AzureCloud, topology: Topology
) -> None:
    blue = cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2)
    green = cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V2, capacity=3)
    first, second, third = (i.instance_id for i in green.instances)  # ids are never reused: not 0, 1, 2
    progress: list[str] = []

    one = cloud.scale_sets.set_canary(topology, Color.GREEN, [second], str(green.etag), progress=progress.append)

    gateway = cloud.router.observe(topology, with_health=False)
    assert canary_members(gateway, one) == [second]
    assert sorted(gateway.canary_pool_of(Color.BLUE).member_addresses) == sorted([*blue.addresses, one.addresses[1]])
    # Green's own pools and blue's own pool do not change: only blue's canary pool gained a member.
    assert sorted(gateway.pool_of(Color.GREEN).member_addresses) == sorted(green.addresses)
    assert sorted(gateway.canary_pool_of(Color.GREEN).member_addresses) == sorted(green.addresses)
    assert sorted(gateway.pool_of(Color.BLUE).member_addresses) == sorted(blue.addresses)
    # Only that instance was upgraded; the others keep the model they run (Manual upgrade policy),
    # and every instance is the one it was, running V2.
    assert [i.latest_model_applied for i in one.instances] == [False, True, False]
    assert one.runs_only == V2 and one.addresses == green.addresses
    assert one.etag != green.etag
    assert progress == [f"{topology.scale_set(Color.GREEN)}: instances {second} join pool blue-and-canary"]

    two = cloud.scale_sets.set_canary(topology, Color.GREEN, [first, second], str(one.etag))
    assert canary_members(cloud.router.observe(topology, with_health=False), two) == sorted([first, second])

    # Another instance instead: two leave and one joins, in one call.
    moved = cloud.scale_sets.set_canary(topology, Color.GREEN, [third], str(two.etag))
    assert canary_members(cloud.router.observe(topology, with_health=False), moved) == [third]

    none = cloud.scale_sets.set_canary(topology, Color.GREEN, [], str(moved.etag))
    gateway = cloud.router.observe(topology, with_health=False)
    assert canary_members(gateway, none) == []
    assert sorted(gateway.canary_pool_of(Color.BLUE).member_addresses) == sorted(blue.addresses)
    assert none.runs_only == V2 and served_by_each_instance(none, cloud.service.service_port) == [V2, V2, V2]

    # With no canary left, an instance added later is no canary either.
    grown = cloud.scale_sets.scale(topology, Color.GREEN, 4, str(none.etag))
    assert len(grown.instances) == 4
    assert canary_members(cloud.router.observe(topology, with_health=False), grown) == []


def test_set_canary_and_scale_on_a_stale_observation_are_refused_and_change_nothing(
    cloud: AzureCloud, topology: Topology
) -> None:
    cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2)
    decided_on = cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V2, capacity=2)
    # Another writer (a rollback, autoscale, a person) changes the scale set after that observation.
    current = cloud.scale_sets.scale(topology, Color.GREEN, 3, str(decided_on.etag))

    with pytest.raises(StaleStateError, match="observe again"):
        cloud.scale_sets.set_canary(topology, Color.GREEN, [decided_on.instances[0].instance_id], str(decided_on.etag))
    with pytest.raises(StaleStateError, match="observe again"):
        cloud.scale_sets.scale(topology, Color.GREEN, 1, str(decided_on.etag))

    after = cloud.scale_sets.observe(topology, Color.GREEN)
    assert after == current and after.capacity == 3
    assert canary_members(cloud.router.observe(topology, with_health=False), after) == []


def test_roll_out_takes_canary_instances_out_of_the_other_pool_and_leaves_the_rest_alone(
    cloud: AzureCloud, topology: Topology
) -> None:
    cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=2)
    green = cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V2, capacity=2)
    chosen = green.instances[0].instance_id
    canary = cloud.scale_sets.set_canary(topology, Color.GREEN, [chosen], str(green.etag))
    progress: list[str] = []

    rolled = cloud.scale_sets.roll_out(topology, Color.GREEN, image_version=V2, capacity=2, progress=progress.append)

    assert canary_members(cloud.router.observe(topology, with_health=False), rolled) == []
    assert progress == [
        f"{topology.scale_set(Color.GREEN)}: model -> image {V2}, capacity 2",
        f"{topology.scale_set(Color.GREEN)}: updating instances {chosen} to the latest model",
    ]
    assert rolled.runs_only == V2 and rolled.addresses == canary.addresses


def test_a_size_restricted_for_the_subscription_in_the_location_is_reported_with_the_quota(
    cloud: AzureCloud, emulator: EmulatorHandle
) -> None:
    """Azure refuses a restricted size whatever the quota (SkuNotAvailable): the quota reading says
    so, and preflight's room check names it instead of counting vCPUs."""
    control = httpx.Client(
        base_url=emulator.endpoint, verify=emulator.ca_bundle, headers={"Authorization": f"Bearer {emulator.token}"}
    )
    with control:
        control.put(
            "/switchyard/skus", json={"Standard_B2s": {"restricted_locations": ["westeurope"]}}
        ).raise_for_status()
        try:
            quota = cloud.scale_sets.compute_quota()
        finally:
            control.put("/switchyard/skus", json={"Standard_B2s": {"restricted_locations": []}}).raise_for_status()

    assert quota.restrictions == ["NotAvailableForSubscription in westeurope"]
    [problem] = shortfall(quota, 1)
    assert "Standard_B2s cannot be deployed in westeurope for this subscription" in problem
    assert cloud.scale_sets.compute_quota().restrictions == []
