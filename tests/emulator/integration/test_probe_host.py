"""Health probes carry the Host header Azure documents: the probe's host; with
pickHostNameFromBackendHttpSettings the backend settings' hostName (or the backend's address when
the settings pick the host name from it); the default probe 127.0.0.1 unless the settings name a
host. Real backends record the Host they receive."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from emulator_helpers import eventually

from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error, free_port


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.hosts: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _RecordingHandler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", "<none>"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorders() -> Iterator[dict[str, _Recorder]]:
    """One backend per case, each on its own port, so a recorded Host belongs to one case."""
    made = {case: _Recorder() for case in ("probe_host", "settings_host", "backend_address", "default")}
    threads = [threading.Thread(target=r.serve_forever, daemon=True) for r in made.values()]
    for thread in threads:
        thread.start()
    yield made
    for recorder in made.values():
        recorder.shutdown()
        recorder.server_close()


def _gateway(topo: SampleTopology, recorders: dict[str, _Recorder], *, probe_host: str | None = "probe.example") -> Any:
    gw = topo.gateway_id()
    cases: dict[str, dict[str, Any]] = {
        # case: (probe properties or None for the default probe, settings' host properties, pool)
        "probe_host": {"probe": {"host": probe_host}, "settings": {}, "pool": "by_ip"},
        "settings_host": {
            "probe": {"pickHostNameFromBackendHttpSettings": True},
            "settings": {"hostName": "settings.example"},
            "pool": "by_ip",
        },
        "backend_address": {
            "probe": {"pickHostNameFromBackendHttpSettings": True},
            "settings": {"pickHostNameFromBackendAddress": True},
            "pool": "by_fqdn",
        },
        "default": {"probe": None, "settings": {}, "pool": "by_ip"},
    }
    ports, listeners, rules, probes, settings = [], [], [], [], []
    for priority, (case, spec) in enumerate(cases.items(), start=1):
        ports.append({"name": case, "properties": {"port": free_port()}})
        listeners.append(
            {
                "name": case,
                "properties": {
                    "frontendIPConfiguration": {"id": f"{gw}/frontendIPConfigurations/frontend"},
                    "frontendPort": {"id": f"{gw}/frontendPorts/{case}"},
                    "protocol": "Http",
                },
            }
        )
        setting: dict[str, Any] = {"port": recorders[case].port, "protocol": "Http", **spec["settings"]}
        if spec["probe"] is not None:
            probe = {"protocol": "Http", "path": "/health", "interval": 1, "timeout": 1, "unhealthyThreshold": 2}
            probes.append({"name": case, "properties": {**probe, **spec["probe"]}})
            setting["probe"] = {"id": f"{gw}/probes/{case}"}
        settings.append({"name": case, "properties": setting})
        rules.append(
            {
                "name": case,
                "properties": {
                    "ruleType": "Basic",
                    "priority": priority,
                    "httpListener": {"id": f"{gw}/httpListeners/{case}"},
                    "backendAddressPool": {"id": f"{gw}/backendAddressPools/{spec['pool']}"},
                    "backendHttpSettings": {"id": f"{gw}/backendHttpSettingsCollection/{case}"},
                },
            }
        )
    body = topo.gateway_body(free_port())
    body["properties"].update(
        {
            "frontendPorts": ports,
            "httpListeners": listeners,
            "requestRoutingRules": rules,
            "probes": probes,
            "backendHttpSettingsCollection": settings,
            "backendAddressPools": [
                {"name": "by_ip", "properties": {"backendAddresses": [{"ipAddress": "127.0.0.1"}]}},
                {"name": "by_fqdn", "properties": {"backendAddresses": [{"fqdn": "localhost"}]}},
            ],
        }
    )
    return body


def test_probes_send_the_host_azure_documents(
    clients: EmulatorClients, topo: SampleTopology, recorders: dict[str, _Recorder]
) -> None:
    topo.network()
    clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", _gateway(topo, recorders)).result()
    expected = {
        "probe_host": "probe.example",
        "settings_host": "settings.example",
        "backend_address": "localhost",
        "default": "127.0.0.1",
    }
    assert eventually(lambda: all(r.hosts for r in recorders.values()), timeout=10)  # every case was probed
    assert {case: set(recorders[case].hosts) for case in expected} == {case: {h} for case, h in expected.items()}


def test_a_probe_needs_a_host_or_settings_that_name_one(
    clients: EmulatorClients, topo: SampleTopology, recorders: dict[str, _Recorder]
) -> None:
    topo.network()
    gateways = clients.network.application_gateways
    with pytest.raises(HttpResponseError) as raised:
        gateways.begin_create_or_update(topo.rg, "agw", _gateway(topo, recorders, probe_host=None)).result()
    assert (raised.value.status_code, arm_error(raised.value).code) == (400, "ApplicationGatewayProbeHostIsNull")
    assert arm_error(raised.value).target == "properties.probes[0].properties.host"

    body = _gateway(topo, recorders)
    del body["properties"]["backendHttpSettingsCollection"][1]["properties"]["hostName"]
    with pytest.raises(HttpResponseError) as raised:
        gateways.begin_create_or_update(topo.rg, "agw", body).result()
    assert (raised.value.status_code, arm_error(raised.value).target) == (
        400,
        "properties.backendHttpSettingsCollection[1].properties.probe.id",
    )
    assert "'HostName' property or sets 'PickHostNameFromBackendAddress'" in arm_error(raised.value).message
    with pytest.raises(HttpResponseError):
        gateways.get(topo.rg, "agw")
