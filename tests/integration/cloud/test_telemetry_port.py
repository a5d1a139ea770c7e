"""The telemetry port (AzureMonitorTelemetry) against a real emulator: the counts, latencies and
CPU samples it reports are those of requests this test really sends through the gateway, per pool.

Blue runs V1 behind the production listener; green runs FAILING (every /work/ request answers
500) behind the test listener.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from azure.core.rest import HttpRequest

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.ports import RequestCounts
from switchyard.core.analysis import latency_by_backend
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color, Topology
from tests.integration.cloud.cloud_support import (
    FAILING,
    SDK_REQUEST_LOG,
    V1,
    deploy_both_colors,
    eventually,
    get,
    listener_address,
    provision,
    requests_made,
)

PRODUCTION_REQUESTS = 24
TEST_REQUESTS = 10


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    blue: set[str]  # addresses
    green: set[str]


def metric_queries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The Metrics - List requests the SDK logged."""
    return [url for url in requests_made(caplog) if "/providers/Microsoft.Insights/metrics" in url]


def settle_past(timing: MetricTiming, end: datetime) -> None:
    """Wait until the grain holding `end` is over, so later requests fall outside the window."""
    time.sleep(max(0.0, (timing.next_grain(end) - datetime.now(UTC)).total_seconds()) + 0.3)


def send(cloud: AzureCloud, listener: str, requests: int, path: str = "/work/echo") -> list[int]:
    address, port = listener_address(cloud, listener)
    return [get(address, port, path).status_code for _ in range(requests)]


@pytest.fixture(scope="module")
def window(cloud: AzureCloud, topology: Topology, artifacts: dict[str, Path]) -> Window:
    """A window in which exactly PRODUCTION_REQUESTS went to production and TEST_REQUESTS to test."""
    deploy_both_colors(cloud, artifacts, blue=V1, green=FAILING)
    timing = cloud.telemetry.timing(topology)
    settle_past(timing, datetime.now(UTC))  # the window starts on a grain of its own
    start = datetime.now(UTC)
    statuses = send(cloud, "production", PRODUCTION_REQUESTS) + send(cloud, "test", TEST_REQUESTS)
    # The gateway logs a request once it has handed over the last byte, a moment after the client
    # may already have read it: end the window a little later, and start the next requests later still.
    end = datetime.now(UTC) + timedelta(seconds=0.3)
    assert statuses == [200] * PRODUCTION_REQUESTS + [500] * TEST_REQUESTS
    settle_past(timing, end)
    send(cloud, "production", 5)  # after the window: never counted in it
    observed = cloud.observe(topology, with_health=False)
    return Window(
        start,
        end,
        blue=set(observed.scale_set(Color.BLUE).addresses),
        green=set(observed.scale_set(Color.GREEN).addresses),
    )


def summed(counts: dict[str, RequestCounts], addresses: set[str]) -> RequestCounts:
    return RequestCounts(
        total=sum(c.total for a, c in counts.items() if a in addresses),
        failed=sum(c.failed for a, c in counts.items() if a in addresses),
    )


def test_the_metrics_grain_is_the_clouds_finest(cloud: AzureCloud, topology: Topology, window: Window) -> None:
    # The emulator's fast profile lists PT1S first; Azure's finest is PT1M (test_timing.py).
    assert cloud.telemetry.timing(topology) == MetricTiming(grain_s=1.0, delay_s=0.0)


def test_requests_by_backend_counts_every_request_and_every_5xx_per_instance_of_the_pool(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    def counts_once_arrived(pool: str, expected: int) -> dict[str, RequestCounts] | None:
        counts = cloud.telemetry.requests_by_backend(topology, window.start, window.end, pool)
        return counts if sum(c.total for c in counts.values()) >= expected else None

    blue = eventually(lambda: counts_once_arrived("blue", PRODUCTION_REQUESTS))
    green = eventually(lambda: counts_once_arrived("green", TEST_REQUESTS))

    assert set(blue) == window.blue  # spread over every blue instance, and only blue's
    assert summed(blue, window.blue) == RequestCounts(total=PRODUCTION_REQUESTS, failed=0)
    assert set(green) <= window.green
    assert summed(green, window.green) == RequestCounts(total=TEST_REQUESTS, failed=TEST_REQUESTS)
    # The canary pools served nothing: no rule routed to them.
    assert cloud.telemetry.requests_by_backend(topology, window.start, window.end, "blue-and-canary") == {}


def test_pool_requests_counts_what_the_gateway_served_from_each_pool(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    def pool(name: str) -> RequestCounts:
        return cloud.telemetry.pool_requests(topology, window.start, window.end, name)

    eventually(lambda: pool("blue").total >= PRODUCTION_REQUESTS)

    assert pool("blue") == RequestCounts(total=PRODUCTION_REQUESTS, failed=0)
    assert pool("green") == RequestCounts(total=TEST_REQUESTS, failed=TEST_REQUESTS)
    assert pool("green-and-canary") == RequestCounts()


def test_pool_requests_reads_both_counters_in_one_metrics_query(
    cloud: AzureCloud, topology: Topology, window: Window, caplog: pytest.LogCaptureFixture
) -> None:
    # Every canary look reads them: two queries each would double that part of ARM's read budget.
    eventually(lambda: cloud.telemetry.pool_requests(topology, window.start, window.end, "blue").total > 0)
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)

    counts = cloud.telemetry.pool_requests(topology, window.start, window.end, "green")

    assert len(metric_queries(caplog)) == 1  # (the SDK's log redacts the query string: the counts say both came back)
    assert counts == RequestCounts(total=TEST_REQUESTS, failed=TEST_REQUESTS)


def test_the_access_log_has_one_entry_per_request_on_the_listener_and_pool_asked_for(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    def samples(listener: str, pool: str) -> dict[str, list[float]]:
        entries = cloud.telemetry.access_log(topology, window.start, window.end, listener, pool)
        assert all(window.start <= entry.at < window.end for entry in entries), entries
        return latency_by_backend(entries, window.start, window.end)

    def production_once_arrived() -> dict[str, list[float]] | None:
        found = samples("production", "blue")
        return found if sum(len(ms) for ms in found.values()) >= PRODUCTION_REQUESTS else None

    production = eventually(production_once_arrived)

    assert set(production) <= window.blue
    assert sum(len(ms) for ms in production.values()) == PRODUCTION_REQUESTS
    assert all(0 < ms < 10_000 for values in production.values() for ms in values)
    test = samples("test", "green")
    assert set(test) <= window.green
    assert sum(len(ms) for ms in test.values()) == TEST_REQUESTS
    assert samples("production", "green") == {} and samples("test", "blue") == {}


def test_one_read_of_the_access_log_splits_into_the_windows_within_it(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    """A canary's look reads the log once, over the grains still arriving, and judges the complete
    grains within it: each part holds what a query of that part alone would return."""
    entries = eventually(
        lambda: (
            found
            if len(found := cloud.telemetry.access_log(topology, window.start, window.end, "production", "blue"))
            >= PRODUCTION_REQUESTS
            else None
        )
    )
    middle = sorted(entry.at for entry in entries)[len(entries) // 2]

    for start, end in ((window.start, middle), (middle, window.end)):
        alone = cloud.telemetry.access_log(topology, start, end, "production", "blue")
        assert latency_by_backend(entries, start, end) == latency_by_backend(alone, start, end)
    earlier, later = latency_by_backend(entries, window.start, middle), latency_by_backend(entries, middle, window.end)
    assert sum(map(len, earlier.values())) + sum(map(len, later.values())) == PRODUCTION_REQUESTS
    assert sum(map(len, later.values())) >= 1


def test_without_the_diagnostic_setting_the_access_log_has_no_samples_and_provisioning_brings_it_back(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    setting = (
        f"{cloud.ids.gateway(topology)}/providers/Microsoft.Insights/diagnosticSettings/{topology.diagnostic_setting}"
    )
    params = {"api-version": "2021-05-01-preview"}
    timing = cloud.telemetry.timing(topology)

    def production_window() -> tuple[datetime, datetime]:
        settle_past(timing, datetime.now(UTC))
        start = datetime.now(UTC)
        assert send(cloud, "production", 6) == [200] * 6
        end = datetime.now(UTC) + timedelta(seconds=0.3)
        settle_past(timing, end)
        return start, end

    cloud.clients.monitor._send_request(HttpRequest("DELETE", setting, params=params)).raise_for_status()
    start, end = production_window()

    # The metrics count the requests; the access log never reached the workspace.
    eventually(lambda: cloud.telemetry.pool_requests(topology, start, end, "blue").total == 6)
    assert cloud.telemetry.access_log(topology, start, end, "production", "blue") == []

    provision(cloud)
    start, end = production_window()

    found = eventually(lambda: cloud.telemetry.access_log(topology, start, end, "production", "blue"))
    assert len(found) == 6


def test_instance_metrics_has_cpu_samples_of_each_of_the_colors_instances_from_one_query(
    cloud: AzureCloud, topology: Topology, window: Window, caplog: pytest.LogCaptureFixture
) -> None:
    blue = cloud.scale_sets.observe(topology, Color.BLUE)
    # Instances are sampled once a second: a window of a few seconds has a few samples of each.
    time.sleep(max(0.0, 4 - (datetime.now(UTC) - window.start).total_seconds()))
    end = datetime.now(UTC)
    eventually(lambda: cloud.telemetry.instance_metrics(topology, Color.BLUE, window.start, end, blue.vm_size))
    caplog.set_level(logging.INFO, logger=SDK_REQUEST_LOG)

    per_vm = cloud.telemetry.instance_metrics(topology, Color.BLUE, window.start, end, blue.vm_size)

    assert set(per_vm) == {instance.name for instance in blue.instances}
    assert all(metrics.cpu_percent and all(p >= 0 for p in metrics.cpu_percent) for metrics in per_vm.values())
    # CPU, memory and network out of every VM: one Metrics - List query, and nothing else (the VM
    # size comes with the observation; its memory was listed once, by the first call).
    assert len(metric_queries(caplog)) == 1
    assert len(requests_made(caplog)) == 1, requests_made(caplog)


def instance_process_group(address: str) -> int:
    """The process group of the instance process listening on `address` (the emulator starts each
    in its own session; tests/emulator/integration/test_gateway_metrics_truth.py does the same)."""
    wanted = f"SWITCHYARD_LISTEN_HOST={address}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    return os.getpgid(int(entry.name))
            except OSError:
                continue
    raise AssertionError(f"no instance process listens on {address}")


def test_pool_requests_counts_the_502s_the_gateway_answers_when_an_instance_dies_mid_traffic(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    """Last in this module: it kills a blue instance."""
    timing = cloud.telemetry.timing(topology)
    victim = sorted(window.blue)[0]
    settle_past(timing, datetime.now(UTC))
    start = datetime.now(UTC)
    seen = Counter(send(cloud, "production", 20))
    # Slow requests in flight on both instances; then one instance's process dies under them.
    address, port = listener_address(cloud, "production")
    slow: list[int] = []

    def slow_request() -> None:
        try:
            slow.append(httpx.get(f"http://{address}:{port}/work/sleep?ms=1500", timeout=20).status_code)
        except httpx.HTTPError:
            slow.append(0)

    threads = [threading.Thread(target=slow_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.killpg(instance_process_group(victim), signal.SIGKILL)
    for thread in threads:
        thread.join()
    seen.update(slow)
    end = datetime.now(UTC) + timedelta(seconds=0.3)
    assert seen[502] >= 1 and seen[0] == 0, seen
    answered_by_backends = sum(count for status, count in seen.items() if status < 500)

    def counted_once_arrived() -> RequestCounts | None:
        counts = cloud.telemetry.pool_requests(topology, start, end, "blue")
        return counts if counts.total == sum(seen.values()) else None

    counts = eventually(counted_once_arrived)

    # FailedRequests: the gateway's own 502s count; BackendResponseStatus never saw them.
    assert counts.failed == seen[502] + sum(count for status, count in seen.items() if status > 502)
    by_backend = cloud.telemetry.requests_by_backend(topology, start, end, "blue")
    assert sum(c.total for c in by_backend.values()) == answered_by_backends
    assert sum(c.failed for c in by_backend.values()) == 0
