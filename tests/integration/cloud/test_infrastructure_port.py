"""The infrastructure port (AzureInfrastructure) against a real emulator: what provisioning
creates, read back from Azure, and that provisioning again (a re-run, a changed service setting)
changes only what it should: never the routing a release left, never the running instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import EmulatorClients, EmulatorHandle
from tests.integration.cloud.cloud_support import V1, V2, deploy_both_colors, eventually, gateway_port, served_versions


@pytest.fixture(scope="module")
def azure(emulator: EmulatorHandle) -> Iterator[EmulatorClients]:
    """Plain SDK clients, to read what the adapter left in Azure the way the portal would show it."""
    clients = emulator.clients()
    yield clients
    clients.close()


def gateway_in_azure(azure: EmulatorClients, cloud: AzureCloud, topology: Topology) -> Any:
    return azure.network.application_gateways.get(cloud.environment.resource_group, topology.gateway)


def test_ensure_foundation_creates_the_network_and_the_image_definition_and_can_run_again(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients
) -> None:
    env = cloud.environment
    progress: list[str] = []

    cloud.infrastructure.ensure_foundation(topology, cloud.service, progress.append)

    for group in (env.resource_group, env.gallery_group):
        assert azure.resource.resource_groups.check_existence(group)
    vnet = azure.network.virtual_networks.get(env.resource_group, topology.virtual_network)
    assert vnet.address_space.address_prefixes == [env.vnet_address_space]
    assert {s.name: s.address_prefix for s in vnet.subnets} == {"gateway": "10.20.0.0/24", "instances": "10.20.1.0/24"}
    address = azure.network.public_ip_addresses.get(env.resource_group, topology.public_ip).ip_address
    assert address
    definition = azure.compute.gallery_images.get(env.gallery_group, env.gallery, cloud.service.name)
    assert definition.identifier.offer == cloud.service.name and definition.identifier.sku == cloud.service.base
    assert f"virtual network {topology.virtual_network} ({env.vnet_address_space})" in progress

    cloud.infrastructure.ensure_foundation(topology, cloud.service, progress.append)

    again = azure.network.virtual_networks.get(env.resource_group, topology.virtual_network)
    assert {s.name: s.address_prefix for s in again.subnets} == {s.name: s.address_prefix for s in vnet.subnets}
    # The address users reach the service on does not move.
    assert azure.network.public_ip_addresses.get(env.resource_group, topology.public_ip).ip_address == address


def test_ensure_gateway_creates_both_listeners_with_production_on_blue(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients
) -> None:
    cloud.infrastructure.ensure_foundation(topology, cloud.service, lambda _: None)

    created = cloud.infrastructure.ensure_gateway(topology, cloud.service, lambda _: None)

    assert created.exists and (created.production_pool, created.test_pool) == ("blue", "green")
    assert sorted(created.pools) == ["blue", "green"]
    assert created.tags == {"switchyard.service": cloud.service.name}
    gateway = gateway_in_azure(azure, cloud, topology)
    ports = cloud.service.ports_in(cloud.environment.name)
    assert sorted(p.port for p in gateway.frontend_ports) == sorted([ports.production, ports.test])
    (probe,) = gateway.probes
    assert (probe.path, probe.interval) == (cloud.service.health_path, cloud.service.probe_interval_s)
    (settings,) = gateway.backend_http_settings_collection
    assert settings.port == cloud.service.service_port


def test_provisioning_again_keeps_the_routing_a_release_left_and_applies_changed_settings(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients, artifacts: dict[str, Path]
) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)
    observed = cloud.observe(topology, with_health=False)
    # A release left production on green, with one blue instance as canary and its phase in tags.
    cloud.router.switch(topology, Color.GREEN, str(observed.gateway.etag), tags={"switchyard.phase": "canary"})
    switched = cloud.observe(topology, with_health=False)
    canary = switched.scale_set(Color.BLUE).addresses[:1]
    cloud.router.set_split(topology, canary, str(switched.gateway.etag))
    changed = cloud.service.model_copy(update={"draining_timeout_s": 3, "request_timeout_s": 20})
    progress: list[str] = []

    cloud.infrastructure.ensure_foundation(topology, changed, progress.append)
    after = cloud.infrastructure.ensure_gateway(topology, changed, progress.append)

    assert (after.production_pool, after.test_pool) == ("green", "blue")
    assert after.pool_of(Color.GREEN).extra_addresses == canary
    assert after.tags["switchyard.phase"] == "canary"
    assert f"gateway {topology.gateway}: updating in place (production stays on green)" in progress
    (settings,) = gateway_in_azure(azure, cloud, topology).backend_http_settings_collection
    assert settings.request_timeout == 20 and settings.connection_draining.drain_timeout_in_sec == 3
    # Users still reach green and the canary, served by the instances that were already running.
    address, port = cloud.router.frontend_address(topology), gateway_port(cloud, "production")
    eventually(lambda: served_versions(address, port, 30) == {V1, V2})
    assert cloud.scale_sets.observe(topology, Color.GREEN).instances == switched.scale_set(Color.GREEN).instances


def test_ensure_autoscale_targets_the_given_color_and_a_second_call_retargets_instead_of_adding(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients, artifacts: dict[str, Path]
) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)
    group = cloud.environment.resource_group

    def settings() -> list[Any]:
        return list(azure.monitor.autoscale_settings.list_by_resource_group(group))

    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)
    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)

    (setting,) = settings()
    assert setting.name == topology.autoscale_setting and setting.enabled
    assert setting.target_resource_uri.lower().endswith(f"/virtualmachinescalesets/{topology.scale_set(Color.BLUE)}")
    (profile,) = setting.profiles
    scale = cloud.service.autoscale
    assert (profile.capacity.minimum, profile.capacity.maximum, profile.capacity.default) == (
        str(scale.minimum),
        str(scale.maximum),
        str(cloud.service.capacity),
    )
    assert setting.tags["switchyard.color"] == "blue"

    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.GREEN)

    (retargeted,) = settings()
    assert retargeted.target_resource_uri.lower().endswith(
        f"/virtualmachinescalesets/{topology.scale_set(Color.GREEN)}"
    )
    assert retargeted.tags["switchyard.color"] == "green"
