"""The sample's schema migrations, run by switchyard's release hooks around a release:

    pre_deploy:   python3 apps/sample/migrations/migrate.py expand
    post_promote: python3 apps/sample/migrations/migrate.py contract

Each migration belongs to the app version that first needs it, and to a phase. `expand` applies,
before the new version starts, every expand migration of the app versions up to the one being
released (additive: the version still serving keeps working); `contract` applies, once the new
version held full traffic, its contract migrations (they remove what only older versions used).
Applied migrations are recorded in schema_migrations, each in the same transaction as its change,
so a migration runs once however often the hook runs (hooks must be idempotent).

The hook's environment says what is released and where the database is: SWITCHYARD_APP_VERSION
and SWITCHYARD_DATABASE_URL (sqlite:///PATH; docs/expand-contract.md). Standard library only.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Literal, NamedTuple

Phase = Literal["expand", "contract"]


class Migration(NamedTuple):
    name: str
    app_version: str  # the first app version that needs it
    phase: Phase
    sql: str


MIGRATIONS = (
    Migration(
        "0001_create_notes",
        "1.0.0",
        "expand",
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT)",
    ),
    # Version 2 writes `body` beside `text`; version 1 never names it, so it does not notice.
    Migration("0002_add_notes_body", "2.0.0", "expand", "ALTER TABLE notes ADD COLUMN body TEXT"),
    # Version 3 reads `body` only: fill it for the notes version 1 wrote (version 2 writes both).
    Migration("0003_backfill_notes_body", "3.0.0", "expand", "UPDATE notes SET body = text WHERE body IS NULL"),
    # Only versions before 3 use `text`: dropped once version 3 held full traffic.
    Migration("0004_drop_notes_text", "3.0.0", "contract", "ALTER TABLE notes DROP COLUMN text"),
)


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise SystemExit(f"migrate: app version {version!r} is not MAJOR.MINOR.PATCH") from None


def pending(applied: set[str], phase: Phase, app_version: str) -> list[Migration]:
    ceiling = version_key(app_version)
    return [
        m for m in MIGRATIONS if m.phase == phase and m.name not in applied and version_key(m.app_version) <= ceiling
    ]


def connect(url: str) -> sqlite3.Connection:
    if not url.startswith("sqlite:///"):
        raise SystemExit(f"migrate: SWITCHYARD_DATABASE_URL {url!r} is not sqlite:///PATH")
    path = url.removeprefix("sqlite://")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    # WAL: the instances of both colors read while one of them (or a migration) writes.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, app_version TEXT NOT NULL, "
        "phase TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return connection


def migrate(connection: sqlite3.Connection, phase: Phase, app_version: str) -> list[str]:
    applied = {row[0] for row in connection.execute("SELECT name FROM schema_migrations")}
    done = []
    for migration in pending(applied, phase, app_version):
        # One transaction for the change and its record: a crash leaves neither or both.
        connection.execute("BEGIN IMMEDIATE")
        try:
            already = connection.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (migration.name,))
            if already.fetchone() is None:  # another run applied it meanwhile
                connection.execute(migration.sql)
                connection.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                    (migration.name, migration.app_version, phase, datetime.now(UTC).isoformat()),
                )
                done.append(migration.name)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("expand", "contract"):
        print("usage: migrate.py expand|contract", file=sys.stderr)
        return 2
    phase: Phase = "expand" if argv[1] == "expand" else "contract"
    url = os.environ.get("SWITCHYARD_DATABASE_URL")
    app_version = os.environ.get("SWITCHYARD_APP_VERSION")
    if not url or not app_version:
        print(
            "migrate: SWITCHYARD_DATABASE_URL and SWITCHYARD_APP_VERSION must be set (switchyard's hooks set them)",
            file=sys.stderr,
        )
        return 2
    with connect(url) as connection:
        done = migrate(connection, phase, app_version)
    print(f"{phase} for app {app_version}: " + (", ".join(done) if done else "nothing to apply"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
