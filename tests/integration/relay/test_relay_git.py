"""The relay's git calls: a `git` on PATH that hangs is stopped with everything it started, and a
relay without git answers 422.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.relay.relay_support import (
    REPOSITORY,
    Relay,
    Repository,
    merged_events,
    push,
    relay_config,
    running_relay,
)

FAKE_GIT = """#!/bin/sh
# A git that never answers, and has started a child of its own (as ssh or a credential helper would).
/usr/bin/sleep 300 &
echo $! > '{folder}/child.pid'
exec /usr/bin/sleep 300
"""


@pytest.fixture(scope="module")
def fake_git_relay(
    prefect_api: str, repository: Repository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Relay, Path]]:
    """A relay whose PATH holds nothing but a folder with a fake `git` (and later, not even that)."""
    folder = tmp_path_factory.mktemp("fake-git")
    (folder / "git").write_text(FAKE_GIT.format(folder=folder))
    (folder / "git").chmod(0o755)
    config = relay_config(repository, git_timeout_s=2)
    with running_relay(folder / "relay", prefect_api, config, path=str(folder), name="fake-git") as process:
        yield process, folder


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, waiting for whoever adopted it to reap it


def test_a_git_that_hangs_is_stopped_with_everything_it_started_and_answered_503(
    fake_git_relay: tuple[Relay, Path],
) -> None:
    fake, folder = fake_git_relay
    commit = "ab" * 20

    answer = fake.post("/webhooks/github", push(commit, ["apps/alpha/app.py"]))

    child = int((folder / "child.pid").read_text())
    try:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "60"
        assert "did not finish within 2 s and was stopped; retry later" in answer.json()["error"]
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the timed-out git's child is still running"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    assert not [e for e in merged_events(REPOSITORY) if e.payload["commit"] == commit]


def test_no_git_on_the_relay_is_answered_422_naming_the_problem(fake_git_relay: tuple[Relay, Path]) -> None:
    fake, folder = fake_git_relay
    (folder / "git").unlink()

    answer = fake.post("/webhooks/github", push("cd" * 20, ["apps/alpha/app.py"]))

    assert answer.status_code == 422, answer.text
    assert "the relay cannot run git (No such file or directory)" in answer.json()["error"]
    assert "install git or put it on the relay's PATH" in answer.json()["error"]


# GitLab ---------------------------------------------------------------------------------------------------
