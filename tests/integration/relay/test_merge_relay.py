"""The merge relay end to end: real HTTP requests to the relay process (or several: replicas), real git
repositories (and a `git` on PATH that hangs, or none), and a real Prefect API (the test harness's
server) where the `switchyard.git.merged` events must arrive, or must not.

Every test uses its own repository name (all routed to the same clone), so what one test emitted
never counts as "already emitted" or "a newer version" in another.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from switchyard.relay.config import RelayConfig, RelaySetupError, load_secret
from switchyard.stack.processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[3]
SECRET = "relay-test-secret-" + uuid.uuid4().hex
REPOSITORY = "acme/shop"
# One name per test that must not see another's events (see the module docstring).
ROUTED = [
    REPOSITORY,
    "acme/sentinel",
    "acme/replay",
    "acme/race",
    "acme/downgrade",
    "acme/limits",
    "acme/git-env",
    "platform/web/shop",
    "platform/web/long-push",
    "platform/web/merged",
    "platform/web/tokens",
    "platform/web/unmerged",
]
EVENT = "switchyard.git.merged"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
MIB = 1024 * 1024


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

    def write(self, files: dict[str, str | None]) -> None:
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)

    def commit(self, files: dict[str, str | None], message: str, *, push: bool = True) -> str:
        """Write (or, for None, delete) files, commit, push to origin main; the commit id."""
        self.write(files)
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "-m", message)
        if push:
            git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def head(self) -> str:
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

    def gitlab(
        self, payload: Any, *, event: str | None = "Push Hook", token: str | None = SECRET, key: str | None = None
    ) -> httpx.Response:
        """As GitLab sends it: the secret token in X-Gitlab-Token, an Idempotency-Key per event."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": key or str(uuid.uuid4())}
        if event is not None:
            headers["X-Gitlab-Event"] = event
        if token is not None:
            headers["X-Gitlab-Token"] = token
        return httpx.post(self.url + "/webhooks/gitlab", json=payload, headers=headers, timeout=60)


def relay_config(repository: Repository, **settings: Any) -> dict[str, Any]:
    route = {
        "services": {"alpha": "apps/alpha", "beta": "apps/beta"},
        "shared_paths": ["images"],
        "checkout": str(repository.relay_clone),
    }
    return {"branch": "main", "repositories": dict.fromkeys(ROUTED, route), **settings}


@contextmanager
def running_relay(
    directory: Path, api: str, config: dict[str, Any], *, path: str | None = None, name: str = "relay"
) -> Iterator[Relay]:
    """A relay process (`python -m switchyard.relay.cli`), as an operator starts it."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / f"{name}.yaml"
    config_file.write_text(json.dumps(config))
    log = directory / f"{name}.log"
    env = {**os.environ, "PREFECT_API_URL": api, "SWITCHYARD_RELAY_SECRET": SECRET, **GIT_ENV}
    env.pop("SWITCHYARD_RELAY_SECRET_FILE", None)
    if path is not None:
        env["PATH"] = path
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchyard.relay.cli", "--port", "0", "--config", str(config_file)],
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


@pytest.fixture(scope="module")
def relay(prefect_api: str, repository: Repository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with running_relay(tmp_path_factory.mktemp("relay"), prefect_api, relay_config(repository)) as process:
        yield process


def merged_events(repository: str | None = None) -> list[Any]:
    resource = EventResourceFilter(id=[f"switchyard.repo.{repository}"]) if repository else None
    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[EVENT]), resource=resource), limit=50)
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(str(page.next_page))
            events += page.events
    return events


def wait_for_events(predicate: Any, timeout_s: float = 60, repository: str | None = None) -> list[Any]:
    """The merged events once `predicate(events)` holds (Prefect persists events in batches)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = merged_events(repository)
        if predicate(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"the expected events never arrived; found {[e.payload for e in events]}")
        time.sleep(0.3)


def wait_for_commit(commit: str, services: int = 1, repository: str | None = None) -> list[Any]:
    """The stored events of `commit`, once `services` of them are there."""
    events = wait_for_events(
        lambda found: sum(e.payload.get("commit") == commit for e in found) >= services, repository=repository
    )
    return [e for e in events if e.payload.get("commit") == commit]


_sentinel_versions = itertools.count(1)


def nothing_emitted_for(relay: Relay, *commits: str) -> None:
    """Send a sentinel merge after the deliveries under test; once it is stored, theirs would be too."""
    sentinel = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    version = f"{next(_sentinel_versions)}.0.0"
    payload = generic("alpha", sentinel, repository="acme/sentinel", app_version=version)
    answer = relay.post("/webhooks/merge", payload, event=None)
    assert answer.status_code == 202, answer.text
    events = wait_for_events(lambda found: any(e.payload.get("commit") == sentinel for e in found))
    assert not [e.payload for e in events if e.payload.get("commit") in commits]


def push(
    commit: str,
    paths: list[str],
    *,
    ref: str = "refs/heads/main",
    timestamp: str = "2026-11-20T09:30:00+01:00",
    repository: str = REPOSITORY,
) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": commit,
        "deleted": False,
        "repository": {"full_name": repository, "name": repository.split("/")[-1]},
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


# GitLab's payloads, shaped after its documented examples
# (https://docs.gitlab.com/user/project/integrations/webhook_events/, "Push events" and "Merge request
# events"), with this repository's commits and paths filled in.


def gitlab_project(path_with_namespace: str) -> dict[str, Any]:
    name = path_with_namespace.rsplit("/", 1)[-1]
    return {
        "id": 15,
        "name": name,
        "description": "",
        "web_url": f"http://example.com/{path_with_namespace}",
        "avatar_url": None,
        "git_ssh_url": f"git@example.com:{path_with_namespace}.git",
        "git_http_url": f"http://example.com/{path_with_namespace}.git",
        "namespace": path_with_namespace.split("/")[0],
        "visibility_level": 0,
        "path_with_namespace": path_with_namespace,
        "default_branch": "main",
        "homepage": f"http://example.com/{path_with_namespace}",
        "url": f"git@example.com:{path_with_namespace}.git",
        "ssh_url": f"git@example.com:{path_with_namespace}.git",
        "http_url": f"http://example.com/{path_with_namespace}.git",
    }


def gitlab_commit(commit: str, *, modified: list[str], timestamp: str = "2012-01-03T23:36:29+02:00") -> dict[str, Any]:
    return {
        "id": commit,
        "message": "fixed readme",
        "title": "fixed readme",
        "timestamp": timestamp,
        "url": f"http://example.com/mike/diaspora/commit/{commit}",
        "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
        "added": [],
        "modified": modified,
        "removed": [],
    }


def gitlab_push(
    project: str,
    before: str,
    after: str,
    commits: list[dict[str, Any]],
    *,
    total: int | None = None,
    ref: str = "refs/heads/main",
) -> dict[str, Any]:
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": after,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "user_email": "john@example.com",
        "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
        "project_id": 15,
        "project": gitlab_project(project),
        "repository": {
            "name": project.rsplit("/", 1)[-1],
            "url": f"git@example.com:{project}.git",
            "description": "",
            "homepage": f"http://example.com/{project}",
            "git_http_url": f"http://example.com/{project}.git",
            "git_ssh_url": f"git@example.com:{project}.git",
            "visibility_level": 0,
        },
        "commits": commits,
        "total_commits_count": len(commits) if total is None else total,
    }


def gitlab_merge_request(
    project: str,
    *,
    action: str,
    state: str,
    merge_commit_sha: str | None,
    last_commit: str,
    target_branch: str = "main",
) -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": "Administrator", "username": "root", "email": "admin@example.com"},
        "project": gitlab_project(project),
        "repository": {
            "name": project.rsplit("/", 1)[-1],
            "url": f"http://example.com/{project}.git",
            "description": "",
            "homepage": f"http://example.com/{project}",
        },
        "object_attributes": {
            "id": 99,
            "iid": 7,
            "target_branch": target_branch,
            "source_branch": "feature",
            "source_project_id": 15,
            "author_id": 51,
            "title": "Beta: faster",
            "created_at": "2026-11-20T08:00:00Z",
            "updated_at": "2026-11-20T09:00:00Z",
            "state_id": 3 if state == "merged" else 1,
            "state": state,
            "merge_commit_sha": merge_commit_sha,
            "merge_status": "can_be_merged",
            "target_project_id": 15,
            "url": f"http://example.com/{project}/-/merge_requests/7",
            "source": gitlab_project(project),
            "target": gitlab_project(project),
            "last_commit": {
                "id": last_commit,
                "message": "beta: faster",
                "title": "beta: faster",
                "timestamp": "2026-11-20T08:30:00+01:00",
                "url": f"http://example.com/{project}/-/commit/{last_commit}",
                "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
            },
            "labels": [],
            "action": action,
            "detailed_merge_status": "mergeable",
        },
        "labels": [],
        "changes": {},
        "assignees": [],
        "reviewers": [],
    }


# GitHub and the generic shape --------------------------------------------------------------------------


def test_a_signed_push_to_main_emits_one_event_per_changed_service_with_the_version_at_that_commit(
    relay: Relay, repository: Repository
) -> None:
    # A commit the relay's clone does not have yet: the relay fetches it, and reads VERSION there
    # (the working tree's VERSION changes again afterwards, and must not be what is read).
    commit = repository.commit({"apps/alpha/VERSION": "1.3.0\n", "apps/alpha/app.py": "print('alpha 1.3')\n"}, "alpha")
    repository.commit({"apps/alpha/VERSION": "9.9.9\n"}, "later")
    delivery = str(uuid.uuid4())

    answer = relay.post(
        "/webhooks/github", push(commit, ["apps/alpha/VERSION", "apps/alpha/app.py"]), delivery=delivery
    )

    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "emitted"
    assert [(e["service"], e["app_version"]) for e in answer.json()["events"]] == [("alpha", "1.3.0")]
    [event] = wait_for_commit(commit)
    assert event.resource.id == f"switchyard.repo.{REPOSITORY}"
    assert event.resource["switchyard.service"] == "alpha"
    assert event.resource["switchyard.delivery"] == delivery  # what a redelivery is looked up by
    assert event.payload == {
        "service": "alpha",
        "app_version": "1.3.0",
        "commit": commit,
        "repository": REPOSITORY,
        "ref": "refs/heads/main",
        "committed_at": "2026-11-20T08:30:00+00:00",
    }
    assert str(event.id) == answer.json()["events"][0]["id"]


def test_a_change_to_a_shared_folder_releases_every_service(relay: Relay, repository: Repository) -> None:
    commit = repository.commit({"images/base.pkr.hcl": "# template v2\n", "apps/alpha/VERSION": "1.4.0\n"}, "template")

    answer = relay.post("/webhooks/github", push(commit, ["images/base.pkr.hcl"]))

    assert answer.status_code == 202, answer.text
    assert {(e["service"], e["app_version"]) for e in answer.json()["events"]} == {
        ("alpha", "1.4.0"),
        ("beta", "2.0.0"),
    }
    assert sorted(e.payload["service"] for e in wait_for_commit(commit, services=2)) == ["alpha", "beta"]


def test_bad_missing_or_unsigned_deliveries_are_refused_and_emit_nothing(relay: Relay, repository: Repository) -> None:
    commit = repository.commit({"apps/beta/VERSION": "2.1.0\n", "apps/beta/app.py": "print('beta 2')\n"}, "beta")
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
    good_signature = "sha256=" + hmac.new(SECRET.encode(), json.dumps(body).encode(), hashlib.sha256).hexdigest()
    answers["tampered"] = relay.post("/webhooks/github", None, raw=tampered, signature=good_signature)
    nothing_emitted_for(relay, commit, "f" * 40)
    signed = relay.post("/webhooks/github", body)  # sanity: the same body, signed, is accepted

    for name, answer in answers.items():
        assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
        assert "signature" in answer.json()["error"]
        assert SECRET not in answer.text
    assert signed.status_code == 202, signed.text
    wait_for_commit(commit)
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
    unknown_repo = relay.post("/webhooks/github", push(commit, ["apps/alpha/app.py"], repository="acme/other"))
    generic_branch = relay.post("/webhooks/merge", generic("alpha", "a" * 40, ref="refs/heads/feature-x"), event=None)

    assert branch.status_code == 202 and "refs/heads/feature-x is not refs/heads/main" in branch.json()["reason"]
    assert tag.status_code == 202 and tag.json()["status"] == "ignored"
    assert unrelated.status_code == 202 and "no service" in unrelated.json()["reason"]
    assert issue.status_code == 202 and "'issues' is not handled" in issue.json()["reason"]
    assert ping.status_code == 200 and ping.json() == {"status": "pong"}
    assert unknown_repo.status_code == 202 and "acme/other is not configured" in unknown_repo.json()["reason"]
    assert generic_branch.status_code == 202 and generic_branch.json()["status"] == "ignored"
    nothing_emitted_for(relay, commit, docs, "a" * 40)


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
    nothing_emitted_for(relay, commit, "d" * 40, "e" * 40)
    repository.commit({"apps/beta/VERSION": "2.1.0\n"}, "version back")


def test_the_generic_shape_emits_exactly_its_payload(relay: Relay) -> None:
    commit = "7a" * 20
    answer = relay.post("/webhooks/merge", generic("beta", commit), event=None, signature="good")

    assert answer.status_code == 202, answer.text
    [event] = wait_for_commit(commit)
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
    (tmp_path / "window.yaml").write_text("replay_window_days: 0\nrepositories: {acme/shop: {services: {a: a}}}\n")
    with pytest.raises(RelaySetupError, match="replay_window_days"):
        RelayConfig.load(tmp_path / "window.yaml")
    assert RelayConfig.model_validate({"repositories": {}}).replay_window_days == 7  # Prefect's event retention


# Replays and downgrades: read back from Prefect's event store ------------------------------------------


def test_a_redelivery_is_a_duplicate_for_any_replica_and_any_restart_within_the_window(
    relay: Relay, repository: Repository, prefect_api: str, tmp_path: Path
) -> None:
    project = "acme/replay"
    commit = repository.commit({"images/base.pkr.hcl": "# template v3\n", "apps/alpha/VERSION": "1.5.0\n"}, "replay")
    body = push(commit, ["images/base.pkr.hcl"], repository=project)
    delivery = str(uuid.uuid4())
    first = relay.post("/webhooks/github", body, delivery=delivery)
    assert first.status_code == 202, first.text
    emitted = sorted((e["id"], e["service"], e["app_version"]) for e in first.json()["events"])
    assert sorted(service for _, service, _ in emitted) == ["alpha", "beta"]
    wait_for_commit(commit, services=2, repository=project)
    stored_at = time.monotonic()

    # A relay process started after the delivery (a restart, or another replica) knows it from
    # Prefect's store alone: the same delivery id, and the same merge under a new delivery id (a
    # second webhook, GitLab's push and merge-request hooks) are duplicates; nothing is emitted.
    with running_relay(tmp_path / "replica", prefect_api, relay_config(repository), name="replica") as replica:
        redelivered = replica.post("/webhooks/github", body, delivery=delivery)
        same_merge = replica.post("/webhooks/github", body, delivery=str(uuid.uuid4()))
        generic_again = replica.post("/webhooks/merge", generic("beta", commit, repository=project), event=None)
        replica_log = replica.log.read_text()

        # A relay whose window is shorter than the event's age looks no further back than that.
        short = relay_config(repository, replay_window_days=5 / 86400)
        time.sleep(max(0.0, stored_at + 6 - time.monotonic()))
        with running_relay(tmp_path / "short", prefect_api, short, name="short-window") as forgetful:
            outside = forgetful.post("/webhooks/github", body, delivery=delivery)

    for answer in (redelivered, same_merge, generic_again):
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "duplicate"
        assert "nothing emitted" in answer.json()["reason"]
    assert f"delivery {delivery} was already relayed" in redelivered.json()["reason"]
    assert "already relayed" in same_merge.json()["reason"]
    assert sorted((e["id"], e["service"], e["app_version"]) for e in redelivered.json()["events"]) == emitted
    assert sorted((e["id"], e["service"], e["app_version"]) for e in same_merge.json()["events"]) == emitted
    assert "-> event" not in replica_log  # the replica emitted nothing
    assert outside.status_code == 202 and outside.json()["status"] == "emitted", outside.text
    assert sorted(e.payload["service"] for e in merged_events(project) if e.payload["commit"] == commit) == [
        "alpha",
        "beta",
    ]


def test_two_replicas_receiving_the_same_delivery_at_once_start_one_release_per_service(
    relay: Relay, repository: Repository, prefect_api: str, tmp_path: Path
) -> None:
    """Neither replica can see the other's event yet (Prefect persists in batches): both emit it. The
    event ids are the same, so Prefect stores each once and a trigger like release-on-merge's fires
    once per service; both Git-host deliveries are answered 2xx."""
    project = "acme/race"
    with get_client(sync_client=True) as client:
        automation = client.create_automation(
            AutomationCore(
                name="race: like release-on-merge",
                trigger=EventTrigger(
                    expect={EVENT},
                    match={"prefect.resource.id": f"switchyard.repo.{project}"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[DoNothing()],
            )
        )
    commit = repository.commit({"images/base.pkr.hcl": "# template v4\n", "apps/alpha/VERSION": "1.6.0\n"}, "race")
    body = push(commit, ["images/base.pkr.hcl"], repository=project)
    delivery = str(uuid.uuid4())
    answers: dict[str, httpx.Response] = {}

    with running_relay(tmp_path / "replica", prefect_api, relay_config(repository), name="replica") as replica:
        start = threading.Barrier(2)

        def deliver(name: str, to: Relay) -> None:
            start.wait()
            answers[name] = to.post("/webhooks/github", body, delivery=delivery)

        threads = [threading.Thread(target=deliver, args=item) for item in (("a", relay), ("b", replica))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert {a.status_code for a in answers.values()} <= {200, 202}, [a.text for a in answers.values()]
    assert any(a.json()["status"] == "emitted" for a in answers.values())
    assert len(wait_for_commit(commit, services=2, repository=project)) == 2

    def triggered() -> int:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["prefect.automation.triggered"]),
                    resource=EventResourceFilter(id=[f"prefect.automation.{automation}"]),
                ),
                limit=50,
            )
        return len(page.events)

    deadline = time.monotonic() + 60
    while triggered() < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(6)  # a second firing for the same event would be stored by now as well
    assert triggered() == 2


def test_a_merge_that_would_move_a_service_back_is_refused_409_and_emits_nothing(
    relay: Relay, repository: Repository
) -> None:
    project = "acme/downgrade"
    older = repository.commit({"apps/alpha/VERSION": "4.0.0\n", "apps/alpha/app.py": "print('4')\n"}, "older")
    newer = repository.commit(
        {"apps/alpha/VERSION": "5.0.0\n", "apps/beta/VERSION": "2.1.0\n", "images/base.pkr.hcl": "# v5\n"}, "newer"
    )
    first = relay.post("/webhooks/github", push(newer, ["images/base.pkr.hcl"], repository=project))
    assert first.status_code == 202, first.text
    assert {(e["service"], e["app_version"]) for e in first.json()["events"]} == {("alpha", "5.0.0"), ("beta", "2.1.0")}
    wait_for_commit(newer, services=2, repository=project)

    # The older commit's webhook arrives late (out of order, or redelivered by hand).
    late = relay.post("/webhooks/github", push(older, ["apps/alpha/app.py"], repository=project))
    # A change without a version bump: the same version again.
    unbumped = repository.commit({"apps/alpha/app.py": "print('5, faster')\n"}, "unbumped")
    same = relay.post("/webhooks/github", push(unbumped, ["apps/alpha/app.py"], repository=project))
    via_ci = relay.post("/webhooks/merge", generic("alpha", "c0ffee" * 6 + "c0ff", repository=project), event=None)
    # A shared change that bumps alpha only: alpha is released, beta (not newer) is refused.
    mixed = repository.commit({"apps/alpha/VERSION": "5.1.0\n", "images/base.pkr.hcl": "# v5.1\n"}, "mixed")
    partly = relay.post("/webhooks/github", push(mixed, ["images/base.pkr.hcl"], repository=project))

    assert late.status_code == 409, late.text
    assert "alpha 4.0.0 is not newer than 5.0.0, which the relay already emitted" in late.json()["error"]
    assert f"from commit {newer[:12]}" in late.json()["error"]
    assert late.json()["refused"][0] | {"reason": ""} == {
        "service": "alpha",
        "app_version": "4.0.0",
        "commit": older,
        "emitted": "5.0.0",
        "emitted_commit": newer,
        "reason": "",
    }
    assert same.status_code == 409 and "alpha 5.0.0 is not newer than 5.0.0" in same.json()["error"], same.text
    assert via_ci.status_code == 409 and "alpha 3.1.4 is not newer than 5.0.0" in via_ci.json()["error"], via_ci.text
    assert partly.status_code == 202, partly.text
    assert [(e["service"], e["app_version"]) for e in partly.json()["events"]] == [("alpha", "5.1.0")]
    assert [(r["service"], r["app_version"], r["emitted"]) for r in partly.json()["refused"]] == [
        ("beta", "2.1.0", "2.1.0")
    ]
    wait_for_commit(mixed, repository=project)
    nothing_emitted_for(relay, older, unbumped, "c0ffee" * 6 + "c0ff")
    stored = {(e.payload["service"], e.payload["commit"]) for e in merged_events(project)}
    assert stored == {("alpha", newer), ("beta", newer), ("alpha", mixed)}


# Hardening ------------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_413_before_its_signature_is_checked(
    relay: Relay, repository: Repository
) -> None:
    project = "acme/limits"
    commit = repository.commit({"apps/alpha/VERSION": "1.7.0\n"}, "limits")
    padded = {**push(commit, ["apps/alpha/VERSION"], repository=project), "padding": "x" * (2 * MIB)}
    body = json.dumps(padded).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": signature}

    signed = httpx.post(relay.url + "/webhooks/github", content=body, headers=headers, timeout=60)
    # chunked: no content-length to judge by, the relay stops reading at the limit
    chunked = httpx.post(relay.url + "/webhooks/github", content=iter([body]), headers=headers, timeout=60)
    unsigned = relay.post("/webhooks/github", None, raw=body, signature=None)
    gitlab = httpx.post(
        relay.url + "/webhooks/gitlab",
        content=body,
        headers={"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"},
        timeout=60,
    )

    for answer in (signed, chunked, unsigned, gitlab):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == f"body over {2 * MIB} bytes: a merge webhook is smaller than that"
    nothing_emitted_for(relay, commit)
    # A large but ordinary push (1.5 MiB: hundreds of commits) still gets through.
    large = {**push(commit, ["apps/alpha/VERSION"], repository=project), "padding": "x" * (3 * MIB // 2)}
    assert relay.post("/webhooks/github", large).status_code == 202
    wait_for_commit(commit, repository=project)


def test_git_runs_without_the_relay_secret_in_its_environment_or_its_hooks(
    relay: Relay, repository: Repository, tmp_path: Path
) -> None:
    # A real hook in the relay's clone: git runs it when the relay's fetch updates refs.
    dump = tmp_path / "hook-environment"
    hook = repository.relay_clone / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\nenv >> '{dump}'\n")
    hook.chmod(0o755)
    try:
        commit = repository.commit({"apps/alpha/VERSION": "1.8.0\n"}, "git env")
        answer = relay.post("/webhooks/github", push(commit, ["apps/alpha/VERSION"], repository="acme/git-env"))
    finally:
        hook.unlink()

    assert answer.status_code == 202, answer.text
    seen = dump.read_text()
    assert "GIT_EXEC_PATH=" in seen  # the hook ran, inside git
    assert SECRET not in seen
    assert "SWITCHYARD_RELAY_SECRET" not in seen
    assert "PREFECT_API_URL" not in seen  # nor Prefect's settings (an API key would sit beside it)


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


def test_a_gitlab_push_to_the_branch_emits_the_merge_event(relay: Relay, repository: Repository) -> None:
    project = "platform/web/shop"
    before = repository.head()
    commit = repository.commit({"apps/alpha/VERSION": "2.0.0\n", "apps/alpha/app.py": "print('gl')\n"}, "gitlab")
    key = str(uuid.uuid4())
    payload = gitlab_push(project, before, commit, [gitlab_commit(commit, modified=["apps/alpha/app.py"])])

    answer = relay.gitlab(payload, key=key)

    assert answer.status_code == 202, answer.text
    assert [(e["service"], e["app_version"]) for e in answer.json()["events"]] == [("alpha", "2.0.0")]
    [event] = wait_for_commit(commit, repository=project)
    assert event.payload == {
        "service": "alpha",
        "app_version": "2.0.0",
        "commit": commit,
        "repository": project,
        "ref": "refs/heads/main",
        "committed_at": "2012-01-03T21:36:29+00:00",
    }
    assert event.resource["switchyard.delivery"] == key
    # GitLab retries with the same Idempotency-Key: a duplicate
    again = relay.gitlab(payload, key=key)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text


def test_a_gitlab_push_listing_only_the_newest_commits_reads_the_others_from_git(
    relay: Relay, repository: Repository
) -> None:
    project = "platform/web/long-push"
    before = repository.head()
    beta = repository.commit({"apps/beta/VERSION": "2.2.0\n"}, "beta, first of the push", push=False)
    docs = repository.commit({"README.md": "shop, again\n"}, "docs, last of the push")
    # GitLab lists the newest 20 commits only; here the newest 1 of 2.
    payload = gitlab_push(project, before, docs, [gitlab_commit(docs, modified=["README.md"])], total=2)

    answer = relay.gitlab(payload)

    assert answer.status_code == 202, answer.text
    assert [(e["service"], e["app_version"]) for e in answer.json()["events"]] == [("beta", "2.2.0")]
    assert beta != docs
    wait_for_commit(docs, repository=project)


def test_a_merged_gitlab_merge_request_emits_the_event_for_what_the_merge_brought_in(
    relay: Relay, repository: Repository
) -> None:
    project = "platform/web/merged"
    work = repository.work
    git(work, "checkout", "--quiet", "-b", "feature")
    feature = repository.commit(
        {"apps/beta/VERSION": "2.3.0\n", "apps/beta/app.py": "print('b')\n"}, "beta", push=False
    )
    git(work, "checkout", "--quiet", "main")
    # main moves on meanwhile (alpha): not part of what the merge brings in
    repository.commit({"apps/alpha/app.py": "print('alpha, meanwhile')\n"}, "alpha meanwhile")
    git(work, "merge", "--quiet", "--no-ff", "-m", "Merge branch 'feature' into 'main'", "feature")
    git(work, "push", "--quiet", "origin", "HEAD:main")
    merge_commit = repository.head()
    committed = datetime.fromisoformat(git(work, "show", "-s", "--format=%cI", merge_commit)).astimezone(UTC)
    payload = gitlab_merge_request(
        project, action="merge", state="merged", merge_commit_sha=merge_commit, last_commit=feature
    )

    answer = relay.gitlab(payload, event="Merge Request Hook")

    assert answer.status_code == 202, answer.text
    assert [(e["service"], e["app_version"]) for e in answer.json()["events"]] == [("beta", "2.3.0")]
    [event] = wait_for_commit(merge_commit, repository=project)
    assert event.payload == {
        "service": "beta",
        "app_version": "2.3.0",
        "commit": merge_commit,
        "repository": project,
        "ref": "refs/heads/main",
        "committed_at": committed.isoformat(),
    }
    # The push of that merge (GitLab's other hook) is the same merge: relayed once.
    pushed = relay.gitlab(
        gitlab_push(project, feature, merge_commit, [gitlab_commit(merge_commit, modified=["apps/beta/VERSION"])])
    )
    assert pushed.status_code == 200 and pushed.json()["status"] == "duplicate", pushed.text


def test_a_gitlab_delivery_without_the_right_token_is_refused_401_and_emits_nothing(
    relay: Relay, repository: Repository
) -> None:
    project = "platform/web/tokens"
    before = repository.head()
    commit = repository.commit({"apps/alpha/VERSION": "2.1.0\n"}, "tokens")
    payload = gitlab_push(project, before, commit, [gitlab_commit(commit, modified=["apps/alpha/VERSION"])])
    github_style = hmac.new(SECRET.encode(), json.dumps(payload).encode(), hashlib.sha256).hexdigest()

    missing = relay.gitlab(payload, token=None)
    wrong = relay.gitlab(payload, token="not-the-secret-" + uuid.uuid4().hex)
    prefix = relay.gitlab(payload, token=SECRET[:-1])
    signed_instead = httpx.post(
        relay.url + "/webhooks/gitlab",
        json=payload,
        headers={"X-Gitlab-Event": "Push Hook", "X-Hub-Signature-256": "sha256=" + github_style},
        timeout=60,
    )

    assert missing.status_code == 401 and "missing token" in missing.json()["error"], missing.text
    for answer in (wrong, prefix):
        assert answer.status_code == 401 and "invalid token" in answer.json()["error"], answer.text
    assert signed_instead.status_code == 401, signed_instead.text
    for answer in (missing, wrong, prefix, signed_instead):
        assert SECRET not in answer.text
    nothing_emitted_for(relay, commit)
    assert SECRET not in relay.log.read_text()


def test_a_gitlab_merge_request_that_was_not_merged_into_the_branch_is_ignored_with_the_reason(
    relay: Relay, repository: Repository
) -> None:
    project = "platform/web/unmerged"
    commit = repository.commit({"apps/alpha/VERSION": "2.2.0\n"}, "unmerged")

    def request(**fields: Any) -> httpx.Response:
        settings = {"action": "merge", "state": "merged", "merge_commit_sha": commit, "last_commit": commit} | fields
        return relay.gitlab(gitlab_merge_request(project, **settings), event="Merge Request Hook")

    opened = request(action="open", state="opened", merge_commit_sha=None)
    closed = request(action="close", state="closed", merge_commit_sha=None)
    updated = request(action="update", state="opened", merge_commit_sha=None)
    elsewhere = request(target_branch="release-1")
    fast_forward = request(merge_commit_sha=None)
    tag = relay.gitlab({"object_kind": "tag_push", "ref": "refs/tags/v1"}, event="Tag Push Hook")
    no_kind = relay.gitlab({"object_kind": "push"}, event=None)

    for answer in (opened, closed, updated, elsewhere, fast_forward, tag):
        assert answer.status_code == 202 and answer.json()["status"] == "ignored", answer.text
    assert opened.json()["reason"] == "merge request !7 was not merged (action 'open'): nothing to release"
    assert closed.json()["reason"] == "merge request !7 was not merged (action 'close'): nothing to release"
    assert "action 'update'" in updated.json()["reason"]
    assert "merged into refs/heads/release-1, not refs/heads/main" in elsewhere.json()["reason"]
    assert (
        "without a merge commit (fast-forward): the push to refs/heads/main releases it"
        in (fast_forward.json()["reason"])
    )
    assert "'Tag Push Hook' is not handled" in tag.json()["reason"]
    assert no_kind.status_code == 400 and "X-Gitlab-Event" in no_kind.json()["error"]
    nothing_emitted_for(relay, commit)
