"""Expand and contract under traffic: the sample's notes in its shared database, through three
releases of three real versions of their code (each built from a commit of its own), with the
sample's own migrations as its release hooks (fleet.yaml), on the real emulator and Prefect.

Users write notes and read them back the whole time, through the production listener: a note
written by one color may be read by the other. Version 1 writes `text`; version 2 (after the
expand step added `body`) writes both and is canaried beside version 1; version 3 (after the
backfill) reads `body` only and is canaried beside version 2; once it is promoted, the contract
step drops `text`. Not one request may fail, and during each canary both versions must serve notes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from blocks import ServiceBlock
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.checkout import REPO_ROOT, checkout_fleet
from switchyard.core.config import FrontendPorts
from switchyard.core.fleet import Fleet
from switchyard.core.rollout import Strategy
from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import free_port
from tests.e2e.repo_commits import changed_commit, head_commit, labelled_commit

pytestmark = pytest.mark.e2e

SERVICE, ENV = "notes", "production"
OLD_NOTES = REPO_ROOT / "tests" / "fixtures" / "apps" / "sample-notes"
NOTES_MODULE = "apps/sample/app/notes.py"


@dataclass
class NoteTraffic:
    """Writers and readers of notes through the production listener: each worker stores a note,
    then reads it back (the gateway may send the two requests to different colors)."""

    port: int
    workers: int = 3
    pause_s: float = 0.05
    failures: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)  # image version -> notes requests
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> NoteTraffic:
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self, number: int) -> None:
        url = f"http://127.0.0.1:{self.port}/work/notes"
        sequence = 0
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                sequence += 1
                text = f"note {sequence} of writer {number}"
                try:
                    written = client.post(url, content=text.encode())
                    self._record(written)
                    if written.status_code == 200:
                        read = client.get(f"{url}/{written.json()['id']}")
                        self._record(read)
                        if read.status_code == 200 and read.json()["text"] != text:
                            self._fail(f"read back {read.json()['text']!r} instead of {text!r}")
                except httpx.HTTPError as error:
                    self._fail(f"{type(error).__name__}: {error}")
                time.sleep(self.pause_s)

    def _record(self, answer: httpx.Response) -> None:
        with self._lock:
            self.served_by[answer.headers.get("X-Image-Version", "?")] += 1
        if answer.status_code != 200:
            self._fail(f"{answer.request.method} {answer.request.url.path}: {answer.status_code} {answer.text[:200]}")

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)


def columns(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[1] for row in connection.execute("PRAGMA table_info(notes)")]


def test_three_versions_of_the_notes_ship_under_traffic_with_expand_and_contract_migrations(
    fleet: Fleet, state_dir: Path
) -> None:
    # The repository's own sample, with its database and migrations (fleet.yaml), on ports of its own.
    sample = checkout_fleet().services["sample"]
    service = sample.model_copy(
        update={
            "name": SERVICE,
            "capacity": 2,
            "frontend_ports": {
                env: FrontendPorts(production=free_port(), test=free_port()) for env in fleet.environments
            },
        }
    )
    assert service.hooks.pre_deploy is not None and service.hooks.post_promote is not None
    asyncio.run(ServiceBlock(**service.model_dump()).asave(SERVICE, overwrite=True))
    database_url = service.database_url(ENV, str(state_dir))
    assert database_url is not None
    database = Path(database_url.removeprefix("sqlite://"))
    commits = {
        "1.0.0": changed_commit("notes v1", head_commit(), {NOTES_MODULE: (OLD_NOTES / "notes_v1.py").read_text()}),
        "2.0.0": changed_commit("notes v2", head_commit(), {NOTES_MODULE: (OLD_NOTES / "notes_v2.py").read_text()}),
        "3.0.0": labelled_commit("notes v3"),  # the repository's notes.py is version 3
    }
    images = {
        version: image_pipeline(service=SERVICE, app_version=version, git_commit=commit).gallery_version
        for version, commit in commits.items()
    }
    provision(service=SERVICE, environment=ENV)
    first = release(service=SERVICE, environment=ENV, image_version=images["1.0.0"], strategy=Strategy.BLUE_GREEN)
    assert first.outcome == "promoted"
    assert "0001_create_notes" in first.hooks[0].stdout_tail
    assert columns(database) == ["id", "text"]

    port = service.ports_in(ENV).production
    # Steady requests beside the notes, so that each canary step has enough to be judged on.
    with SteadyTraffic("127.0.0.1", port, rate=40.0, connections=2) as steady, NoteTraffic(port) as notes:
        time.sleep(1)
        second = release(service=SERVICE, environment=ENV, image_version=images["2.0.0"], strategy=Strategy.CANARY)
        during_second = Counter(notes.served_by)
        assert columns(database) == ["id", "text", "body"]
        third = release(service=SERVICE, environment=ENV, image_version=images["3.0.0"], strategy=Strategy.CANARY)
        time.sleep(1)  # requests after the contract step, to version 3 alone
    report = steady.report()

    assert second.outcome == "promoted", second.outcome_detail
    assert third.outcome == "promoted", third.outcome_detail
    assert notes.failures == [], notes.failures[:10]
    assert report.sent > 0 and report.failed == 0
    # Both versions served notes during each canary: old and new colors worked side by side.
    assert during_second[images["1.0.0"]] > 0 and during_second[images["2.0.0"]] > 0
    during_third = notes.served_by - during_second
    assert during_third[images["2.0.0"]] > 0 and during_third[images["3.0.0"]] > 0
    # The migrations ran where they belong: expand before each new color, contract after full traffic.
    hooks = {
        (version, h.hook): h.stdout_tail for version, done in (("2.0.0", second), ("3.0.0", third)) for h in done.hooks
    }
    assert "0002_add_notes_body" in hooks[("2.0.0", "pre_deploy")]
    assert "nothing to apply" in hooks[("2.0.0", "post_promote")]
    assert "0003_backfill_notes_body" in hooks[("3.0.0", "pre_deploy")]
    assert "0004_drop_notes_text" in hooks[("3.0.0", "post_promote")]
    assert columns(database) == ["id", "body"]
    with sqlite3.connect(database) as connection:
        (empty,) = connection.execute("SELECT COUNT(*) FROM notes WHERE body IS NULL").fetchone()
        (stored,) = connection.execute("SELECT COUNT(*) FROM notes").fetchone()
    assert empty == 0 and stored > 0
