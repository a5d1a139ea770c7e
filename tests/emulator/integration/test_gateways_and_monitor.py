"""Application gateways made real by the data plane (traffic, pool membership per instance model,
backend health, repointing a rule) and Azure Monitor answers computed from that traffic (metrics,
metric definitions, Log Analytics), plus autoscale settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from emulator_helpers import eventually, gateway_get, send_access_log_to

from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error, free_port


@pytest.fixture
def deployed(topo: SampleTopology, clients: EmulatorClients, artifacts: dict[str, Path]) -> tuple[SampleTopology, int]:
    """Gateway (production -> blue) + blue (1.0.0, 2 instances) + green (2.0.0, 1 instance)."""
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    topo.publish("2.0.0", artifacts["2.0.0"])
    port = free_port()
    clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", topo.gateway_body(port)).result()
    scale_sets = clients.compute.virtual_machine_scale_sets
    blue = scale_sets.begin_create_or_update(
        topo.rg, "blue", topo.scale_set_body(topo.version_id("1.0.0"), 2, pool="blue")
    )
    green = scale_sets.begin_create_or_update(
        topo.rg, "green", topo.scale_set_body(topo.version_id("2.0.0"), 1, pool="green")
    )
    blue.result()
    green.result()
    return topo, port


def _probed_servers(clients: EmulatorClients, topo: SampleTopology, pool: str) -> list[Any]:
    """The servers of `pool` in the gateway's backend health (its probes' view; none if no rule routes there)."""
    health = clients.network.application_gateways.begin_backend_health(topo.rg, "agw").result()
    by_pool = {p.backend_address_pool.id.rsplit("/", 1)[1]: p for p in health.backend_address_pools}
    return list(by_pool[pool].backend_http_settings_collection[0].servers) if pool in by_pool else []


def _served_versions(port: int, count: int) -> list[str]:
    versions = []
    for _ in range(count):
        status, body = gateway_get(port)
        assert status == 200, status
        assert body is not None
        versions.append(body["app_version"])
    return versions


def test_traffic_follows_the_routing_rule_and_pools_follow_the_scale_sets(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int]
) -> None:
    topo, port = deployed
    gateways = clients.network.application_gateways
    eventually(lambda: gateway_get(port)[0] == 200)
    assert set(_served_versions(port, 6)) == {"1.0.0"}
    gateway = gateways.get(topo.rg, "agw")
    pools = {p.name: p for p in gateway.backend_address_pools}
    blue_members = sorted(c.id.split("/virtualMachines/")[1] for c in pools["blue"].backend_ip_configurations)
    assert blue_members == [
        "0/networkInterfaces/nic/ipConfigurations/ipconfig",
        "1/networkInterfaces/nic/ipConfigurations/ipconfig",
    ]
    assert len(pools["green"].backend_ip_configurations) == 1
    # blue-green switch: repoint the production rule, guarded by If-Match
    gateway.request_routing_rules[0].backend_address_pool.id = topo.pool_id("green")
    switched = gateways.begin_create_or_update(topo.rg, "agw", gateway, headers={"If-Match": gateway.etag}).result()
    assert switched.request_routing_rules[0].backend_address_pool.id == topo.pool_id("green")
    eventually(lambda: set(_served_versions(port, 3)) == {"2.0.0"})

    green_servers = _probed_servers(clients, topo, "green")
    assert [s.health for s in green_servers] == ["Up"]
    assert green_servers[0].ip_configuration.id.endswith(
        "/green/virtualMachines/0/networkInterfaces/nic/ipConfigurations/ipconfig"
    )


def test_manual_policy_moves_instances_between_pools_only_when_upgraded(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int]
) -> None:
    topo, _port = deployed
    scale_sets = clients.compute.virtual_machine_scale_sets
    # canary: blue's model now puts its NICs in the green pool; Manual keeps instances where they are
    scale_sets.begin_create_or_update(
        topo.rg, "blue", topo.scale_set_body(topo.version_id("1.0.0"), 2, pool="green")
    ).result()

    def members(pool: str) -> list[str]:
        gateway = clients.network.application_gateways.get(topo.rg, "agw")
        found = next(p for p in gateway.backend_address_pools if p.name == pool)
        return sorted(
            c.id.split("/providers/Microsoft.Compute/virtualMachineScaleSets/")[1].split("/network")[0]
            for c in found.backend_ip_configurations or []
        )

    assert members("blue") == ["blue/virtualMachines/0", "blue/virtualMachines/1"]
    scale_sets.begin_update_instances(topo.rg, "blue", {"instanceIds": ["1"]}).result()
    assert members("blue") == ["blue/virtualMachines/0"]
    assert members("green") == ["blue/virtualMachines/1", "green/virtualMachines/0"]
    # a pool in use cannot be removed from the gateway, nor the gateway deleted
    gateway = clients.network.application_gateways.get(topo.rg, "agw")
    gateway.backend_address_pools = [p for p in gateway.backend_address_pools if p.name != "green"]
    gateway.request_routing_rules[0].backend_address_pool.id = topo.pool_id("blue")
    with pytest.raises(HttpResponseError) as raised:
        clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", gateway).result()
    assert arm_error(raised.value).code == "ApplicationGatewayBackendAddressPoolInUse"
    with pytest.raises(HttpResponseError) as raised:
        clients.network.application_gateways.begin_delete(topo.rg, "agw").result()
    assert raised.value.status_code == 400


def _pool_all_up(clients: EmulatorClients, topo: SampleTopology, pool: str, members: int) -> bool:
    """The gateway's probes find `members` servers in `pool`, every one Up (it sends only to those)."""
    servers = _probed_servers(clients, topo, pool)
    return len(servers) == members and all(s.health == "Up" for s in servers)


def test_metrics_and_logs_count_what_clients_really_sent(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int], emulator
) -> None:
    topo, port = deployed
    # Both of blue's instances answer their probes (until then the gateway sends to the one that does).
    eventually(lambda: _pool_all_up(clients, topo, "blue", 2), timeout=30)
    gateway_id = topo.gateway_id()
    send_access_log_to(clients, gateway_id, emulator.log_analytics_workspace_resource_id)
    before = _total_requests(clients, gateway_id)
    sent = 25
    _served_versions(port, sent)
    assert eventually(lambda: _total_requests(clients, gateway_id) - before == sent or None, timeout=10)

    split = clients.monitor.metrics.list(
        gateway_id,
        metricnames="BackendResponseStatus",
        timespan="PT10M",
        interval="PT1M",
        aggregation="Total",
        filter="BackendServer eq '*'",
    )
    per_server = {ts.metadatavalues[0].value: sum(d.total or 0 for d in ts.data) for ts in split.value[0].timeseries}
    assert len(per_server) == 2 and sum(per_server.values()) >= sent  # blue's two instances took it all

    names = {d.name.value for d in clients.monitor.metric_definitions.list(gateway_id)}
    assert {"TotalRequests", "FailedRequests", "BackendResponseStatus", "HealthyHostCount"} <= names
    cpu = clients.monitor.metrics.list(
        f"{topo.rg_id()}/providers/Microsoft.Compute/virtualMachineScaleSets/blue",
        metricnames="Percentage CPU",
        timespan="PT5M",
        interval="PT1M",
        aggregation="Average",
    )
    assert cpu.value[0].name.value == "Percentage CPU"
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.metrics.list(gateway_id, metricnames="NoSuchMetric", timespan="PT5M")
    assert raised.value.status_code == 400
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.metrics.list(topo.gateway_id("ghost"), metricnames="TotalRequests", timespan="PT5M")
    assert raised.value.status_code == 404

    answer = clients.logs.query_workspace(
        emulator.log_analytics_workspace_id,
        f"AzureDiagnostics | where ResourceId == '{gateway_id.upper()}' | summarize n = count()",
        timespan=timedelta(minutes=10),
    )
    assert answer.tables[0].rows[0][0] >= sent


def _total_requests(clients: EmulatorClients, gateway_id: str) -> float:
    result = clients.monitor.metrics.list(
        gateway_id, metricnames="TotalRequests", timespan="PT10M", interval="PT1M", aggregation="Total"
    )
    return sum(d.total or 0 for ts in result.value[0].timeseries for d in ts.data)


def test_autoscale_settings_target_an_existing_scale_set(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int]
) -> None:
    topo, _port = deployed
    target = f"{topo.rg_id()}/providers/Microsoft.Compute/virtualMachineScaleSets/blue"
    setting: dict[str, Any] = {
        "location": "westus",
        "properties": {
            "enabled": False,
            "targetResourceUri": target,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": "1", "maximum": "4", "default": "2"},
                    "rules": [
                        {
                            "metricTrigger": {
                                "metricName": "Percentage CPU",
                                "metricResourceUri": target,
                                "timeGrain": "PT1M",
                                "statistic": "Average",
                                "timeWindow": "PT5M",
                                "timeAggregation": "Average",
                                "operator": "GreaterThan",
                                "threshold": 70,
                            },
                            "scaleAction": {
                                "direction": "Increase",
                                "type": "ChangeCount",
                                "value": "1",
                                "cooldown": "PT5M",
                            },
                        }
                    ],
                }
            ],
        },
    }
    autoscale = clients.monitor.autoscale_settings
    created = autoscale.create_or_update(topo.rg, "blue-autoscale", setting)
    assert created.target_resource_uri == target and created.enabled is False
    assert [s.name for s in autoscale.list_by_resource_group(topo.rg)] == ["blue-autoscale"]
    updated = autoscale.update(topo.rg, "blue-autoscale", {"tags": {"owner": "platform"}})
    assert updated.tags == {"owner": "platform"} and updated.profiles[0].capacity.maximum == "4"
    setting["properties"]["targetResourceUri"] = target.replace("/blue", "/nosuch")
    with pytest.raises(HttpResponseError) as raised:
        autoscale.create_or_update(topo.rg, "other", setting)
    assert arm_error(raised.value).target == "properties.targetResourceUri"
    setting["properties"]["targetResourceUri"] = target
    setting["properties"]["profiles"][0]["capacity"] = {"minimum": "3", "maximum": "2", "default": "2"}
    with pytest.raises(HttpResponseError) as raised:
        autoscale.create_or_update(topo.rg, "other", setting)
    assert arm_error(raised.value).target == "properties.profiles[0].capacity"
    autoscale.delete(topo.rg, "blue-autoscale")
    with pytest.raises(ResourceNotFoundError):
        autoscale.get(topo.rg, "blue-autoscale")


def test_autoscale_changes_capacity_through_the_arm_update_path(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    version = topo.publish("1.0.0", artifacts["1.0.0"])
    scale_sets = clients.compute.virtual_machine_scale_sets
    before = scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(version.id, 1)).result()
    target = before.id
    rule = {
        "metricTrigger": {
            "metricName": "Percentage CPU",
            "metricResourceUri": target,
            "timeGrain": "PT1S",
            "statistic": "Average",
            "timeWindow": "PT3S",
            "timeAggregation": "Average",
            "operator": "GreaterThanOrEqual",
            "threshold": 0,  # any measured CPU: scale out once
        },
        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": "PT1H"},
    }
    clients.monitor.autoscale_settings.create_or_update(
        topo.rg,
        "web-autoscale",
        {
            "location": "westus",
            "properties": {
                "enabled": True,
                "targetResourceUri": target,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {"minimum": "1", "maximum": "2", "default": "1"},
                        "rules": [rule],
                    }
                ],
            },
        },
    )

    def capacity_is_two() -> object:
        current = scale_sets.get(topo.rg, "web")
        return current if current.sku.capacity == 2 else None

    def running() -> list[str]:
        vms = clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web", expand="instanceView")
        return sorted(vm.instance_id for vm in vms if vm.provisioning_state == "Succeeded")

    scaled = eventually(capacity_is_two, timeout=40)
    assert scaled.etag != before.etag  # a real ARM update: new ETag, new instance record
    assert eventually(lambda: running() == ["0", "1"], timeout=20)
    clients.monitor.autoscale_settings.delete(topo.rg, "web-autoscale")
