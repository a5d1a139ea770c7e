"""The sample's notes, kept in the service's shared database (the same one for both colors).

This is version 3 of the notes' data model, the last step of an expand/contract change
(docs/expand-contract.md; the migrations are apps/sample/migrations/migrate.py):

  version 1 wrote and read the column `text`;
  version 2 (after migration 0002 added `body`) writes both and reads `body`, falling back to `text`,
    so that version 1 and version 2 serve side by side during a canary;
  version 3 (after migration 0003 filled `body` wherever it was empty) writes and reads `body` only;
    version 2 still reads what it writes, so a rollback to version 2 loses nothing. Once version 3
    is promoted, migration 0004 (a contract step) drops `text`.

Standard library only: the image carries no third-party package.
"""

from __future__ import annotations

import sqlite3
import threading

# Another instance may hold the write lock for a moment: wait for it rather than fail the request.
BUSY_TIMEOUT_S = 5.0


class Notes:
    def __init__(self, database_path: str) -> None:
        self._path = database_path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection per process, used from the request threads

    def _connected(self) -> sqlite3.Connection:
        # Opened at the first request, not at start: a database that cannot be reached fails the
        # notes (with the reason), never the health check or the other endpoints.
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        return self._connection

    def add(self, text: str) -> int:
        with self._lock:
            cursor = self._connected().execute("INSERT INTO notes (body) VALUES (?)", (text,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def get(self, note_id: int) -> str | None:
        with self._lock:
            row = self._connected().execute("SELECT body FROM notes WHERE id = ?", (note_id,)).fetchone()
        return None if row is None else str(row[0])
