"""What the relay tests share: a real git repository, the relay process (or several), deliveries
signed as GitHub and GitLab sign them, and readers of the events that reach the Prefect API.

Every test uses its own repository name (all routed to the same clone), so what one test emitted
never counts as "already emitted" or "a newer version" in another.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

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


class Relay:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path, output: Path) -> None:
        self.process, self.url, self.log, self.output = process, url, log, output

    def logs(self) -> str:
        """Everything the relay wrote: its log (stderr) and its standard output (uvicorn's access log)."""
        return "".join(file.read_text(errors="replace") for file in (self.log, self.output) if file.exists())

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
    directory: Path, api: str, config: dict[str, Any] | None, *, path: str | None = None, name: str = "relay"
) -> Iterator[Relay]:
    """A relay process, as docs/relay.md tells an operator to start it: `switchyard relay`, the secret
    in $SWITCHYARD_RELAY_SECRET, the Prefect API in $PREFECT_API_URL (and no other Prefect setting of
    this test process). `config` is written as its --config file; None starts it without one (it
    routes this checkout's fleet services, read from this checkout). Stopped by its process group."""
    directory.mkdir(parents=True, exist_ok=True)
    options = ["--port", "0"]
    if config is not None:
        config_file = directory / f"{name}.yaml"
        config_file.write_text(json.dumps(config))
        options += ["--config", str(config_file)]
    log = directory / f"{name}.log"
    output = directory / f"{name}.out"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api, "SWITCHYARD_RELAY_SECRET": SECRET, **GIT_ENV})
    env.pop("SWITCHYARD_RELAY_SECRET_FILE", None)
    if path is not None:
        env["PATH"] = path
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "relay", *options],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            start_new_session=True,
        )
    copier: threading.Thread | None = None
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "listening on http://" in first, f"relay did not start: {first!r}\n{log.read_text()[-2000:]}"
        url = first.split("listening on ", 1)[1].split(" ", 1)[0]
        # The rest of its output (the access log) goes to a file: a pipe nobody reads would fill up
        # and stop the relay in the middle of a request.
        copier = threading.Thread(target=_copy_lines, args=(process.stdout, output, first), daemon=True)
        copier.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield Relay(process, url, log, output)
    finally:
        stop_process_group(process, grace_s=15)
        if copier is not None:
            copier.join(timeout=10)  # the relay is gone: its output ends


def _copy_lines(stream: IO[str], file: Path, first: str) -> None:
    with file.open("w") as out:
        out.write(first)
        for line in stream:
            out.write(line)
            out.flush()


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
    before: str = "0" * 40,
) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": before,
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
