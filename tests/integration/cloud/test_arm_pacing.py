"""switchyard's reads wait their turn before Resource Manager throttles them, over the wire.

An emulator that enforces Resource Manager's throttling (250 reads, then 25 a second, 429 beyond),
and a burst of reads from eight threads, as a patch run's services read at once: through
switchyard's clients none of them is throttled; through plain SDK clients, the same burst is
(the control that shows the burst is over Azure's rate). The arithmetic: tests/unit/cloud/test_pacing.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources import ResourceManagementClient

from switchyard.cloud.azure import AzureClients
from switchyard_emulator.testing import EmulatorHandle, run_emulator, set_throttling, throttling_status
from tests.integration.cloud.cloud_support import environment_on

READS = 400  # 150 beyond the bucket: six seconds of refill
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
