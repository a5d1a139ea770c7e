"""How `switchyard up` starts the stack's processes in the background, and stops them again.

Starts overlap (the Prefect server's first start is the long pole), so each one is a launch in a
thread. Whatever happens, each process that started is known, so that a failed `up` stops it, and
one still starting can be killed (see `up` in switchyard/stack/up.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from switchyard.stack.postgres import stop_postgres
from switchyard.stack.processes import ProcessRecord, kill_process_group, process_tree, stop_processes
from switchyard.stack.state import STOP_GRACE_S, StackError, component

Echo = Callable[[str], None]
# A launch tells its launcher how to find the process it spawned, so that an aborted `up` can kill
# a process that is still starting.
Register = Callable[[Callable[[], "subprocess.Popen[bytes] | None"]], None]


class Clock:
    def __init__(self, echo: Echo) -> None:
        self.start = time.monotonic()
        self.echo = echo

    def say(self, message: str) -> None:
        self.echo(f"[{time.monotonic() - self.start:5.1f}s] {message}")


def describe(error: BaseException) -> str:
    return str(error) if isinstance(error, StackError) else f"{type(error).__name__}: {error}"


def stop_because(record: ProcessRecord, name: str, clock: Clock, why: str) -> None:
    clock.say(f"{name} (pid {record.pid}) {why}: stopping it")
    stop_one(name, record)


def stop_one(name: str, record: ProcessRecord) -> list[int]:
    """Stop one of the stack's processes with everything it started; return the survivors' pids."""
    if component(name) == "postgres":
        return stop_postgres(record, STOP_GRACE_S["postgres"])
    return [stat.pid for stat in stop_processes([process_tree(record)], STOP_GRACE_S[component(name)])]


class Launches:
    """Background starts of long-running processes: whatever happens, each one that started is
    known, so that a failure stops it, and one still starting can be killed."""

    def __init__(self, threads: ThreadPoolExecutor) -> None:
        self.threads = threads
        self.pending: dict[str, Future[ProcessRecord]] = {}
        self.handles: dict[str, Callable[[], subprocess.Popen[bytes] | None]] = {}
        self.started: dict[str, ProcessRecord] = {}

    def launch(self, name: str, start: Callable[[Register], ProcessRecord]) -> None:
        def register(handle: Callable[[], subprocess.Popen[bytes] | None]) -> None:
            self.handles[name] = handle

        self.pending[name] = self.threads.submit(start, register)

    def wait(self, name: str) -> ProcessRecord:
        future = self.pending.pop(name)
        record = future.result()
        self.started[name] = record
        return record

    def failed(self, name: str) -> bool:
        future = self.pending.get(name)
        return future is not None and future.done() and future.exception() is not None

    def abort(self) -> list[str]:
        """Kill the processes of launches that are still starting; return their names."""
        killed = []
        for name, future in self.pending.items():
            process = self.handles.get(name, lambda: None)()
            if not future.done() and process is not None and process.poll() is None:
                kill_process_group(process.pid)
                killed.append(name)
        return killed

    def settle(self) -> list[str]:
        """Wait for every pending start; record what started, return what failed."""
        errors = []
        for name in list(self.pending):
            try:
                self.wait(name)
            except Exception as error:
                errors.append(describe(error))
        return errors


def collect(jobs: list[Future[None]]) -> list[str]:
    errors = []
    for job in jobs:
        try:
            job.result()
        except Exception as error:
            errors.append(describe(error))
    return errors
