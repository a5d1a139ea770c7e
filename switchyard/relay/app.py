"""The merge relay: a Git host's webhook in, the Prefect event `switchyard.git.merged` out.

Prefect's open-source server has no incoming webhooks, so merges reach it through this small HTTP
server. It accepts two shapes, both signed with a shared secret:

POST /webhooks/github
    A GitHub push webhook (content type application/json, or form-encoded with a `payload`
    field). Headers: `X-GitHub-Event: push` (`ping` is answered, other events are ignored) and
    `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>`.
    Read: `ref`, `after` (the commit), `repository.full_name`, `head_commit.timestamp`, and the
    changed paths of `commits[]`/`head_commit` (added, modified, removed).
    Which services: the relay configuration routes each repository's paths to services (a push
    that touches `apps/sample/...` releases `sample`; a shared path, e.g. `images/`, releases every
    service of the repository).
    Which app version: the file `<service path>/VERSION` at the pushed commit, read from a local
    clone of the repository (`checkout`); when the clone lacks the commit, the relay fetches it
    first. GitHub push payloads carry no file contents, and the version must be the one at that
    commit, not whatever the working tree holds now.

POST /webhooks/merge
    A generic shape for any CI system, exactly the event's payload, signed the same way
    (`X-Hub-Signature-256` or `X-Switchyard-Signature-256`):
    {"service": "sample", "app_version": "1.4.2", "commit": "<7-64 hex>",
     "repository": "acme/shop", "ref": "refs/heads/main", "committed_at": "2026-11-26T10:00:00Z"}
    The service must be routed for that repository.

GET /health answers 200.

Answers: 202 with the emitted events, or with `ignored` and the reason (another branch, another
event, no service's path changed, an unconfigured repository); 401 for a missing or wrong
signature (and nothing is emitted); 400 for a malformed body, naming the problem; 413 for a body
over `max_body_bytes` (2 MiB by default; checked before the signature); 422 when the app version
cannot be read at that commit, or git cannot run; 503 when git timed out (retry later: redeliver);
502 when the Prefect API did not take the event (the Git host can redeliver). The secret never
appears in logs or answers.

The event (one per service): resource {"prefect.resource.id": "switchyard.repo.<repository>",
"switchyard.service": "<service>"}, payload {"service", "app_version", "commit", "repository",
"ref", "committed_at"}. Its id is derived from (repository, commit, service), so a redelivered
webhook does not release twice: Prefect stores and triggers on an event id once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchyard.relay.config import RelayConfig
from switchyard.relay.git import CommitUnreadable, GitVersions
from switchyard.relay.payloads import GitHubPush, MergedPayload, problems, signature_valid

logger = logging.getLogger("switchyard.relay")

SIGNATURE_HEADERS = ("x-hub-signature-256", "x-switchyard-signature-256")
# GitHub does not retry on its own; the hint is for GitLab and hand-written clients.
_RETRY_AFTER_S = "60"


# Delivering events ---------------------------------------------------------------------------------


class DeliveryError(Exception):
    """The Prefect API did not take the events."""


class PrefectEventSink:
    """POST /api/events through Prefect's own client (its URL, auth and TLS settings)."""

    async def emit(self, events: list[dict[str, Any]]) -> None:
        from prefect.client.orchestration import get_client

        try:
            async with get_client() as client:
                response = await client.request("POST", "/events", json=events)
        except Exception as error:
            raise DeliveryError(f"{type(error).__name__}: {error}") from None
        if response.status_code >= 300:
            raise DeliveryError(f"the Prefect API answered {response.status_code}")


# The HTTP application ---------------------------------------------------------------------------------


def _answer(code: int, /, headers: dict[str, str] | None = None, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code, headers=headers)


class MergeRelay:
    def __init__(self, config: RelayConfig, secret: bytes, sink: PrefectEventSink | None = None) -> None:
        self.config = config
        self._secret = secret
        self.sink = sink or PrefectEventSink()
        self.versions = GitVersions(timeout_s=config.git_timeout_s)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/webhooks/github", self.github, methods=["POST"]),
                Route("/webhooks/merge", self.generic, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    async def health(self, request: Request) -> JSONResponse:
        return _answer(200, status="ok")

    async def _signed_body(self, request: Request) -> bytes | JSONResponse:
        # The body is read (and then HMAC'd) before anything proves who sent it, so the limit is what
        # a stranger can make the relay read and hash: small, because a merge webhook is
        # (config.DEFAULT_MAX_BODY_BYTES).
        limit = self.config.max_body_bytes
        too_large = f"body over {limit} bytes: a merge webhook is smaller than that"
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return _answer(413, error=too_large)
        received = bytearray()
        async for chunk in request.stream():  # a chunked body has no content-length to trust
            received += chunk
            if len(received) > limit:
                return _answer(413, error=too_large)
        body = bytes(received)
        header = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
        if header is None:
            logger.warning("refused a delivery to %s: no signature header", request.url.path)
            return _answer(401, error="missing signature: send X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>")
        if not signature_valid(self._secret, body, header):
            logger.warning("refused a delivery to %s: the signature does not match", request.url.path)
            return _answer(401, error="invalid signature: the body's HMAC-SHA256 does not match the shared secret")
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

    async def github(self, request: Request) -> JSONResponse:
        body = await self._signed_body(request)
        if isinstance(body, JSONResponse):
            return body
        delivery = request.headers.get("x-github-delivery", "-")
        kind = request.headers.get("x-github-event")
        if not kind:
            return _answer(400, error="missing X-GitHub-Event header")
        if kind == "ping":
            return _answer(200, status="pong")
        if kind != "push":
            return _answer(202, status="ignored", reason=f"event {kind!r} is not handled (only push)")
        try:
            push = GitHubPush.model_validate(self._json(body, request.headers.get("content-type", "")))
        except ValidationError as error:
            return _answer(400, error=f"malformed push payload: {problems(error)}")
        except ValueError as error:  # not UTF-8, not JSON, no form field
            return _answer(400, error=f"malformed push payload: {error}")
        repository = push.repository.full_name
        if push.ref != self.config.ref:
            return _answer(202, status="ignored", reason=f"ref {push.ref} is not {self.config.ref}")
        if push.deleted or push.head_commit is None:
            return _answer(202, status="ignored", reason=f"{push.ref} was deleted: nothing to release")
        route = self.config.route(repository)
        if route is None:
            return _answer(202, status="ignored", reason=f"repository {repository} is not configured in the relay")
        services = route.services_touched(push.changed_paths)
        if not services:
            return _answer(202, status="ignored", reason="the push changes no service's folder")
        committed_at = push.head_commit.timestamp or datetime.now(UTC)
        merges = []
        for service in services:
            try:
                version = await self.versions.version(route, push.after, route.services[service])
            except CommitUnreadable as error:
                logger.warning("delivery %s: %s: %s", delivery, service, error)
                retry = {"Retry-After": _RETRY_AFTER_S} if error.status == 503 else None
                problem = f"cannot read the app version of {service}: {error}"
                return _answer(error.status, headers=retry, error=problem)
            merges.append(
                MergedPayload(
                    service=service,
                    app_version=version,
                    commit=push.after,
                    repository=repository,
                    ref=push.ref,
                    committed_at=committed_at,
                )
            )
        return await self._emit(merges, delivery)

    async def generic(self, request: Request) -> JSONResponse:
        body = await self._signed_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            merge = MergedPayload.model_validate(self._json(body, request.headers.get("content-type", "")))
        except ValidationError as error:
            return _answer(400, error=f"malformed merge payload: {problems(error)}")
        except ValueError as error:  # not UTF-8, not JSON, no form field
            return _answer(400, error=f"malformed merge payload: {error}")
        if merge.ref != self.config.ref:
            return _answer(202, status="ignored", reason=f"ref {merge.ref} is not {self.config.ref}")
        route = self.config.route(merge.repository)
        if route is None or merge.service not in route.services:
            routed = ", ".join(sorted(route.services)) if route else "none"
            return _answer(
                422, error=f"service {merge.service} is not routed for repository {merge.repository} (routed: {routed})"
            )
        return await self._emit([merge], request.headers.get("x-request-id", "-"))

    async def _emit(self, merges: list[MergedPayload], delivery: str) -> JSONResponse:
        events = [merge.event() for merge in merges]
        try:
            await self.sink.emit(events)
        except DeliveryError as error:
            logger.error("delivery %s: the Prefect API did not take %d event(s): %s", delivery, len(events), error)
            return _answer(502, error=f"could not deliver the event to the Prefect API: {error}")
        for merge, event in zip(merges, events, strict=True):
            logger.info(
                "delivery %s: %s %s %s at %s -> event %s",
                delivery,
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
        )
