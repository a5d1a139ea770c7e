"""The local stack's database: SQLite (the default), a PostgreSQL server of its own, or one you have.

`switchyard up --database postgresql` runs Debian's PostgreSQL for the stack's Prefect server:
initdb into STATE/postgres/data, a server on 127.0.0.1 on a port of its own (TCP only: no Unix
socket in /var/run), a role `switchyard` with a generated password, the database `prefect`.
`switchyard down` stops it (fast shutdown) with the rest of the stack; its data stays, like the
SQLite file does, for the next `up`.

`switchyard up --database-url URL` (or SWITCHYARD_DATABASE_URL, which keeps the URL out of the
process table) points the Prefect server at a PostgreSQL you already run instead.

Where the password lives, and why: only in STATE/postgres/pgpass, mode 0600 (libpq's own pgpass
format; asyncpg, Prefect's PostgreSQL driver, reads it through PGPASSFILE). The connection URL the
Prefect server gets, and stack.json records, carries no password, so neither stack.json, nor the
process table (argv or PREFECT_API_DATABASE_CONNECTION_URL in the server's environment), nor any
log line `up` prints or the Prefect server writes can show it.

initdb and postgres refuse to run as root: when switchyard runs as root they run as the `postgres`
user (Debian's package creates it), started directly with setuid/setgid by subprocess rather than
through `runuser`, because runuser stays between us and the postmaster and answers a SIGTERM by
SIGKILLing it two seconds later; the data directory is owned by that user. Run as anyone else,
they run as the invoking user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from switchyard.stack.processes import ProcessRecord, free_port, is_running, log_tail, proc_stat, process_tree
from switchyard.stack.processes import stop_processes as stop_process_trees

DATABASE_URL_ENV = "SWITCHYARD_DATABASE_URL"
POSTGRES_BIN_ENV = "SWITCHYARD_POSTGRES_BIN"  # a bin directory holding initdb and postgres
ROLE = "switchyard"
DATABASE = "prefect"
SERVICE_USER = "postgres"  # who runs PostgreSQL when switchyard runs as root
START_TIMEOUT_S = 60.0
# Fast shutdown (SIGINT) rolls back open sessions and checkpoints: seconds on a local stack.
STOP_GRACE_S = 20.0
ASYNC_DRIVER = "postgresql+asyncpg"

DatabaseKind = Literal["sqlite", "postgresql", "external"]


class DatabaseError(RuntimeError):
    """The database cannot be set up or reached; the message says why and what to do."""


class DatabaseConfig(BaseModel):
    """What stack.json records about the Prefect server's database: never a password."""

    kind: DatabaseKind = "sqlite"
    url: str | None = None  # the connection URL without its password (None: SQLite in PREFECT_HOME)
    passfile: str | None = None  # where the password is, when there is one
    port: int | None = None  # the local PostgreSQL's port

    def server_environment(self) -> dict[str, str]:
        """What the Prefect server process needs to use this database."""
        if self.kind == "sqlite" or self.url is None:
            return {}
        env = {"PREFECT_API_DATABASE_CONNECTION_URL": self.url}
        if self.passfile:
            env["PGPASSFILE"] = self.passfile
        return env

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "SQLite"
        where = f" (password in {self.passfile}, mode 0600)" if self.passfile else ""
        return f"PostgreSQL at {self.url}{where}"


# Where things are ---------------------------------------------------------------------------------


class PostgresPaths(BaseModel):
    root: Path  # STATE/postgres

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"


def find_bin_dir() -> Path:
    """Debian's PostgreSQL binaries (/usr/lib/postgresql/<version>/bin, the newest), or the
    directory SWITCHYARD_POSTGRES_BIN names."""
    named = os.environ.get(POSTGRES_BIN_ENV)
    candidates = [Path(named)] if named else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise DatabaseError(
        "PostgreSQL is not installed: `apt-get install postgresql` (Debian's package; `make setup` installs it "
        f"when run as root), or name a directory holding initdb and postgres in {POSTGRES_BIN_ENV}"
    )


def _service_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise DatabaseError(
            f"running as root, PostgreSQL must run as the {SERVICE_USER!r} user, which does not exist: "
            "install Debian's postgresql package (it creates the user)"
        ) from None


def _run_as(account: pwd.struct_passwd | None) -> tuple[int | None, int | None, list[int] | None]:
    """Popen's user, group and extra_groups that run a child as the service account (None: as us)."""
    if account is None:
        return None, None, None
    return account.pw_uid, account.pw_gid, []


def _service_env(account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if account is not None:
        env["HOME"] = account.pw_dir
        env["USER"] = account.pw_name
    return env


def _check_reachable(directory: Path, account: pwd.struct_passwd | None) -> None:
    """The service account can walk down to `directory` (PostgreSQL needs its data directory's path)."""
    if account is None:
        return
    blocked = [
        parent
        for parent in reversed([directory, *directory.parents])
        if parent.exists() and not (parent.stat().st_mode & 0o001) and parent.stat().st_uid != account.pw_uid
    ]
    if blocked:
        raise DatabaseError(
            f"the {account.pw_name} user, which runs PostgreSQL, cannot reach {directory}: {blocked[0]} lets "
            f"only its owner in. Choose a --state-dir it can reach, or let it pass: chmod o+x {blocked[0]}"
        )


# The local server -------------------------------------------------------------------------------


class LocalPostgres:
    """initdb once, then `postgres` on 127.0.0.1:<port> as its own session (process group)."""

    def __init__(self, root: Path) -> None:
        self.paths = PostgresPaths(root=root)
        self.account = _service_account()

    def config(self, port: int) -> DatabaseConfig:
        url = f"{ASYNC_DRIVER}://{ROLE}@127.0.0.1:{port}/{DATABASE}"
        return DatabaseConfig(kind="postgresql", url=url, passfile=str(self.paths.passfile), port=port)

    def initialized(self) -> bool:
        return (self.paths.data / "PG_VERSION").is_file()

    def _password(self) -> str:
        try:
            entry = self.paths.passfile.read_text().strip()
        except FileNotFoundError:
            raise DatabaseError(
                f"{self.paths.data} exists but its password file {self.paths.passfile} is gone; remove "
                f"{self.paths.root} (the stack's Prefect history goes with it) and run `switchyard up` again"
            ) from None
        return entry.split(":", 4)[4]

    def initialize(self, bin_dir: Path) -> None:
        """A new cluster: the role `switchyard` with a generated password, scram-sha-256 everywhere."""
        root = self.paths.root
        root.mkdir(parents=True, exist_ok=True)
        # Others may pass through (the service account must reach data/), not list or read.
        root.chmod(0o711)
        _check_reachable(root, self.account)
        password = secrets.token_urlsafe(24)
        write_passfile(self.paths.passfile, password)
        data = self.paths.data
        data.mkdir(mode=0o700, exist_ok=True)
        pwfile = root / ".initdb-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.account is not None:
            os.chown(data, self.account.pw_uid, self.account.pw_gid)
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={pwfile}"]
        argv += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]
        uid, gid, groups = _run_as(self.account)
        try:
            with self.paths.log.open("ab") as log:
                result = subprocess.run(
                    argv,
                    cwd=root,
                    env=_service_env(self.account),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DatabaseError(f"initdb failed with exit code {result.returncode}:\n{log_tail(self.paths.log)}")

    def start(
        self, port: int | None = None, timeout_s: float = START_TIMEOUT_S
    ) -> tuple[subprocess.Popen[bytes], ProcessRecord, DatabaseConfig]:
        """Start the server (initializing it first if needed) and wait until the role can log in
        to the `prefect` database (created on the first start)."""
        bin_dir = find_bin_dir()
        if not self.initialized():
            self.initialize(bin_dir)
        _check_reachable(self.paths.data, self.account)
        port = port or free_port()
        argv = [str(bin_dir / "postgres"), "-D", str(self.paths.data), "-p", str(port)]
        # TCP on loopback only; no Unix socket (its default directory belongs to the system's cluster).
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
        # Enough for a Prefect server's pools plus the psql of a curious person.
        argv += ["-c", "max_connections=200"]
        uid, gid, groups = _run_as(self.account)
        with self.paths.log.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=self.paths.root,
                env=_service_env(self.account),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        stat = proc_stat(process.pid)
        record = ProcessRecord(
            pid=process.pid, start_ticks=stat.start_ticks if stat else -1, argv=argv, log=str(self.paths.log)
        )
        try:
            self._wait_ready(process, port, timeout_s)
        except BaseException:
            stop_postgres(record)
            raise
        return process, record, self.config(port)

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
        password = self._password()
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DatabaseError(f"postgres exited with code {process.returncode}:\n{log_tail(self.paths.log)}")
            try:
                asyncio.run(_ensure_database(port, password))
                return
            except (TimeoutError, OSError) as error:  # not listening yet
                last = f"{type(error).__name__}: {error}"
            except Exception as error:  # starting up ("the database system is starting up")
                if "starting up" not in str(error):
                    raise DatabaseError(f"PostgreSQL on port {port} refused the stack's role: {error}") from None
                last = str(error)
            time.sleep(0.2)
        raise DatabaseError(
            f"PostgreSQL did not accept connections on 127.0.0.1:{port} within {timeout_s:.0f} s ({last}):\n"
            f"{log_tail(self.paths.log)}"
        )


async def _ensure_database(port: int, password: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host="127.0.0.1", port=port, user=ROLE, password=password, database="postgres", timeout=5
    )
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f'CREATE DATABASE "{DATABASE}" OWNER "{ROLE}"')
    finally:
        await connection.close()


def stop_postgres(record: ProcessRecord, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Fast shutdown: SIGINT to the postmaster alone (it stops its own children in order; a
    SIGTERM to each of them would make it recover from a crash next time), then SIGTERM/SIGKILL
    of whatever is left. Returns the pids that survived."""
    tree = process_tree(record)
    if not tree:
        return []
    try:
        os.kill(record.pid, signal.SIGINT)
    except ProcessLookupError:
        return []
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_running(record):
        time.sleep(0.1)
    left = [stat for stat in tree if _same_process(stat.pid, stat.start_ticks)]
    return [stat.pid for stat in stop_process_trees([left], 5.0)] if left else []


def _same_process(pid: int, start_ticks: int) -> bool:
    now = proc_stat(pid)
    return now is not None and now.state not in ("Z", "X") and now.start_ticks == start_ticks


# A PostgreSQL of your own ---------------------------------------------------------------------------


def write_passfile(path: Path, password: str) -> None:
    """One pgpass line for any host, port, database and user: the file serves this stack's one
    connection. The password is the rest of the line, as asyncpg reads it (no escaping needed)."""
    if "\n" in password or "\r" in password:
        raise DatabaseError("the database password holds a line break, which a pgpass file cannot carry")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(f"*:*:*:*:{password}\n")
    temporary.replace(path)


def external_database(url: str, passfile: Path) -> DatabaseConfig:
    """A PostgreSQL URL you gave: its password (if any) goes to `passfile`, the rest to the config.

    postgresql:// and postgres:// are taken as postgresql+asyncpg:// (the driver Prefect needs);
    another driver is refused."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"the database URL is not a URL (from --database-url or {DATABASE_URL_ENV}); expected "
            "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=ASYNC_DRIVER)
    if parsed.drivername != ASYNC_DRIVER:
        raise DatabaseError(
            f"the database URL uses {parsed.drivername}://; Prefect's server needs {ASYNC_DRIVER}:// (PostgreSQL "
            "through asyncpg)"
        )
    if not parsed.host or not parsed.database:
        raise DatabaseError("the database URL must name a host and a database: postgresql+asyncpg://USER@HOST/DB")
    stored_passfile: str | None = None
    if parsed.password is not None:
        write_passfile(passfile, str(parsed.password))
        stored_passfile = str(passfile)
        # URL.set(password=None) leaves the password as it was: build the URL anew without it.
        parsed = URL.create(
            parsed.drivername,
            username=parsed.username,
            host=parsed.host,
            port=parsed.port,
            database=parsed.database,
            query=parsed.query,
        )
    else:
        passfile.unlink(missing_ok=True)
    return DatabaseConfig(kind="external", url=parsed.render_as_string(hide_password=False), passfile=stored_passfile)
