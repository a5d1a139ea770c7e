"""What the relay reads and writes: signatures and tokens, GitHub and GitLab payloads, the merge event."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchyard.core.topology import check_name
from switchyard.core.versions import AppVersion, VersionError

EVENT_NAME = "switchyard.git.merged"
# Event ids: uuid5 in switchyard's own namespace, from (repository, commit, service).
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://switchyard.invalid/events/git-merged")
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
ANY_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
NULL_COMMIT = re.compile(r"^0+$")
# The resource label that carries the Git host's delivery id (X-GitHub-Delivery, GitLab's Idempotency-Key).
DELIVERY_LABEL = "switchyard.delivery"
SERVICE_LABEL = "switchyard.service"
# Delivery headers are not covered by the signature, and Prefect's label filters read '*' and a
# leading '!' as patterns: only plain ids (GUIDs, UUIDs) are used to look deliveries up.
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def event_id(repository: str, commit: str, service: str) -> str:
    """The merge event's id: uuid5 of (repository, commit, service). Every replica, every redelivery and
    both GitLab hooks of one merge (push and merge request) give the same id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{repository.lower()}@{commit}:{service}"))


def resource_id(repository: str) -> str:
    return f"switchyard.repo.{repository}"


def delivery_id(header: str | None) -> str | None:
    """The delivery id to remember, or None when the header is absent or not a plain id."""
    if header is None or not _DELIVERY_ID.fullmatch(header.strip()):
        return None
    return header.strip()


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value GitHub sends: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def token_valid(secret: bytes, header: str | None) -> bool:
    """GitLab sends the secret itself (X-Gitlab-Token); compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(secret, header.encode())


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GitHubRepository(_Payload):
    full_name: str = Field(min_length=3)


class PushedCommit(_Payload):
    """A commit of a push: GitHub's `commits[]`/`head_commit` and GitLab's `commits[]` share this shape."""

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
    head_commit: PushedCommit | None = None
    commits: list[PushedCommit] = Field(default_factory=list)

    @field_validator("after")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not FULL_COMMIT.fullmatch(value):
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
        if not ANY_COMMIT.fullmatch(value):
            raise ValueError("must be a commit id: 7 to 64 lower-case hex digits")
        return value

    @property
    def event_id(self) -> str:
        return event_id(self.repository, self.commit, self.service)

    def event(self, delivery: str | None = None) -> dict[str, Any]:
        """The Prefect event (JSON), its id fixed by (repository, commit, service). The delivery id rides
        along as a resource label, so a redelivery can be found in the event store by it."""
        resource = {
            "prefect.resource.id": resource_id(self.repository),
            "prefect.resource.name": self.repository,
            SERVICE_LABEL: self.service,
        }
        if delivery is not None:
            resource[DELIVERY_LABEL] = delivery
        return {
            "id": self.event_id,
            "occurred": datetime.now(UTC).isoformat(),
            "event": EVENT_NAME,
            "resource": resource,
            "related": [],
            "payload": {**self.model_dump(mode="json"), "committed_at": self.committed_at.astimezone(UTC).isoformat()},
        }


# GitLab (https://docs.gitlab.com/user/project/integrations/webhook_events/) ----------------------------


class GitLabProject(_Payload):
    path_with_namespace: str = Field(min_length=3)


class GitLabPush(_Payload):
    """X-Gitlab-Event: Push Hook. `commits` holds the newest 20 commits only; `total_commits_count` all."""

    ref: str
    before: str
    after: str
    project: GitLabProject
    commits: list[PushedCommit] = Field(default_factory=list)
    total_commits_count: int = 0

    @field_validator("before", "after")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not FULL_COMMIT.fullmatch(value):
            raise ValueError("must be a full commit id (40 or 64 lower-case hex digits)")
        return value

    @property
    def deleted(self) -> bool:
        return bool(NULL_COMMIT.fullmatch(self.after))

    @property
    def created(self) -> bool:
        return bool(NULL_COMMIT.fullmatch(self.before))

    @property
    def lists_every_commit(self) -> bool:
        return len(self.commits) >= self.total_commits_count

    @property
    def changed_paths(self) -> list[str]:
        return [path for commit in self.commits for path in commit.paths]

    @property
    def head_timestamp(self) -> datetime | None:
        return next((c.timestamp for c in self.commits if c.id == self.after), None)


class GitLabMergeAttributes(_Payload):
    iid: int | None = None
    action: str | None = None
    state: str | None = None
    target_branch: str
    merge_commit_sha: str | None = None

    @field_validator("merge_commit_sha")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and not FULL_COMMIT.fullmatch(value):
            raise ValueError("must be a full commit id (40 or 64 lower-case hex digits)")
        return value


class GitLabMergeRequest(_Payload):
    """X-Gitlab-Event: Merge Request Hook. A merge is `object_attributes.action == "merge"`; the payload
    names the merge commit but not the paths it changed."""

    project: GitLabProject
    object_attributes: GitLabMergeAttributes


def problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )
