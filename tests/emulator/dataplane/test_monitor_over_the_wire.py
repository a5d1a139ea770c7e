"""Azure Monitor answers of the whole emulator, over HTTPS, through the real SDK clients
(MonitorManagementClient, LogsQueryClient): the data plane behind the control plane's API."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from switchyard_emulator.testing import (
    EmulatorClients,
    EmulatorHandle,
    SampleTopology,
    free_port,
    pack_sample_image,
    run_emulator,
)

pytestmark = pytest.mark.e2e
RG = "rg-monitor-wire"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path_factory.mktemp("emulator"), extra_args=["--lro-retry-after", "0"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def deployed(
    emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EmulatorClients, SampleTopology, int]]:
    """A gateway with a two-instance scale set in its 'blue' pool, answering on its port."""
    clients = emulator.clients(polling_interval=0.05)
    artifact = pack_sample_image(tmp_path_factory.mktemp("images"), app_version="1.0.0", gallery_version="1.0.0")
    topology = SampleTopology(clients, emulator.subscription_id, RG)
    topology.network()
    topology.gallery()
    topology.publish("1.0.0", artifact)
    port = free_port()
    clients.network.application_gateways.begin_create_or_update(RG, "agw", topology.gateway_body(port)).result()
    # the access log reaches the workspace only through a diagnostic setting (as on Azure)
    clients.monitor._send_request(  # azure-mgmt-monitor 7 has no diagnostic_settings operations
        HttpRequest(
            "PUT",
            f"{topology.gateway_id()}/providers/Microsoft.Insights/diagnosticSettings/access-log",
            params={"api-version": "2021-05-01-preview"},
            json={
                "properties": {
                    "workspaceId": emulator.log_analytics_workspace_resource_id,
                    "logs": [{"category": "ApplicationGatewayAccessLog", "enabled": True}],
                }
            },
        )
    ).raise_for_status()
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        RG, "blue", topology.scale_set_body(topology.version_id("1.0.0"), 2, pool="blue")
    ).result()
    deadline = time.monotonic() + 30
    while get(port)[1] != 200:  # until both probes and routing are up
        assert time.monotonic() < deadline, "the gateway never answered 200"
        time.sleep(0.2)
    yield clients, topology, port
    clients.close()


def get(port: int) -> tuple[str, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/work/echo")
        response = connection.getresponse()
        response.read()
        return response.getheader("X-Instance-Id", "?"), response.status
    except OSError:
        return "?", 0
    finally:
        connection.close()


def test_metrics_and_logs_over_the_wire_equal_what_the_client_saw(
    emulator: EmulatorHandle, deployed: tuple[EmulatorClients, SampleTopology, int]
) -> None:
    clients, topology, port = deployed
    ip_of = {
        nic.virtual_machine.id.rsplit("/", 1)[-1]: nic.ip_configurations[0].private_ip_address
        for nic in clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(RG, "blue")
    }
    started = datetime.now(UTC)
    observed = Counter(get(port) for _ in range(200))
    finished = datetime.now(UTC) + timedelta(seconds=1)
    assert sum(observed.values()) == 200 and {status for _, status in observed} == {200}
    per_ip = Counter({ip_of[instance]: count for (instance, _), count in observed.items()})

    gateway = topology.gateway_id("agw")
    answer = clients.monitor.metrics.list(
        gateway,
        timespan=f"{started.isoformat()}/{finished.isoformat()}",
        interval="PT1S",
        metricnames="TotalRequests,BackendResponseStatus",
        aggregation="Total",
        filter="BackendServer eq '*'",
        validate_dimensions=False,
    )
    total_requests, backend_status = answer.value
    assert sum(point.total for point in total_requests.timeseries[0].data) == 200
    assert {
        series.metadatavalues[0].value: sum(point.total for point in series.data)
        for series in backend_status.timeseries
    } == {ip: float(count) for ip, count in per_ip.items()}

    logs = LogsQueryClient(
        emulator.credential(), endpoint=f"{emulator.endpoint}/v1", connection_verify=emulator.ca_bundle
    )
    result = logs.query_workspace(
        emulator.log_analytics_workspace_id,
        "AzureDiagnostics | where httpStatus_d == 200 | summarize requests = count() by serverRouted_s",
        timespan=(started, finished),
    )
    assert result.status == LogsQueryStatus.SUCCESS
    assert {row["serverRouted_s"].split(":")[0]: row["requests"] for row in result.tables[0].rows} == dict(per_ip)

    with pytest.raises(HttpResponseError) as caught:
        logs.query_workspace(emulator.log_analytics_workspace_id, "AzureDiagnostics | join X on Y", timespan=None)
    assert caught.value.status_code == 400 and "at 'join'" in str(caught.value)
    with pytest.raises(HttpResponseError) as refused:
        clients.monitor.metrics.list(gateway, metricnames="RequestsPerFortnight")
    assert refused.value.status_code == 400 and "metric: RequestsPerFortnight" in str(refused.value)


def test_an_autoscale_setting_brings_capacity_into_its_bounds_through_the_arm_update_path(
    deployed: tuple[EmulatorClients, SampleTopology, int],
) -> None:
    clients, topology, _ = deployed
    scale_set = clients.compute.virtual_machine_scale_sets.get(RG, "blue")
    assert scale_set.sku.capacity == 2
    rule = {
        "metricTrigger": {
            "metricName": "Percentage CPU",
            "metricResourceUri": scale_set.id,
            "timeGrain": "PT1M",
            "statistic": "Average",
            "timeWindow": "PT5M",
            "timeAggregation": "Average",
            "operator": "GreaterThan",
            "threshold": 95,
        },
        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": "PT5M"},
    }
    clients.monitor.autoscale_settings.create_or_update(
        RG,
        "blue-autoscale",
        {
            "location": topology.location,
            "properties": {
                "enabled": True,
                "targetResourceUri": scale_set.id,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {"minimum": "3", "maximum": "4", "default": "3"},
                        "rules": [rule],
                    }
                ],
            },
        },
    )
    deadline = time.monotonic() + 30
    while clients.compute.virtual_machine_scale_sets.get(RG, "blue").sku.capacity != 3:
        assert time.monotonic() < deadline, "autoscale never raised the capacity to the profile minimum"
        time.sleep(0.25)
    vms = list(clients.compute.virtual_machine_scale_set_vms.list(RG, "blue"))
    assert sorted(vm.instance_id for vm in vms) == ["0", "1", "2"]
