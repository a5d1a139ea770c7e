"""The telemetry database (DIR/telemetry.sqlite, WAL): what Azure Monitor answers are computed from.

Writers: the gateway worker process (access_log, backend_health_samples: GATEWAY_SCHEMA, which
gateway/telemetry.py creates from here) and the instance sampler here (instance_samples). Readers:
metrics and Log Analytics queries, autoscale. WAL lets readers run while writers append. The
schema is defined here only: the writers and the readers must agree on it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

GATEWAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_log (
  ts REAL NOT NULL,             -- unix seconds when the response finished
  gateway_id TEXT NOT NULL,     -- canonical lower-case ARM id (GatewaySpec.gateway_id)
  listener TEXT, rule TEXT, pool TEXT, settings TEXT,
  backend TEXT,                 -- "ip:port" of the backend, NULL if none was reachable
  method TEXT, path TEXT, client TEXT,
  status INTEGER NOT NULL,      -- status sent to the client
  backend_status INTEGER,       -- status from the backend, NULL if none
  time_taken_ms REAL NOT NULL,  -- total time at the gateway, first byte in to last byte out
  backend_time_ms REAL,         -- request sent to backend -> its last byte received
  bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_gw_ts ON access_log(gateway_id, ts);
CREATE TABLE IF NOT EXISTS backend_health_samples (
  ts REAL NOT NULL, gateway_id TEXT NOT NULL, pool TEXT NOT NULL, settings TEXT NOT NULL,
  healthy INTEGER NOT NULL, unhealthy INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS backend_health_gw_ts ON backend_health_samples(gateway_id, ts);
"""

INSTANCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_samples (
  ts REAL NOT NULL, scale_set_id TEXT NOT NULL, instance_id TEXT NOT NULL, vm_name TEXT NOT NULL,
  cpu_percent REAL NOT NULL, available_memory_bytes REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instance_samples_ss_ts ON instance_samples(scale_set_id, ts);
"""

BUSY_TIMEOUT_MS = 10_000


def canonical_id(resource_id: str) -> str:
    """The form ids are stored under in telemetry: lower-case, one leading '/', no trailing '/'."""
    return "/" + resource_id.strip().strip("/").lower()


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return connection


def ensure_schema(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(GATEWAY_SCHEMA + INSTANCE_SCHEMA)
        connection.commit()
    finally:
        connection.close()


InstanceSample = tuple[float, str, str, str, float, float]


class SampleWriter:
    """Appends instance samples and prunes all telemetry past its retention; used from a worker
    thread, one writer connection."""

    def __init__(self, path: Path) -> None:
        self._connection = connect(path)
        self._lock = threading.Lock()

    def write(self, samples: Iterable[InstanceSample]) -> None:
        rows = list(samples)
        if not rows:
            return
        with self._lock:
            self._connection.executemany(
                "INSERT INTO instance_samples(ts, scale_set_id, instance_id, vm_name, cpu_percent,"
                " available_memory_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._connection.commit()

    def prune(self, older_than_ts: float) -> None:
        """Forget all telemetry older than `older_than_ts`: instance samples, and the gateway worker's
        access log and health samples, which would otherwise grow with every request forever.

        Deletes go gateway by gateway so that each uses the (gateway_id, ts) index and holds the
        write lock only for the rows it removes; the gateway worker waits on its busy timeout."""
        with self._lock:
            connection = self._connection
            connection.execute("DELETE FROM instance_samples WHERE ts < ?", (older_than_ts,))
            connection.commit()
            for table in ("access_log", "backend_health_samples"):
                gateways = [row[0] for row in connection.execute(f"SELECT DISTINCT gateway_id FROM {table}")]
                for gateway_id in gateways:
                    connection.execute(
                        f"DELETE FROM {table} WHERE gateway_id = ? AND ts < ?", (gateway_id, older_than_ts)
                    )
                    connection.commit()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
