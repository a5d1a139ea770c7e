"""The merge relay end to end, GitHub and the generic shape: real HTTP requests to the relay process
(or several: replicas), real git repositories, and a real Prefect API (the test harness's server)
where the `switchyard.git.merged` events must arrive, or must not (fixtures: conftest.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from switchyard.relay.config import RelayConfig, RelaySetupError, load_secret
from tests.integration.relay.relay_support import (
    EVENT,
    MIB,
    REPOSITORY,
    SECRET,
    Relay,
    Repository,
    generic,
    merged_events,
    nothing_emitted_for,
    push,
    relay_config,
    running_relay,
    wait_for_commit,
)


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
