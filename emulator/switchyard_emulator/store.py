"""The control plane's state: ARM resources, scale-set instance records, operations (SQLite).

One file, DIR/arm.sqlite, in WAL mode. Every write goes through `Store.write()`, which holds the
one writer lock and an IMMEDIATE transaction, so a request's read-validate-write is atomic: the
handlers never await inside a write block, and other threads (the data plane may call in through
the ArmFacade) wait for the lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
  key TEXT PRIMARY KEY,          -- lower-cased ARM id
  id TEXT NOT NULL,              -- ARM id with the casing it was created with
  type_key TEXT NOT NULL,        -- lower-cased full type, e.g. microsoft.compute/galleries/images
  rg_key TEXT NOT NULL,          -- lower-cased resource group name
  parent_key TEXT,               -- key of the parent resource (child resources only)
  body TEXT NOT NULL,            -- the resource as GET returns it (minus values computed on read)
  etag TEXT NOT NULL,
  internal TEXT NOT NULL DEFAULT '{}',  -- emulator-private state (never returned)
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_type ON resources(type_key, rg_key);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent_key);
CREATE TABLE IF NOT EXISTS vmss_models (
  vmss_key TEXT NOT NULL, version INTEGER NOT NULL, profile TEXT NOT NULL,
  PRIMARY KEY (vmss_key, version)
);
CREATE TABLE IF NOT EXISTS instances (
  vmss_key TEXT NOT NULL,
  instance_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  ip TEXT NOT NULL UNIQUE,
  generation INTEGER NOT NULL,
  model_version INTEGER NOT NULL,
  image_version_id TEXT NOT NULL,
  artifact_path TEXT NOT NULL,
  service_port INTEGER NOT NULL,
  vm_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (vmss_key, instance_id)
);
CREATE TABLE IF NOT EXISTS operations (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  resource_key TEXT NOT NULL,
  namespace TEXT NOT NULL,
  region TEXT NOT NULL,
  status TEXT NOT NULL,           -- InProgress | Succeeded | Failed | Canceled
  params TEXT NOT NULL DEFAULT '{}',
  result TEXT,
  error TEXT,
  started_at REAL NOT NULL,
  ended_at REAL
);
"""


def _under(key: str) -> str:
    """A LIKE pattern for everything nested under `key`. ARM names may hold '_' (and '%' is no
    wildcard in an id), so both are escaped: deleting `rg_1` must not delete `rgx1`'s resources."""
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


@dataclass
class StoredResource:
    key: str
    id: str
    type_key: str
    rg_key: str
    parent_key: str | None
    body: dict[str, Any]
    etag: str
    internal: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass
class InstanceRecord:
    vmss_key: str
    instance_id: int
    name: str
    ip: str
    generation: int
    model_version: int
    image_version_id: str
    artifact_path: str
    service_port: int
    vm_id: str
    created_at: str


@dataclass
class OperationRecord:
    id: str
    kind: str
    resource_key: str
    namespace: str
    region: str
    status: str
    params: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    started_at: float
    ended_at: float | None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._conn.executescript(_SCHEMA)
        # Grows with every change of a resource, a scale-set model or an instance (resource writes
        # through write(), which counts each transaction's end): what is derived from all of them
        # (which instances sit in which pool and network) is kept until it moves.
        self.generation = 0

    def _changed(self) -> None:
        with self._lock:
            self.generation += 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def write(self) -> Iterator[None]:
        """One atomic write transaction under the writer lock (re-entrant: nested blocks join)."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                # What was derived inside the transaction may have seen writes now rolled back.
                self._changed()
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, args)

    # -- meta --------------------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def meta_set(self, key: str, value: str) -> None:
        self._exec(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def next_counter(self, name: str) -> int:
        """A persistent, never-reused counter (IP allocation, ...). Call inside write()."""
        with self.write():
            current = int(self.meta_get(f"counter:{name}") or "0")
            self.meta_set(f"counter:{name}", str(current + 1))
        return current

    # -- resources ---------------------------------------------------------------------------------

    @staticmethod
    def _resource(row: sqlite3.Row) -> StoredResource:
        return StoredResource(
            key=row["key"],
            id=row["id"],
            type_key=row["type_key"],
            rg_key=row["rg_key"],
            parent_key=row["parent_key"],
            body=json.loads(row["body"]),
            etag=row["etag"],
            internal=json.loads(row["internal"]),
            created_at=row["created_at"],
        )

    def get(self, key: str) -> StoredResource | None:
        rows = self._query("SELECT * FROM resources WHERE key = ?", (key.lower(),))
        return self._resource(rows[0]) if rows else None

    def of_type(
        self,
        type_key: str,
        *,
        rg_key: str | None = None,
        parent_key: str | None = None,
        subscription: str | None = None,
    ) -> list[StoredResource]:
        sql = "SELECT * FROM resources WHERE type_key = ?"
        args: list[Any] = [type_key.lower()]
        if rg_key is not None:
            sql += " AND rg_key = ?"
            args.append(rg_key.lower())
        if parent_key is not None:
            sql += " AND parent_key = ?"
            args.append(parent_key.lower())
        if subscription is not None:
            sql += " AND key LIKE ? ESCAPE '\\'"
            args.append(_under(f"/subscriptions/{subscription.lower()}"))
        sql += " ORDER BY created_at, key"
        return [self._resource(r) for r in self._query(sql, tuple(args))]

    def list_in_group(self, rg_key: str) -> list[StoredResource]:
        return [
            self._resource(r)
            for r in self._query("SELECT * FROM resources WHERE rg_key = ? ORDER BY created_at", (rg_key,))
        ]

    def children(self, parent_key: str) -> list[StoredResource]:
        return [
            self._resource(r)
            for r in self._query(
                "SELECT * FROM resources WHERE parent_key = ? ORDER BY created_at", (parent_key.lower(),)
            )
        ]

    def put(self, resource: StoredResource) -> None:
        now = time.time()
        with self.write():
            existing = self._query("SELECT created_at FROM resources WHERE key = ?", (resource.key,))
            created = existing[0]["created_at"] if existing else now
            resource.created_at = created
            self._exec(
                "INSERT INTO resources(key, id, type_key, rg_key, parent_key, body, etag, internal,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET"
                " body=excluded.body, etag=excluded.etag, internal=excluded.internal,"
                " updated_at=excluded.updated_at",
                (
                    resource.key,
                    resource.id,
                    resource.type_key,
                    resource.rg_key,
                    resource.parent_key,
                    json.dumps(resource.body),
                    resource.etag,
                    json.dumps(resource.internal),
                    created,
                    now,
                ),
            )

    def delete(self, key: str) -> None:
        """Delete a resource and everything nested under its id (child resources, instances)."""
        key = key.lower()
        with self.write():
            nested = _under(key)
            self._exec("DELETE FROM resources WHERE key = ? OR key LIKE ? ESCAPE '\\'", (key, nested))
            self._exec("DELETE FROM instances WHERE vmss_key = ? OR vmss_key LIKE ? ESCAPE '\\'", (key, nested))
            self._exec("DELETE FROM vmss_models WHERE vmss_key = ? OR vmss_key LIKE ? ESCAPE '\\'", (key, nested))

    # -- scale-set models and instances ------------------------------------------------------------

    def put_model(self, vmss_key: str, version: int, profile: dict[str, Any]) -> None:
        self._exec(
            "INSERT OR REPLACE INTO vmss_models(vmss_key, version, profile) VALUES (?,?,?)",
            (vmss_key, version, json.dumps(profile)),
        )
        self._changed()

    def models(self, vmss_key: str) -> dict[int, dict[str, Any]]:
        rows = self._query("SELECT version, profile FROM vmss_models WHERE vmss_key = ?", (vmss_key,))
        return {r["version"]: json.loads(r["profile"]) for r in rows}

    def prune_models(self, vmss_key: str, keep: set[int]) -> None:
        for version in self.models(vmss_key):
            if version not in keep:
                self._exec("DELETE FROM vmss_models WHERE vmss_key = ? AND version = ?", (vmss_key, version))
                self._changed()

    @staticmethod
    def _instance(row: sqlite3.Row) -> InstanceRecord:
        return InstanceRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row

    def instances(self, vmss_key: str) -> list[InstanceRecord]:
        rows = self._query("SELECT * FROM instances WHERE vmss_key = ? ORDER BY instance_id", (vmss_key,))
        return [self._instance(r) for r in rows]

    def all_instances(self) -> list[InstanceRecord]:
        return [self._instance(r) for r in self._query("SELECT * FROM instances ORDER BY vmss_key, instance_id")]

    def put_instance(self, inst: InstanceRecord) -> None:
        self._exec(
            "INSERT OR REPLACE INTO instances(vmss_key, instance_id, name, ip, generation, model_version,"
            " image_version_id, artifact_path, service_port, vm_id, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                inst.vmss_key,
                inst.instance_id,
                inst.name,
                inst.ip,
                inst.generation,
                inst.model_version,
                inst.image_version_id,
                inst.artifact_path,
                inst.service_port,
                inst.vm_id,
                inst.created_at,
            ),
        )
        self._changed()

    def delete_instance(self, vmss_key: str, instance_id: int) -> None:
        self._exec("DELETE FROM instances WHERE vmss_key = ? AND instance_id = ?", (vmss_key, instance_id))
        self._changed()

    # -- operations --------------------------------------------------------------------------------

    @staticmethod
    def _operation(row: sqlite3.Row) -> OperationRecord:
        return OperationRecord(
            id=row["id"],
            kind=row["kind"],
            resource_key=row["resource_key"],
            namespace=row["namespace"],
            region=row["region"],
            status=row["status"],
            params=json.loads(row["params"]),
            result=json.loads(row["result"]) if row["result"] is not None else None,
            error=json.loads(row["error"]) if row["error"] is not None else None,
            started_at=row["started_at"],
            ended_at=row["ended_at"],
        )

    def put_operation(self, op: OperationRecord) -> None:
        self._exec(
            "INSERT OR REPLACE INTO operations(id, kind, resource_key, namespace, region, status, params,"
            " result, error, started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                op.id,
                op.kind,
                op.resource_key,
                op.namespace,
                op.region,
                op.status,
                json.dumps(op.params),
                json.dumps(op.result) if op.result is not None else None,
                json.dumps(op.error) if op.error is not None else None,
                op.started_at,
                op.ended_at,
            ),
        )

    def get_operation(self, op_id: str) -> OperationRecord | None:
        rows = self._query("SELECT * FROM operations WHERE id = ?", (op_id.lower(),))
        return self._operation(rows[0]) if rows else None

    def operations_in_progress(self) -> list[OperationRecord]:
        rows = self._query("SELECT * FROM operations WHERE status = 'InProgress' ORDER BY started_at")
        return [self._operation(r) for r in rows]
