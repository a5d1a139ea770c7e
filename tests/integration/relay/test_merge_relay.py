"""The merge relay end to end: real HTTP requests to the relay process, real git repositories, and a
real Prefect API (the test harness's server) where the `switchyard.git.merged` events must arrive,
or must not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from switchyard.relay.config import RelayConfig, RelaySetupError, load_secret
from switchyard.stack.processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[3]
SECRET = "relay-test-secret-" + uuid.uuid4().hex
REPOSITORY = "acme/shop"
EVENT = "switchyard.git.merged"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return result.stdout.strip()


class Repository:
    """A bare 'origin', an author's clone that pushes to it, and the relay's own (stale) clone."""

    def __init__(self, root: Path) -> None:
        self.origin = root / "origin.git"
        self.work = root / "work"
        self.relay_clone = root / "relay-clone"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--quiet", "--bare", str(self.origin))
        git(root, "clone", "--quiet", str(self.origin), str(self.work))

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files, commit, push to origin main; the commit id."""
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    repo = Repository(tmp_path_factory.mktemp("git"))
    repo.commit(
        {
            "apps/alpha/VERSION": "1.2.3\n",
            "apps/alpha/app.py": "print('alpha')\n",
            "apps/beta/VERSION": "2.0.0\n",
            "apps/beta/app.py": "print('beta')\n",
            "images/base.pkr.hcl": "# template\n",
            "README.md": "shop\n",
        },
        "first",
    )
    git(repo.origin.parent, "clone", "--quiet", str(repo.origin), str(repo.relay_clone))
    return repo


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


class Relay:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def post(
        self,
        path: str,
        payload: Any,
        *,
        event: str | None = "push",
        signature: str | None = "good",
        delivery: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"Content-Type": content_type}
        if signature == "good":
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        if event is not None:
            headers["X-GitHub-Event"] = event
        headers["X-GitHub-Delivery"] = delivery or str(uuid.uuid4())
        return httpx.post(self.url + path, content=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def relay(prefect_api: str, repository: Repository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    directory = tmp_path_factory.mktemp("relay")
    config = directory / "relay.yaml"
    config.write_text(
        json.dumps(
            {
                "branch": "main",
                "repositories": {
                    REPOSITORY: {
                        "services": {"alpha": "apps/alpha", "beta": "apps/beta"},
                        "shared_paths": ["images"],
                        "checkout": str(repository.relay_clone),
                    }
                },
            }
        )
    )
    log = directory / "relay.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SWITCHYARD_RELAY_SECRET": SECRET, **GIT_ENV}
    env.pop("SWITCHYARD_RELAY_SECRET_FILE", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchyard.relay.cli", "--port", "0", "--config", str(config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "listening on http://" in first, f"relay did not start: {first!r}\n{log.read_text()[-2000:]}"
        url = first.split("listening on ", 1)[1].split(" ", 1)[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield Relay(process, url, log)
    finally:
        stop_process_group(process, grace_s=15)


def merged_events() -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[EVENT])), limit=50)
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(str(page.next_page))
            events += page.events
    return events


def wait_for_events(predicate: Any, timeout_s: float = 60) -> list[Any]:
    """The merged events once `predicate(events)` holds (Prefect persists events in batches)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = merged_events()
        if predicate(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"the expected events never arrived; found {[e.payload for e in events]}")
        time.sleep(0.3)


def push(commit: str, paths: list[str], *, ref: str = "refs/heads/main", timestamp: str = "2026-11-20T09:30:00+01:00"):
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": commit,
        "deleted": False,
        "repository": {"full_name": REPOSITORY, "name": "shop"},
        "head_commit": {"id": commit, "timestamp": timestamp, "added": [], "modified": paths, "removed": []},
        "commits": [{"id": commit, "timestamp": timestamp, "added": [], "modified": paths, "removed": []}],
    }


def generic(service: str, commit: str, **overrides: Any) -> dict[str, Any]:
    return {
        "service": service,
        "app_version": "3.1.4",
        "commit": commit,
        "repository": REPOSITORY,
        "ref": "refs/heads/main",
        "committed_at": "2026-11-21T08:00:00Z",
        **overrides,
    }


def test_a_signed_push_to_main_emits_one_event_per_changed_service_with_the_version_at_that_commit(
    relay: Relay, repository: Repository
) -> None:
    # A commit the relay's clone does not have yet: the relay fetches it, and reads VERSION there
    # (the working tree's VERSION changes again afterwards, and must not be what is read).
    commit = repository.commit({"apps/alpha/VERSION": "1.3.0\n", "apps/alpha/app.py": "print('alpha 1.3')\n"}, "alpha")
    repository.commit({"apps/alpha/VERSION": "9.9.9\n"}, "later")

    answer = relay.post("/webhooks/github", push(commit, ["apps/alpha/VERSION", "apps/alpha/app.py"]))

    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "emitted"
    assert [(e["service"], e["app_version"]) for e in answer.json()["events"]] == [("alpha", "1.3.0")]
    events = wait_for_events(lambda found: any(e.payload.get("commit") == commit for e in found))
    event = next(e for e in events if e.payload.get("commit") == commit)
    assert event.resource.id == f"switchyard.repo.{REPOSITORY}"
    assert event.resource["switchyard.service"] == "alpha"
    assert event.payload == {
        "service": "alpha",
        "app_version": "1.3.0",
        "commit": commit,
        "repository": REPOSITORY,
        "ref": "refs/heads/main",
        "committed_at": "2026-11-20T08:30:00+00:00",
    }
    assert str(event.id) == answer.json()["events"][0]["id"]


def test_a_change_to_a_shared_folder_releases_every_service_and_a_redelivery_does_not_release_twice(
    relay: Relay, repository: Repository
) -> None:
    commit = repository.commit({"images/base.pkr.hcl": "# template v2\n", "apps/alpha/VERSION": "1.4.0\n"}, "template")
    delivery = str(uuid.uuid4())

    first = relay.post("/webhooks/github", push(commit, ["images/base.pkr.hcl"]), delivery=delivery)
    again = relay.post("/webhooks/github", push(commit, ["images/base.pkr.hcl"]), delivery=delivery)

    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert {(e["service"], e["app_version"]) for e in first.json()["events"]} == {("alpha", "1.4.0"), ("beta", "2.0.0")}
    assert first.json()["events"] == again.json()["events"]  # same event ids
    events = wait_for_events(lambda found: sum(e.payload.get("commit") == commit for e in found) >= 2)
    time.sleep(2)  # a duplicate would be persisted by now as well
    ours = [e for e in merged_events() if e.payload.get("commit") == commit]
    assert sorted(e.payload["service"] for e in ours) == ["alpha", "beta"], [e.payload for e in events]


def test_bad_missing_or_unsigned_deliveries_are_refused_and_emit_nothing(relay: Relay, repository: Repository) -> None:
    commit = repository.commit({"apps/beta/app.py": "print('beta 2')\n"}, "beta")
    body = push(commit, ["apps/beta/app.py"])
    other_secret = "sha256=" + hmac.new(b"not-the-secret-at-all", json.dumps(body).encode(), hashlib.sha256).hexdigest()

    answers = {
        "missing": relay.post("/webhooks/github", body, signature=None),
        "wrong secret": relay.post("/webhooks/github", body, signature=other_secret),
        "garbage": relay.post("/webhooks/github", body, signature="sha256=nothex"),
        "other algorithm": relay.post("/webhooks/github", body, signature="sha1=" + "0" * 40),
        "generic unsigned": relay.post("/webhooks/merge", generic("beta", commit), signature=None, event=None),
    }
    # signed for another body: the signature covers every byte
    tampered = json.dumps({**body, "after": "f" * 40}).encode()
    signed = relay.post("/webhooks/github", body)  # sanity: the same body, signed, is accepted
    good_signature = "sha256=" + hmac.new(SECRET.encode(), json.dumps(body).encode(), hashlib.sha256).hexdigest()
    answers["tampered"] = relay.post("/webhooks/github", None, raw=tampered, signature=good_signature)

    for name, answer in answers.items():
        assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
        assert "signature" in answer.json()["error"]
        assert SECRET not in answer.text
    assert signed.status_code == 202
    wait_for_events(lambda found: any(e.payload.get("commit") == commit for e in found))
    assert not [e for e in merged_events() if e.payload.get("commit") == "f" * 40]
    assert SECRET not in relay.log.read_text()


def test_pushes_to_other_branches_other_events_and_unrelated_paths_are_ignored(
    relay: Relay, repository: Repository
) -> None:
    commit = repository.commit({"apps/alpha/app.py": "print('alpha branch')\n"}, "branch work")
    docs = repository.commit({"README.md": "shop, documented\n"}, "docs")

    branch = relay.post("/webhooks/github", push(commit, ["apps/alpha/app.py"], ref="refs/heads/feature-x"))
    tag = relay.post("/webhooks/github", push(commit, ["apps/alpha/app.py"], ref="refs/tags/v1.3.0"))
    unrelated = relay.post("/webhooks/github", push(docs, ["README.md"]))
    issue = relay.post("/webhooks/github", {"action": "opened"}, event="issues")
    ping = relay.post("/webhooks/github", {"zen": "Keep it logically awesome."}, event="ping")
    unknown_repo = relay.post(
        "/webhooks/github", {**push(commit, ["apps/alpha/app.py"]), "repository": {"full_name": "acme/other"}}
    )
    generic_branch = relay.post("/webhooks/merge", generic("alpha", "a" * 40, ref="refs/heads/feature-x"), event=None)

    assert branch.status_code == 202 and "refs/heads/feature-x is not refs/heads/main" in branch.json()["reason"]
    assert tag.status_code == 202 and tag.json()["status"] == "ignored"
    assert unrelated.status_code == 202 and "no service" in unrelated.json()["reason"]
    assert issue.status_code == 202 and "'issues' is not handled" in issue.json()["reason"]
    assert ping.status_code == 200 and ping.json() == {"status": "pong"}
    assert unknown_repo.status_code == 202 and "acme/other is not configured" in unknown_repo.json()["reason"]
    assert generic_branch.status_code == 202 and generic_branch.json()["status"] == "ignored"
    # a sentinel sent after them arrives; none of theirs ever does
    sentinel = "5e" * 20
    assert relay.post("/webhooks/merge", generic("alpha", sentinel), event=None).status_code == 202
    events = wait_for_events(lambda found: any(e.payload.get("commit") == sentinel for e in found))
    assert not [e for e in events if e.payload.get("commit") in (commit, docs, "a" * 40)]


def test_malformed_deliveries_get_400_naming_the_problem(relay: Relay) -> None:
    not_json = relay.post("/webhooks/github", None, raw=b"{not json")
    no_after = relay.post("/webhooks/github", {k: v for k, v in push("b" * 40, ["x"]).items() if k != "after"})
    short_commit = relay.post("/webhooks/github", push("abc123", ["apps/alpha/app.py"]))
    no_event_header = relay.post("/webhooks/github", push("b" * 40, ["apps/alpha/app.py"]), event=None)
    bad_version = relay.post("/webhooks/merge", generic("alpha", "c" * 40, app_version="latest"), event=None)
    naive_time = relay.post(
        "/webhooks/merge", generic("alpha", "c" * 40, committed_at="2026-11-21T08:00:00"), event=None
    )
    extra = relay.post("/webhooks/merge", generic("alpha", "c" * 40, environment="production"), event=None)

    assert not_json.status_code == 400 and "malformed push payload" in not_json.json()["error"]
    assert no_after.status_code == 400 and "after: Field required" in no_after.json()["error"]
    assert short_commit.status_code == 400 and "after:" in short_commit.json()["error"]
    assert no_event_header.status_code == 400 and "X-GitHub-Event" in no_event_header.json()["error"]
    assert bad_version.status_code == 400 and "app_version" in bad_version.json()["error"]
    assert naive_time.status_code == 400 and "committed_at" in naive_time.json()["error"]
    assert extra.status_code == 400 and "environment" in extra.json()["error"]


def test_a_missing_version_file_or_unrouted_service_is_refused_and_emits_nothing(
    relay: Relay, repository: Repository
) -> None:
    commit = repository.commit({"apps/beta/VERSION": None, "apps/beta/app.py": "print('beta 3')\n"}, "no version")

    missing = relay.post("/webhooks/github", push(commit, ["apps/beta/VERSION", "apps/beta/app.py"]))
    unknown = relay.post("/webhooks/github", push("d" * 40, ["apps/alpha/app.py"]))
    unrouted = relay.post("/webhooks/merge", generic("gamma", "e" * 40), event=None)

    assert missing.status_code == 422 and "apps/beta/VERSION does not exist" in missing.json()["error"]
    assert unknown.status_code == 422 and "even after fetching" in unknown.json()["error"]
    assert unrouted.status_code == 422 and "gamma is not routed" in unrouted.json()["error"]
    sentinel = "6f" * 20
    assert relay.post("/webhooks/merge", generic("beta", sentinel), event=None).status_code == 202
    events = wait_for_events(lambda found: any(e.payload.get("commit") == sentinel for e in found))
    assert not [e for e in events if e.payload.get("commit") in (commit, "d" * 40, "e" * 40)]


def test_the_generic_shape_emits_exactly_its_payload(relay: Relay) -> None:
    commit = "7a" * 20
    answer = relay.post("/webhooks/merge", generic("beta", commit), event=None, signature="good")

    assert answer.status_code == 202, answer.text
    events = wait_for_events(lambda found: any(e.payload.get("commit") == commit for e in found))
    event = next(e for e in events if e.payload.get("commit") == commit)
    assert event.payload == {**generic("beta", commit), "committed_at": "2026-11-21T08:00:00+00:00"}
    assert event.resource["switchyard.service"] == "beta"


def test_the_relay_refuses_to_start_without_a_usable_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_RELAY_SECRET", raising=False)
    monkeypatch.delenv("SWITCHYARD_RELAY_SECRET_FILE", raising=False)
    with pytest.raises(RelaySetupError, match="no webhook secret: set SWITCHYARD_RELAY_SECRET"):
        load_secret()
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    with pytest.raises(RelaySetupError, match="too short") as refused:
        load_secret(short)
    assert "hunter2" not in str(refused.value)
    good = tmp_path / "good"
    good.write_text(SECRET + "\n")
    assert load_secret(good) == SECRET.encode()
    with pytest.raises(RelaySetupError, match="does not exist"):
        RelayConfig.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("repositories: {acme/shop: {services: {}}}\n")
    with pytest.raises(RelaySetupError, match="at least one service"):
        RelayConfig.load(tmp_path / "bad.yaml")
