"""Contract tests: the Azure REST API spec examples in tests/fixtures/azure-rest-examples, replayed
through the real azure-mgmt SDK clients against a real emulator process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract_world import World

from switchyard_emulator.testing import EmulatorHandle, pack_sample_image, run_emulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path_factory.mktemp("contract-emulator"), extra_args=["--lro-retry-after", "0"]) as handle:
        yield handle


@pytest.fixture(scope="session")
def world(emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    clients = emulator.clients(polling_interval=0.05)
    artifact = pack_sample_image(tmp_path_factory.mktemp("contract-artifacts"))
    yield World(emulator, clients, artifact)
    clients.close()
