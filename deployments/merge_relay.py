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
over the limit; 422 when the app version cannot be read at that commit; 502 when the Prefect API
did not take the event (the Git host can redeliver). The secret never appears in logs or answers.

The event (one per service): resource {"prefect.resource.id": "switchyard.repo.<repository>",
"switchyard.service": "<service>"}, payload {"service", "app_version", "commit", "repository",
"ref", "committed_at"}. Its id is derived from (repository, commit, service), so a redelivered
webhook does not release twice: Prefect stores and triggers on an event id once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchyard.core.topology import check_name
from switchyard.core.versions import AppVersion, VersionError

logger = logging.getLogger("switchyard.relay")

EVENT_NAME = "switchyard.git.merged"
SECRET_ENV = "SWITCHYARD_RELAY_SECRET"
SECRET_FILE_ENV = "SWITCHYARD_RELAY_SECRET_FILE"
MIN_SECRET_LENGTH = 16
SIGNATURE_HEADERS = ("x-hub-signature-256", "x-switchyard-signature-256")
# GitHub caps webhook payloads at 25 MB.
MAX_BODY_BYTES = 25 * 1024 * 1024
# Event ids: uuid5 in switchyard's own namespace, from (repository, commit, service).
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://switchyard.invalid/events/git-merged")
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_ANY_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_GIT_TIMEOUT_S = 60.0


class RelaySetupError(ValueError):
    """The relay cannot start: a missing secret, an unreadable configuration, no Prefect API."""


# Configuration ------------------------------------------------------------------------------------


def _relative_path(value: str) -> str:
    cleaned = value.strip().strip("/")
    if cleaned.startswith("..") or "/../" in f"/{cleaned}/" or value.startswith("/"):
        raise ValueError(f"path {value!r} must be relative to the repository root, without '..'")
    return cleaned


class RepositoryRoute(BaseModel):
    """Which services a repository's paths belong to, and where the relay reads their versions."""

    model_config = ConfigDict(extra="forbid")

    services: dict[str, str] = Field(
        description="service name -> its folder in the repository ('' or '.' for the whole repository)"
    )
    shared_paths: list[str] = Field(
        default_factory=list, description="folders every service is built from (a change there releases them all)"
    )
    checkout: str | None = Field(
        default=None, description="a local clone of the repository: the relay reads <folder>/VERSION at the commit"
    )
    version_file: str = Field(default="VERSION", description="file in each service folder holding its app version")
    fetch: bool = Field(default=True, description="fetch from the clone's remote when the commit is not there yet")

    @field_validator("services")
    @classmethod
    def _services(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("a repository route needs at least one service")
        return {check_name("service", name): _relative_path(path) for name, path in value.items()}

    @field_validator("shared_paths")
    @classmethod
    def _shared(cls, value: list[str]) -> list[str]:
        return [_relative_path(path) for path in value]

    def services_touched(self, paths: Iterable[str]) -> list[str]:
        """The services whose folder (or a shared folder) holds one of `paths`."""
        changed = [path.strip("/") for path in paths]

        def under(folder: str) -> bool:
            if folder in ("", "."):
                return bool(changed)
            return any(path == folder or path.startswith(folder + "/") for path in changed)

        if any(under(folder) for folder in self.shared_paths):
            return sorted(self.services)
        return sorted(name for name, folder in self.services.items() if under(folder))


class RelayConfig(BaseModel):
    """The relay's routing: which branch ships, and each repository's services.

    In YAML (or JSON)::

        branch: main
        repositories:
          acme/shop:                 # repository.full_name; "*" matches any repository
            services: {sample: apps/sample}
            shared_paths: [images]
            checkout: /srv/git/shop  # a clone the relay may fetch into
    """

    model_config = ConfigDict(extra="forbid")

    branch: str = Field(default="main", description="only pushes to refs/heads/<branch> release")
    repositories: dict[str, RepositoryRoute]

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def route(self, repository: str) -> RepositoryRoute | None:
        """GitHub repository names are case-insensitive; '*' is the fallback."""
        for name, route in self.repositories.items():
            if name.lower() == repository.lower():
                return route
        return self.repositories.get("*")

    @classmethod
    def load(cls, path: Path) -> RelayConfig:
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise RelaySetupError(f"relay configuration {path} does not exist") from None
        except yaml.YAMLError as error:
            raise RelaySetupError(f"relay configuration {path} is not valid YAML: {error}") from None
        try:
            config = cls.model_validate(data or {})
        except ValidationError as error:
            raise RelaySetupError(f"relay configuration {path} is invalid:\n{error}") from None
        base = path.resolve().parent
        for route in config.repositories.values():
            if route.checkout and not Path(route.checkout).is_absolute():
                route.checkout = str((base / route.checkout).resolve())
        return config

    @classmethod
    def for_checkout(cls, repo_root: Path, fleet_file: Path | None = None) -> RelayConfig:
        """The local stack's default: this repository (any name), every fleet service whose app
        folder lies inside it, the Packer templates as a shared path, versions read from it."""
        from deployments.fleet import FLEET_FILE, load_fleet

        fleet = load_fleet(fleet_file or FLEET_FILE, root=repo_root)
        root = repo_root.resolve()
        services = {}
        for name, service in fleet.services.items():
            folder = Path(service.app_dir).resolve()
            if folder.is_relative_to(root):
                services[name] = str(folder.relative_to(root))
        if not services:
            raise RelaySetupError(f"no service of {fleet_file or FLEET_FILE} has its app inside {root}")
        route = RepositoryRoute(services=services, shared_paths=["images"], checkout=str(root))
        return cls(repositories={"*": route})


def load_secret(secret_file: Path | None = None) -> bytes:
    """The shared webhook secret: --secret-file, $SWITCHYARD_RELAY_SECRET_FILE or $SWITCHYARD_RELAY_SECRET."""
    file_name = secret_file or (Path(os.environ[SECRET_FILE_ENV]) if os.environ.get(SECRET_FILE_ENV) else None)
    if file_name is not None:
        try:
            secret = file_name.read_text().strip()
        except OSError as error:
            raise RelaySetupError(f"cannot read the relay secret file {file_name}: {error.strerror}") from None
        where = f"secret file {file_name}"
    else:
        secret = os.environ.get(SECRET_ENV, "").strip()
        where = f"${SECRET_ENV}"
        if not secret:
            raise RelaySetupError(
                f"no webhook secret: set {SECRET_ENV}, or {SECRET_FILE_ENV} / --secret-file to a file holding it "
                "(the same secret as the Git host's webhook)"
            )
    if len(secret) < MIN_SECRET_LENGTH:
        raise RelaySetupError(
            f"the webhook secret in {where} is too short: use at least {MIN_SECRET_LENGTH} characters"
        )
    return secret.encode()


# Signatures and payloads --------------------------------------------------------------------------


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value GitHub sends: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GitHubRepository(_Payload):
    full_name: str = Field(min_length=3)


class GitHubCommit(_Payload):
    id: str
    timestamp: AwareDatetime | None = None
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [*self.added, *self.modified, *self.removed]


class GitHubPush(_Payload):
    ref: str
    after: str
    deleted: bool = False
    repository: GitHubRepository
    head_commit: GitHubCommit | None = None
    commits: list[GitHubCommit] = Field(default_factory=list)

    @field_validator("after")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not _FULL_COMMIT.fullmatch(value):
            raise ValueError("must be a full commit id (40 or 64 lower-case hex digits)")
        return value

    @property
    def changed_paths(self) -> list[str]:
        paths = [path for commit in self.commits for path in commit.paths]
        if self.head_commit is not None:
            paths += self.head_commit.paths
        return paths


class MergedPayload(_Payload):
    """The event's payload, and the generic webhook's body."""

    model_config = ConfigDict(extra="forbid")

    service: str
    app_version: str
    commit: str
    repository: str = Field(min_length=1)
    ref: str
    committed_at: AwareDatetime

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return check_name("service", value)

    @field_validator("app_version")
    @classmethod
    def _app_version(cls, value: str) -> str:
        try:
            return str(AppVersion.parse(value))
        except VersionError as error:
            raise ValueError(str(error)) from None

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not _ANY_COMMIT.fullmatch(value):
            raise ValueError("must be a commit id: 7 to 64 lower-case hex digits")
        return value

    def event(self) -> dict[str, Any]:
        """The Prefect event (JSON), its id fixed by (repository, commit, service)."""
        event_id = uuid.uuid5(_EVENT_NAMESPACE, f"{self.repository.lower()}@{self.commit}:{self.service}")
        return {
            "id": str(event_id),
            "occurred": datetime.now(UTC).isoformat(),
            "event": EVENT_NAME,
            "resource": {
                "prefect.resource.id": f"switchyard.repo.{self.repository}",
                "prefect.resource.name": self.repository,
                "switchyard.service": self.service,
            },
            "related": [],
            "payload": {**self.model_dump(mode="json"), "committed_at": self.committed_at.astimezone(UTC).isoformat()},
        }


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )


# Reading the app version at a commit ----------------------------------------------------------------


class VersionUnavailable(Exception):
    """The app version cannot be read at that commit (the relay answers 422)."""


class GitVersions:
    """`<folder>/VERSION` at a commit, from a local clone (fetching once when the commit is missing)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def _git(self, checkout: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", checkout, *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )

    def _has_commit(self, checkout: str, commit: str) -> bool:
        return self._git(checkout, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    def _read(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        checkout = route.checkout
        assert checkout is not None
        if not Path(checkout).is_dir():
            raise VersionUnavailable(f"the relay's clone {checkout} does not exist")
        if not self._has_commit(checkout, commit):
            if not route.fetch:
                raise VersionUnavailable(f"commit {commit} is not in the relay's clone {checkout} (fetching is off)")
            fetched = self._git(checkout, "fetch", "--quiet", "origin")
            if fetched.returncode != 0:
                raise VersionUnavailable(
                    f"commit {commit} is not in the relay's clone {checkout}, and fetching failed: "
                    f"{fetched.stderr.strip()[-300:]}"
                )
            if not self._has_commit(checkout, commit):
                raise VersionUnavailable(f"commit {commit} is not in {checkout}, even after fetching from origin")
        file = f"{folder}/{route.version_file}" if folder not in ("", ".") else route.version_file
        shown = self._git(checkout, "show", f"{commit}:{file}")
        if shown.returncode != 0:
            raise VersionUnavailable(f"{file} does not exist at commit {commit[:12]}: it must hold the app version")
        text = shown.stdout.strip()
        try:
            return str(AppVersion.parse(text))
        except VersionError as error:
            raise VersionUnavailable(f"{file} at commit {commit[:12]} holds {text[:40]!r}: {error}") from None

    async def version(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        if route.checkout is None:
            raise VersionUnavailable(
                "the repository's route has no checkout to read versions from: configure one, or send the "
                "generic /webhooks/merge shape with app_version"
            )
        lock = self._locks.setdefault(route.checkout, asyncio.Lock())
        async with lock:  # one git at a time per clone: concurrent fetches fight over ref locks
            return await asyncio.to_thread(self._read, route, commit, folder)


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


def _answer(code: int, /, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


class MergeRelay:
    def __init__(self, config: RelayConfig, secret: bytes, sink: PrefectEventSink | None = None) -> None:
        self.config = config
        self._secret = secret
        self.sink = sink or PrefectEventSink()
        self.versions = GitVersions()

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
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _answer(413, error=f"body over {MAX_BODY_BYTES} bytes")
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > MAX_BODY_BYTES:
                return _answer(413, error=f"body over {MAX_BODY_BYTES} bytes")
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
            return _answer(400, error=f"malformed push payload: {_problems(error)}")
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
            except VersionUnavailable as error:
                logger.warning("delivery %s: %s: %s", delivery, service, error)
                return _answer(422, error=f"cannot read the app version of {service}: {error}")
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
            return _answer(400, error=f"malformed merge payload: {_problems(error)}")
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
