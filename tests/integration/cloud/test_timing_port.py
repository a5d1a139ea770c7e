"""The adapter on Azure's clock: the emulator's azure profile (metric grains of a minute and more,
slow gateway and scale-set writes that answer without Retry-After, Azure's autoscale minima), with
the write delays made small. The adapter reads the grain from the cloud, queries with it, gives
autoscale a grain Azure accepts, and polls long-running operations at its own pace, not the SDK's
30 s default. The fast profile's one-second grain is in test_telemetry_port.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, pack_sample_image, run_emulator
from tests.integration.cloud.cloud_support import V1, environment_on, provision, publish, service_in, topology_of

WRITE_S = 1.0


@pytest.fixture(scope="module")
def azure_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    args = ["--gateway-write-seconds", str(WRITE_S), "--scale-set-write-seconds", str(WRITE_S)]
    with run_emulator(tmp_path_factory.mktemp("azure-emulator"), extra_args=args, profile="azure") as handle:
        yield handle


@pytest.fixture(scope="module")
def azure_cloud(azure_emulator: EmulatorHandle) -> AzureCloud:
    environment = environment_on(azure_emulator, name="azuretime")
    return AzureCloud(environment, service_in(environment))


@pytest.fixture(scope="module")
def provisioned(azure_cloud: AzureCloud) -> float:
    """Provision; returns how long the gateway's creation took."""
    topology = topology_of(azure_cloud)
    azure_cloud.infrastructure.ensure_foundation(topology, azure_cloud.service, lambda _: None)
    started = time.monotonic()
    azure_cloud.infrastructure.ensure_gateway(topology, azure_cloud.service, lambda _: None)
    return time.monotonic() - started


def test_the_grain_is_a_minute_and_metric_queries_use_it(azure_cloud: AzureCloud, provisioned: float) -> None:
    topology = topology_of(azure_cloud)

    timing = azure_cloud.telemetry.timing(topology)

    assert timing == MetricTiming.for_grain(60.0) and timing.in_minutes
    # Azure refuses PT1S ("Invalid time grain duration"); at PT1M the query is answered (the
    # current minute has no data yet).
    now = datetime.now(UTC)
    assert azure_cloud.telemetry.requests_by_backend(topology, now - timedelta(minutes=2), now, "blue") == {}
    assert azure_cloud.telemetry.pool_requests(topology, now - timedelta(minutes=2), now, "blue").total == 0


def test_slow_writes_without_retry_after_are_polled_at_switchyards_pace_not_every_30_s(
    azure_cloud: AzureCloud, provisioned: float
) -> None:
    topology = topology_of(azure_cloud)
    # The emulator's default for switchyard: a poll every 50 ms.
    assert WRITE_S <= provisioned < WRITE_S + 5

    # The environment's own interval is the pace: the first poll comes after it.
    slow = AzureCloud(azure_cloud.environment.model_copy(update={"lro_polling_interval_s": 4.0}), azure_cloud.service)
    started = time.monotonic()
    slow.router.tag(topology, {"switchyard.note": "paced"}, str(slow.router.observe(topology).etag))
    assert 4.0 <= time.monotonic() - started < 10


def test_autoscale_gets_a_grain_of_a_minute(
    azure_cloud: AzureCloud, azure_emulator: EmulatorHandle, provisioned: float, tmp_path: Path
) -> None:
    topology: Topology = topology_of(azure_cloud)
    publish(azure_cloud, pack_sample_image(tmp_path, app_version="1.0.0", gallery_version=V1), V1)
    azure_cloud.scale_sets.roll_out(topology, Color.BLUE, image_version=V1, capacity=1)

    # The azure profile refuses autoscale grains under a minute, as Azure does.
    azure_cloud.infrastructure.ensure_autoscale(topology, azure_cloud.service, Color.BLUE)

    clients: EmulatorClients = azure_emulator.clients()
    try:
        (setting,) = clients.monitor.autoscale_settings.list_by_resource_group(azure_cloud.environment.resource_group)
    finally:
        clients.close()
    assert setting.name == topology.autoscale_setting(Color.BLUE) and setting.enabled
    assert setting.profiles[0].rules[0].metric_trigger.time_grain == timedelta(minutes=1)
    provision(azure_cloud)  # provisioning again keeps working on Azure's clock
