"""Fixtures: a real emulator process per test module, real SDK clients, real image artifacts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard_emulator.testing import (
    EmulatorClients,
    EmulatorHandle,
    SampleTopology,
    pack_sample_image,
    run_emulator,
)

# Long-running operations are polled every 50 ms in these tests (the emulator leaves the
# interval to the client with --lro-retry-after 0); the acceptance test runs with the defaults.
FAST = ["--lro-retry-after", "0", "--page-size", "3"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path_factory.mktemp("emulator"), extra_args=FAST) as handle:
        yield handle


@pytest.fixture(scope="module")
def clients(emulator: EmulatorHandle) -> Iterator[EmulatorClients]:
    made = emulator.clients(polling_interval=0.05)
    yield made
    made.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("artifacts")
    return {
        "1.0.0": pack_sample_image(out, app_version="1.0.0", gallery_version="1.0.0"),
        "2.0.0": pack_sample_image(out, app_version="2.0.0", gallery_version="2.0.0"),
        "3.0.0": pack_sample_image(out, app_version="3.0.0", gallery_version="3.0.0"),
        # an image whose service exits at once: its instances fail
        "broken": pack_sample_image(
            out,
            app_version="9.9.9",
            gallery_version="9.9.9",
            entrypoint=["python3", "-c", "import sys; print('boom: cannot start'); sys.exit(3)"],
        ),
    }


@pytest.fixture
def topo(request: pytest.FixtureRequest, emulator: EmulatorHandle, clients: EmulatorClients) -> SampleTopology:
    """A fresh resource group per test (the emulator is shared by the module)."""
    # Truncated names of one test's parametrizations would collide (and a version published again from
    # another blob is refused, as on Azure): a digest of the whole name keeps them apart.
    digest = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:50]
    return SampleTopology(clients, emulator.subscription_id, f"rg-{name}-{digest}")


@pytest.fixture
def http(emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    """A plain HTTPS client with the emulator's token, for wire-level assertions."""
    with httpx.Client(
        base_url=emulator.endpoint,
        verify=emulator.ca_bundle,
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=30,
    ) as client:
        yield client
