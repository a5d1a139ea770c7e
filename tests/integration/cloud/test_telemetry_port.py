"""The telemetry port (AzureMonitorTelemetry) against a real emulator: the counts, latencies and
CPU samples it reports are those of requests this test really sends through the gateway.

Blue runs V1 behind the production listener; green runs FAILING (every /work/ request answers
500) behind the test listener.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.ports import RequestCounts
from switchyard.core.topology import Color, Topology
from tests.integration.cloud.cloud_support import FAILING, V1, deploy_both_colors, eventually, gateway_port, get

PRODUCTION_REQUESTS = 24
TEST_REQUESTS = 10


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    blue: set[str]  # addresses
    green: set[str]


@pytest.fixture(scope="module")
def window(cloud: AzureCloud, topology: Topology, artifacts: dict[str, Path]) -> Window:
    """A window in which exactly PRODUCTION_REQUESTS went to production and TEST_REQUESTS to test."""
    deploy_both_colors(cloud, artifacts, blue=V1, green=FAILING)
    address = cloud.router.frontend_address(topology)
    production, test = gateway_port(cloud, "production"), gateway_port(cloud, "test")
    start = datetime.now(UTC)
    statuses = [get(address, production, "/work/echo").status_code for _ in range(PRODUCTION_REQUESTS)]
    statuses += [get(address, test, "/work/echo").status_code for _ in range(TEST_REQUESTS)]
    # The gateway logs a request once it has handed over the last byte, a moment after the client
    # may already have read it: end the window a little later, and start the next requests later still.
    end = datetime.now(UTC) + timedelta(seconds=0.5)
    assert statuses == [200] * PRODUCTION_REQUESTS + [500] * TEST_REQUESTS
    time.sleep(1.0)
    # Requests after the window must not be counted in it.
    for _ in range(5):
        get(address, production, "/work/echo")
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


def test_requests_by_backend_counts_every_request_and_every_5xx_per_instance(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    def counts_once_the_log_has_arrived() -> dict[str, RequestCounts] | None:
        # The gateway's log reaches Azure Monitor within a moment (on Azure, minutes).
        counts = cloud.telemetry.requests_by_backend(topology, window.start, window.end)
        arrived = sum(c.total for c in counts.values()) >= PRODUCTION_REQUESTS + TEST_REQUESTS
        return counts if arrived else None

    counts = eventually(counts_once_the_log_has_arrived)

    assert summed(counts, window.blue) == RequestCounts(total=PRODUCTION_REQUESTS, failed=0)
    assert summed(counts, window.green) == RequestCounts(total=TEST_REQUESTS, failed=TEST_REQUESTS)
    assert set(counts) <= window.blue | window.green
    assert all(counts[address].total > 0 for address in window.blue)  # spread over every blue instance


def test_latency_by_backend_has_one_sample_per_request_on_the_listener_asked_for(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    def samples(listener: str) -> dict[str, list[float]]:
        return cloud.telemetry.latency_by_backend(topology, window.start, window.end, listener)

    def production_once_the_log_has_arrived() -> dict[str, list[float]] | None:
        found = samples("production")
        return found if sum(len(ms) for ms in found.values()) >= PRODUCTION_REQUESTS else None

    production = eventually(production_once_the_log_has_arrived)

    assert set(production) <= window.blue
    assert sum(len(ms) for ms in production.values()) == PRODUCTION_REQUESTS
    assert all(0 < ms < 10_000 for values in production.values() for ms in values)
    test = samples("test")
    assert set(test) <= window.green
    assert sum(len(ms) for ms in test.values()) == TEST_REQUESTS


def test_cpu_percent_has_samples_of_the_colors_instances_and_only_of_the_named_ones(
    cloud: AzureCloud, topology: Topology, window: Window
) -> None:
    blue = cloud.scale_sets.observe(topology, Color.BLUE)
    # Instances are sampled once a second: a window of a few seconds has a few samples of each.
    time.sleep(max(0.0, 4 - (datetime.now(UTC) - window.start).total_seconds()))
    end = datetime.now(UTC)

    every_instance = eventually(lambda: cloud.telemetry.cpu_percent(topology, Color.BLUE, window.start, end))
    one_instance = cloud.telemetry.cpu_percent(topology, Color.BLUE, window.start, end, [blue.instances[0].name])

    assert all(percent >= 0 for percent in every_instance)
    assert 0 < len(one_instance) < len(every_instance)
    assert cloud.telemetry.cpu_percent(topology, Color.BLUE, window.start, end, ["no-such-vm_9"]) == []
