"""Release hooks: a command or an HTTP call the release runs at two fixed points, and what came of it.

* `pre_deploy` runs before the idle color is prepared for an image, before any cloud change of the
  release: the place for an *expand* migration (add what the new version needs, keep what the old
  one uses). A failed pre_deploy refuses the release: nothing was changed.
* `post_promote` runs once the new version has held full traffic and the release is finalized:
  the place for a *contract* migration (remove what only the old version used). A failed
  post_promote is an alert, never a rollback: the old version may no longer work against what the
  hook changed, and the new one already passed under full traffic.

Hooks must be idempotent (docs/expand-contract.md): a release started again after a crash may run
pre_deploy again, and an operator may run either hook by hand after a failure.

Pure models and rules only; tasks/hooks.py runs them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

HookName = Literal["pre_deploy", "post_promote"]
# What a command or HTTP call runs for: one of the hooks, or the service's integration tests (a test
# stage, switchyard/core/stages.py), which share the runner, its timeout and its masking.
RunPurpose = Literal["pre_deploy", "post_promote", "integration"]

DEFAULT_COMMAND_TIMEOUT_S = 300.0
DEFAULT_HTTP_TIMEOUT_S = 30.0
# What of a hook's output reaches the logs and the release summary: its end, where errors are.
OUTPUT_TAIL_CHARS = 4000


class CommandHook(BaseModel):
    """A command run on the worker: an argv list, never a shell (no quoting or injection surprises)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(
        min_length=1,
        description="argv, e.g. [python3, migrations/expand.py]; run without a shell. The environment is "
        "the worker's plus SWITCHYARD_SERVICE, SWITCHYARD_ENVIRONMENT, SWITCHYARD_IMAGE_VERSION, "
        "SWITCHYARD_APP_VERSION, SWITCHYARD_DATABASE_URL (when the service has one there) and SWITCHYARD_HOOK.",
    )
    working_dir: str | None = Field(
        None,
        description="Where it runs; relative to the repository root like every path of fleet.yaml (default: the root).",
    )
    timeout_s: float = Field(
        DEFAULT_COMMAND_TIMEOUT_S,
        gt=0,
        le=86_400,
        description="Then the command's whole process group is stopped and the hook has failed.",
    )

    @field_validator("command", mode="before")
    @classmethod
    def _not_a_shell_line(cls, value: object) -> object:
        if isinstance(value, str):
            # A shell line would look for a program named "python3 migrate.py": say what to write.
            raise ValueError(
                f"command {value!r} is one string: hooks run without a shell, so give the argv as a list, "
                f"e.g. {value.split()!r}"
            )
        return value

    @field_validator("command")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        if not argv[0].strip():
            raise ValueError("the command's first element (the program) is empty")
        return argv

    def describe(self) -> str:
        return " ".join(self.command)


class HttpHook(BaseModel):
    """An HTTP call; POST, PUT and PATCH send {service, environment, image_version, hook} as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http:// or https:// URL, e.g. https://migrations.internal/expand")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    expect_status: int = Field(200, ge=100, le=599, description="Any other status fails the hook.")
    timeout_s: float = Field(
        DEFAULT_HTTP_TIMEOUT_S, gt=0, le=3_600, description="For the whole call: connecting, waiting and reading."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hook url {url!r} is not an http:// or https:// URL with a host")
        return url

    def describe(self) -> str:
        """Method and URL without any user:password@ in it (the summary and the logs show this)."""
        parts = urlsplit(self.url)
        if parts.username is None and parts.password is None:
            return f"{self.method} {self.url}"
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return f"{self.method} {parts._replace(netloc=netloc).geturl()}"


def _hook_kind(value: Any) -> str | None:
    """Which kind a hook is, by the field only that kind has: fleet.yaml stays short (no `kind:`)."""
    if isinstance(value, CommandHook):
        return "command"
    if isinstance(value, HttpHook):
        return "http"
    if isinstance(value, dict):
        if "command" in value and "url" not in value:
            return "command"
        if "url" in value and "command" not in value:
            return "http"
    return None


Hook = Annotated[
    Annotated[CommandHook, Tag("command")] | Annotated[HttpHook, Tag("http")],
    Discriminator(
        _hook_kind,
        custom_error_type="invalid_hook",
        custom_error_message="a hook is either a command ({command: [argv...]}) or an HTTP call ({url: ...}), not both",
    ),
]


class ReleaseHooks(BaseModel):
    """The release policy's hooks; both optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_deploy: Hook | None = Field(
        None, description="Before the idle color is prepared for a new image (an expand migration)."
    )
    post_promote: Hook | None = Field(
        None, description="After the new version held full traffic and the release finalized (a contract migration)."
    )

    def get(self, name: HookName) -> CommandHook | HttpHook | None:
        return self.pre_deploy if name == "pre_deploy" else self.post_promote


class HookResult(BaseModel):
    """What one run of a hook did; its output is the tail, already redacted."""

    model_config = ConfigDict(frozen=True)

    hook: RunPurpose
    kind: Literal["command", "http"]
    target: str  # the argv or "METHOD url"
    passed: bool
    detail: str  # one line: "exit code 0 in 1.2 s", "timed out after 300 s; its process group was stopped"
    started_at: datetime
    duration_s: float
    exit_code: int | None = None
    status_code: int | None = None
    timed_out: bool = False
    stdout_tail: str = ""  # for an HTTP hook: the response body
    stderr_tail: str = ""


def hook_environment(
    base: dict[str, str], *, service: str, environment: str, image_version: str, hook: RunPurpose
) -> dict[str, str]:
    """A command hook's environment: the worker's (a migration needs its database settings from there)
    plus what the release is about."""
    return {
        **base,
        "SWITCHYARD_SERVICE": service,
        "SWITCHYARD_ENVIRONMENT": environment,
        "SWITCHYARD_IMAGE_VERSION": image_version,
        "SWITCHYARD_HOOK": hook,
    }


def hook_payload(*, service: str, environment: str, image_version: str, hook: RunPurpose) -> dict[str, str]:
    """What an HTTP hook is told, the same facts as a command's environment."""
    return {"service": service, "environment": environment, "image_version": image_version, "hook": hook}


_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIAL|CONNECTION_STRING", re.I)
# Shorter values ("1", "true") are settings, and masking them would garble the whole output.
_MIN_SECRET_LENGTH = 6


def secret_values(environment: dict[str, str]) -> list[str]:
    """Values of the variables whose names say they are secret: a hook inherits them, and a
    migration that prints its connection settings must not put them in the logs or the summary."""
    return [
        value for name, value in environment.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    ]


def mask(text: str, secrets: list[str]) -> str:
    # Longest first: a secret that contains another is masked whole.
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def tail(text: str, limit: int = OUTPUT_TAIL_CHARS, *, cut: bool = False) -> str:
    """The end of a hook's output, where errors are, bounded; says when the start was left out
    (`cut`: the caller already read only the end of a long output)."""
    text = text.rstrip()
    if len(text) > limit:
        text, cut = text[-limit:], True
    return "[... earlier output not shown]\n" + text if cut else text
