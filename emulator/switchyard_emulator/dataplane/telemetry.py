"""The telemetry database (DIR/telemetry.sqlite, WAL): what Azure Monitor answers are computed from.

Writers: the gateway worker process (access_log, backend_health_samples, backend_traffic:
GATEWAY_SCHEMA, which gateway/telemetry.py creates from here) and the instance sampler here
(instance_samples, instance_addresses). Readers:
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
-- Bytes on the wire between the gateway and one backend address (requests and health probes),
-- seen from the backend: what its VM's network interface received and sent. An instance's
-- "Network In Total" / "Network Out Total" are these rows of its address (instance_addresses).
CREATE TABLE IF NOT EXISTS backend_traffic (
  ts REAL NOT NULL, gateway_id TEXT NOT NULL,
  address TEXT NOT NULL,        -- the backend's IP
  bytes_in INTEGER NOT NULL,    -- gateway -> backend
  bytes_out INTEGER NOT NULL    -- backend -> gateway
);
CREATE INDEX IF NOT EXISTS backend_traffic_addr_ts ON backend_traffic(address, ts);
CREATE INDEX IF NOT EXISTS backend_traffic_gw_ts ON backend_traffic(gateway_id, ts);
"""

INSTANCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_samples (
  ts REAL NOT NULL, scale_set_id TEXT NOT NULL, instance_id TEXT NOT NULL, vm_name TEXT NOT NULL,
  cpu_percent REAL NOT NULL, available_memory_bytes REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instance_samples_ss_ts ON instance_samples(scale_set_id, ts);
-- Which instance held which address when: [since, until), until NULL while it still does.
CREATE TABLE IF NOT EXISTS instance_addresses (
  scale_set_id TEXT NOT NULL, instance_id TEXT NOT NULL, vm_name TEXT NOT NULL, ip TEXT NOT NULL,
  since REAL NOT NULL, until REAL
);
CREATE INDEX IF NOT EXISTS instance_addresses_ss ON instance_addresses(scale_set_id);
"""

# The network samples of scale-set instances: the gateway's traffic rows of each address, while
# an instance held it. Joined when a metric is queried, so rows that arrive late still count.
INSTANCE_NETWORK_SQL = """(
  SELECT t.ts AS ts, a.scale_set_id AS scale_set_id, a.instance_id AS instance_id, a.vm_name AS vm_name,
         t.bytes_in AS bytes_in, t.bytes_out AS bytes_out
  FROM instance_addresses a JOIN backend_traffic t
    ON t.address = a.ip AND t.ts >= a.since AND (a.until IS NULL OR t.ts < a.until)
)"""

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
# (scale set id, instance id, vm name, ip, since): an instance and the address it holds
InstanceAddress = tuple[str, str, str, str, float]


class SampleWriter:
    """Appends instance samples and prunes all telemetry past its retention; used from a worker
    thread, one writer connection."""

    def __init__(self, path: Path) -> None:
        self._connection = connect(path)
        self._lock = threading.Lock()
        self._open_addresses: set[tuple[str, str, str, str]] | None = None

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

    def record_addresses(self, current: Iterable[InstanceAddress], now: float) -> None:
        """Which instances hold which addresses now: an interval opens for each new one and closes
        for each that is gone (also those a previous emulator run left open)."""
        wanted = {(sid, iid, vm, ip): since for sid, iid, vm, ip, since in current}
        with self._lock:
            connection = self._connection
            if self._open_addresses is None:
                rows = connection.execute(
                    "SELECT scale_set_id, instance_id, vm_name, ip FROM instance_addresses WHERE until IS NULL"
                )
                self._open_addresses = {(r[0], r[1], r[2], r[3]) for r in rows}
            opened = self._open_addresses
            if set(wanted) == opened:
                return
            for key in opened - set(wanted):
                connection.execute(
                    "UPDATE instance_addresses SET until = ? WHERE scale_set_id = ? AND instance_id = ?"
                    " AND vm_name = ? AND ip = ? AND until IS NULL",
                    (now, *key),
                )
            for key in set(wanted) - opened:
                connection.execute(
                    "INSERT INTO instance_addresses(scale_set_id, instance_id, vm_name, ip, since, until)"
                    " VALUES (?, ?, ?, ?, ?, NULL)",
                    (*key, wanted[key]),
                )
            connection.commit()
            self._open_addresses = set(wanted)

    def prune(self, older_than_ts: float) -> None:
        """Forget all telemetry older than `older_than_ts`: instance samples, and the gateway worker's
        access log and health samples, which would otherwise grow with every request forever.

        Deletes go gateway by gateway so that each uses the (gateway_id, ts) index and holds the
        write lock only for the rows it removes; the gateway worker waits on its busy timeout."""
        with self._lock:
            connection = self._connection
            connection.execute("DELETE FROM instance_samples WHERE ts < ?", (older_than_ts,))
            connection.execute("DELETE FROM instance_addresses WHERE until < ?", (older_than_ts,))
            connection.commit()
            for table in ("access_log", "backend_health_samples", "backend_traffic"):
                gateways = [row[0] for row in connection.execute(f"SELECT DISTINCT gateway_id FROM {table}")]
                for gateway_id in gateways:
                    connection.execute(
                        f"DELETE FROM {table} WHERE gateway_id = ? AND ts < ?", (gateway_id, older_than_ts)
                    )
                    connection.commit()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
