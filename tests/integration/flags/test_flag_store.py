"""The SQLite flag store on real database files, with other real processes holding locks, writing and
reading at the same time (the instances read every half second while a person or a release writes)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from switchyard.core.config import FrontendPorts, ServiceConfig
from switchyard.core.outcomes import FlagRefused
from switchyard.flags import FlagStoreError, flag_store
from switchyard.flags.sqlite_store import SqliteFlagStore
from tests.datasets import REPO_ROOT

AT = datetime(2026, 12, 3, 9, 30, 0, 123000, tzinfo=UTC)
APP_DIR = REPO_ROOT / "apps" / "sample" / "app"


def test_the_first_write_creates_the_contracts_table_in_wal_mode_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "databases" / "sample-staging.sqlite3"  # the folder does not exist yet
    store = SqliteFlagStore(str(path))

    before = store.write({"new_greeting": True, "checkout_v2": False}, "set-flag run-1", AT)

    assert before == {"new_greeting": None, "checkout_v2": None}  # no rows: off
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [
            (name, kind, notnull, pk)
            for _, name, kind, notnull, _, pk in db.execute("PRAGMA table_info(switchyard_flags)")
        ]
        rows = db.execute("SELECT * FROM switchyard_flags ORDER BY name").fetchall()
    assert columns == [
        ("name", "TEXT", 0, 1),
        ("enabled", "INTEGER", 1, 0),
        ("updated_at", "TEXT", 1, 0),
        ("updated_by", "TEXT", 1, 0),
    ]
    stamp = "2026-12-03T09:30:00.123+00:00"  # ISO 8601, UTC
    assert rows == [("checkout_v2", 0, stamp, "set-flag run-1"), ("new_greeting", 1, stamp, "set-flag run-1")]
    seen = store.read()
    assert [(f.name, f.enabled, f.updated_at, f.updated_by) for f in seen.values()] == [
        ("checkout_v2", False, AT, "set-flag run-1"),
        ("new_greeting", True, AT, "set-flag run-1"),
    ]
    assert list(store.read(["new_greeting", "never_set"])) == ["new_greeting"]

    again = store.write({"new_greeting": False}, "release 0f4c", AT)
    assert again["new_greeting"] is not None and again["new_greeting"].enabled is True
    assert store.read(["new_greeting"])["new_greeting"].enabled is False


def test_reading_where_nothing_was_written_finds_no_flags_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    assert SqliteFlagStore(str(missing)).read() == {}
    assert not missing.exists()

    other = tmp_path / "app.sqlite3"  # the app's own database, before any flag was set
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    assert SqliteFlagStore(str(other)).read() == {}


HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # the write lock, as a migration's transaction holds it
db.execute("CREATE TABLE IF NOT EXISTS migration_lock (x)")
print("locked", flush=True)
sys.stdin.readline()  # until the test says so
db.execute("COMMIT")
"""


def hold_lock(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


def test_a_lock_held_past_the_busy_timeout_fails_the_write_clearly_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "flags.sqlite3"
    SqliteFlagStore(str(path)).write({"new_greeting": False}, "set-flag run-1", AT)
    holder = hold_lock(path)
    try:
        with pytest.raises(FlagStoreError) as failed:
            SqliteFlagStore(str(path), busy_timeout_s=0.2).write({"new_greeting": True}, "set-flag run-2", AT)
        # Readers are not blocked by a writer's lock in WAL mode.
        assert SqliteFlagStore(str(path)).read()["new_greeting"].enabled is False
    finally:
        release(holder)
    assert str(failed.value) == f"the flag store {path} could not be written: database is locked"
    assert SqliteFlagStore(str(path)).read()["new_greeting"].enabled is False


def test_a_lock_released_within_the_busy_timeout_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "flags.sqlite3"
    SqliteFlagStore(str(path)).write({"new_greeting": False}, "set-flag run-1", AT)
    holder = hold_lock(path)
    later = threading.Timer(0.5, release, args=(holder,))  # the migration commits half a second from now
    later.start()
    try:
        SqliteFlagStore(str(path), busy_timeout_s=30).write({"new_greeting": True}, "set-flag run-2", AT)
    finally:
        later.join(timeout=30)
        if holder.poll() is None:
            holder.kill()
    assert SqliteFlagStore(str(path)).read()["new_greeting"].enabled is True


WRITER = """
import sys
from datetime import UTC, datetime
from switchyard.flags.sqlite_store import SqliteFlagStore
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SqliteFlagStore(path)
for i in range(1, count + 1):
    store.write({name: i % 2 == 1}, f"{name} {i}", datetime.now(UTC))
"""
READER = """
import sys
sys.path.insert(0, sys.argv[2])
from flags import Flags  # the sample app's own reader
flags = Flags(sys.argv[1], max_age_s=0)  # no cache: every call reads the database
for _ in range(int(sys.argv[3])):
    flags.is_on("writer_a"), flags.is_on("writer_b")
"""


def test_writers_and_readers_in_other_processes_meet_no_lock_errors(tmp_path: Path) -> None:
    """Two processes flip their own flag 60 times each while two others, the sample app's reader
    without its cache, read 400 times each: every write lands (the busy timeout orders the writers),
    and no read fails (the app's reader would say so on stderr)."""
    path = tmp_path / "shared.sqlite3"
    # The database exists, in WAL mode, before they start, as it does once the first flag was set.
    SqliteFlagStore(str(path)).write({"writer_a": False, "writer_b": False}, "test", AT)
    env = {"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'emulator'}", "PATH": "/usr/bin:/bin"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, "60"], env=env, stderr=subprocess.PIPE, text=True
        )
        for name in ("writer_a", "writer_b")
    ]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(APP_DIR), "400"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    for reader in readers:
        _, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and err == "", err
    final = SqliteFlagStore(str(path)).read()
    # The 60th write of each: off (odd writes turn on), by that writer.
    assert {name: (f.enabled, f.updated_by) for name, f in final.items()} == {
        "writer_a": (False, "writer_a 60"),
        "writer_b": (False, "writer_b 60"),
    }


def service(database: dict[str, str]) -> ServiceConfig:
    return ServiceConfig(
        name="sample",
        app_dir="apps/sample",
        frontend_ports={"staging": FrontendPorts(production=18180, test=18181)},
        database=database,
    )


def test_the_store_of_a_service_is_its_database_there_with_the_workers_state_dir(tmp_path: Path) -> None:
    store = flag_store(
        service({"staging": "sqlite:///{state_dir}/databases/sample-staging.sqlite3"}), "staging", str(tmp_path)
    )
    assert store.location == str(tmp_path / "databases" / "sample-staging.sqlite3")

    with pytest.raises(FlagRefused, match="has no database in 'production'"):
        flag_store(service({"staging": "sqlite:///{state_dir}/s.sqlite3"}), "production", str(tmp_path))
    with pytest.raises(FlagRefused, match="cannot use a postgresql database: only SQLite is implemented"):
        flag_store(service({"staging": "postgresql://switchyard@db.internal/sample"}), "staging", str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened
