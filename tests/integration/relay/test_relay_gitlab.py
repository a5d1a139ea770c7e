"""The relay and GitLab: pushes and merged merge requests to the branch emit the merge event, a
wrong token or an unmerged merge request emits nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.integration.relay.relay_support import (
    SECRET,
    Relay,
    Repository,
    git,
    gitlab_commit,
    gitlab_merge_request,
    gitlab_push,
    nothing_emitted_for,
    wait_for_commit,
)


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
