"""Feature flags: the rules, not the store.

A flag is a named on/off switch in a service's shared database (its `switchyard_flags` table, one
per environment: ServiceConfig.database). switchyard writes it (`switchyard flag set`, the set-flag
flow, a release policy's `enable_flags`); the service reads it at run time and treats a missing
table or row as off. Turning a flag on or off is therefore a release of behaviour without a deploy,
and turning it back is as quick (docs/feature-flags.md).

Pure: names, values, the database URLs the store accepts, and what a change was. The store is
switchyard/flags/ (a port and its one adapter, SQLite).
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from switchyard.core.config import ServiceConfig

# The contract with the apps (docs/feature-flags.md): a name an app can write as a literal in any
# language, and a column value that fits every database's key limits.
FLAG_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
FLAG_TABLE = "switchyard_flags"
# As in a file:// URL, everything after sqlite:// is the path, so sqlite:///var/lib/x names
# /var/lib/x: the way the sample app reads the same URL, so both open one file.
SQLITE_PREFIX = "sqlite://"
# What the flag store implements, said the same way wherever a URL is refused.
SUPPORTED_DATABASES = (
    "only SQLite is implemented: sqlite:// followed by an absolute path, e.g. "
    "sqlite:///var/lib/sample/flags.sqlite3 or sqlite:///{state_dir}/databases/sample-staging.sqlite3"
)


def check_flag_name(name: str) -> str:
    """A flag's name: a lower-case letter, then up to 62 lower-case letters, digits or underscores."""
    if not FLAG_NAME.fullmatch(name):
        raise ValueError(
            f"flag name {name!r} is not valid: a lower-case letter, then up to 62 lower-case letters, digits "
            "or underscores (e.g. new_greeting)"
        )
    return name


def parse_flag_value(value: str) -> bool:
    """`on` or `off`, as people type them; nothing else (a typo must not turn a feature on or off)."""
    if value == "on":
        return True
    if value == "off":
        return False
    raise ValueError(f"flag value {value!r} is neither on nor off")


def check_enable_flags(names: list[str]) -> list[str]:
    """A release policy's enable_flags: valid names, each once."""
    for name in names:
        check_flag_name(name)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"enable_flags names {', '.join(twice)} more than once")
    return names


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///ABSOLUTE_PATH` URL names (the app strips the same `sqlite://`). Any
    other scheme, a relative path or a URL with a query is refused, saying what is supported."""
    if not url.startswith(SQLITE_PREFIX):
        if "://" not in url:
            raise ValueError(f"{url!r} is not a database URL: {SUPPORTED_DATABASES}")
        raise ValueError(f"the flag store cannot use a {url.partition('://')[0]} database: {SUPPORTED_DATABASES}")
    path = url.removeprefix(SQLITE_PREFIX)
    if not path.startswith("/"):
        # A relative path (or a host) would be relative to whichever directory each process runs in:
        # the worker and the instances would open different files.
        raise ValueError(f"the database path {path!r} is not absolute: {SUPPORTED_DATABASES}")
    if "?" in path or "#" in path:
        raise ValueError(f"the database URL {url!r} has a query or fragment, which the flag store does not read")
    # sqlite:////var/x (an absolute {state_dir} after sqlite:///) is the same file on Linux.
    return "/" + path.lstrip("/")


def database_problem(service: ServiceConfig, environment: str) -> str | None:
    """Why the flag store of `service` in `environment` cannot be used as configured, or None."""
    template = service.database.get(environment)
    if template is None:
        return (
            f"service {service.name!r} has no database in {environment!r}, and flags live in it: set the "
            f"service's database for {environment} (the service block's `database`, e.g. {environment}: "
            f"sqlite:///{{state_dir}}/databases/{service.name}-{environment}.sqlite3)"
        )
    try:
        # {state_dir} always stands for an absolute path (switchyard/checkout.py resolves it): any one
        # does to check the URL's form.
        sqlite_path(template.replace("{state_dir}", "/state"))
    except ValueError as error:
        return f"service {service.name!r} in {environment!r}: {error}"
    return None


class FlagState(BaseModel):
    """A flag as its row says."""

    model_config = ConfigDict(frozen=True)

    name: str
    enabled: bool
    updated_at: datetime
    updated_by: str


class FlagChange(BaseModel):
    """One flag set: what it was before (None: no row, so off) and what it reads back as now."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    name: str
    enabled: bool
    previous: bool | None
    updated_at: datetime
    updated_by: str
    database: str  # where: the database's path (a path, never a credential)

    @property
    def changed(self) -> bool:
        return bool(self.previous) != self.enabled

    def describe(self) -> str:
        """One line: `flag new_greeting of sample in staging: on (was off)`."""
        was = "no row: off" if self.previous is None else on_off(self.previous)
        same = "" if self.changed else ", unchanged"
        return f"flag {self.name} of {self.service} in {self.environment}: {on_off(self.enabled)} (was {was}{same})"


def on_off(enabled: bool) -> str:
    return "on" if enabled else "off"
