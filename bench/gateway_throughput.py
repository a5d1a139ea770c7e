"""Gateway throughput and added latency, measured against a direct baseline in the same run.

    python bench/gateway_throughput.py [--duration 5] [--concurrency 16] [--rate 1000]

Starts one backend process (a minimal keep-alive HTTP server, also in this file) and a real
GatewayFleet whose pool holds that same backend, then drives load with an asyncio client over
keep-alive connections:

1. throughput: closed loop, `concurrency` connections, `duration` seconds -> requests/s,
   directly against the backend and through the gateway;
2. latency: open loop at a fixed `rate` (requests are due on a fixed schedule; latency is counted
   from when a request was due, so a stalled server cannot hide its queue) -> p50/p99, directly
   and through the gateway. added_* = gateway minus direct. The two streams run at the same time
   (each at `rate`), so a burst of outside load (this is a shared 2-core machine) lands on both
   paths alike instead of on whichever phase happened to be running.

Prints one JSON object as its last line and writes it to bench/results/gateway_throughput.json.
Targets: >= 1000 requests/s through the gateway, <= 5 ms added p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "gateway_throughput.json"
TARGET_RPS = 1000.0
TARGET_ADDED_P99_MS = 5.0
REQUEST = b"GET /work HTTP/1.1\r\nHost: bench\r\nUser-Agent: switchyard-bench\r\n\r\n"


# ---- the backend (runs as `python gateway_throughput.py --backend HOST PORT`) -----------------


class _BackendProtocol(asyncio.Protocol):
    """Answers every request with 200 "ok" on a keep-alive connection; bodiless requests only."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")


async def _serve_backend(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_BackendProtocol, host, port, reuse_address=True, backlog=1024)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


# ---- the load generator -----------------------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self) -> int:
        self.writer.write(REQUEST)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        marker = head.lower().find(b"content-length:")
        length = int(head[marker + 15 : head.find(b"\r\n", marker)]) if marker >= 0 else 0
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(host: str, port: int, concurrency: int, duration_s: float) -> tuple[int, int, float]:
    """(requests, errors, seconds) with `concurrency` connections each sending back to back."""
    connections = [await _Connection.open(port, host) for _ in range(concurrency)]
    deadline = time.perf_counter() + duration_s
    counts = [0, 0]

    async def run(conn: _Connection) -> None:
        while time.perf_counter() < deadline:
            try:
                status = await conn.get()
                counts[0 if status == 200 else 1] += 1
            except (OSError, asyncio.IncompleteReadError):
                counts[1] += 1
                return

    started = time.perf_counter()
    await asyncio.gather(*(run(conn) for conn in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return counts[0], counts[1], elapsed


async def open_loop(host: str, port: int, rate: float, duration_s: float) -> tuple[list[float], int]:
    """Latencies (ms, from each request's due time) at a fixed arrival rate, and the error count."""
    idle: list[_Connection] = [await _Connection.open(port, host) for _ in range(8)]
    latencies: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * duration_s)
    start = time.perf_counter() + 0.05

    async def fire(due: float) -> None:
        nonlocal errors
        conn = idle.pop() if idle else await _Connection.open(port, host)
        try:
            status = await conn.get()
            latencies.append((time.perf_counter() - due) * 1000.0)
            if status != 200:
                errors += 1
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            conn.close()

    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            task = asyncio.create_task(fire(start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.0005)
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


# ---- the run ----------------------------------------------------------------------------------


async def bench(duration_s: float, concurrency: int, rate: float) -> dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from switchyard_emulator.dataplane.api import (
        BackendSettingsSpec,
        GatewaySpec,
        ListenerSpec,
        PoolSpec,
        ProbeSpec,
        RuleSpec,
    )
    from switchyard_emulator.dataplane.gateway import GatewayFleet
    from switchyard_emulator.testing import free_port

    backend_ip = "127.77.0.1"
    backend_port = free_port(backend_ip)
    backend = subprocess.Popen(
        [sys.executable, __file__, "--backend", backend_ip, str(backend_port)], stdout=subprocess.PIPE
    )
    state = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    fleet = GatewayFleet(state, state / "telemetry.sqlite")
    try:
        assert backend.stdout is not None and backend.stdout.readline().strip() == b"READY"
        await fleet.start()
        gateway_port = free_port("127.0.0.1")
        spec = GatewaySpec(
            gateway_id="/subscriptions/bench/resourcegroups/bench/providers/microsoft.network/applicationgateways/bench",
            listeners=[ListenerSpec(name="production", port=gateway_port)],
            pools=[PoolSpec(name="blue", addresses=[backend_ip])],
            settings=[BackendSettingsSpec(name="service", port=backend_port, request_timeout_s=30, probe="health")],
            probes=[ProbeSpec(name="health", path="/health", interval_s=5, timeout_s=5, unhealthy_threshold=3)],
            rules=[RuleSpec(name="production", listener="production", pool="blue", settings="service", priority=1)],
        )
        await fleet.apply(spec)
        while (await fleet.health(spec.gateway_id))["blue"][0].health != "Up":
            await asyncio.sleep(0.05)

        targets = {"direct": (backend_ip, backend_port), "gateway": ("127.0.0.1", gateway_port)}
        for host, port in targets.values():  # warm up both paths (connections, code paths)
            await closed_loop(host, port, concurrency, 1.0)

        throughput: dict[str, tuple[int, int, float]] = {}
        for name, (host, port) in targets.items():
            throughput[name] = await closed_loop(host, port, concurrency, duration_s)
        streams = await asyncio.gather(*(open_loop(host, port, rate, duration_s) for host, port in targets.values()))
        latency = dict(zip(targets, streams, strict=True))
        await fleet.flush()
    finally:
        await fleet.stop()
        backend.kill()
        backend.wait()
        shutil.rmtree(state, ignore_errors=True)

    def rps(name: str) -> float:
        ok, _, elapsed = throughput[name]
        return ok / elapsed

    lat = {name: values for name, (values, _) in latency.items()}
    result: dict[str, object] = {
        "gateway_rps": round(rps("gateway"), 1),
        "direct_rps": round(rps("direct"), 1),
        "added_p50_ms": round(percentile(lat["gateway"], 50) - percentile(lat["direct"], 50), 3),
        "added_p99_ms": round(percentile(lat["gateway"], 99) - percentile(lat["direct"], 99), 3),
        "gateway_p50_ms": round(percentile(lat["gateway"], 50), 3),
        "gateway_p99_ms": round(percentile(lat["gateway"], 99), 3),
        "direct_p50_ms": round(percentile(lat["direct"], 50), 3),
        "direct_p99_ms": round(percentile(lat["direct"], 99), 3),
        "gateway_mean_ms": round(statistics.fmean(lat["gateway"]), 3),
        "requests": sum(t[0] + t[1] for t in throughput.values()) + sum(len(v) + e for v, e in latency.values()),
        "errors": sum(t[1] for t in throughput.values()) + sum(e for _, e in latency.values()),
        "latency_rate_rps": rate,
        "latency_method": "open loop; direct and gateway streams concurrently, each at latency_rate_rps",
        "gateway_max_ms": round(max(lat["gateway"]), 3),
        "direct_max_ms": round(max(lat["direct"]), 3),
        "concurrency": concurrency,
        "duration_s": duration_s,
        "load_generator": "python asyncio, keep-alive connections"
        + ("" if shutil.which("wrk") is None else " (wrk is installed but not used)"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "target_gateway_rps": TARGET_RPS,
        "target_added_p99_ms": TARGET_ADDED_P99_MS,
    }
    result["meets_targets"] = (
        float(result["gateway_rps"]) >= TARGET_RPS  # type: ignore[arg-type]
        and float(result["added_p99_ms"]) <= TARGET_ADDED_P99_MS  # type: ignore[arg-type]
        and result["errors"] == 0
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in the throughput phase")
    parser.add_argument("--rate", type=float, default=TARGET_RPS, help="requests/s in the latency phase")
    parser.add_argument("--backend", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        asyncio.run(_serve_backend(args.backend[0], int(args.backend[1])))
        return
    result = asyncio.run(bench(args.duration, args.concurrency, args.rate))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
