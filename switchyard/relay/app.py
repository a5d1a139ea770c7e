"""The merge relay: a Git host's webhook in, the Prefect event `switchyard.git.merged` out.

Prefect's open-source server has no incoming webhooks, so merges reach it through this small HTTP
server. It accepts three shapes, each authenticated with the shared secret:

POST /webhooks/github
    A GitHub push webhook (content type application/json, or form-encoded with a `payload`
    field). Headers: `X-GitHub-Event: push` (`ping` is answered, other events are ignored),
    `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>`, and
    `X-GitHub-Delivery` (remembered; GitHub keeps it when a delivery is redelivered).
    Read: `ref`, `after` (the commit), `repository.full_name`, `head_commit.timestamp`, and the
    changed paths of `commits[]`/`head_commit` (added, modified, removed).

POST /webhooks/gitlab
    A GitLab project webhook, authenticated by `X-Gitlab-Token` (GitLab's "secret token": the shared
    secret itself, compared in constant time). `Idempotency-Key` (or, before GitLab 17.4,
    `X-Gitlab-Event-UUID`) is remembered as the delivery id.
    `X-Gitlab-Event: Push Hook`: a push to the branch. Read: `ref`, `before`, `after`,
    `project.path_with_namespace` (the repository), the commits' timestamps and changed paths.
    GitLab lists the newest 20 commits only: when `total_commits_count` says more were pushed,
    the changed paths are `git diff before after` in the relay's clone instead.
    `X-Gitlab-Event: Merge Request Hook`: a merge request merged into the branch
    (`object_attributes.action` "merge", `target_branch` the branch); other actions are ignored
    with the reason. The commit is `object_attributes.merge_commit_sha`. The payload names no
    changed paths, so they are `git diff <merge commit>^1 <merge commit>` in the relay's clone (what
    the merge brought into the branch; reading it also proves the commit exists), and the commit
    time is the merge commit's. A fast-forward merge has no merge commit: the push to the branch
    releases it. With both hooks on, one merge arrives twice and is relayed once (same event id).
    Other GitLab events are ignored.

    Which services, for both hosts: the relay configuration routes each repository's paths to
    services (a push that touches `apps/sample/...` releases `sample`; a shared path, e.g.
    `images/`, releases every service of the repository).
    Which app version: the file `<service path>/VERSION` at the commit, read from a local clone of
    the repository (`checkout`); when the clone lacks the commit, the relay fetches it first. Push
    payloads carry no file contents, and the version must be the one at that commit, not whatever
    the working tree holds now.

POST /webhooks/merge
    A generic shape for any CI system, exactly the event's payload, signed the same way as GitHub's
    (`X-Hub-Signature-256` or `X-Switchyard-Signature-256`):
    {"service": "sample", "app_version": "1.4.2", "commit": "<7-64 hex>",
     "repository": "acme/shop", "ref": "refs/heads/main", "committed_at": "2026-11-26T10:00:00Z"}
    The service must be routed for that repository.

GET /health answers 200.

Replays and downgrades (read back from Prefect's event store, the memory every relay replica
shares; switchyard/relay/store.py). Within the replay window (`replay_window_days`, default 7:
Prefect's default event retention):
  * a delivery id the relay already emitted events for (same repository and commit) is a
    duplicate, and so is a merge whose event id (repository, commit, service) is already stored:
    200 {"status": "duplicate", "events": [...]}, nothing emitted;
  * a service whose app version is not newer than the highest version already emitted for the same
    repository and service is refused: a redelivered or out-of-order merge (an older commit's
    webhook after a newer one) never starts a release that would move it back. When every service
    of a delivery is refused: 409, nothing emitted; otherwise the others are emitted and the
    refused ones listed.
Prefect persists events every few seconds, so two replicas receiving the same delivery at the same
moment may both miss the other's event and both emit it: the events carry the same id, Prefect
stores it once and its triggers start release-on-merge once per event id (they remember ids for 30
minutes). Both answers are 2xx. Two *different* merges racing that closely are not ordered by the
relay; release-on-merge checks what each environment runs before it builds anything.

Answers: 202 with the emitted events (and any duplicates and refused services), or with `ignored`
and the reason (another branch, another event, an unmerged merge request, no service's path
changed, an unconfigured repository); 200 for a duplicate; 401 for a missing or wrong signature or
token (nothing is emitted); 400 for a malformed body, naming the problem; 409 when every service's
version is not newer than what was emitted; 413 for a body over `max_body_bytes` (2 MiB by default;
checked before the signature); 422 when the app version or changed paths cannot be read at that
commit, or git cannot run; 503 when git timed out (retry later: redeliver); 502 when the Prefect
API did not answer the look-up or did not take the event (the Git host can redeliver). The secret
never appears in logs or answers.

The event (one per service): resource {"prefect.resource.id": "switchyard.repo.<repository>",
"switchyard.service": "<service>", "switchyard.delivery": "<delivery id>" (when the host sent one)},
payload {"service", "app_version", "commit", "repository", "ref", "committed_at"}. Its id is uuid5
of (repository, commit, service).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchyard.core.versions import AppVersion
from switchyard.relay.config import RelayConfig, RepositoryRoute
from switchyard.relay.git import CommitUnreadable, GitVersions
from switchyard.relay.payloads import (
    GitHubPush,
    GitLabMergeRequest,
    GitLabPush,
    MergedPayload,
    delivery_id,
    event_id,
    problems,
    signature_valid,
    token_valid,
)
from switchyard.relay.store import EventStoreError, PrefectEventStore, StoredMerge

logger = logging.getLogger("switchyard.relay")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

SIGNATURE_HEADERS = ("x-hub-signature-256", "x-switchyard-signature-256")
# GitHub does not retry on its own; the hint is for GitLab and hand-written clients.
_RETRY_AFTER_S = "60"


def _answer(code: int, /, headers: dict[str, str] | None = None, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code, headers=headers)


class _Refusal(Exception):
    """Stop handling a delivery and answer this."""

    def __init__(self, answer: JSONResponse) -> None:
        self.answer = answer


def _unreadable(error: CommitUnreadable, what: str) -> _Refusal:
    retry = {"Retry-After": _RETRY_AFTER_S} if error.status == 503 else None
    return _Refusal(_answer(error.status, headers=retry, error=f"cannot read {what}: {error}"))


@dataclass
class _Merge:
    """One delivery, reduced to what every host has in common."""

    host: str
    delivery: str | None
    repository: str
    route: RepositoryRoute
    commit: str
    ref: str
    committed_at: datetime
    services: list[str]
    # given by the generic shape; otherwise read from the clone, after the duplicate checks
    versions: dict[str, str] = field(default_factory=dict)


class MergeRelay:
    def __init__(self, config: RelayConfig, secret: bytes, store: PrefectEventStore | None = None) -> None:
        self.config = config
        self._secret = secret
        self.store = store or PrefectEventStore(timedelta(days=config.replay_window_days))
        self.versions = GitVersions(timeout_s=config.git_timeout_s)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/webhooks/github", self._handler(self.github), methods=["POST"]),
                Route("/webhooks/gitlab", self._handler(self.gitlab), methods=["POST"]),
                Route("/webhooks/merge", self._handler(self.generic), methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    @staticmethod
    def _handler(
        handle: Callable[[Request], Awaitable[JSONResponse]],
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                return await handle(request)
            except _Refusal as refusal:
                return refusal.answer

        return endpoint

    async def health(self, request: Request) -> JSONResponse:
        return _answer(200, status="ok")

    # Reading and authenticating ---------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        """The body, never more than `max_body_bytes` of it. It is read (and then HMAC'd) before anything
        proves who sent it, so the limit is what a stranger can make the relay read and hash: small,
        because a merge webhook is (config.DEFAULT_MAX_BODY_BYTES)."""
        limit = self.config.max_body_bytes
        too_large = _Refusal(_answer(413, error=f"body over {limit} bytes: a merge webhook is smaller than that"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        received = bytearray()
        async for chunk in request.stream():  # a chunked body has no content-length to trust
            received += chunk
            if len(received) > limit:
                raise too_large
        return bytes(received)

    async def _signed_body(self, request: Request) -> bytes:
        body = await self._body(request)
        header = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
        if header is None:
            logger.warning("refused a delivery to %s: no signature header", request.url.path)
            raise _Refusal(
                _answer(401, error="missing signature: send X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>")
            )
        if not signature_valid(self._secret, body, header):
            logger.warning("refused a delivery to %s: the signature does not match", request.url.path)
            raise _Refusal(
                _answer(401, error="invalid signature: the body's HMAC-SHA256 does not match the shared secret")
            )
        return body

    async def _token_body(self, request: Request) -> bytes:
        body = await self._body(request)
        token = request.headers.get("x-gitlab-token")
        if token is None:
            logger.warning("refused a delivery to %s: no X-Gitlab-Token", request.url.path)
            raise _Refusal(
                _answer(401, error="missing token: set the GitLab webhook's secret token to the shared secret")
            )
        if not token_valid(self._secret, token):
            logger.warning("refused a delivery to %s: the token does not match", request.url.path)
            raise _Refusal(_answer(401, error="invalid token: X-Gitlab-Token is not the shared secret"))
        return body

    @staticmethod
    def _json(body: bytes, content_type: str) -> Any:
        """The JSON document: the body itself, or the `payload` field of a form-encoded body."""
        text = body.decode("utf-8")
        if content_type.startswith("application/x-www-form-urlencoded"):
            fields = parse_qs(text)
            if "payload" not in fields:
                raise ValueError("form-encoded body has no 'payload' field")
            text = fields["payload"][0]
        return json.loads(text)

    def _parse(self, model: type[M], body: bytes, request: Request, what: str) -> M:
        try:
            return model.model_validate(self._json(body, request.headers.get("content-type", "")))
        except ValidationError as error:
            raise _Refusal(_answer(400, error=f"malformed {what} payload: {problems(error)}")) from None
        except ValueError as error:  # not UTF-8, not JSON, no form field
            raise _Refusal(_answer(400, error=f"malformed {what} payload: {error}")) from None

    def _routed(self, repository: str) -> RepositoryRoute:
        route = self.config.route(repository)
        if route is None:
            raise _Refusal(
                _answer(202, status="ignored", reason=f"repository {repository} is not configured in the relay")
            )
        return route

    def _on_branch(self, ref: str) -> None:
        if ref != self.config.ref:
            raise _Refusal(_answer(202, status="ignored", reason=f"ref {ref} is not {self.config.ref}"))

    @staticmethod
    def _touched(route: RepositoryRoute, paths: list[str]) -> list[str]:
        services = route.services_touched(paths)
        if not services:
            raise _Refusal(_answer(202, status="ignored", reason="the push changes no service's folder"))
        return services

    # The hosts ----------------------------------------------------------------------------------------

    async def github(self, request: Request) -> JSONResponse:
        body = await self._signed_body(request)
        delivery = delivery_id(request.headers.get("x-github-delivery"))
        kind = request.headers.get("x-github-event")
        if not kind:
            return _answer(400, error="missing X-GitHub-Event header")
        if kind == "ping":
            return _answer(200, status="pong")
        if kind != "push":
            return _answer(202, status="ignored", reason=f"event {kind!r} is not handled (only push)")
        push = self._parse(GitHubPush, body, request, "push")
        self._on_branch(push.ref)
        if push.deleted or push.head_commit is None:
            return _answer(202, status="ignored", reason=f"{push.ref} was deleted: nothing to release")
        route = self._routed(push.repository.full_name)
        services = self._touched(route, push.changed_paths)
        merge = _Merge(
            host="github",
            delivery=delivery,
            repository=push.repository.full_name,
            route=route,
            commit=push.after,
            ref=push.ref,
            committed_at=push.head_commit.timestamp or datetime.now(UTC),
            services=services,
        )
        return await self._relay(merge)

    async def gitlab(self, request: Request) -> JSONResponse:
        body = await self._token_body(request)
        header = request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")
        delivery = delivery_id(header)
        kind = request.headers.get("x-gitlab-event")
        if not kind:
            return _answer(400, error="missing X-Gitlab-Event header")
        if kind == "Push Hook":
            return await self._gitlab_push(self._parse(GitLabPush, body, request, "push"), delivery)
        if kind == "Merge Request Hook":
            return await self._gitlab_merge(self._parse(GitLabMergeRequest, body, request, "merge request"), delivery)
        return _answer(
            202, status="ignored", reason=f"event {kind!r} is not handled (only Push Hook and Merge Request Hook)"
        )

    async def _gitlab_push(self, push: GitLabPush, delivery: str | None) -> JSONResponse:
        self._on_branch(push.ref)
        if push.deleted:
            return _answer(202, status="ignored", reason=f"{push.ref} was deleted: nothing to release")
        route = self._routed(push.project.path_with_namespace)
        await self._stop_if_delivered(delivery, push.project.path_with_namespace, push.after)
        paths = push.changed_paths
        # GitLab lists the newest 20 commits only; an older one may be the one that touched a service.
        # (A push that creates the branch has no `before` to diff against: its listed commits are all
        # there is to go on.)
        if not push.lists_every_commit and not push.created:
            try:
                paths = await self.versions.changed_between(route, push.before, push.after)
            except CommitUnreadable as error:
                raise _unreadable(error, f"the paths pushed to {push.ref}") from None
        merge = _Merge(
            host="gitlab",
            delivery=delivery,
            repository=push.project.path_with_namespace,
            route=route,
            commit=push.after,
            ref=push.ref,
            committed_at=push.head_timestamp or datetime.now(UTC),
            services=self._touched(route, paths),
        )
        return await self._relay(merge, delivery_checked=True)

    async def _gitlab_merge(self, request: GitLabMergeRequest, delivery: str | None) -> JSONResponse:
        attributes = request.object_attributes
        name = f"merge request !{attributes.iid}" if attributes.iid is not None else "the merge request"
        if attributes.action != "merge":
            reason = f"{name} was not merged (action {attributes.action!r}): nothing to release"
            return _answer(202, status="ignored", reason=reason)
        ref = f"refs/heads/{attributes.target_branch}"
        if ref != self.config.ref:
            return _answer(202, status="ignored", reason=f"{name} was merged into {ref}, not {self.config.ref}")
        commit = attributes.merge_commit_sha
        if commit is None:
            return _answer(
                202,
                status="ignored",
                reason=f"{name} was merged without a merge commit (fast-forward): the push to {ref} releases it; "
                "enable push events on the webhook",
            )
        repository = request.project.path_with_namespace
        route = self._routed(repository)
        await self._stop_if_delivered(delivery, repository, commit)
        try:
            merged = await self.versions.merge(route, commit)
        except CommitUnreadable as error:
            raise _unreadable(error, f"what {name} changed") from None
        merge = _Merge(
            host="gitlab",
            delivery=delivery,
            repository=repository,
            route=route,
            commit=commit,
            ref=ref,
            committed_at=merged.committed_at,
            services=self._touched(route, merged.paths),
        )
        return await self._relay(merge, delivery_checked=True)

    async def generic(self, request: Request) -> JSONResponse:
        body = await self._signed_body(request)
        given = self._parse(MergedPayload, body, request, "merge")
        self._on_branch(given.ref)
        route = self.config.route(given.repository)
        if route is None or given.service not in route.services:
            routed = ", ".join(sorted(route.services)) if route else "none"
            return _answer(
                422, error=f"service {given.service} is not routed for repository {given.repository} (routed: {routed})"
            )
        merge = _Merge(
            host="generic",
            delivery=None,
            repository=given.repository,
            route=route,
            commit=given.commit,
            ref=given.ref,
            committed_at=given.committed_at,
            services=[given.service],
            versions={given.service: given.app_version},
        )
        return await self._relay(merge)

    # Replays, downgrades, emitting ------------------------------------------------------------------

    async def _lookup(self, read: Awaitable[T], label: str) -> T:
        try:
            return await read
        except EventStoreError as error:
            logger.error("%s: the Prefect API did not answer the look-up: %s", label, error)
            problem = f"could not check Prefect's event store for an earlier delivery, nothing was emitted: {error}"
            raise _Refusal(_answer(502, error=problem)) from None

    async def _stop_if_delivered(self, delivery: str | None, repository: str, commit: str) -> None:
        """A delivery id already relayed for this repository and commit: a redelivery.

        The commit must match too: delivery headers are not signed, and a replayed body under another
        delivery's id must not be taken for that delivery."""
        if delivery is None:
            return
        earlier = await self._lookup(self.store.by_delivery(delivery), f"delivery {delivery}")
        same = [m for m in earlier if m.repository.lower() == repository.lower() and m.commit == commit]
        if same:
            logger.info("delivery %s: already relayed as %s; nothing emitted", delivery, [m.id for m in same])
            raise _Refusal(
                _answer(
                    200,
                    status="duplicate",
                    reason=f"delivery {delivery} was already relayed: nothing emitted",
                    events=[m.answer() for m in same],
                )
            )

    async def _relay(self, merge: _Merge, *, delivery_checked: bool = False) -> JSONResponse:
        label = f"{merge.host} delivery {merge.delivery or '-'}"
        if not delivery_checked:
            await self._stop_if_delivered(merge.delivery, merge.repository, merge.commit)
        ids = {service: event_id(merge.repository, merge.commit, service) for service in merge.services}
        stored = {m.id: m for m in await self._lookup(self.store.by_ids(list(ids.values())), label)}
        duplicates = [stored[ids[s]] for s in merge.services if ids[s] in stored]
        fresh = [s for s in merge.services if ids[s] not in stored]
        if not fresh:
            logger.info("%s: %s %s already relayed; nothing emitted", label, merge.repository, merge.commit[:12])
            return _answer(
                200,
                status="duplicate",
                reason=f"commit {merge.commit[:12]} of {merge.repository} was already relayed: nothing emitted",
                events=[m.answer() for m in duplicates],
            )

        for service in fresh:
            if service not in merge.versions:
                try:
                    merge.versions[service] = await self.versions.version(
                        merge.route, merge.commit, merge.route.services[service]
                    )
                except CommitUnreadable as error:
                    logger.warning("%s: %s: %s", label, service, error)
                    raise _unreadable(error, f"the app version of {service}") from None

        refused: list[dict[str, str]] = []
        merges: list[MergedPayload] = []
        for service in fresh:
            version = merge.versions[service]
            highest = await self._lookup(self.store.highest(merge.repository, service), label)
            if highest is not None and not highest[0] < AppVersion.parse(version):
                newest = highest[1]
                refused.append(
                    {
                        "service": service,
                        "app_version": version,
                        "commit": merge.commit,
                        "emitted": newest.app_version,
                        "emitted_commit": newest.commit,
                        "reason": f"{service} {version} is not newer than {newest.app_version}, which the relay "
                        f"already emitted from commit {newest.commit[:12]}: a merge never moves a service back "
                        "(bump the version to ship this commit)",
                    }
                )
                continue
            merges.append(
                MergedPayload(
                    service=service,
                    app_version=version,
                    commit=merge.commit,
                    repository=merge.repository,
                    ref=merge.ref,
                    committed_at=merge.committed_at,
                )
            )
        for refusal in refused:
            logger.warning("%s: %s", label, refusal["reason"])
        if not merges:
            return _answer(
                409,
                error="; ".join(r["reason"] for r in refused) + ". Nothing was emitted",
                refused=refused,
                duplicates=[m.answer() for m in duplicates],
            )
        return await self._emit(merges, merge.delivery, label, duplicates, refused)

    async def _emit(
        self,
        merges: list[MergedPayload],
        delivery: str | None,
        label: str,
        duplicates: list[StoredMerge],
        refused: list[dict[str, str]],
    ) -> JSONResponse:
        events = [merge.event(delivery) for merge in merges]
        try:
            await self.store.emit(events)
        except EventStoreError as error:
            logger.error("%s: the Prefect API did not take %d event(s): %s", label, len(events), error)
            return _answer(502, error=f"could not deliver the event to the Prefect API: {error}")
        for merge, event in zip(merges, events, strict=True):
            logger.info(
                "%s: %s %s %s at %s -> event %s",
                label,
                merge.repository,
                merge.service,
                merge.app_version,
                merge.commit[:12],
                event["id"],
            )
        return _answer(
            202,
            status="emitted",
            events=[
                {"id": e["id"], "service": m.service, "app_version": m.app_version, "commit": m.commit}
                for m, e in zip(merges, events, strict=True)
            ],
            duplicates=[m.answer() for m in duplicates],
            refused=refused,
        )
