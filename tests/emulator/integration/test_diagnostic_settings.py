"""Diagnostic settings decide what reaches Log Analytics, as on Azure: the REST API (through the
monitor SDK's pipeline), its validation, the emulator's workspace as an ARM resource, and queries
(LogsQueryClient) that see a gateway's access log only while a setting sends it, in the table the
setting names."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from emulator_helpers import diagnostic_setting, eventually, gateway_get, send_access_log_to

from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, SampleTopology, free_port


@pytest.fixture
def gateway(topo: SampleTopology, clients: EmulatorClients, artifacts: dict[str, Path]) -> tuple[SampleTopology, int]:
    """A gateway whose production listener sends to 'blue' (one instance of 1.0.0), answering."""
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    port = free_port()
    clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", topo.gateway_body(port)).result()
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "blue", topo.scale_set_body(topo.version_id("1.0.0"), 1, pool="blue")
    ).result()
    eventually(lambda: gateway_get(port)[0] == 200, timeout=30)
    return topo, port


def _count(clients: EmulatorClients, emulator: EmulatorHandle, query: str, since: datetime) -> int:
    answer = clients.logs.query_workspace(
        emulator.log_analytics_workspace_id, query, timespan=(since, datetime.now(UTC) + timedelta(seconds=5))
    )
    return int(answer.tables[0].rows[0][0])


def _send(port: int, count: int) -> None:
    for _ in range(count):
        assert gateway_get(port)[0] == 200


def test_the_workspace_is_an_arm_resource_that_maps_to_the_query_id(
    clients: EmulatorClients, emulator: EmulatorHandle
) -> None:
    """A client that has the workspace's resource id finds the id to query with (properties.customerId)."""
    for api_version in ("2022-10-01", "2023-09-01"):
        response = clients.monitor._send_request(
            HttpRequest("GET", emulator.log_analytics_workspace_resource_id, params={"api-version": api_version})
        )
        assert response.status_code == 200, response.text()
        body = response.json()
        assert body["id"] == emulator.log_analytics_workspace_resource_id
        assert body["type"] == "Microsoft.OperationalInsights/workspaces"
        assert body["properties"]["customerId"] == emulator.log_analytics_workspace_id
    refused = clients.monitor._send_request(
        HttpRequest("DELETE", emulator.log_analytics_workspace_resource_id, params={"api-version": "2023-09-01"})
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "NotSupportedByEmulator"


def test_settings_are_created_read_listed_and_deleted_like_azure(
    clients: EmulatorClients, emulator: EmulatorHandle, gateway: tuple[SampleTopology, int]
) -> None:
    topo, _port = gateway
    gateway_id = topo.gateway_id()
    created = send_access_log_to(clients, gateway_id, emulator.log_analytics_workspace_resource_id, dedicated=True)
    assert created["id"] == f"{gateway_id}/providers/microsoft.insights/diagnosticSettings/to-logs"
    assert created["type"] == "Microsoft.Insights/diagnosticSettings"
    assert created["properties"]["logAnalyticsDestinationType"] == "Dedicated"
    got = diagnostic_setting(clients, gateway_id, "to-logs", method="GET")
    assert got.status_code == 200 and got.json() == created
    listed = diagnostic_setting(clients, gateway_id, "", method="GET").json()
    assert [s["name"] for s in listed["value"]] == ["to-logs"]
    assert diagnostic_setting(clients, gateway_id, "to-logs", method="DELETE").status_code == 200
    assert diagnostic_setting(clients, gateway_id, "to-logs", method="GET").status_code == 404
    assert diagnostic_setting(clients, gateway_id, "to-logs", method="DELETE").status_code == 204
    # the resource must exist
    ghost = diagnostic_setting(clients, topo.gateway_id("ghost"), "", method="GET")
    assert ghost.status_code == 404 and ghost.json()["error"]["code"] == "ResourceNotFound"


def _refusal(clients: EmulatorClients, resource_id: str, properties: dict[str, Any], name: str = "s") -> Any:
    response = diagnostic_setting(clients, resource_id, name, {"properties": properties})
    assert response.status_code >= 400, response.text()
    return response


def test_settings_are_validated_like_azure_and_a_refused_one_is_not_written(
    clients: EmulatorClients, emulator: EmulatorHandle, gateway: tuple[SampleTopology, int]
) -> None:
    topo, _port = gateway
    gateway_id = topo.gateway_id()
    workspace = emulator.log_analytics_workspace_resource_id
    access = [{"category": "ApplicationGatewayAccessLog", "enabled": True}]

    # workspaceId is the workspace's ARM id (not its customer id) and the workspace must exist
    for wrong in (emulator.log_analytics_workspace_id, workspace.replace("switchyard-logs", "nope")):
        response = _refusal(clients, gateway_id, {"workspaceId": wrong, "logs": access})
        assert response.status_code == 400 and "workspaceId" in response.json()["error"].get("target", "")
    # a category the resource type does not have: Azure's "Category '...' is not supported."
    response = _refusal(
        clients, gateway_id, {"workspaceId": workspace, "logs": [{"category": "AuditEvent", "enabled": True}]}
    )
    assert response.json()["error"]["message"] == "Category 'AuditEvent' is not supported."
    response = _refusal(
        clients, gateway_id, {"workspaceId": workspace, "metrics": [{"category": "TotalRequests", "enabled": True}]}
    )
    assert "supported categories are: 'AllMetrics'" in response.json()["error"]["message"]
    # the destination type is null (AzureDiagnostics) or Dedicated
    response = _refusal(
        clients, gateway_id, {"workspaceId": workspace, "logs": access, "logAnalyticsDestinationType": "Whatever"}
    )
    assert response.json()["error"]["target"] == "properties.logAnalyticsDestinationType"
    # a setting needs a destination
    assert _refusal(clients, gateway_id, {"logs": access}).status_code == 400
    # unknown fields are refused as for every resource
    assert _refusal(clients, gateway_id, {"workspaceId": workspace, "logs": access, "sink": "x"}).status_code == 400
    assert diagnostic_setting(clients, gateway_id, "", method="GET").json() == {"value": []}

    # category groups are accepted: allLogs holds the access log
    group = {"workspaceId": workspace, "logs": [{"categoryGroup": "allLogs", "enabled": True}]}
    assert diagnostic_setting(clients, gateway_id, "all", {"properties": group}).status_code == 200
    # the same sink cannot take the same category from a second setting (Azure's 409)
    response = _refusal(clients, gateway_id, {"workspaceId": workspace, "logs": access}, name="second")
    assert response.status_code == 409
    assert response.json()["error"]["message"] == (
        f"Data sink '{workspace}' is already used in diagnostic setting 'all' for category "
        "'ApplicationGatewayAccessLog'. Data sinks can't be reused in different settings on the same category "
        "for the same resource."
    )
    # at most five settings per resource
    for name in ("m1", "m2", "m3", "m4"):
        body = {
            "properties": {
                "workspaceId": workspace,
                "logs": [{"category": "ApplicationGatewayFirewallLog", "enabled": False}],
            }
        }
        assert diagnostic_setting(clients, gateway_id, name, body).status_code == 200
    body = {
        "properties": {
            "workspaceId": workspace,
            "logs": [{"category": "ApplicationGatewayFirewallLog", "enabled": False}],
        }
    }
    response = _refusal(clients, gateway_id, body["properties"], name="m5")
    assert response.status_code == 400 and "up to 5" in response.json()["error"]["message"]
    assert len(diagnostic_setting(clients, gateway_id, "", method="GET").json()["value"]) == 5


def test_logs_exist_only_while_a_setting_sends_them_and_in_the_table_it_names(
    clients: EmulatorClients, emulator: EmulatorHandle, gateway: tuple[SampleTopology, int]
) -> None:
    topo, port = gateway
    gateway_id = topo.gateway_id()
    workspace = emulator.log_analytics_workspace_resource_id
    since = datetime.now(UTC) - timedelta(minutes=1)
    diagnostics = f"AzureDiagnostics | where ResourceId == '{gateway_id.upper()}' | count"
    dedicated = f"AGWAccessLogs | where _ResourceId == '{gateway_id.lower()}' | count"

    _send(port, 5)  # before any setting: never collected
    assert _count(clients, emulator, diagnostics, since) == 0  # no rows, not an error (as on Azure)
    assert _count(clients, emulator, dedicated, since) == 0

    send_access_log_to(clients, gateway_id, workspace)  # AzureDiagnostics
    _send(port, 7)
    assert eventually(lambda: _count(clients, emulator, diagnostics, since) == 7, timeout=10)
    assert _count(clients, emulator, dedicated, since) == 0  # the table this setting does not fill

    send_access_log_to(clients, gateway_id, workspace, dedicated=True)  # same setting, now Dedicated
    _send(port, 4)
    assert eventually(lambda: _count(clients, emulator, dedicated, since) == 4, timeout=10)
    assert _count(clients, emulator, diagnostics, since) == 7  # what was collected stays collected

    diagnostic_setting(clients, gateway_id, "to-logs", method="DELETE").raise_for_status()
    _send(port, 3)
    time.sleep(0.5)
    assert _count(clients, emulator, dedicated, since) == 4 and _count(clients, emulator, diagnostics, since) == 7

    # a table the emulator does not know is an error; columns are the table's own
    with pytest.raises(HttpResponseError, match="AppRequests"):
        clients.logs.query_workspace(emulator.log_analytics_workspace_id, "AppRequests | count", timespan=None)
    rows = clients.logs.query_workspace(
        emulator.log_analytics_workspace_id,
        "AGWAccessLogs | project HttpStatus, ServerStatus, TimeTaken, ListenerName, BackendPoolName | take 1",
        timespan=(since, datetime.now(UTC)),
    ).tables[0]
    assert [c for c in rows.columns] == ["HttpStatus", "ServerStatus", "TimeTaken", "ListenerName", "BackendPoolName"]
    status, server_status, seconds, listener, pool = rows.rows[0]
    assert (status, server_status, listener, pool) == (200, 200, "production", "blue")
    assert 0 < seconds < 5  # seconds, not milliseconds


def test_a_deleted_gateway_takes_its_settings_and_a_recreated_one_starts_without(
    clients: EmulatorClients, emulator: EmulatorHandle, gateway: tuple[SampleTopology, int]
) -> None:
    topo, port = gateway
    gateway_id = topo.gateway_id()
    send_access_log_to(clients, gateway_id, emulator.log_analytics_workspace_resource_id)
    clients.compute.virtual_machine_scale_sets.begin_delete(topo.rg, "blue").result()
    clients.network.application_gateways.begin_delete(topo.rg, "agw").result()
    port = free_port()
    clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", topo.gateway_body(port)).result()
    assert diagnostic_setting(clients, gateway_id, "", method="GET").json() == {"value": []}
    since = datetime.now(UTC)
    for _ in range(3):
        gateway_get(port)  # 502s: the pool is empty; served and logged by the gateway all the same
    time.sleep(0.5)
    query = f"AzureDiagnostics | where ResourceId == '{gateway_id.upper()}' | count"
    assert _count(clients, emulator, query, since) == 0
