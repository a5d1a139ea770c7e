"""The database of the stack's Prefect server: SQLite, a PostgreSQL of the stack's own, or one you name.

`up` decides which one was asked for and prepares it before the server starts;
switchyard/stack/postgres.py runs the stack's own PostgreSQL.
"""

from __future__ import annotations

from pydantic import SecretStr

from switchyard.stack.launches import Clock, Launches, Register, stop_because
from switchyard.stack.postgres import DatabaseConfig, DatabaseError, DatabaseKind, LocalPostgres, external_database
from switchyard.stack.processes import ProcessRecord, free_port, port_is_free
from switchyard.stack.state import StackError, StackPaths, StackState


def choose_database(
    database: DatabaseKind | None, database_url: SecretStr | None, paths: StackPaths
) -> DatabaseConfig | None:
    """The database asked for: a config for an external one, None for the local kinds (decided
    when they start). A running stack keeps its database: moving it is `down` first."""
    if database_url is not None:
        if database not in (None, "external", "postgresql"):
            raise StackError("--database-url names a PostgreSQL: it does not go with --database sqlite")
        try:
            return external_database(database_url.get_secret_value(), paths.database_passfile)
        except DatabaseError as error:
            raise StackError(str(error)) from None
    return None


def database_kind(
    database: DatabaseKind | None, database_url: SecretStr | None, previous: StackState | None
) -> DatabaseKind:
    if database_url is not None:
        return "external"
    if database is not None:
        return database
    return previous.database.kind if previous is not None else "sqlite"


def prepare_database(
    kind: DatabaseKind,
    external: DatabaseConfig | None,
    previous: StackState | None,
    postgres: ProcessRecord | None,
    paths: StackPaths,
    clock: Clock,
    launches: Launches,
) -> tuple[DatabaseConfig, ProcessRecord | None]:
    """The database of a Prefect server about to start: SQLite, the URL you gave (or gave last
    time: its password stays in its passfile), or the stack's own PostgreSQL, kept if it still
    runs, else started in the background on its previous port when that is free."""
    if kind == "sqlite":
        return DatabaseConfig(), None
    if kind == "external":
        if external is not None:
            return external, None
        if previous is not None and previous.database.kind == "external":
            return previous.database, None
        raise StackError("--database external needs the URL: --database-url or $SWITCHYARD_DATABASE_URL")
    local = LocalPostgres(paths.postgres_dir)
    before = previous.database if previous is not None and previous.database.kind == "postgresql" else None
    if postgres is not None and before is not None and before.port is not None:
        clock.say(f"PostgreSQL already running on 127.0.0.1:{before.port} (pid {postgres.pid})")
        return before, postgres
    if postgres is not None:
        stop_because(postgres, "postgres", clock, "is not the one stack.json describes")
    pg_port = before.port if before is not None and before.port and port_is_free(before.port) else free_port()
    clock.say(f"starting PostgreSQL on 127.0.0.1:{pg_port} (data in {local.paths.data}) ...")

    def start(register: Register) -> ProcessRecord:
        try:
            process, record, _ = local.start(pg_port)
        except DatabaseError as error:
            raise StackError(str(error)) from None
        register(lambda: process)
        clock.say(f"PostgreSQL ready on 127.0.0.1:{pg_port} (pid {record.pid})")
        return record

    launches.launch("postgres", start)
    return local.config(pg_port), None
