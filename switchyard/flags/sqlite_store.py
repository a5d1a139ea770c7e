"""The flag store on SQLite: the `switchyard_flags` table in the service's shared database file.

The table is the contract with the apps (docs/feature-flags.md); switchyard creates it when it
first writes a flag, the apps only read it. Every write is one transaction that takes the write lock
first (BEGIN IMMEDIATE), so the states it reports as "before" are the ones it replaced. The database
is put in WAL mode: readers (every instance, every half second) then never wait for a writer, nor a
writer for them. A lock held by someone else (a migration) is waited for up to the busy timeout.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

from switchyard.core.flags import FLAG_TABLE, FlagState, check_flag_name
from switchyard.flags import FlagStoreError

# Long enough for a migration's short transaction to finish, short enough that a lock held for good
# fails the step (which the task may retry) instead of hanging it.
BUSY_TIMEOUT_S = 5.0

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {FLAG_TABLE} (
  name TEXT PRIMARY KEY,
  enabled INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  updated_by TEXT NOT NULL
)
"""
UPSERT = f"""
INSERT INTO {FLAG_TABLE} (name, enabled, updated_at, updated_by) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
  enabled = excluded.enabled, updated_at = excluded.updated_at, updated_by = excluded.updated_by
"""


class SqliteFlagStore:
    def __init__(self, path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    @property
    def location(self) -> str:
        return str(self.path)

    @contextmanager
    def _connection(self, *, read_only: bool) -> Iterator[sqlite3.Connection]:
        try:
            if read_only:
                # Read-only, and never created: a reader must not leave an empty database behind.
                connection = sqlite3.connect(
                    self.path.as_uri() + "?mode=ro", uri=True, timeout=self.busy_timeout_s, isolation_level=None
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level None: no implicit transactions; write() says where its one begins and ends.
                connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            with closing(connection):
                yield connection
        except (sqlite3.Error, OSError) as error:
            verb = "read" if read_only else "written"
            raise FlagStoreError(f"the flag store {self.path} could not be {verb}: {error}") from error

    def write(self, values: Mapping[str, bool], updated_by: str, at: datetime) -> dict[str, FlagState | None]:
        for name in values:
            check_flag_name(name)
        stamp = at.isoformat(timespec="milliseconds")
        with self._connection(read_only=False) as db:
            # Persistent in the file: once set, every connection to it (the instances') uses WAL.
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(CREATE_TABLE)
                before = _rows(db, list(values))
                db.executemany(UPSERT, [(name, int(on), stamp, updated_by) for name, on in values.items()])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return {name: before.get(name) for name in values}

    def read(self, names: Collection[str] | None = None) -> dict[str, FlagState]:
        if not self.path.exists():
            return {}  # no database yet: no flags, every one off
        with self._connection(read_only=True) as db:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FLAG_TABLE,))
            if exists.fetchone() is None:
                return {}  # no flag was ever set here
            return _rows(db, None if names is None else list(names))


def _rows(db: sqlite3.Connection, names: list[str] | None) -> dict[str, FlagState]:
    query = f"SELECT name, enabled, updated_at, updated_by FROM {FLAG_TABLE}"
    if names is None:
        rows = db.execute(query + " ORDER BY name").fetchall()
    else:
        rows = db.execute(query + f" WHERE name IN ({', '.join('?' * len(names))})", names).fetchall() if names else []
    states = {}
    for name, enabled, at, by in rows:
        try:
            updated_at = datetime.fromisoformat(str(at))
        except ValueError:
            raise FlagStoreError(f"flag {name!r} has an updated_at that is not ISO 8601: {at!r}") from None
        states[str(name)] = FlagState(name=str(name), enabled=bool(enabled), updated_at=updated_at, updated_by=str(by))
    return states
