"""The stack's process workers: as many as asked for, each polling the local work pool.

A worker counts as started once the Prefect server has its heartbeat; one that polled a previous
server, is more than asked for or runs another number of flow runs at once is stopped.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from switchyard.stack.launches import Clock, Launches, Register, stop_because
from switchyard.stack.processes import ProcessRecord, log_tail, process_tree, spawn, stop_processes
from switchyard.stack.state import (
    STOP_GRACE_S,
    WORK_POOL,
    WORKER_HEARTBEAT_SECONDS,
    WORKER_ONLINE_TIMEOUT_S,
    WORKER_QUERY_SECONDS,
    StackError,
    StackPaths,
    client_environment,
    component,
    prefect_client_settings,
    worker_name,
    worker_process,
)


def _worker_argv(number: int, limit: int) -> list[str]:
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"]
    argv += ["--name", worker_name(number)]
    # A limit is what spreads runs: a worker without one takes every run that is due when it polls.
    return argv + (["--limit", str(limit)] if limit else [])


def _running_limit(record: ProcessRecord) -> int:
    """The --limit a running worker was started with (0: none)."""
    argv = record.argv
    return int(argv[argv.index("--limit") + 1]) if "--limit" in argv[:-1] else 0


async def _worker_online(name: str, since: datetime) -> bool:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        workers = await client.read_workers_for_work_pool(WORK_POOL)
    return any(w.name == name and w.last_heartbeat_time is not None and w.last_heartbeat_time >= since for w in workers)


def _start_worker(
    paths: StackPaths, api_url: str, number: int, limit: int, clock: Clock, register: Register
) -> ProcessRecord:
    env = {
        **client_environment(paths, api_url),
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        "PREFECT_WORKER_HEARTBEAT_SECONDS": str(WORKER_HEARTBEAT_SECONDS),
    }
    argv = _worker_argv(number, limit)
    name = worker_name(number)
    since = datetime.now(UTC)
    process, record = spawn(argv, env=env, log=paths.logs_dir / f"{worker_process(number)}.log")
    register(lambda: process)
    deadline = time.monotonic() + WORKER_ONLINE_TIMEOUT_S
    with prefect_client_settings(paths, api_url):
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"the worker exited with code {process.returncode}:\n{log_tail(record.log)}")
            if asyncio.run(_worker_online(name, since)):
                clock.say(f"worker {name} polls work pool {WORK_POOL} (pid {process.pid})")
                return record
            time.sleep(0.5)
    stop_processes([process_tree(record)], STOP_GRACE_S["worker"])
    raise StackError(
        f"worker {name} did not come online within {WORKER_ONLINE_TIMEOUT_S:.0f} s:\n{log_tail(record.log)}"
    )


def ensure_workers(
    workers: int | None,
    worker_limit: int | None,
    kept: dict[str, ProcessRecord],
    paths: StackPaths,
    api_url: str,
    clock: Clock,
    launches: Launches,
) -> dict[str, ProcessRecord]:
    """As many process workers as asked for (default: as many as run now, at least one). Workers
    that polled a previous Prefect server, or that are more than asked for, are stopped."""
    running = {name: record for name, record in kept.items() if component(name) == "worker"}
    count = workers or max(1, len(running))
    limits = {_running_limit(record) for record in running.values()}
    limit = worker_limit if worker_limit is not None else (limits.pop() if len(limits) == 1 else 0)
    keep: dict[str, ProcessRecord] = {}
    for name, record in sorted(running.items()):
        if "prefect_server" in launches.started or "prefect_server" in launches.pending:
            stop_because(record, name, clock, "polled the previous Prefect server")
        elif name not in {worker_process(n) for n in range(1, count + 1)}:
            stop_because(record, name, clock, f"is more than the {count} worker(s) asked for")
        elif _running_limit(record) != limit:
            stop_because(
                record, name, clock, f"runs {_running_limit(record) or 'any number of'} flow runs at once, not {limit}"
            )
        else:
            keep[name] = record
    for number in range(1, count + 1):
        name = worker_process(number)
        if name in keep:
            clock.say(f"worker already running: {worker_name(number)} (pid {keep[name].pid})")
            continue
        clock.say(f"starting worker {worker_name(number)} on work pool {WORK_POOL} ...")
        launches.launch(name, lambda register, n=number: _start_worker(paths, api_url, n, limit, clock, register))  # type: ignore[misc]
    return keep
