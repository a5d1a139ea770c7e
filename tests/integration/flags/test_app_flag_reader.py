"""The sample app's flag reader (apps/sample/app/flags.py) on real database files: off whenever there
is nothing to read, the table read at most once per cache age, and never an exception for a request."""

from __future__ import annotations

import importlib.util
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from switchyard.flags.sqlite_store import SqliteFlagStore
from tests.datasets import REPO_ROOT

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def app_flags() -> ModuleType:
    """The app's module as the app imports it (it is not a package of this repository's)."""
    spec = importlib.util.spec_from_file_location("sample_app_flags", REPO_ROOT / "apps/sample/app/flags.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_database_no_table_and_no_row_all_read_as_off(tmp_path: Path) -> None:
    flags = app_flags()
    assert flags.Flags(None).is_on("new_greeting") is False
    assert flags.Flags(str(tmp_path / "missing.sqlite3")).is_on("new_greeting") is False
    assert not (tmp_path / "missing.sqlite3").exists()  # the reader creates nothing
    plain = tmp_path / "app.sqlite3"
    with sqlite3.connect(plain) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    assert flags.Flags(str(plain), max_age_s=0).is_on("new_greeting") is False
    SqliteFlagStore(str(plain)).write({"other": True}, "test", AT)
    assert flags.Flags(str(plain), max_age_s=0).is_on("new_greeting") is False


def test_a_flip_is_seen_once_the_cache_age_has_passed_and_not_before(tmp_path: Path) -> None:
    path = tmp_path / "flags.sqlite3"
    store = SqliteFlagStore(str(path))
    clock = Clock()
    flags = app_flags().Flags(str(path), max_age_s=0.5, clock=clock)
    assert flags.is_on("new_greeting") is False

    store.write({"new_greeting": True}, "test", AT)
    clock.now += 0.4
    assert flags.is_on("new_greeting") is False  # still the cached read: one query per half second
    clock.now += 0.1
    assert flags.is_on("new_greeting") is True

    store.write({"new_greeting": False}, "test", AT)
    clock.now += 0.5
    assert flags.is_on("new_greeting") is False  # back as quickly


def test_a_database_that_cannot_be_read_keeps_the_last_flags_and_never_raises(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flags.sqlite3"
    SqliteFlagStore(str(path)).write({"new_greeting": True}, "test", AT)
    clock = Clock()
    flags = app_flags().Flags(str(path), max_age_s=0.5, clock=clock)
    assert flags.is_on("new_greeting") is True

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database, a disk went bad" * 200)
    for _ in range(3):
        clock.now += 0.5
        assert flags.is_on("new_greeting") is True  # as last read: a hiccup does not turn features off
    assert capfd.readouterr().err.count("sample: cannot read flags from") == 1  # said once, not per request
