"""The traffic router port (AzureTrafficRouter, an Application Gateway) against a real emulator:
every routing write shows in what users' requests reach, and a write decided on a stale
observation is refused and changes nothing.

Blue runs V1 and is live (production listener); green runs V2 (test listener).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.errors import NotFoundError, StaleStateError
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import EmulatorHandle
from tests.integration.cloud.cloud_support import V1, V2, deploy_both_colors, eventually, gateway_port, served_versions


@pytest.fixture(scope="module", autouse=True)
def deployed(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)


@pytest.fixture(autouse=True)
def blue_live_without_canary(cloud: AzureCloud, topology: Topology) -> Iterator[None]:
    """Each test leaves the gateway as it found it: production on blue, no canary."""
    yield
    observed = cloud.observe(topology, with_health=False)
    if observed.live_color is not Color.BLUE:
        cloud.router.switch(topology, Color.BLUE, str(observed.gateway.etag))
    cloud.router.clear_canary(topology)


def observe(cloud: AzureCloud, topology: Topology) -> ServiceObservation:
    return cloud.observe(topology, with_health=False)


def reached(cloud: AzureCloud, topology: Topology, listener: str, requests: int = 20) -> set[str]:
    """The versions that answer users' requests to `listener` (production or test)."""
    return served_versions(cloud.router.frontend_address(topology), gateway_port(cloud, listener), requests)


def test_observe_shows_which_color_each_listener_serves_and_that_every_instance_is_healthy(
    cloud: AzureCloud, topology: Topology
) -> None:
    gateway = cloud.router.observe(topology)
    blue = cloud.scale_sets.observe(topology, Color.BLUE)
    green = cloud.scale_sets.observe(topology, Color.GREEN)

    assert (gateway.production_pool, gateway.test_pool, gateway.live_color) == ("blue", "green", Color.BLUE)
    assert sorted(gateway.pool_of(Color.BLUE).member_addresses) == sorted(blue.addresses)
    assert sorted(gateway.pool_of(Color.GREEN).member_addresses) == sorted(green.addresses)
    assert gateway.pool_of(Color.BLUE).healthy(blue.addresses) and gateway.pool_of(Color.GREEN).healthy(green.addresses)
    assert gateway.etag
    assert cloud.router.frontend_address(topology) == "127.0.0.1"
    assert reached(cloud, topology, "production") == {V1}
    assert reached(cloud, topology, "test") == {V2}


def test_set_split_serves_the_chosen_green_instance_beside_blue_until_it_is_taken_out(
    cloud: AzureCloud, topology: Topology
) -> None:
    before = observe(cloud, topology)
    canary = before.scale_set(Color.GREEN).addresses[:1]

    serving = cloud.router.set_split(topology, canary, str(before.gateway.etag), tags={"switchyard.phase": "canary"})

    assert serving == canary
    during = observe(cloud, topology)
    assert during.canary_addresses == canary and during.live_color is Color.BLUE
    assert during.gateway.tags == {**before.gateway.tags, "switchyard.phase": "canary"}
    eventually(lambda: reached(cloud, topology, "production", requests=30) == {V1, V2})

    assert cloud.router.set_split(topology, [], str(during.gateway.etag)) == []

    assert observe(cloud, topology).canary_addresses == []
    assert reached(cloud, topology, "production") == {V1}


def test_switch_moves_both_listeners_and_drops_the_canary_in_one_write(cloud: AzureCloud, topology: Topology) -> None:
    before = observe(cloud, topology)
    cloud.router.set_split(topology, before.scale_set(Color.GREEN).addresses[:1], str(before.gateway.etag))
    with_canary = observe(cloud, topology)

    switched = cloud.router.switch(
        topology, Color.GREEN, str(with_canary.gateway.etag), tags={"switchyard.previous": "blue"}
    )

    assert (switched.production_pool, switched.test_pool) == ("green", "blue")
    assert all(pool.extra_addresses == [] for pool in switched.pools.values())
    assert switched.tags["switchyard.previous"] == "blue"
    # Once the write returns, users reach green only, and the test listener reaches blue.
    assert reached(cloud, topology, "production") == {V2}
    assert reached(cloud, topology, "test") == {V1}


def test_tag_merges_into_the_gateways_tags_and_leaves_routing_alone(cloud: AzureCloud, topology: Topology) -> None:
    before = observe(cloud, topology).gateway

    tagged = cloud.router.tag(topology, {"switchyard.phase": "finalized"}, str(before.etag))

    assert tagged.tags == {**before.tags, "switchyard.phase": "finalized"}
    assert (tagged.production_pool, tagged.test_pool, tagged.pools) == (
        before.production_pool,
        before.test_pool,
        before.pools,
    )
    assert tagged.etag != before.etag


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda cloud, topology, green, etag: cloud.router.set_split(topology, green[:1], etag), id="set_split"
        ),
        pytest.param(
            lambda cloud, topology, green, etag: cloud.router.switch(topology, Color.GREEN, etag), id="switch"
        ),
        pytest.param(
            lambda cloud, topology, green, etag: cloud.router.tag(topology, {"switchyard.phase": "promoted"}, etag),
            id="tag",
        ),
    ],
)
def test_a_write_decided_on_a_stale_observation_is_refused_and_changes_nothing(
    cloud: AzureCloud, topology: Topology, write: Callable[[AzureCloud, Topology, list[str], str], object]
) -> None:
    decided_on = observe(cloud, topology)
    # Another writer (a second run, a person) changes the gateway after that observation.
    cloud.router.tag(topology, {"switchyard.note": "changed meanwhile"}, str(decided_on.gateway.etag))
    current = observe(cloud, topology)

    with pytest.raises(StaleStateError, match="observe again"):
        write(cloud, topology, decided_on.scale_set(Color.GREEN).addresses, str(decided_on.gateway.etag))

    assert observe(cloud, topology).gateway == current.gateway
    assert reached(cloud, topology, "production") == {V1}


def test_clear_canary_takes_every_canary_out_and_writes_nothing_when_there_is_none(
    cloud: AzureCloud, topology: Topology
) -> None:
    before = observe(cloud, topology)
    green = before.scale_set(Color.GREEN).addresses
    cloud.router.set_split(topology, green, str(before.gateway.etag))

    removed = cloud.router.clear_canary(topology, tags={"switchyard.phase": "rolled-back"})

    assert sorted(removed) == sorted(green)
    after = observe(cloud, topology)
    assert after.canary_addresses == [] and after.gateway.tags["switchyard.phase"] == "rolled-back"
    assert reached(cloud, topology, "production") == {V1}

    assert cloud.router.clear_canary(topology, tags={"switchyard.phase": "again"}) == []
    assert observe(cloud, topology).gateway == after.gateway  # not even the tags: no write at all


def test_clear_canary_refuses_to_overwrite_a_write_that_landed_between_its_read_and_its_write(
    cloud: AzureCloud, topology: Topology, emulator: EmulatorHandle
) -> None:
    before = observe(cloud, topology)
    canary = before.scale_set(Color.GREEN).addresses[:1]
    cloud.router.set_split(topology, canary, str(before.gateway.etag))
    tags = observe(cloud, topology).gateway.tags
    another_writer = emulator.clients()
    outcome: list[BaseException | list[str]] = []

    def clear() -> None:
        try:
            outcome.append(cloud.router.clear_canary(topology))
        except BaseException as error:
            outcome.append(error)

    # Every ARM call now waits 2 s before Azure handles it, so the other writer's call (sent 1 s
    # after clear_canary's GET) lands after that GET was answered and before its PUT is handled.
    with slow_arm_calls(emulator, seconds=2.0):
        clearing = threading.Thread(target=clear)
        clearing.start()
        time.sleep(1.0)
        another_writer.network.application_gateways.update_tags(
            cloud.environment.resource_group, topology.gateway, {"tags": {**tags, "switchyard.note": "a person"}}
        )
        clearing.join(timeout=30)
    another_writer.close()

    assert len(outcome) == 1 and isinstance(outcome[0], StaleStateError), outcome
    after = observe(cloud, topology)
    assert after.canary_addresses == canary  # clear_canary wrote nothing
    assert after.gateway.tags["switchyard.note"] == "a person"  # and the other write stands
    assert cloud.router.clear_canary(topology) == canary  # read again, then it goes through


def test_routing_a_gateway_that_was_never_provisioned_says_to_provision(cloud: AzureCloud) -> None:
    elsewhere = Topology(service=cloud.service.name, environment="nowhere")

    assert cloud.router.observe(elsewhere).exists is False
    with pytest.raises(NotFoundError, match="run provision first"):
        cloud.router.set_split(elsewhere, [], 'W/"any"')
    with pytest.raises(NotFoundError):
        cloud.router.clear_canary(elsewhere)


@contextmanager
def slow_arm_calls(emulator: EmulatorHandle, seconds: float) -> Iterator[None]:
    """The emulator's fault injection: every ARM call waits `seconds` before it is handled."""

    def set_faults(faults: dict[str, object]) -> None:
        httpx.put(
            f"{emulator.endpoint}/switchyard/faults",
            json=faults,
            headers={"Authorization": f"Bearer {emulator.token}"},
            verify=emulator.ca_bundle,
            timeout=10,
        ).raise_for_status()

    set_faults({"rate": 1.0, "kinds": ["slow"], "slow_seconds": seconds})
    try:
        yield
    finally:
        set_faults({"rate": 0.0})
