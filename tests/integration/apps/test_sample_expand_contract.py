"""The sample's expand/contract story with real processes: three versions of its notes code, each
a real sample server on the same SQLite database, and the real migration script run as
switchyard's hooks run it. What the release test shows under traffic (tests/e2e/
test_expand_contract.py), here step by step: which versions work together after which migration.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard_emulator.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE = REPO_ROOT / "apps" / "sample"
OLD_NOTES = REPO_ROOT / "tests" / "fixtures" / "apps" / "sample-notes"
MIGRATE = SAMPLE / "migrations" / "migrate.py"


class Sample:
    """One sample server process running version `notes_version` of the notes code."""

    def __init__(self, root: Path, notes_version: int, database: Path) -> None:
        app = root / f"v{notes_version}"
        shutil.copytree(SAMPLE / "app", app, ignore=shutil.ignore_patterns("__pycache__"))
        if notes_version < 3:
            shutil.copy(OLD_NOTES / f"notes_v{notes_version}.py", app / "notes.py")
        custom_data = root / f"custom-data-v{notes_version}.json"
        custom_data.write_text(json.dumps({"service": "sample", "database_url": f"sqlite:///{database}"}))
        self.port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "SWITCHYARD_LISTEN_PORT": str(self.port),
            "SWITCHYARD_CUSTOM_DATA": str(custom_data),
        }
        self.process = subprocess.Popen([sys.executable, str(app / "server.py")], env=env)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, text: str) -> httpx.Response:
        return httpx.post(f"{self.url}/work/notes", content=text.encode(), timeout=10)

    def read(self, note_id: int) -> httpx.Response:
        return httpx.get(f"{self.url}/work/notes/{note_id}", timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def migrate(phase: str, app_version: str, database: Path) -> str:
    env = {**os.environ, "SWITCHYARD_DATABASE_URL": f"sqlite:///{database}", "SWITCHYARD_APP_VERSION": app_version}
    done = subprocess.run(
        [sys.executable, str(MIGRATE), phase], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def columns(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[1] for row in connection.execute("PRAGMA table_info(notes)")]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Sample]]:
    started: list[Sample] = []
    yield started
    for server in started:
        server.stop()


def round_trip(writer: Sample, reader: Sample, text: str) -> str:
    """A note one version writes, as another reads it back."""
    written = writer.add(text)
    assert written.status_code == 200, written.text
    read = reader.read(written.json()["id"])
    assert read.status_code == 200, read.text
    return str(read.json()["text"])


def test_each_version_works_beside_the_one_before_it_and_the_contract_comes_after(
    tmp_path: Path, servers: list[Sample]
) -> None:
    database = tmp_path / "databases" / "sample.sqlite3"
    assert migrate("expand", "1.0.0", database) == "expand for app 1.0.0: 0001_create_notes"
    v1 = Sample(tmp_path, 1, database)
    servers.append(v1)
    first = v1.add("written by version 1").json()["id"]

    # Release of 2.0.0: the expand step adds `body`; version 1 keeps serving beside version 2.
    assert migrate("expand", "2.0.0", database) == "expand for app 2.0.0: 0002_add_notes_body"
    assert migrate("contract", "2.0.0", database) == "contract for app 2.0.0: nothing to apply"
    v2 = Sample(tmp_path, 2, database)
    servers.append(v2)
    assert round_trip(v1, v2, "from 1 to 2") == "from 1 to 2"
    assert round_trip(v2, v1, "from 2 to 1") == "from 2 to 1"
    assert v2.read(first).json()["text"] == "written by version 1"

    # Release of 3.0.0: the backfill first; versions 2 and 3 serve side by side.
    assert migrate("expand", "3.0.0", database) == "expand for app 3.0.0: 0003_backfill_notes_body"
    v3 = Sample(tmp_path, 3, database)
    servers.append(v3)
    assert v3.read(first).json()["text"] == "written by version 1"
    assert round_trip(v2, v3, "from 2 to 3") == "from 2 to 3"
    assert round_trip(v3, v2, "from 3 to 2") == "from 3 to 2"
    assert "text" in columns(database)

    # Promoted: the contract drops what only versions 1 and 2 used. Version 3 is unaffected; version 2
    # would now fail, which is why the contract waits until it can no longer be rolled back to.
    assert migrate("contract", "3.0.0", database) == "contract for app 3.0.0: 0004_drop_notes_text"
    assert "text" not in columns(database)
    assert round_trip(v3, v3, "after the contract") == "after the contract"
    assert v3.read(first).json()["text"] == "written by version 1"
    assert v2.add("version 2 after the contract").status_code == 500

    # The hooks are idempotent: running them again changes nothing.
    assert migrate("expand", "3.0.0", database) == "expand for app 3.0.0: nothing to apply"
    assert migrate("contract", "3.0.0", database) == "contract for app 3.0.0: nothing to apply"


def test_without_a_database_the_notes_say_so_and_the_rest_of_the_service_works(
    tmp_path: Path, servers: list[Sample]
) -> None:
    server = Sample(tmp_path, 3, tmp_path / "missing-dir" / "never-created.sqlite3")
    servers.append(server)
    # The database file cannot be opened (its folder does not exist): the notes fail, health does not.
    assert server.add("x").status_code == 500
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_the_migration_script_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, str(MIGRATE), "expand"],
        env={
            "PATH": os.environ["PATH"],
            "SWITCHYARD_DATABASE_URL": "postgresql://db/sample",
            "SWITCHYARD_APP_VERSION": "1.0.0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "is not sqlite:///PATH" in refused.stderr
    unset = subprocess.run(
        [sys.executable, str(MIGRATE), "expand"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unset.returncode == 2 and "SWITCHYARD_DATABASE_URL and SWITCHYARD_APP_VERSION must be set" in unset.stderr
