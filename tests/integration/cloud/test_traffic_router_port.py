"""The traffic router port (AzureTrafficRouter, an Application Gateway) against a real emulator:
every routing write shows in which backends answer users' requests, the test listener is private,
and a write decided on a stale observation is refused and changes nothing.

Blue runs V1 and is live (production listener); green runs V2 (test listener).
"""

from __future__ import annotations

import logging
import re
import socket
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
from tests.integration.cloud.cloud_support import (
    SDK_REQUEST_LOG,
    V1,
    V2,
    backends_reached,
    deploy_both_colors,
    gateway_port,
    requests_made,
    served_versions,
)

CANARY_POOL = "blue-and-canary"


@pytest.fixture(scope="module", autouse=True)
def deployed(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)


@pytest.fixture(autouse=True)
def blue_live_without_canary(cloud: AzureCloud, topology: Topology) -> Iterator[None]:
    """Each test leaves the gateway as it found it: production on blue, test on green, no canary."""
    yield
    observed = observe(cloud, topology)
    if (observed.gateway.production_pool, observed.gateway.test_pool) != ("blue", "green"):
        cloud.router.route(topology, production="blue", test="green", expect_etag=str(observed.gateway.etag))
    green = observed.scale_set(Color.GREEN)
    cloud.scale_sets.set_canary(topology, Color.GREEN, [], str(green.etag))


def observe(cloud: AzureCloud, topology: Topology) -> ServiceObservation:
    return cloud.observe(topology, with_health=False)


def reached(cloud: AzureCloud, topology: Topology, listener: str, requests: int = 20) -> set[str]:
    """The versions that answer users' requests to `listener` (production or test)."""
    return {version for version, _ in backends_reached(cloud, listener, requests)}


def test_observe_shows_which_pool_each_listener_serves_and_that_every_instance_is_healthy(
    cloud: AzureCloud, topology: Topology
) -> None:
    gateway = cloud.router.observe(topology)
    blue = cloud.scale_sets.observe(topology, Color.BLUE)
    green = cloud.scale_sets.observe(topology, Color.GREEN)

    assert (gateway.production_pool, gateway.test_pool, gateway.live_color) == ("blue", "green", Color.BLUE)
    assert not gateway.canary_routed
    assert sorted(gateway.pools) == sorted(["blue", "blue-and-canary", "green", "green-and-canary"])
    for color, scale_set in ((Color.BLUE, blue), (Color.GREEN, green)):
        for pool in (gateway.pool_of(color), gateway.canary_pool_of(color)):
            assert sorted(pool.member_addresses) == sorted(scale_set.addresses)
            assert pool.explicit_addresses == []
        # The gateway probes the pools its rules route to; a pool no rule uses has no health yet.
        assert gateway.pool_of(color).healthy(scale_set.addresses)
        assert gateway.canary_pool_of(color).health == {}
    assert gateway.etag
    assert cloud.router.frontend_address(topology) == "127.0.0.1"
    assert reached(cloud, topology, "production") == {V1}
    assert reached(cloud, topology, "test") == {V2}


def test_a_canary_serves_exactly_the_chosen_instances_beside_the_live_ones_until_restored(
    cloud: AzureCloud, topology: Topology
) -> None:
    before = observe(cloud, topology)
    blue = {(V1, i.instance_id) for i in before.scale_set(Color.BLUE).instances}
    chosen = before.scale_set(Color.GREEN).instances[0]
    canary = cloud.scale_sets.set_canary(
        topology, Color.GREEN, [chosen.instance_id], str(before.scale_set(Color.GREEN).etag)
    )
    prepared = observe(cloud, topology)
    assert prepared.canary_addresses == [chosen.private_ip] and not prepared.canary_serving
    # Prepared, not serving: production still routes to blue's own pool.
    assert set(backends_reached(cloud, "production", 20)) == blue

    routed = cloud.router.route(
        topology,
        production=CANARY_POOL,
        test="green",
        expect_etag=str(prepared.gateway.etag),
        tags={"switchyard.phase": "canary"},
    )

    assert (routed.production_pool, routed.live_color, routed.canary_routed) == (CANARY_POOL, Color.BLUE, True)
    assert routed.tags == {**before.gateway.tags, "switchyard.phase": "canary"}
    # Once the write returns, users meet every blue instance and the one canary, no other green one.
    assert set(backends_reached(cloud, "production", 45)) == {*blue, (V2, chosen.instance_id)}
    assert observe(cloud, topology).canary_serving
    assert len(canary.instances) == 2  # the other green instance is there, and users never meet it

    left = cloud.router.restore_live_pool(topology, tags={"switchyard.phase": "rolled-back"})

    assert left == CANARY_POOL
    after = observe(cloud, topology)
    assert (after.gateway.production_pool, after.gateway.test_pool) == ("blue", "green")
    assert after.gateway.tags["switchyard.phase"] == "rolled-back"
    assert set(backends_reached(cloud, "production", 20)) == blue
    # The canary instance is still prepared (clean-up users never see) ...
    assert after.canary_addresses == [chosen.private_ip] and not after.canary_serving
    # ... and with production on a color's own pool there is nothing to restore: no write at all.
    assert cloud.router.restore_live_pool(topology, tags={"switchyard.phase": "again"}) is None
    assert observe(cloud, topology).gateway == after.gateway


def test_route_moves_both_listeners_in_one_write(cloud: AzureCloud, topology: Topology) -> None:
    before = observe(cloud, topology)

    switched = cloud.router.route(
        topology,
        production="green",
        test="blue",
        expect_etag=str(before.gateway.etag),
        tags={"switchyard.previous": "blue"},
    )

    assert (switched.production_pool, switched.test_pool, switched.live_color) == ("green", "blue", Color.GREEN)
    assert switched.tags["switchyard.previous"] == "blue"
    assert switched == cloud.router.routes(topology)  # what the write answered is what the gateway holds
    # Once the write returns, users reach green only, and the test listener reaches blue.
    assert reached(cloud, topology, "production") == {V2}
    assert reached(cloud, topology, "test") == {V1}


def test_route_to_a_pool_the_gateway_does_not_have_is_refused_before_any_write(
    cloud: AzureCloud, topology: Topology
) -> None:
    before = observe(cloud, topology).gateway

    with pytest.raises(NotFoundError, match="no backend pool 'purple'"):
        cloud.router.route(topology, production="purple", test="green", expect_etag=str(before.etag))

    assert observe(cloud, topology).gateway == before


def test_tag_merges_into_the_gateways_tags_and_leaves_routing_alone(
    cloud: AzureCloud, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    before = observe(cloud, topology).gateway
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)

    tagged = cloud.router.tag(topology, {"switchyard.phase": "finalized"}, str(before.etag))

    # A write reads the gateway and writes it (then polls the write): it lists no scale set's NICs.
    assert not [line for line in requests_made(caplog) if "networkInterfaces" in line]

    assert tagged.tags == {**before.tags, "switchyard.phase": "finalized"}
    assert (tagged.production_pool, tagged.test_pool) == (before.production_pool, before.test_pool)
    assert tagged.etag != before.etag
    assert observe(cloud, topology).gateway.pools == before.pools


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda cloud, topology, etag: cloud.router.route(
                topology, production=CANARY_POOL, test="green", expect_etag=etag
            ),
            id="route-to-canary",
        ),
        pytest.param(
            lambda cloud, topology, etag: cloud.router.route(
                topology, production="green", test="blue", expect_etag=etag
            ),
            id="route-switch",
        ),
        pytest.param(
            lambda cloud, topology, etag: cloud.router.tag(topology, {"switchyard.phase": "promoted"}, etag),
            id="tag",
        ),
    ],
)
def test_a_write_decided_on_a_stale_observation_is_refused_and_changes_nothing(
    cloud: AzureCloud, topology: Topology, write: Callable[[AzureCloud, Topology, str], object]
) -> None:
    decided_on = observe(cloud, topology)
    # Another writer (a second run, a person) changes the gateway after that observation.
    cloud.router.tag(topology, {"switchyard.note": "changed meanwhile"}, str(decided_on.gateway.etag))
    current = observe(cloud, topology)

    with pytest.raises(StaleStateError, match="observe again"):
        write(cloud, topology, str(decided_on.gateway.etag))

    assert observe(cloud, topology).gateway == current.gateway
    assert reached(cloud, topology, "production") == {V1}


def test_restore_live_pool_refuses_to_overwrite_a_write_that_landed_between_its_read_and_its_write(
    cloud: AzureCloud, topology: Topology, emulator: EmulatorHandle
) -> None:
    before = observe(cloud, topology)
    cloud.router.route(topology, production=CANARY_POOL, test="green", expect_etag=str(before.gateway.etag))
    tags = observe(cloud, topology).gateway.tags
    another_writer = emulator.clients()
    outcome: list[BaseException | str | None] = []

    def restore() -> None:
        try:
            outcome.append(cloud.router.restore_live_pool(topology))
        except BaseException as error:
            outcome.append(error)

    # Every ARM call now waits 2 s before Azure handles it, so the other writer's call (sent 1 s
    # after restore_live_pool's GET) lands after that GET was answered and before its PUT is handled.
    with slow_arm_calls(emulator, seconds=2.0):
        restoring = threading.Thread(target=restore)
        restoring.start()
        time.sleep(1.0)
        another_writer.network.application_gateways.update_tags(
            cloud.environment.resource_group, topology.gateway, {"tags": {**tags, "switchyard.note": "a person"}}
        )
        restoring.join(timeout=30)
    another_writer.close()

    assert len(outcome) == 1 and isinstance(outcome[0], StaleStateError), outcome
    after = observe(cloud, topology)
    assert after.gateway.production_pool == CANARY_POOL  # restore_live_pool wrote nothing
    assert after.gateway.tags["switchyard.note"] == "a person"  # and the other write stands
    assert cloud.router.restore_live_pool(topology) == CANARY_POOL  # read again, then it goes through
    assert observe(cloud, topology).gateway.production_pool == "blue"


def test_the_test_listener_is_reached_at_the_test_address_and_not_on_the_public_one(
    cloud: AzureCloud, topology: Topology
) -> None:
    address = cloud.router.test_address(topology)
    test_port = gateway_port(cloud, "test")

    # The private frontend's static address (10.20.0.10 in the gateway subnet 10.20.0.0/24), where
    # the emulator serves it: its loopback alias (emulator/README.md, "Where the listeners are").
    assert cloud.environment.test_frontend_address() == "10.20.0.10"
    assert address == "127.20.0.10"
    assert served_versions(address, test_port, 10) == {V2}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((cloud.router.frontend_address(topology), test_port), timeout=5).close()
    # Production is public only.
    with pytest.raises(httpx.ConnectError):
        served_versions(address, gateway_port(cloud, "production"), 1)


def test_routing_a_gateway_that_was_never_provisioned_says_to_provision(cloud: AzureCloud) -> None:
    elsewhere = Topology(service=cloud.service.name, environment="nowhere")

    assert cloud.router.observe(elsewhere).exists is False
    with pytest.raises(NotFoundError, match="run provision first"):
        cloud.router.route(elsewhere, production="blue", test="green", expect_etag='W/"any"')
    with pytest.raises(NotFoundError):
        cloud.router.restore_live_pool(elsewhere)
    with pytest.raises(NotFoundError, match="run provision first"):
        cloud.router.test_address(elsewhere)


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


def test_one_look_at_the_service_lists_each_scale_sets_nics_once_for_the_gateway_and_the_scale_sets(
    cloud: AzureCloud, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    # The most frequent ARM read of a release: listed twice per look, it cost a fleet's patch a sixth
    # of its requests against ARM's read limits.
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)

    observed = cloud.observe(topology)

    nic_lists = sorted(
        match.group(1)
        for line in requests_made(caplog)
        if (match := re.search(r"virtualMachineScaleSets/([^/]+)/networkInterfaces", line))
    )
    assert nic_lists == sorted(topology.scale_set(color) for color in Color)
    for color in Color:
        addresses = observed.scale_set(color).addresses
        assert len(addresses) == observed.scale_set(color).capacity
        assert sorted(observed.gateway.pool_of(color).member_addresses) == sorted(addresses)


def test_the_routes_alone_are_one_read_of_the_gateway_and_say_what_the_full_observation_says(
    cloud: AzureCloud, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)
    routes = cloud.router.routes(topology)
    asked = requests_made(caplog)
    observed = cloud.router.observe(topology, with_health=False)

    assert len(asked) == 1 and re.search(r"applicationGateways/[^/?']+['?]", asked[0])
    assert (routes.exists, routes.production_pool, routes.test_pool, routes.live_color, routes.canary_routed) == (
        True,
        "blue",
        "green",
        Color.BLUE,
        False,
    )
    assert (routes.etag, routes.tags) == (observed.etag, observed.tags)


def test_the_routes_of_a_gateway_that_does_not_exist_say_so(cloud: AzureCloud, topology: Topology) -> None:
    routes = cloud.router.routes(Topology(service="nosuch", environment=topology.environment))
    assert (routes.exists, routes.live_color) == (False, None)
