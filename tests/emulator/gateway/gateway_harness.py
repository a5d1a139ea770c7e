"""Helpers for the gateway data plane tests: real backend processes on their own loopback
addresses, a real GatewayFleet (worker subprocess), spec builders and waits."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from switchyard_emulator.dataplane.api import (
    BackendSettingsSpec,
    GatewaySpec,
    ListenerSpec,
    PoolSpec,
    ProbeSpec,
    RuleSpec,
)
from switchyard_emulator.dataplane.gateway import GatewayFleet
from switchyard_emulator.dataplane.procfs import children, is_alive
from switchyard_emulator.testing import free_port

BACKEND_APP = Path(__file__).with_name("backend_app.py")
GATEWAY_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg"
    "/providers/microsoft.network/applicationgateways/sample-test-agw"
)


@dataclass
class Backend:
    name: str
    ip: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class BackendSet:
    port: int
    backends: list[Backend] = field(default_factory=list)

    def __getitem__(self, index: int) -> Backend:
        return self.backends[index]

    def by_name(self) -> dict[str, Backend]:
        return {backend.name: backend for backend in self.backends}


def start_backend_set(count: int, started: list[Backend]) -> BackendSet:
    """`count` backend processes named b0.., each on its own 127.x.y.z, all on one service port
    (like scale-set instances on different VMs). Appends them to `started` for cleanup."""
    for _ in range(20):
        block = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}"
        port = free_port(f"{block}.1")
        backends: list[Backend] = []
        try:
            for index in range(count):
                ip = f"{block}.{index + 1}"
                process = subprocess.Popen(
                    [sys.executable, str(BACKEND_APP), ip, str(port), f"b{index}"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                backends.append(Backend(f"b{index}", ip, port, process))
                started.append(backends[-1])
                assert process.stdout is not None
                if process.stdout.readline().strip() != b"READY":
                    raise OSError(f"backend on {ip}:{port} did not start")
            return BackendSet(port, backends)
        except OSError:
            for backend in backends:
                backend.kill()
    raise RuntimeError("could not start test backends")


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    return is_alive(pid)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def running_fleet(state_dir: Path) -> AsyncIterator[GatewayFleet]:
    fleet = GatewayFleet(state_dir, state_dir / "telemetry.sqlite")
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def make_spec(
    pools: dict[str, list[str]],
    listeners: dict[str, int],
    rules: dict[str, tuple[str, str]],
    service_port: int,
    *,
    probe_interval_s: float = 0.2,
    probe_timeout_s: float = 1.0,
    unhealthy_threshold: int = 2,
    request_timeout_s: float = 5.0,
    draining_timeout_s: float = 0.0,
    gateway_id: str = GATEWAY_ID,
) -> GatewaySpec:
    """rules: rule name -> (listener, pool); every rule uses backend settings "service"."""
    return GatewaySpec(
        gateway_id=gateway_id,
        listeners=[ListenerSpec(name=name, port=port) for name, port in listeners.items()],
        pools=[PoolSpec(name=name, addresses=addresses) for name, addresses in pools.items()],
        settings=[
            BackendSettingsSpec(
                name="service",
                port=service_port,
                request_timeout_s=request_timeout_s,
                probe="health",
                draining_timeout_s=draining_timeout_s,
            )
        ],
        probes=[
            ProbeSpec(
                name="health",
                path="/health",
                interval_s=probe_interval_s,
                timeout_s=probe_timeout_s,
                unhealthy_threshold=unhealthy_threshold,
            )
        ],
        rules=[
            RuleSpec(name=name, listener=listener, pool=pool, settings="service", priority=100 + index)
            for index, (name, (listener, pool)) in enumerate(rules.items())
        ],
    )


async def wait_for_health(
    fleet: GatewayFleet, gateway_id: str, expected: dict[str, str], timeout_s: float = 15.0
) -> dict[str, str]:
    """Poll health() until each listed address has the expected state; returns address -> log."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await fleet.health(gateway_id)
        states = {server.address: server.health for servers in report.values() for server in servers}
        logs = {server.address: server.log for servers in report.values() for server in servers}
        if all(states.get(address) == state for address, state in expected.items()):
            return logs
        if time.monotonic() > deadline:
            raise AssertionError(f"health never reached {expected}; last report: {report}")
        await asyncio.sleep(0.05)


async def wait_for_inflight(backend: Backend, count: int, timeout_s: float = 15.0) -> None:
    """Wait until `backend` is serving `count` /sleep requests (they reached it through the gateway)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while int((await client.get(f"http://{backend.address}/admin/inflight")).text) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{backend.name} never had {count} request(s) in flight")
            await asyncio.sleep(0.02)


def worker_children(pid: int) -> list[int]:
    return children(pid)
