"""A real Prefect server on loopback, started and stopped as one process group; on SQLite in its
home, or on the PostgreSQL its database environment names (switchyard/stack/postgres.py).

The local stack runs one, and so do the end-to-end tests: its background services (the lease
repossessor among them) are what make a dead run's release lock expire, which an in-process test
API does not do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from switchyard.stack.processes import free_port, stop_process_group


class PrefectServerError(RuntimeError):
    pass


class PrefectServer:
    """`prefect server start` with its own PREFECT_HOME, on 127.0.0.1:<port>."""

    def __init__(self, home: Path, port: int | None = None, database_environment: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        # PREFECT_API_DATABASE_CONNECTION_URL (and PGPASSFILE) for PostgreSQL; none: SQLite in `home`.
        self.database_environment = database_environment or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def environment(self) -> dict[str, str]:
        """The variables a client (flow, worker, CLI) needs to talk to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout_s: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            # `prefect server start --port` leaves the UI pointing at 4200; the setting does not.
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_TELEMETRY_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # The errors it answers 503 for (on SQLite, a busy database) go to server.log too: the UI
            # shows them only as "Something went wrong".
            "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
            # A dead run's release lock is reclaimed soon after its lease (60 s at least) runs out.
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
            # Task runs reach the database from their state events (Pending, Running, Completed),
            # which Prefect 3.9's task run recorder writes one transaction per event by default:
            # the largest part of the server's work in a fleet patch. Batched (up to 50 events, at
            # least every second) it costs a fraction; a task run's state shows up to a second late.
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
            **self.database_environment,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectServerError(f"the Prefect server exited ({self.process.returncode}):\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise PrefectServerError(f"the Prefect server did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        # The whole group: some of the server's processes ignore the first SIGTERM.
        stop_process_group(process, grace_s)
        self.process = None
