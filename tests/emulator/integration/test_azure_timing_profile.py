"""The azure timing profile: what a release meets on Azure. Metric grains of a minute and more only,
datapoints a minute late, access-log records visible after an ingestion delay, slow gateway and
scale-set writes that answer without Retry-After, autoscale durations within Azure's minima.

The delays are settings; this module keeps them small where the behaviour is the same (log
ingestion 3 s, writes 2 s) and keeps the default metrics latency (60 s), which it only has to
observe as "not there yet"."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from emulator_helpers import eventually, gateway_get, send_access_log_to

from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, SampleTopology, free_port, run_emulator

INGESTION_S = 3.0
WRITE_S = 2.0


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    args = [
        "--lro-retry-after", "1",
        "--log-ingestion-delay", str(INGESTION_S),
        "--gateway-write-seconds", str(WRITE_S),
        "--scale-set-write-seconds", str(WRITE_S),
    ]  # fmt: skip
    with run_emulator(tmp_path_factory.mktemp("emulator"), extra_args=args, profile="azure") as handle:
        yield handle


@pytest.fixture(scope="module")
def deployed(
    emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path]
) -> Iterator[tuple[EmulatorClients, SampleTopology, int, list[Any]]]:
    """A gateway and a one-instance scale set, written through the slow LROs (responses recorded)."""
    clients = emulator.clients(polling_interval=0.2)
    topo = SampleTopology(clients, emulator.subscription_id, "rg-azure-profile")
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    responses: list[Any] = []
    port = free_port()
    started = time.monotonic()
    clients.network.application_gateways.begin_create_or_update(
        topo.rg, "agw", topo.gateway_body(port), raw_response_hook=lambda r: responses.append(("gateway", r))
    ).result()
    gateway_s = time.monotonic() - started
    started = time.monotonic()
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg,
        "blue",
        topo.scale_set_body(topo.version_id("1.0.0"), 1, pool="blue"),
        raw_response_hook=lambda r: responses.append(("scaleset", r)),
    ).result()
    scale_set_s = time.monotonic() - started
    responses.append(("durations", (gateway_s, scale_set_s)))
    eventually(lambda: gateway_get(port)[0] == 200, timeout=30)
    yield clients, topo, port, responses
    clients.close()


def test_the_profile_is_in_emulator_json(emulator: EmulatorHandle) -> None:
    info = json.loads((emulator.state_dir / "emulator.json").read_text())
    assert info["profile"] == "azure" and emulator.profile == "azure"


def test_gateway_and_scale_set_writes_are_slow_and_answer_without_retry_after(
    deployed: tuple[EmulatorClients, SampleTopology, int, list[Any]],
) -> None:
    clients, _topo, _port, responses = deployed
    gateway_s, scale_set_s = next(value for kind, value in responses if kind == "durations")
    assert gateway_s >= WRITE_S and scale_set_s >= WRITE_S
    writes = [r for kind, r in responses if kind in ("gateway", "scaleset")]
    assert len(writes) >= 4  # the initial answers and at least one poll each
    assert all("Retry-After" not in r.http_response.headers for r in writes)
    # other long-running operations keep --lro-retry-after
    clients.resource.resource_groups.create_or_update("rg-scratch", {"location": "westus"})
    seen: list[Any] = []
    clients.resource.resource_groups.begin_delete("rg-scratch", raw_response_hook=seen.append).result()
    assert seen[0].http_response.headers.get("Retry-After") == "1"


def test_metric_grains_are_azures_and_definitions_say_so(
    deployed: tuple[EmulatorClients, SampleTopology, int, list[Any]],
) -> None:
    clients, topo, _port, _ = deployed
    definitions = list(clients.monitor.metric_definitions.list(topo.gateway_id()))
    grains = [a.time_grain for a in definitions[0].metric_availabilities]
    assert grains[0] == timedelta(minutes=1)  # a client discovers the minimum grain from the cloud
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.metrics.list(topo.gateway_id(), metricnames="TotalRequests", timespan="PT5M", interval="PT1S")
    assert raised.value.status_code == 400
    assert "Invalid time grain duration: PT1S, supported ones are: 00:01:00,00:05:00" in str(raised.value)


def test_a_minute_of_traffic_is_not_in_the_metrics_yet(
    deployed: tuple[EmulatorClients, SampleTopology, int, list[Any]],
) -> None:
    clients, topo, port, _ = deployed
    for _ in range(10):
        assert gateway_get(port)[0] == 200
    result = clients.monitor.metrics.list(
        topo.gateway_id(), metricnames="TotalRequests", timespan="PT5M", interval="PT1M", aggregation="Total"
    )
    data = result.value[0].timeseries[0].data
    # the minute is still running (and is published a minute after it ends): no value yet
    assert data[-1].total is None
    assert sum(point.total or 0 for point in data) < 10


def test_access_log_records_arrive_after_the_ingestion_delay(
    emulator: EmulatorHandle, deployed: tuple[EmulatorClients, SampleTopology, int, list[Any]]
) -> None:
    clients, topo, port, _ = deployed
    send_access_log_to(clients, topo.gateway_id(), emulator.log_analytics_workspace_resource_id, dedicated=True)
    since = datetime.now(UTC)
    for _ in range(5):
        assert gateway_get(port)[0] == 200
    sent = time.monotonic()

    def collected() -> int:
        answer = clients.logs.query_workspace(
            emulator.log_analytics_workspace_id,
            "AGWAccessLogs | count",
            timespan=(since, datetime.now(UTC) + timedelta(seconds=1)),
        )
        return int(answer.tables[0].rows[0][0])

    assert collected() == 0  # just sent: still being ingested
    eventually(lambda: collected() == 5, timeout=INGESTION_S + 10, interval=0.25)
    assert time.monotonic() - sent >= INGESTION_S - 0.5


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        ({"timeGrain": "PT30S"}, "metricTrigger.timeGrain"),  # Azure: at least 1 minute
        ({"timeWindow": "PT1M"}, "metricTrigger.timeWindow"),  # at least 5 minutes
        ({"cooldown": "PT30S"}, "scaleAction.cooldown"),  # at least 1 minute
    ],
)
def test_autoscale_durations_below_azures_minima_are_refused(
    deployed: tuple[EmulatorClients, SampleTopology, int, list[Any]], timing: dict[str, str], field: str
) -> None:
    clients, topo, _port, _ = deployed
    target = f"{topo.rg_id()}/providers/Microsoft.Compute/virtualMachineScaleSets/blue"
    trigger = {
        "metricName": "Percentage CPU",
        "metricResourceUri": target,
        "timeGrain": "PT1M",
        "statistic": "Average",
        "timeWindow": "PT5M",
        "timeAggregation": "Average",
        "operator": "GreaterThan",
        "threshold": 70,
    }
    action = {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": "PT1M"}
    for key, value in timing.items():
        (action if key == "cooldown" else trigger)[key] = value
    body = {
        "location": "westus",
        "properties": {
            "enabled": False,
            "targetResourceUri": target,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": "1", "maximum": "2", "default": "1"},
                    "rules": [{"metricTrigger": trigger, "scaleAction": action}],
                }
            ],
        },
    }
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.autoscale_settings.create_or_update(topo.rg, "blue-autoscale", body)
    error = raised.value.error
    assert error is not None and error.target == f"properties.profiles[0].rules[0].{field}"
    assert re.search(r"between PT1M|between PT5M", str(error.message))


def test_the_defaults_are_azures(tmp_path: Path) -> None:
    """No overrides: a gateway write takes the default 20 s and is polled without Retry-After."""
    with run_emulator(tmp_path / "emulator", profile="azure") as emulator:
        clients = emulator.clients(polling_interval=1)
        try:
            topo = SampleTopology(clients, emulator.subscription_id, "rg-defaults")
            topo.network()
            responses: list[Any] = []
            started = time.monotonic()
            clients.network.application_gateways.begin_create_or_update(
                topo.rg, "agw", topo.gateway_body(free_port()), raw_response_hook=responses.append
            ).result()
            assert time.monotonic() - started >= 20.0
            assert responses and all("Retry-After" not in r.http_response.headers for r in responses)
            definitions = list(clients.monitor.metric_definitions.list(topo.gateway_id()))
            assert definitions[0].metric_availabilities[0].time_grain == timedelta(minutes=1)
        finally:
            clients.close()
