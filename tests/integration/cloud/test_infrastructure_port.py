"""The infrastructure port (AzureInfrastructure) against a real emulator: what provisioning
creates, read back from Azure, and that provisioning again (a re-run, a changed service setting)
changes only what it should: never the routing a release left, never the running instances.

The emulator is at least as strict as Azure (docs/decisions/0002-the-emulator-is-at-least-as-strict-
as-azure.md): it refuses an NSG that blocks Azure's infrastructure, addresses beside NIC members in
a pool, a private frontend outside the gateway's subnet, and an autoscale setting whose target
changes, so each write here passing is part of what is tested."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.rest import HttpRequest

from switchyard.cloud.azure import AzureCloud
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import EmulatorClients, EmulatorHandle
from tests.integration.cloud.cloud_support import (
    V1,
    V2,
    backends_reached,
    deploy_both_colors,
    eventually,
    gateway_port,
    listener_address,
)

OUTSIDER = "127.0.0.77"  # to the emulator's NSGs, a client on the Internet that is not a test source


@pytest.fixture(scope="module")
def azure(emulator: EmulatorHandle) -> Iterator[EmulatorClients]:
    """Plain SDK clients, to read what the adapter left in Azure the way the portal would show it."""
    clients = emulator.clients()
    yield clients
    clients.close()


def gateway_in_azure(azure: EmulatorClients, cloud: AzureCloud, topology: Topology) -> Any:
    return azure.network.application_gateways.get(cloud.environment.resource_group, topology.gateway)


def diagnostic_settings(azure: EmulatorClients, cloud: AzureCloud, topology: Topology) -> list[dict[str, Any]]:
    url = f"{cloud.ids.gateway(topology)}/providers/Microsoft.Insights/diagnosticSettings"
    response = azure.monitor._send_request(HttpRequest("GET", url, params={"api-version": "2021-05-01-preview"}))
    response.raise_for_status()
    return list(response.json()["value"])


def answer_from(source: str, address: str, port: int) -> int | str:
    """GET /version from a client socket bound to `source`: the status, or "dropped" when the
    connection closes without an answer (an NSG denied it), or "refused" when nothing listens."""
    try:
        with socket.create_connection((address, port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(f"GET /version HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
            data = sock.recv(65536)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "dropped"
    return int(data.split(b" ", 2)[1]) if data else "dropped"


def test_ensure_foundation_creates_the_network_behind_its_nsg_and_the_image_definition_and_can_run_again(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients
) -> None:
    env = cloud.environment
    ports = cloud.service.ports_in(env.name)
    progress: list[str] = []

    cloud.infrastructure.ensure_foundation(topology, cloud.service, progress.append)

    for group in (env.resource_group, env.gallery_group):
        assert azure.resource.resource_groups.check_existence(group)
    vnet = azure.network.virtual_networks.get(env.resource_group, topology.virtual_network)
    assert vnet.address_space.address_prefixes == [env.vnet_address_space]
    assert {s.name: s.address_prefix for s in vnet.subnets} == {"gateway": "10.20.0.0/24", "instances": "10.20.1.0/24"}
    subnets = {s.name: s for s in vnet.subnets}
    assert subnets["gateway"].network_security_group.id.lower() == cloud.ids.network_security_group(topology).lower()
    assert subnets["instances"].network_security_group is None
    nsg = azure.network.network_security_groups.get(env.resource_group, topology.network_security_group)
    rules = {
        r.name: (r.priority, r.source_address_prefix or r.source_address_prefixes, r.destination_port_range)
        for r in nsg.security_rules
    }
    assert rules == {
        "AllowGatewayManager": (100, "GatewayManager", "65200-65535"),
        "AllowAzureLoadBalancer": (110, "AzureLoadBalancer", "*"),
        "AllowProductionFromInternet": (200, "Internet", str(ports.production)),
        "AllowTestFromTestSources": (210, "127.0.0.1/32", str(ports.test)),
    }
    address = azure.network.public_ip_addresses.get(env.resource_group, topology.public_ip).ip_address
    assert address
    definition = azure.compute.gallery_images.get(env.gallery_group, env.gallery, cloud.service.name)
    assert definition.identifier.offer == cloud.service.name and definition.identifier.sku == cloud.service.base
    assert progress.index(f"network security group {topology.network_security_group}") < progress.index(
        f"virtual network {topology.virtual_network} ({env.vnet_address_space})"
    )

    cloud.infrastructure.ensure_foundation(topology, cloud.service, progress.append)

    again = azure.network.virtual_networks.get(env.resource_group, topology.virtual_network)
    assert {s.name: s.address_prefix for s in again.subnets} == {s.name: s.address_prefix for s in vnet.subnets}
    # The address users reach the service on does not move.
    assert azure.network.public_ip_addresses.get(env.resource_group, topology.public_ip).ip_address == address


def test_ensure_gateway_creates_a_public_production_and_a_private_test_listener_four_pools_and_the_access_log(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients, emulator: EmulatorHandle
) -> None:
    env = cloud.environment
    cloud.infrastructure.ensure_foundation(topology, cloud.service, lambda _: None)

    created = cloud.infrastructure.ensure_gateway(topology, cloud.service, lambda _: None)

    assert created.exists and (created.production_pool, created.test_pool) == ("blue", "green")
    assert sorted(created.pools) == ["blue", "blue-and-canary", "green", "green-and-canary"]
    assert created.tags == {"switchyard.service": cloud.service.name}
    gateway = gateway_in_azure(azure, cloud, topology)
    ports = cloud.service.ports_in(env.name)
    assert sorted(p.port for p in gateway.frontend_ports) == sorted([ports.production, ports.test])
    frontends = {f.name: f for f in gateway.frontend_ip_configurations}
    assert frontends["frontend"].public_ip_address.id.lower() == cloud.ids.public_ip(topology).lower()
    private = frontends["private"]
    assert (private.private_ip_address, private.private_ip_allocation_method) == ("10.20.0.10", "Static")
    assert private.subnet.id.lower().endswith("/subnets/gateway")
    listeners = {x.name: x.frontend_ip_configuration.id.rsplit("/", 1)[-1] for x in gateway.http_listeners}
    assert listeners == {"production": "frontend", "test": "private"}
    (probe,) = gateway.probes
    assert (probe.path, probe.interval, probe.host) == (
        cloud.service.health_path,
        cloud.service.probe_interval_s,
        "127.0.0.1",
    )
    (settings,) = gateway.backend_http_settings_collection
    assert settings.port == cloud.service.service_port
    (setting,) = diagnostic_settings(azure, cloud, topology)
    assert setting["name"] == topology.diagnostic_setting
    assert setting["properties"]["workspaceId"] == emulator.log_analytics_workspace_resource_id
    assert setting["properties"]["logs"] == [{"category": "ApplicationGatewayAccessLog", "enabled": True}]
    assert "logAnalyticsDestinationType" not in setting["properties"]  # AzureDiagnostics
    # No scale set yet: no autoscale setting either.
    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)
    assert list(azure.monitor.autoscale_settings.list_by_resource_group(env.resource_group)) == []

    # Someone put an address in a pool (as switchyard once did for canaries): provisioning drops it,
    # because NIC members will join that pool and Azure allows no mix.
    body = gateway.as_dict()
    pool = next(p for p in body["properties"]["backendAddressPools"] if p["name"] == "blue")
    pool["properties"]["backendAddresses"] = [{"ipAddress": "10.9.9.9"}]
    azure.network.application_gateways.begin_create_or_update(env.resource_group, topology.gateway, body).result()
    assert cloud.router.observe(topology, with_health=False).pool_of(Color.BLUE).explicit_addresses == ["10.9.9.9"]

    again = cloud.infrastructure.ensure_gateway(topology, cloud.service, lambda _: None)

    assert all(pool.explicit_addresses == [] for pool in again.pools.values())
    assert len(diagnostic_settings(azure, cloud, topology)) == 1  # the same setting, written again


def test_provisioning_again_keeps_a_serving_canary_and_applies_changed_settings(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients, artifacts: dict[str, Path]
) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)
    observed = cloud.observe(topology, with_health=False)
    green = observed.scale_set(Color.GREEN)
    chosen = green.instances[0].instance_id
    # A release left a green canary serving beside live blue, with its phase in tags.
    cloud.scale_sets.set_canary(topology, Color.GREEN, [chosen], str(green.etag))
    cloud.router.route(
        topology,
        production="blue-and-canary",
        test="green",
        expect_etag=str(observed.gateway.etag),
        tags={"switchyard.phase": "canary"},
    )
    serving = {*((V1, i.instance_id) for i in observed.scale_set(Color.BLUE).instances), (V2, chosen)}
    eventually(lambda: set(backends_reached(cloud, "production", 30)) == serving)
    changed = cloud.service.model_copy(update={"draining_timeout_s": 3, "request_timeout_s": 20})
    progress: list[str] = []

    cloud.infrastructure.ensure_foundation(topology, changed, progress.append)
    after = cloud.infrastructure.ensure_gateway(topology, changed, progress.append)

    assert (after.production_pool, after.test_pool) == ("blue-and-canary", "green")
    assert after.tags["switchyard.phase"] == "canary"
    assert f"gateway {topology.gateway}: updating in place (production stays on blue-and-canary)" in progress
    (settings,) = gateway_in_azure(azure, cloud, topology).backend_http_settings_collection
    assert settings.request_timeout == 20 and settings.connection_draining.drain_timeout_in_sec == 3
    # Users still reach blue and the canary, served by the instances that were already running.
    assert set(backends_reached(cloud, "production", 30)) == serving
    assert cloud.scale_sets.observe(topology, Color.BLUE).instances == observed.scale_set(Color.BLUE).instances


def test_the_nsg_lets_users_reach_production_and_only_test_sources_reach_the_test_listener(
    cloud: AzureCloud, topology: Topology, artifacts: dict[str, Path]
) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)
    production, test = listener_address(cloud, "production"), listener_address(cloud, "test")

    assert answer_from(OUTSIDER, *production) == 200  # users, from anywhere on the Internet
    assert answer_from("127.0.0.1", *test) == 200  # this machine is in test_source_prefixes
    assert answer_from(OUTSIDER, *test) == "dropped"  # nobody else: no answer at all
    # and the test port is not on the public frontend
    assert answer_from("127.0.0.1", production[0], gateway_port(cloud, "test")) == "refused"


def test_ensure_autoscale_keeps_one_setting_per_color_flips_which_is_enabled_and_never_retargets(
    cloud: AzureCloud, topology: Topology, azure: EmulatorClients, artifacts: dict[str, Path]
) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)
    group = cloud.environment.resource_group
    settings_api = azure.monitor.autoscale_settings
    blue_id, green_id = (cloud.ids.scale_set(topology, color).lower() for color in Color)
    # What switchyard used to leave: one setting, re-targeted at each release.
    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)
    legacy = settings_api.get(group, topology.autoscale_setting(Color.BLUE)).as_dict()
    legacy["name"] = topology.legacy_autoscale_setting
    settings_api.create_or_update(group, topology.legacy_autoscale_setting, legacy)

    def settings() -> dict[str, tuple[bool, str, str]]:
        return {
            s.name: (s.enabled, s.target_resource_uri.lower(), s.profiles[0].rules[0].metric_trigger.time_grain)
            for s in settings_api.list_by_resource_group(group)
        }

    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)

    # The emulator's fast profile has one-second metric grains: so has autoscale.
    one_second = settings_api.get(group, topology.autoscale_setting(Color.BLUE)).profiles[0].rules[0]
    assert one_second.metric_trigger.time_grain.total_seconds() == 1
    assert {name: (enabled, target) for name, (enabled, target, _) in settings().items()} == {
        topology.autoscale_setting(Color.BLUE): (True, blue_id),
        topology.autoscale_setting(Color.GREEN): (False, green_id),
    }
    (profile,) = settings_api.get(group, topology.autoscale_setting(Color.BLUE)).profiles
    scale = cloud.service.autoscale
    assert (profile.capacity.minimum, profile.capacity.maximum, profile.capacity.default) == (
        str(scale.minimum),
        str(scale.maximum),
        str(cloud.service.capacity),
    )

    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.GREEN)

    assert {name: (enabled, target) for name, (enabled, target, _) in settings().items()} == {
        topology.autoscale_setting(Color.BLUE): (False, blue_id),
        topology.autoscale_setting(Color.GREEN): (True, green_id),
    }

    # A setting under a color's name that targets the other color (never written by switchyard) is
    # replaced, since Azure refuses to change a target.
    settings_api.delete(group, topology.autoscale_setting(Color.BLUE))
    wrong = settings_api.get(group, topology.autoscale_setting(Color.GREEN)).as_dict()
    wrong["name"] = topology.autoscale_setting(Color.BLUE)
    settings_api.create_or_update(group, topology.autoscale_setting(Color.BLUE), wrong)

    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.GREEN)

    assert {name: (enabled, target) for name, (enabled, target, _) in settings().items()} == {
        topology.autoscale_setting(Color.BLUE): (False, blue_id),
        topology.autoscale_setting(Color.GREEN): (True, green_id),
    }
