"""Helpers for the data plane integration tests: image artifacts packed from apps/sample, loopback
address blocks, a minimal control plane (ArmFacade) and waits. Everything runs for real: the
sample service as real processes, the gateway worker, HTTP over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import socket
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane.api import InstanceSpec
from switchyard_emulator.dataplane.local import LocalDataPlane
from switchyard_emulator.dataplane.procfs import is_alive
from switchyard_emulator.dataplane.supervisor import SupervisorSettings

REPO = Path(__file__).resolve().parents[3]
SAMPLE_APP = REPO / "apps" / "sample" / "app"
SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-00000000b002/resourcegroups/rg-dataplane"


def scale_set_id(name: str) -> str:
    return f"{SUBSCRIPTION}/providers/microsoft.compute/virtualmachinescalesets/{name}"


def gateway_id(name: str) -> str:
    return f"{SUBSCRIPTION}/providers/microsoft.network/applicationgateways/{name}"


def pack_artifact(
    directory: Path,
    *,
    name: str = "sample",
    app_version: str = "1.0.0",
    fault_profile: dict[str, Any] | None = None,
    entrypoint: list[str] | None = None,
) -> Path:
    """A local image like Packer's: manifest.json + app/ (from apps/sample/app) in a .tar.gz."""
    manifest = {
        "schema": "switchyard.image/v1",
        "name": name,
        "base": "debian-12",
        "patch_level": "2026.11",
        "app_version": app_version,
        "gallery_version": "1000000.20261100.1",
        "git_commit": "0123abcd",
        "entrypoint": entrypoint or ["python3", "app/server.py"],
        "service_port": 8000,
        "health_path": "/health",
        "fault_profile": {
            "error_rate": 0.0,
            "extra_latency_ms": 0,
            "fail_health": False,
            **(fault_profile or {}),
        },
        "built_at": "2026-11-26T10:00:00Z",
    }
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{app_version}-{abs(hash(json.dumps(manifest, sort_keys=True))) % 10**8}"
    artifact = directory / f"{name}-{tag}.tar.gz"
    manifest_file = directory / f"manifest-{tag}.json"
    manifest_file.write_text(json.dumps(manifest))
    with tarfile.open(artifact, "w:gz") as archive:
        archive.add(manifest_file, arcname="manifest.json")
        archive.add(SAMPLE_APP, arcname="app", filter=lambda info: None if "__pycache__" in info.name else info)
    return artifact


@dataclass(frozen=True)
class AddressBlock:
    """A random 127.a.b.0/24 block (never 127.0.0.x) and a service port free on it."""

    prefix: str
    port: int

    def ip(self, index: int) -> str:
        return f"{self.prefix}.{index + 2}"


def address_block() -> AddressBlock:
    for _ in range(50):
        prefix = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
        port = random.randint(20_000, 60_000)
        probe = socket.socket()
        try:
            probe.bind((f"{prefix}.2", port))
        except OSError:
            continue
        finally:
            probe.close()
        return AddressBlock(prefix, port)
    raise RuntimeError("no free loopback address block found")


def specs(
    block: AddressBlock, artifact: Path, count: int, *, vmss: str = "sample-test-blue", generation: int = 1
) -> list[InstanceSpec]:
    return [
        InstanceSpec(
            instance_id=str(index),
            vm_name=f"{vmss}_{index}",
            ip=block.ip(index),
            port=block.port,
            artifact_path=str(artifact),
            generation=generation,
        )
        for index in range(count)
    ]


@dataclass
class MiniArm:
    """The part of the control plane the data plane calls (ArmFacade): resources by type, and
    capacity changes that re-sync the scale set's instances the way the control plane does."""

    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    capacity_changes: list[tuple[str, int, str]] = field(default_factory=list)
    on_capacity: Callable[[str, int], Awaitable[None]] | None = None

    def list_resources(self, resource_type: str) -> list[dict[str, Any]]:
        return [dict(resource) for resource in self.resources.get(resource_type.lower(), [])]

    def resource(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        wanted = resource_id.strip("/").lower()
        found = [r for r in self.resources.get(resource_type.lower(), []) if r["id"].strip("/").lower() == wanted]
        return dict(found[0]) if found else None

    async def set_scale_set_capacity(self, scale_set_id: str, capacity: int, reason: str) -> None:
        self.capacity_changes.append((scale_set_id, capacity, reason))
        for resource in self.resources.get("microsoft.compute/virtualmachinescalesets", []):
            if resource["id"].lower() == scale_set_id.lower():
                resource["sku"]["capacity"] = capacity
        if self.on_capacity is not None:
            await self.on_capacity(scale_set_id, capacity)


FAST = SupervisorSettings(start_timeout_s=20.0, stop_grace_s=5.0)


@contextlib.asynccontextmanager
async def running_dataplane(
    state_dir: Path, arm: MiniArm | None = None, **options: Any
) -> AsyncIterator[LocalDataPlane]:
    options.setdefault("supervisor_settings", FAST)
    dataplane = LocalDataPlane(state_dir, **options)
    await dataplane.start(arm or MiniArm())
    try:
        yield dataplane
    finally:
        await dataplane.stop()


async def wait_for(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0
) -> None:
    """Poll until `condition` holds; fail naming `what` (a deadline, never a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def all_running(dataplane: LocalDataPlane, vmss_id: str, count: int, generation: int | None = None) -> bool:
    states = dataplane.instance_states(vmss_id)
    live = [s for s in states.values() if s.state == "running" and (generation is None or s.generation == generation)]
    return len(live) == count


def http_get(ip: str, port: int, path: str, timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(ip, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has exited; only its parent has not reaped it yet)."""
    return is_alive(pid)
