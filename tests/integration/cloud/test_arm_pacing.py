"""switchyard's reads wait their turn before Resource Manager throttles them, over the wire.

An emulator that enforces Resource Manager's throttling (250 reads, then 25 a second, 429 beyond),
and a burst of reads from eight threads, as a patch run's services read at once: through
switchyard's clients none of them is throttled; through plain SDK clients, the same burst is
(the control that shows the burst is over Azure's rate). The same for Log Analytics' queries (200
per user in 30 s; the SDK does not send a throttled query again). The arithmetic:
tests/unit/cloud/test_pacing.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.monitor.query import LogsQueryClient

from switchyard.cloud.azure import AzureClients
from switchyard_emulator.testing import EmulatorHandle, run_emulator, set_throttling, throttling_status
from tests.integration.cloud.cloud_support import environment_on

READS = 400  # 150 beyond the bucket: six seconds of refill
QUERIES = 230  # 30 beyond Log Analytics' 200 per user in 30 s
THREADS = 8
GROUP = "pacing-target"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """This module's own: a fast emulator that throttles like Resource Manager."""
    with run_emulator(tmp_path_factory.mktemp("throttled"), extra_args=["--arm-throttling"], storage=False) as handle:
        yield handle


def full_buckets(emulator: EmulatorHandle) -> None:
    """Throttling on again with full buckets and the counts at zero (the admin route)."""
    assert set_throttling(emulator.state_dir / "emulator.json", enforced=True)["enforced"]


def burst(resources: ResourceManagementClient) -> list[str]:
    """READS reads of one resource group, THREADS at a time: the errors of those that failed."""

    def read(_: int) -> str | None:
        try:
            resources.resource_groups.get(GROUP)
        except HttpResponseError as error:  # the SDK gave up after its retries
            return str(error.status_code)
        return None

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return [error for error in pool.map(read, range(READS)) if error is not None]


@pytest.fixture(scope="module")
def switchyard_clients(emulator: EmulatorHandle) -> AzureClients:
    clients = AzureClients(environment_on(emulator, "pacing"))
    clients.resources.resource_groups.create_or_update(GROUP, {"location": "westeurope"})
    return clients


def test_a_burst_of_reads_through_switchyard_is_never_throttled(
    emulator: EmulatorHandle, switchyard_clients: AzureClients
) -> None:
    full_buckets(emulator)
    switchyard_clients.resources.resource_groups.get(GROUP)  # Azure's count, known from here on

    assert burst(switchyard_clients.resources) == []

    status = throttling_status(emulator.state_dir / "emulator.json")
    assert status["throttled"]["read"] == 0
    assert status["admitted"]["read"] == READS + 1
    assert switchyard_clients.read_budget.paced_reads > 0  # it came near the bottom and waited


def test_the_same_burst_through_plain_sdk_clients_is_throttled(
    emulator: EmulatorHandle, switchyard_clients: AzureClients
) -> None:
    full_buckets(emulator)

    # The SDK waits each 429's Retry-After out and tries again (some may still fail: not asserted).
    burst(emulator.clients().resource)

    status = throttling_status(emulator.state_dir / "emulator.json")
    assert status["throttled"]["read"] > 0


def query_burst(logs: LogsQueryClient, workspace: str) -> list[str]:
    """QUERIES queries of the access log's table, THREADS at a time: the errors of those that failed."""

    def query(_: int) -> str | None:
        try:
            logs.query_workspace(workspace, "AzureDiagnostics | take 1", timespan=timedelta(hours=1))
        except HttpResponseError as error:
            return str(error.status_code)
        return None

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return [error for error in pool.map(query, range(QUERIES)) if error is not None]


def log_queries(emulator: EmulatorHandle) -> dict[str, Any]:
    """The emulator's count of Log Analytics queries: `admitted`, and `throttled` by the limit met."""
    return cast(dict[str, Any], throttling_status(emulator.state_dir / "emulator.json")["log_queries"])


def test_a_burst_of_log_analytics_queries_through_switchyard_waits_its_turn_and_is_never_throttled(
    emulator: EmulatorHandle, switchyard_clients: AzureClients
) -> None:
    full_buckets(emulator)

    assert query_burst(switchyard_clients.logs, emulator.log_analytics_workspace_id) == []

    counts = log_queries(emulator)
    assert counts["throttled"]["rate"] == 0
    assert counts["admitted"] == QUERIES
    assert switchyard_clients.log_query_rate.paced_queries > 0


def test_the_same_query_burst_through_a_plain_sdk_client_fails_at_the_first_throttled_query(
    emulator: EmulatorHandle,
) -> None:
    full_buckets(emulator)

    errors = query_burst(emulator.clients().logs, emulator.log_analytics_workspace_id)

    # A query is a POST: azure-core sends it again only with a Retry-After, which Log Analytics does not give.
    assert errors == ["429"] * (QUERIES - 200)
    assert log_queries(emulator)["throttled"]["rate"] == QUERIES - 200
