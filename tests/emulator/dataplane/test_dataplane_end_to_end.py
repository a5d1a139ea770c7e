"""Through LocalDataPlane: real instances + the real gateway worker + Azure Monitor answers that
equal what the client observed."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections import Counter
from pathlib import Path

from dataplane_harness import (
    address_block,
    all_running,
    gateway_id,
    pack_artifact,
    process_alive,
    running_dataplane,
    scale_set_id,
    specs,
    wait_for,
)

from switchyard_emulator.dataplane.api import (
    BackendSettingsSpec,
    GatewaySpec,
    ListenerSpec,
    LogCollection,
    PoolSpec,
    ProbeSpec,
    RuleSpec,
)
from switchyard_emulator.dataplane.local import LocalDataPlane
from switchyard_emulator.dataplane.timespec import format_instant
from switchyard_emulator.testing import free_port

VMSS = scale_set_id("sample-e2e-blue")
GATEWAY = gateway_id("sample-e2e-agw")
GATEWAY_TYPE = "Microsoft.Network/applicationGateways"


def gateway_spec(listener_port: int, addresses: list[str], service_port: int) -> GatewaySpec:
    return GatewaySpec(
        gateway_id=GATEWAY,
        listeners=[ListenerSpec(name="production", port=listener_port)],
        pools=[PoolSpec(name="blue", addresses=addresses), PoolSpec(name="green", addresses=[])],
        settings=[BackendSettingsSpec(name="service", port=service_port, request_timeout_s=10.0, probe="health")],
        probes=[ProbeSpec(name="health", path="/health", interval_s=0.2, timeout_s=2.0, unhealthy_threshold=2)],
        rules=[RuleSpec(name="production", listener="production", pool="blue", settings="service", priority=100)],
    )


def drive(port: int, requests: int, connections: int) -> Counter[tuple[str, int]]:
    """Send `requests` GET /work/echo through the gateway; count (instance id, status) answers."""
    observed: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        mine: Counter[tuple[str, int]] = Counter()
        for _ in range(count):
            connection.request("GET", "/work/echo")
            response = connection.getresponse()
            response.read()
            mine[(response.getheader("X-Instance-Id", "?"), response.status)] += 1
        connection.close()
        with lock:
            observed.update(mine)

    threads = [threading.Thread(target=client, args=(requests // connections,)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return observed


async def wait_all_up(dataplane: LocalDataPlane, addresses: list[str]) -> None:
    async def all_up() -> bool:
        report = await dataplane.backend_health(GATEWAY)
        states = {server.address: server.health for server in report.get("blue", [])}
        return all(states.get(address) == "Up" for address in addresses)

    await wait_for(all_up, "every backend Up")


def test_gateway_metrics_and_logs_count_exactly_what_the_client_saw(tmp_path: Path) -> None:
    healthy_image = pack_artifact(tmp_path / "images")
    faulty_image = pack_artifact(tmp_path / "images", fault_profile={"error_rate": 0.5})
    block = address_block()
    listener_port = free_port()
    instances = specs(block, healthy_image, 3, vmss="sample-e2e-blue")
    instances[2] = instances[2].model_copy(update={"artifact_path": str(faulty_image)})
    addresses = [spec.ip for spec in instances]
    ip_of = {spec.instance_id: spec.ip for spec in instances}

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, instances)
            await wait_for(lambda: all_running(dataplane, VMSS, 3), "3 instances running")
            await dataplane.apply_gateway(gateway_spec(listener_port, addresses, block.port))
            await wait_all_up(dataplane, addresses)

            started = time.time() - 1
            observed = await asyncio.to_thread(drive, listener_port, 600, 4)
            finished = time.time() + 1
            timespan = f"{format_instant(started)}/{format_instant(finished)}"
            assert sum(observed.values()) == 600
            per_ip: Counter[str] = Counter()
            for (instance_id, _status), count in observed.items():
                per_ip[ip_of[instance_id]] += count
            failures = sum(count for (_, status), count in observed.items() if status == 500)
            assert set(per_ip) == set(addresses) and failures > 0
            assert {status for (_, status) in observed} == {200, 500}

            body = await dataplane.metrics(
                GATEWAY,
                GATEWAY_TYPE,
                {
                    "timespan": timespan,
                    "interval": "FULL",
                    "metricnames": "BackendResponseStatus,TotalRequests,FailedRequests",
                    "aggregation": "Total",
                    "$filter": "BackendServer eq '*'",
                    "ValidateDimensions": "false",  # TotalRequests/FailedRequests have no BackendServer
                },
            )
            by_server = {
                series["metadatavalues"][0]["value"]: series["data"][0]["total"]
                for series in body["value"][0]["timeseries"]
            }
            assert by_server == {ip: float(count) for ip, count in per_ip.items()}
            assert body["value"][1]["timeseries"][0]["data"][0]["total"] == 600.0
            assert body["value"][2]["timeseries"][0]["data"][0]["total"] == float(failures)

            statuses = await dataplane.metrics(
                GATEWAY,
                GATEWAY_TYPE,
                {
                    "timespan": timespan,
                    "interval": "PT1S",
                    "metricnames": "ResponseStatus",
                    "$filter": "HttpStatusGroup eq '*'",
                },
            )
            per_group = {
                series["metadatavalues"][0]["value"]: sum(point["total"] for point in series["data"])
                for series in statuses["value"][0]["timeseries"]
            }
            assert per_group == {"2xx": float(600 - failures), "5xx": float(failures)}

            async def three_healthy_hosts_sampled() -> bool:
                # The gateway samples backend health once per second; wait for a sample after traffic.
                hosts = await dataplane.metrics(
                    GATEWAY,
                    GATEWAY_TYPE,
                    {
                        "timespan": f"{format_instant(started)}/{format_instant(time.time() + 1)}",
                        "interval": "FULL",
                        "metricnames": "HealthyHostCount",
                        "aggregation": "Maximum",
                        "$filter": "BackendSettingsPool eq 'blue~service'",
                    },
                )
                series = hosts["value"][0]["timeseries"]
                return bool(series) and series[0]["data"][0].get("maximum") == 3.0

            await wait_for(three_healthy_hosts_sampled, "HealthyHostCount 3 for blue~service")

            logs = await dataplane.query_logs(
                "workspace",
                "AzureDiagnostics | where Category == 'ApplicationGatewayAccessLog'"
                " | summarize requests = count(), failed = countif(httpStatus_d >= 500) by serverRouted_s",
                timespan,
                # as if a diagnostic setting had sent the access log to the workspace all along
                [LogCollection(resource_id=GATEWAY, table="AzureDiagnostics", start=0.0)],
            )
            rows = {row[0]: (row[1], row[2]) for row in logs["tables"][0]["rows"]}
            failed_per_ip: Counter[str] = Counter()
            for (instance_id, status), count in observed.items():
                if status == 500:
                    failed_per_ip[ip_of[instance_id]] += count
            assert rows == {f"{ip}:{block.port}": (per_ip[ip], failed_per_ip[ip]) for ip in addresses}

            gateway_pid = dataplane.fleet.worker_pid
            instance_pids = [s.pid for s in dataplane.instance_states(VMSS).values()]
        assert gateway_pid is not None and not process_alive(gateway_pid)
        assert not any(pid is not None and process_alive(pid) for pid in instance_pids)

    asyncio.run(scenario())
