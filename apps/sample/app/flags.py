"""Feature flags, read at run time from the service's shared database (standard library only).

switchyard writes them (`switchyard flag set`, a release policy's enable_flags) into the table
`switchyard_flags (name, enabled, updated_at, updated_by)`; this module only reads it. A missing
database, table or row means off, and nothing here ever raises into a request.

The whole table is read at most every MAX_AGE_S seconds, however many requests ask: a flip reaches
every request within half a second, and flipping it back is just as quick, with one small query per
half second per instance.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

MAX_AGE_S = 0.5
# A reader waits this long at most for a lock (only a database not in WAL mode has writers that
# block readers): the event loop that serves requests must not wait longer.
READ_TIMEOUT_S = 0.05
TABLE = "switchyard_flags"


class Flags:
    def __init__(
        self,
        database_path: str | None,
        *,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database_path = database_path
        self.max_age_s = max_age_s
        self.clock = clock
        self.values: dict[str, bool] = {}
        self.read_at: float | None = None
        self.failing = False

    def is_on(self, name: str) -> bool:
        """Whether flag `name` is on, as the database said at most max_age_s ago."""
        now = self.clock()
        if self.read_at is None or now - self.read_at >= self.max_age_s:
            self.values = self._read(self.values)
            self.read_at = now
        return self.values.get(name, False)

    def _read(self, last: dict[str, bool]) -> dict[str, bool]:
        path = self.database_path
        if not path or not os.path.exists(path):
            return {}  # no database (yet): every flag is off
        try:
            # Read-only: the app never creates the database or the table, switchyard does.
            connection = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=READ_TIMEOUT_S)
            try:
                rows = connection.execute(f"SELECT name, enabled FROM {TABLE}").fetchall()
            finally:
                connection.close()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return {}  # no flag was ever set
            return self._keep(last, error)
        except Exception as error:  # whatever it is, a request must not fail for it
            return self._keep(last, error)
        self.failing = False
        return {str(name): bool(enabled) for name, enabled in rows}

    def _keep(self, last: dict[str, bool], error: Exception) -> dict[str, bool]:
        """A database that is there but cannot be read right now (locked, a disk error): the flags
        stay as last read, rather than every feature switching off for a hiccup; tried again at the
        next expiry. Said once per spell, on stderr (the instance's log)."""
        if not self.failing:
            print(f"sample: cannot read flags from {self.database_path}: {error}", file=sys.stderr, flush=True)
        self.failing = True
        return last
