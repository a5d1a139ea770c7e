"""The local stack's state: its directory, stack.json, and how to reach what it runs.

See switchyard/stack/up.py for what `switchyard up` and `switchyard down` do with it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

from switchyard.checkout import FLEET_FILE, REPO_ROOT
from switchyard.stack.postgres import DatabaseConfig
from switchyard.stack.processes import ProcessRecord
from switchyard_emulator.launcher import read_info

DEFAULT_FLEET_FILE = FLEET_FILE
DEFAULT_PORT = 4200
WORK_POOL = "switchyard-local"
WORKER_NAME = "switchyard-local-worker"
STACK_SCHEMA = "switchyard.stack/v1"

# The worker asks for runs every 2 s: a run started from the UI (or by an automation) starts
# within seconds. Its heartbeat tells the server (and `up`) it is online.
WORKER_QUERY_SECONDS = 2
WORKER_HEARTBEAT_SECONDS = 10

EMULATOR_START_TIMEOUT_S = 60.0
AZURITE_START_TIMEOUT_S = 60.0
SERVER_START_TIMEOUT_S = 120.0
WORKER_ONLINE_TIMEOUT_S = 60.0
DEPLOY_TIMEOUT_S = 300.0
PROVISION_TIMEOUT_S = 600.0
# `prefect server start` takes 30 s and more to shut down on SIGTERM; SQLite is safe to kill, and
# so is a PostgreSQL client. PostgreSQL itself gets a fast shutdown (switchyard/stack/postgres.py).
STOP_GRACE_S = {"worker": 5.0, "prefect_server": 5.0, "postgres": 20.0, "emulator": 15.0, "azurite": 10.0}
# Workers first (their flow runs with them), then the server, then its database, then the emulator,
# then the blob storage the emulator reads (Azurite).
STOP_ORDER = ("worker", "prefect_server", "postgres", "emulator", "azurite")


def worker_process(number: int) -> str:
    """stack.json's name of the n-th worker process (1-based): the first keeps the plain name."""
    return "worker" if number == 1 else f"worker-{number}"


def worker_name(number: int) -> str:
    """The n-th worker's name in the work pool, as the Prefect UI shows it."""
    return WORKER_NAME if number == 1 else f"{WORKER_NAME}-{number}"


def component(process: str) -> str:
    """worker-2 -> worker: the kind of a process, which its grace period and stop order follow."""
    return "worker" if process.startswith("worker") else process


def stop_order(processes: Iterable[str]) -> list[str]:
    """The processes in the order `down` stops them."""
    return sorted(processes, key=lambda name: (STOP_ORDER.index(component(name)), name))


class StackError(RuntimeError):
    """The stack cannot start or stop as asked; the message says why and what to do."""


# Paths -------------------------------------------------------------------------------------------


class StackPaths(BaseModel):
    state_dir: Path

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def emulator_dir(self) -> Path:
        return self.state_dir / "emulator"

    @property
    def emulator_file(self) -> Path:
        return self.emulator_dir / "emulator.json"

    @property
    def azurite_dir(self) -> Path:
        """Azurite's blobs, its account (name and key, mode 0600), certificate and log."""
        return self.state_dir / "azurite"

    @property
    def storage_file(self) -> Path:
        """What the emulator needs to reach Azurite (mode 0600: it holds the account key)."""
        return self.azurite_dir / "storage.json"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def database_passfile(self) -> Path:
        """The password of a PostgreSQL you named (--database-url), mode 0600."""
        return self.state_dir / "database.pgpass"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / ".stack.lock"


@contextmanager
def exclusive(paths: StackPaths) -> Iterator[None]:
    """One `up` or `down` at a time per state directory (a second one is refused, not queued)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `switchyard up` or `switchyard down` is working on {paths.state_dir}; wait for it"
            ) from None
        yield


# stack.json --------------------------------------------------------------------------------------


class StackState(BaseModel):
    schema_: str = Field(STACK_SCHEMA, alias="schema")
    state_dir: str
    repo_root: str
    prefect_api_url: str
    ui_url: str
    prefect_home: str
    port: int
    emulator_file: str
    work_pool: str = WORK_POOL
    worker_name: str = WORKER_NAME
    # Never a password: the URL has none, the passfile holds it (switchyard/stack/postgres.py).
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    pids: dict[str, int] = Field(default_factory=dict)
    processes: dict[str, ProcessRecord] = Field(default_factory=dict)
    started_at: datetime
    updated_at: datetime

    model_config = {"populate_by_name": True}

    def write(self, path: Path) -> None:
        self.pids = {name: record.pid for name, record in self.processes.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.model_dump_json(indent=2, by_alias=True) + "\n")
        temporary.replace(path)


def read_stack(paths: StackPaths) -> StackState | None:
    try:
        return StackState.model_validate_json(paths.stack_file.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise StackError(
            f"{paths.stack_file} is not a switchyard stack file ({error}); move it away and run `switchyard up` again"
        ) from None


# Health ------------------------------------------------------------------------------------------


def prefect_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def emulator_info(paths: StackPaths) -> dict[str, Any] | None:
    """What the stack's emulator wrote to emulator.json, or None while there is none."""
    return read_info(paths.emulator_dir)


def emulator_answers(info: dict[str, Any]) -> bool:
    """Any HTTP answer of its ARM endpoint (a 401 without a token is an answer)."""
    try:
        httpx.get(f"{info['endpoint']}/subscriptions?api-version=2022-12-01", verify=info["ca_bundle"], timeout=3)
        return True
    except (httpx.HTTPError, KeyError, OSError):
        return False


# Environments of the processes -------------------------------------------------------------------


ADAPTER_LOGGER = "switchyard.cloud"


def client_environment(paths: StackPaths, api_url: str) -> dict[str, str]:
    """What every Prefect client the stack starts (deploy, provision, worker, flow runs) needs."""
    return {
        **os.environ,
        **plain_http_api_trust(paths, api_url),
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SWITCHYARD_STATE_DIR": str(paths.state_dir),
        "SWITCHYARD_REPO_ROOT": str(REPO_ROOT),  # prefect.yaml's pull step moves there
        "PYTHONUNBUFFERED": "1",
        # The Azure adapter's warnings (reads waiting their turn under Resource Manager's throttling,
        # switchyard/cloud/azure/pacing.py) reach the run's log in the UI, beside Prefect's own.
        "PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(
            filter(None, [os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS"), ADAPTER_LOGGER])
        ),
    }


def plain_http_api_trust(paths: StackPaths, api_url: str) -> dict[str, str]:
    """A one-certificate CA file for Prefect's clients of the stack's plain-HTTP API.

    Prefect 3.9 builds a certificate-verifying TLS context for every client it makes (PrefectClient
    __init__: `ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE or certifi.where())`),
    whatever the API's scheme. Parsing the system's ~140 roots costs 15-25 ms of CPU each time, and
    a flow run makes a client for each block load, concurrency lease, artifact and log worker: a
    patch-services run of five services made 41 of them (a second of CPU). The stack's API is
    http:// on loopback, where no certificate is ever verified, so the stack's own CA (the
    emulator's one certificate) serves as well and costs a fraction of a millisecond. Only for an
    http:// API, only when no file was chosen, and only once the emulator has written its CA."""
    if not api_url.startswith("http://") or os.environ.get("PREFECT_API_SSL_CERT_FILE"):
        return {}
    info = emulator_info(paths)
    ca_bundle = info.get("ca_bundle") if info else None
    if not isinstance(ca_bundle, str) or not Path(ca_bundle).is_file():
        return {}
    return {"PREFECT_API_SSL_CERT_FILE": ca_bundle}


@contextmanager
def prefect_client_settings(paths: StackPaths, api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at the stack's server for the block of code."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(paths.prefect_home)}):
        yield
