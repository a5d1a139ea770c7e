"""Fixtures for the Azure adapter's port tests: a real emulator process per test module and an
AzureCloud built from an AzureEnvironment that names the emulator's emulator.json, as a user's
configuration does. Nothing is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.core.config import AzureEnvironment
from switchyard.core.topology import Topology
from switchyard_emulator.testing import EmulatorHandle, pack_sample_image, run_emulator
from tests.integration.cloud.cloud_support import (
    BROKEN,
    FAILING,
    V1,
    V2,
    environment_on,
    service_in,
    topology_of,
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    # --lro-retry-after 0: the adapter's own 50 ms polling, as on the local stack.
    with run_emulator(tmp_path_factory.mktemp("emulator"), extra_args=["--lro-retry-after", "0"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def environment(emulator: EmulatorHandle) -> AzureEnvironment:
    return environment_on(emulator)


@pytest.fixture(scope="module")
def cloud(environment: AzureEnvironment) -> AzureCloud:
    return AzureCloud(environment, service_in(environment))


@pytest.fixture(scope="module")
def topology(cloud: AzureCloud) -> Topology:
    return topology_of(cloud)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local image artifacts of the sample app (what Packer's local template produces)."""
    out = tmp_path_factory.mktemp("artifacts")
    return {
        V1: pack_sample_image(out, app_version="1.0.0", gallery_version=V1),
        V2: pack_sample_image(out, app_version="2.0.0", gallery_version=V2),
        FAILING: pack_sample_image(
            out, app_version="3.0.0", gallery_version=FAILING, fault_profile={"error_rate": 1.0}
        ),
        BROKEN: pack_sample_image(
            out,
            app_version="9.0.0",
            gallery_version=BROKEN,
            entrypoint=["python3", "-c", "import sys; print('boom: cannot start'); sys.exit(3)"],
        ),
    }
