"""The flag store: where a service's feature flags live, as a port and its one adapter.

Like the cloud's ports (switchyard/cloud/ports.py) and Argo Rollouts' traffic routers (SetWeight,
then VerifyWeight), the port has a write and a read, and the task that sets a flag reads it back
through a connection of its own before it says it is set: a write that did not land where the
service reads is caught here, not by a user.

Only SQLite is implemented (sqlite_store.py), and a SQLite file is not shared safely between
machines: a fleet on Azure implements this port for its database (PostgreSQL, Azure SQL), which
switchyard does not pretend to speak (docs/feature-flags.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

from switchyard.core.config import ServiceConfig
from switchyard.core.flags import FlagState, database_problem, sqlite_path
from switchyard.core.outcomes import FlagRefused


class FlagStoreError(Exception):
    """The store could not be read or written (a lock held too long, a file that cannot be opened)."""


class FlagStore(Protocol):
    @property
    def location(self) -> str:
        """Where the flags are, for people (a path; never a credential)."""
        ...

    def write(self, values: Mapping[str, bool], updated_by: str, at: datetime) -> dict[str, FlagState | None]:
        """Set every flag in `values` in one transaction (all or none); each one's state before it
        (None: no row, which the service reads as off)."""
        ...

    def read(self, names: Collection[str] | None = None) -> dict[str, FlagState]:
        """The flags as a reader sees them now, through a connection of its own: those named (a flag
        without a row is left out), or all of them."""
        ...


def flag_store(service: ServiceConfig, environment: str, state_dir: str) -> FlagStore:
    """The flag store of `service` in `environment`; refused, before anything is opened, when the
    service has no database there or one the store does not implement."""
    from switchyard.flags.sqlite_store import SqliteFlagStore

    problem = database_problem(service, environment)
    if problem is not None:
        raise FlagRefused(problem)
    url = service.database_url(environment, state_dir)
    assert url is not None  # database_problem said the environment has one
    return SqliteFlagStore(sqlite_path(url))
