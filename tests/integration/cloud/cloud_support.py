"""What the Azure adapter's port tests share: an environment and a service pointed at a test
emulator, image versions to publish, and plain HTTP through the gateway the adapter configured.

Everything goes through real components: the emulator process, the azure-mgmt SDKs that
switchyard.cloud.azure drives, and the sample app's instances answering on their own addresses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from switchyard.cloud.azure import AzureCloud
from switchyard.core.config import AzureEnvironment, FrontendPorts, ServiceConfig
from switchyard.core.state import ImageObservation
from switchyard.core.topology import Color, Topology
from switchyard_emulator.testing import SAMPLE_APP_DIR, EmulatorHandle, free_port

T = TypeVar("T")

SSH_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAXsfOsE8trh0NAvE12UTiUqaCx182iU5QpAvgBN1Esf switchyard-test (key discarded)"
)

# Where the tests' own clients connect from.
TEST_RUNNER_PREFIX = "127.0.0.1/32"

# Gallery versions (MAJOR.MINOR.PATCH = app 1.0.0 / 2.0.0, patch level 2026.11, base debian-12).
V1 = "1000000.20261100.1"
V2 = "2000000.20261100.1"
# Serves /version and /health, but answers every /work/ request with HTTP 500.
FAILING = "3000000.20261100.1"
# Its service exits at once, so its instances never start.
BROKEN = "9000000.20261100.1"


def environment_on(emulator: EmulatorHandle, name: str = "porttest") -> AzureEnvironment:
    """An environment on the emulator, built the way a user configures one (blocks, fleet.yaml):
    its own resource group, the gallery in a group of its own, a second replication region. The test
    listener admits this machine's clients (they connect from 127.0.0.1, an Internet address to the
    emulator's network security groups)."""
    return AzureEnvironment(
        name=name,
        auth="emulator",
        emulator_file=str(emulator.state_dir / "emulator.json"),
        resource_group=f"switchyard-{name}",
        gallery_resource_group=f"switchyard-{name}-images",
        location="westeurope",
        target_regions=["northeurope"],
        ssh_public_key=SSH_PUBLIC_KEY,
        test_source_prefixes=[TEST_RUNNER_PREFIX],
    )


def service_in(environment: AzureEnvironment, name: str = "shop", **changes: Any) -> ServiceConfig:
    """The sample app as a service of `environment`, on free frontend ports, with fast probes."""
    settings: dict[str, Any] = {
        "name": name,
        "app_dir": str(SAMPLE_APP_DIR),
        "capacity": 2,
        "frontend_ports": {environment.name: FrontendPorts(production=free_port(), test=free_port())},
        "probe_interval_s": 1,
        "probe_timeout_s": 1,
        "probe_unhealthy_threshold": 2,
        "draining_timeout_s": 1,
        **changes,
    }
    return ServiceConfig.model_validate(settings)


def topology_of(cloud: AzureCloud) -> Topology:
    return Topology(service=cloud.service.name, environment=cloud.environment.name)


def publish(cloud: AzureCloud, artifact: Path, gallery_version: str, **tags: str) -> ImageObservation:
    """Publish a local image artifact as `gallery_version` of the cloud's service: uploaded as a page
    blob to the environment's storage account first, as Azure requires."""
    service = cloud.service
    cloud.gallery.ensure_image_definition(service.name, service.base)
    return cloud.gallery.publish(
        service.name,
        gallery_version,
        cloud.image_storage.stage(artifact, service.name, gallery_version),
        {"switchyard.service": service.name, **tags},
        cloud.environment.regions,
    )


def provision(cloud: AzureCloud) -> None:
    """Network, public IP, gallery image definition and gateway: what `provision` creates."""
    topology = topology_of(cloud)
    cloud.infrastructure.ensure_foundation(topology, cloud.service, _discard)
    cloud.infrastructure.ensure_gateway(topology, cloud.service, _discard)


def deploy_both_colors(cloud: AzureCloud, artifacts: dict[str, Path], blue: str = V1, green: str = V2) -> None:
    """Provision, then run `blue` on the blue scale set (production) and `green` on green (test),
    and wait until the gateway's probes find every instance Up."""
    topology = topology_of(cloud)
    provision(cloud)
    for color, version in ((Color.BLUE, blue), (Color.GREEN, green)):
        if not cloud.gallery.image_version(cloud.service.name, version).exists:
            publish(cloud, artifacts[version], version)
        cloud.scale_sets.roll_out(topology, color, image_version=version, capacity=cloud.service.capacity)
    wait_until_healthy(cloud)


def wait_until_healthy(cloud: AzureCloud, timeout_s: float = 60.0) -> None:
    topology = topology_of(cloud)

    def every_member_up() -> bool:
        # The gateway probes the pools its rules route to (an unrouted pool has no backend health).
        gateway = cloud.router.observe(topology)
        routed = [gateway.pools[name] for name in (gateway.production_pool, gateway.test_pool) if name]
        return all(pool.healthy(pool.member_addresses) for pool in routed)

    eventually(every_member_up, timeout_s=timeout_s)


def gateway_port(cloud: AzureCloud, listener: str) -> int:
    ports = cloud.service.ports_in(cloud.environment.name)
    return ports.production if listener == "production" else ports.test


def listener_address(cloud: AzureCloud, listener: str) -> tuple[str, int]:
    """Where a client reaches `listener`: production on the public frontend, test on the private one."""
    topology = topology_of(cloud)
    address = (
        cloud.router.frontend_address(topology) if listener == "production" else cloud.router.test_address(topology)
    )
    return address, gateway_port(cloud, listener)


def backends_reached(cloud: AzureCloud, listener: str, requests: int) -> Counter[tuple[str, str]]:
    """(gallery version, instance id) of the backend that answered each of `requests` GET /version
    sent to `listener`: every answer names the instance and the image it runs."""
    address, port = listener_address(cloud, listener)
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(requests):
        response = get(address, port)
        response.raise_for_status()
        seen[(response.headers["X-Image-Version"], response.headers["X-Instance-Id"])] += 1
    return seen


def get(address: str, port: int, path: str = "/version") -> httpx.Response:
    """One plain HTTP request, the way a user's client sends it."""
    return httpx.get(f"http://{address}:{port}{path}", timeout=10)


def served_versions(address: str, port: int, requests: int) -> set[str]:
    """Gallery versions that answered `requests` GET /version through the gateway."""
    versions = set()
    for _ in range(requests):
        response = get(address, port)
        response.raise_for_status()
        versions.add(str(response.json()["gallery_version"]))
    return versions


def eventually(check: Callable[[], T | None], *, timeout_s: float = 30.0, interval_s: float = 0.2) -> T:
    """Poll until `check()` is truthy and return it; fail with its last value."""
    deadline = time.monotonic() + timeout_s
    last = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s; last value: {last!r}")
        time.sleep(interval_s)
        last = check()
    return last


def _discard(_: str) -> None:
    return None


SDK_REQUEST_LOG = "azure.core.pipeline.policies.http_logging_policy"


def requests_made(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The URLs the SDK asked for, from its own request log (caplog at INFO on SDK_REQUEST_LOG)."""
    return [record.getMessage() for record in caplog.records if "Request URL" in record.getMessage()]
