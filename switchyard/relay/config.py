"""The relay's configuration: which branch ships, each repository's services, its limits, and the webhook secret."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchyard.core.topology import check_name

SECRET_ENV = "SWITCHYARD_RELAY_SECRET"
SECRET_FILE_ENV = "SWITCHYARD_RELAY_SECRET_FILE"
MIN_SECRET_LENGTH = 16

# A merge webhook is small: GitHub's push payload for an ordinary merge is a few to a few hundred
# kilobytes (GitLab lists at most 20 commits). The body is read, and HMAC'd, before the sender is
# known to hold the secret, so the limit is what an unauthenticated sender can make the relay read
# and hash per request; 2 MiB instead of GitHub's own 25 MB cap.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
# Prefect's default event retention (PREFECT_SERVER_EVENTS_RETENTION_PERIOD): the relay cannot
# remember a delivery for longer than the server keeps its events.
DEFAULT_REPLAY_WINDOW_DAYS = 7.0


class RelaySetupError(ValueError):
    """The relay cannot start: a missing secret, an unreadable configuration, no Prefect API."""


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
        replay_window_days: 7        # optional; see the fields below
        repositories:
          acme/shop:                 # repository.full_name; "*" matches any repository
            services: {sample: apps/sample}
            shared_paths: [images]
            checkout: /srv/git/shop  # a clone the relay may fetch into
    """

    model_config = ConfigDict(extra="forbid")

    branch: str = Field(default="main", description="only pushes to refs/heads/<branch> release")
    repositories: dict[str, RepositoryRoute]
    replay_window_days: float = Field(
        default=DEFAULT_REPLAY_WINDOW_DAYS,
        gt=0,
        le=366,
        description=(
            "how far back the relay looks in Prefect's event store for a delivery or merge it already relayed, "
            "and for the newest version it emitted (default: Prefect's default event retention, 7 days)"
        ),
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=64 * 1024,
        le=25 * 1024 * 1024,
        description="largest webhook body the relay reads (413 above it), checked before the signature",
    )
    git_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="how long one git command (fetch, show, diff) may take (503 after)"
    )

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
        from switchyard.checkout import FLEET_FILE
        from switchyard.core.fleet import load_fleet

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
