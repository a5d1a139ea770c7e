"""Fixtures for the emulator's data-plane unit tests: a real telemetry DB in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from emulator_testdata import GATEWAY_ID, SCALE_SET_ID

from switchyard_emulator.dataplane import telemetry


@pytest.fixture
def telemetry_db(tmp_path: Path) -> Path:
    path = tmp_path / "telemetry.sqlite"
    telemetry.ensure_schema(path)
    return path


AccessWriter = Callable[..., None]


@pytest.fixture
def add_request(telemetry_db: Path) -> AccessWriter:
    """add_request(ts, backend='127.1.0.2:8000', status=200, ...) appends one access_log row."""

    def add(
        ts: float,
        *,
        backend: str | None = "127.1.0.2:8000",
        status: int = 200,
        backend_status: int | None = None,
        pool: str = "blue",
        settings: str = "service",
        listener: str = "production",
        rule: str = "production",
        time_taken_ms: float = 10.0,
        backend_time_ms: float | None = 8.0,
        path: str = "/work/echo",
        method: str = "GET",
        client: str = "127.0.0.1",
        bytes_in: int = 100,
        bytes_out: int = 200,
        gateway_id: str = GATEWAY_ID,
    ) -> None:
        if backend_status is None and backend is not None:
            backend_status = status
        with sqlite3.connect(telemetry_db) as connection:
            connection.execute(
                "INSERT INTO access_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ts, gateway_id, listener, rule, pool, settings, backend, method, path, client, status,
                    backend_status, time_taken_ms, backend_time_ms if backend else None, bytes_in, bytes_out,
                ),
            )  # fmt: skip

    return add


@pytest.fixture
def add_health(telemetry_db: Path) -> Callable[..., None]:
    def add(ts: float, pool: str, settings: str, healthy: int, unhealthy: int) -> None:
        with sqlite3.connect(telemetry_db) as connection:
            connection.execute(
                "INSERT INTO backend_health_samples VALUES (?,?,?,?,?,?)",
                (ts, GATEWAY_ID, pool, settings, healthy, unhealthy),
            )

    return add


@pytest.fixture
def add_instance_sample(telemetry_db: Path) -> Callable[..., None]:
    def add(ts: float, vm_name: str, cpu: float, memory: float = 5e8, instance_id: str | None = None) -> None:
        with sqlite3.connect(telemetry_db) as connection:
            connection.execute(
                "INSERT INTO instance_samples VALUES (?,?,?,?,?,?)",
                (ts, SCALE_SET_ID, instance_id or vm_name.rsplit("_", 1)[-1], vm_name, cpu, memory),
            )

    return add
