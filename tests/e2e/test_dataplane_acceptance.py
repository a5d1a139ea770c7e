"""The emulator's data plane, judged the way issue 3 states it: through the real azure-mgmt SDK over
HTTPS and a plain HTTP client, with real instance processes behind a real gateway.

- scale to 3 and see 3 processes answer through the gateway;
- repoint the rule under a steady load of at least 200 requests/s and count zero failed requests;
- kill an instance and see the probe take it out and the traffic avoid it;
- metrics.list returns the counts the client observed, per backend server, within 1%.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import (
    EmulatorClients,
    EmulatorHandle,
    SampleTopology,
    free_port,
    pack_sample_image,
    run_emulator,
)

pytestmark = pytest.mark.e2e

RG = "dataplane-acceptance"
BLUE, GREEN = "1000000.20261100.1", "2000000.20261100.1"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path_factory.mktemp("emulator"), extra_args=["--lro-retry-after", "0"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def clients(emulator: EmulatorHandle) -> Iterator[EmulatorClients]:
    made = emulator.clients(polling_interval=0.05)
    yield made
    made.close()


@pytest.fixture(scope="module")
def topology(clients: EmulatorClients, emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> dict:
    topo = SampleTopology(clients, emulator.subscription_id, RG)
    artifacts = tmp_path_factory.mktemp("artifacts")
    topo.network()
    topo.gallery()
    topo.publish(BLUE, pack_sample_image(artifacts, app_version="1.0.0", gallery_version=BLUE))
    topo.publish(GREEN, pack_sample_image(artifacts, app_version="2.0.0", gallery_version=GREEN))
    port, test_port = free_port(), free_port()
    clients.network.application_gateways.begin_create_or_update(
        RG, "agw", topo.gateway_body(port, test_port=test_port)
    ).result()
    for name, version, capacity in (("blue", BLUE, 1), ("green", GREEN, 2)):
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            RG, name, topo.scale_set_body(topo.version_id(version), capacity, pool=name)
        ).result()
    return {"topo": topo, "port": port}


def health(clients: EmulatorClients) -> dict[str, dict[str, str]]:
    result = clients.network.application_gateways.begin_backend_health(RG, "agw").result().as_dict()
    return {
        pool["backendAddressPool"]["id"].rsplit("/", 1)[-1]: {
            server["address"]: server["health"]
            for settings in pool.get("backendHttpSettingsCollection", [])
            for server in settings.get("servers", [])
        }
        for pool in result.get("backendAddressPools", [])
    }


def wait_until(predicate, timeout_s: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def addresses(clients: EmulatorClients, scale_set: str) -> dict[str, str]:
    """instance id -> private IP, from the network API (as on Azure)."""
    found = {}
    for nic in clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(RG, scale_set):
        body = nic.as_dict()
        instance = body["properties"]["virtualMachine"]["id"].rsplit("/", 1)[-1]
        found[instance] = body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
    return found


def repoint(clients: EmulatorClients, topo: SampleTopology, pool: str) -> None:
    gateway = clients.network.application_gateways.get(RG, "agw")
    body = gateway.as_dict()
    for rule in body["properties"]["requestRoutingRules"]:
        if rule["name"] == "production":
            rule["properties"]["backendAddressPool"] = {"id": topo.pool_id(pool)}
    clients.network.application_gateways.begin_create_or_update(
        RG, "agw", body, headers={"If-Match": gateway.etag}
    ).result()


def pid_serving(address: str) -> int:
    """The pid of the instance process bound to `address` (read from /proc, as an operator would)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SWITCHYARD_LISTEN_HOST={address}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no process serves {address}")


def test_scale_to_three_and_three_processes_answer_through_the_gateway(
    clients: EmulatorClients, topology: dict
) -> None:
    clients.compute.virtual_machine_scale_sets.begin_update(RG, "blue", {"sku": {"capacity": 3}}).result()
    blue = addresses(clients, "blue")
    assert len(blue) == 3 and len(set(blue.values())) == 3
    wait_until(lambda: set(health(clients)["blue"].values()) == {"Up"} and len(health(clients)["blue"]) == 3,
               what="3 healthy blue instances")  # fmt: skip
    with SteadyTraffic("127.0.0.1", topology["port"], rate=100, connections=4) as load:
        time.sleep(2)
    answered = {instance for version, instance in load.report().by_instance if version == BLUE}
    assert answered == set(blue)
    assert load.report().failed == 0
    assert len({pid_serving(address) for address in blue.values()}) == 3


def test_repointing_the_rule_under_steady_load_fails_no_request(clients: EmulatorClients, topology: dict) -> None:
    wait_until(lambda: set(health(clients)["green"].values()) == {"Up"}, what="healthy green instances")
    with SteadyTraffic("127.0.0.1", topology["port"], rate=220, connections=12) as load:
        time.sleep(2)
        repoint(clients, topology["topo"], "green")
        time.sleep(2)
        repoint(clients, topology["topo"], "blue")
        time.sleep(2)
    report = load.report()
    assert report.rate() >= 200
    failures = [r for r in report.records if r.failed]
    assert not failures, f"{len(failures)} of {report.sent} requests failed: {failures[:5]}"
    assert report.by_version[GREEN] > 200 and report.by_version[BLUE] > 400


def test_a_killed_instance_is_taken_out_by_the_probe_and_traffic_avoids_it(
    clients: EmulatorClients, topology: dict
) -> None:
    blue = addresses(clients, "blue")
    victim_instance, victim = sorted(blue.items())[0]
    os.kill(pid_serving(victim), signal.SIGKILL)
    wait_until(lambda: health(clients)["blue"].get(victim) == "Down", timeout_s=30, what=f"{victim} marked Down")
    view = clients.compute.virtual_machine_scale_set_vms.get_instance_view(RG, "blue", victim_instance).as_dict()
    # the instance view tells what happened to the process
    failed = [s for s in view["statuses"] if s["code"].startswith("ProvisioningState/failed")]
    assert failed and "killed by signal 9" in failed[0]["message"], view["statuses"]
    with SteadyTraffic("127.0.0.1", topology["port"], rate=100, connections=4) as load:
        time.sleep(2)
    report = load.report()
    assert report.failed == 0
    assert (BLUE, victim_instance) not in report.by_instance
    assert {instance for version, instance in report.by_instance if version == BLUE} == set(blue) - {victim_instance}


def test_metrics_count_what_the_client_observed_per_backend_server(
    clients: EmulatorClients, emulator: EmulatorHandle, topology: dict
) -> None:
    blue = addresses(clients, "blue")
    time.sleep(1.1)  # the window starts on a whole second: keep earlier tests' traffic out of it
    start = datetime.now(UTC)
    with SteadyTraffic("127.0.0.1", topology["port"], rate=150, connections=6) as load:
        time.sleep(3)
    time.sleep(0.5)
    end = datetime.now(UTC) + timedelta(seconds=1)
    observed: Counter[str] = Counter()
    for (version, instance), count in load.report().by_instance.items():
        assert version == BLUE
        observed[blue[instance]] += count
    response = clients.monitor.metrics.list(
        topology["topo"].gateway_id(),
        timespan=f"{start:%Y-%m-%dT%H:%M:%S}Z/{end:%Y-%m-%dT%H:%M:%S}Z",
        interval="PT1S",
        metricnames="BackendResponseStatus",
        aggregation="Total",
        filter="BackendServer eq '*'",
        top=100,
    ).as_dict()
    reported: Counter[str] = Counter()
    for series in response["value"][0]["timeseries"]:
        server = {m["name"]["value"].lower(): m["value"] for m in series["metadatavalues"]}["backendserver"]
        reported[server.rsplit(":", 1)[0]] += int(sum(point.get("total") or 0 for point in series["data"]))
    assert set(reported) == set(observed)
    for server, count in observed.items():
        assert abs(reported[server] - count) <= 0.01 * count, (server, reported[server], count)
