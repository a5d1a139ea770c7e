"""The gateway's side of the telemetry DB: the access log, backend health samples, and the bytes
carried to and from each backend (backend_traffic).

The proxy appends rows to an in-memory batch (no I/O on the request path); a writer thread
commits batches to SQLite (WAL, so the emulator process can read while the worker writes) at most
~100 ms after they were made, and `flush()` forces everything recorded so far to disk. The tables
are defined once, in dataplane/telemetry.py (GATEWAY_SCHEMA), for writers and readers alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane.telemetry import GATEWAY_SCHEMA

log = logging.getLogger(__name__)

_INSERT_ACCESS = "INSERT INTO access_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_HEALTH = "INSERT INTO backend_health_samples VALUES (?,?,?,?,?,?)"
_INSERT_TRAFFIC = "INSERT INTO backend_traffic VALUES (?,?,?,?,?)"

# Rows in the order of the access_log columns.
AccessRow = tuple[
    float,  # ts
    str,  # gateway_id
    str | None,  # listener
    str | None,  # rule
    str | None,  # pool
    str | None,  # settings
    str | None,  # backend
    str | None,  # method
    str | None,  # path
    str | None,  # client
    int,  # status
    int | None,  # backend_status
    float,  # time_taken_ms
    float | None,  # backend_time_ms
    int,  # bytes_in
    int,  # bytes_out
]
HealthRow = tuple[float, str, str, str, int, int]
# (ts, gateway_id, backend address, bytes gateway -> backend, bytes backend -> gateway)
TrafficRow = tuple[float, str, str, int, int]

BATCH_INTERVAL_S = 0.1
# If the DB stays unwritable, keep at most this many rows waiting (oldest dropped, with a warning)
# so a stuck disk cannot grow the worker without bound.
MAX_PENDING_ROWS = 500_000


class TelemetryError(RuntimeError):
    pass


def open_telemetry_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(GATEWAY_SCHEMA)
    return db


class TelemetryWriter:
    """Owns one SQLite connection on a private thread; everything else only enqueues."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._access: list[AccessRow] = []
        self._health: list[HealthRow] = []
        self._traffic: list[TrafficRow] = []
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._thread.start()
        await asyncio.wrap_future(self._ready)  # raises if the DB cannot be opened
        self._ticker = asyncio.create_task(self._tick(), name="telemetry batches")

    def record_access(self, row: AccessRow) -> None:
        self._access.append(row)

    def record_health(self, row: HealthRow) -> None:
        self._health.append(row)

    def record_traffic(self, row: TrafficRow) -> None:
        self._traffic.append(row)

    async def flush(self) -> None:
        """Return once every row recorded before this call is committed."""
        self._hand_over()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(("flush", done))
        await asyncio.wrap_future(done)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if not self._thread.is_alive():
            return
        try:
            await self.flush()
        except TelemetryError:
            log.exception("telemetry rows lost at shutdown")
        self._queue.put(("stop", None))
        await asyncio.to_thread(self._thread.join, 10.0)

    def _hand_over(self) -> None:
        if self._access or self._health or self._traffic:
            self._queue.put(("rows", (self._access, self._health, self._traffic)))
            self._access, self._health, self._traffic = [], [], []

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(BATCH_INTERVAL_S)
            self._hand_over()

    def _run(self) -> None:
        try:
            db = open_telemetry_db(self._db_path)
        except Exception as error:
            self._ready.set_exception(TelemetryError(f"cannot open telemetry DB {self._db_path}: {error}"))
            return
        self._ready.set_result(None)
        waiting_access: list[AccessRow] = []
        waiting_health: list[HealthRow] = []
        waiting_traffic: list[TrafficRow] = []
        last_error: str | None = None
        while True:
            kind, payload = self._queue.get()
            if kind == "rows":
                waiting_access.extend(payload[0])
                waiting_health.extend(payload[1])
                waiting_traffic.extend(payload[2])
                # Coalesce whatever else is already queued into the same transaction.
                while True:
                    try:
                        kind, payload = self._queue.get_nowait()
                    except queue.Empty:
                        kind = ""
                        break
                    if kind != "rows":
                        break
                    waiting_access.extend(payload[0])
                    waiting_health.extend(payload[1])
                    waiting_traffic.extend(payload[2])
            if waiting_access or waiting_health or waiting_traffic:
                try:
                    with db:
                        db.execute("BEGIN")
                        if waiting_access:
                            db.executemany(_INSERT_ACCESS, waiting_access)
                        if waiting_health:
                            db.executemany(_INSERT_HEALTH, waiting_health)
                        if waiting_traffic:
                            db.executemany(_INSERT_TRAFFIC, waiting_traffic)
                    waiting_access, waiting_health, waiting_traffic = [], [], []
                    last_error = None
                except sqlite3.Error as error:
                    last_error = str(error)
                    log.warning("telemetry write failed (will retry): %s", error)
                    if len(waiting_access) > MAX_PENDING_ROWS:
                        dropped = len(waiting_access) - MAX_PENDING_ROWS
                        del waiting_access[:dropped]
                        log.error("telemetry DB unwritable: dropped %d oldest access rows", dropped)
                    del waiting_health[: max(0, len(waiting_health) - MAX_PENDING_ROWS)]
                    del waiting_traffic[: max(0, len(waiting_traffic) - MAX_PENDING_ROWS)]
                    time.sleep(0.05)
            if kind == "flush":
                if last_error is None:
                    payload.set_result(None)
                else:
                    payload.set_exception(TelemetryError(f"telemetry DB write failed: {last_error}"))
            elif kind == "stop":
                db.close()
                return
