"""The access-log record of one request the gateway served (ApplicationGatewayAccessLog's source):
what was routed where, the status the client got and the backend's, sizes and times.
"""

from __future__ import annotations

import time

from switchyard_emulator.dataplane.gateway.telemetry import TelemetryWriter


def record_access(
    telemetry: TelemetryWriter,
    started: float,
    gateway_id: str,
    listener: str | None,
    rule: str | None,
    pool: str | None,
    settings: str | None,
    backend: str | None,
    method: str | None,
    path: str | None,
    client: str | None,
    status: int,
    backend_status: int | None,
    backend_time_ms: float | None,
    bytes_in: int,
    bytes_out: int,
) -> None:
    now = time.time()
    telemetry.record_access(
        (
            now,
            gateway_id,
            listener,
            rule,
            pool,
            settings,
            backend,
            method,
            path,
            client,
            status,
            backend_status,
            (time.perf_counter() - started) * 1000.0,
            backend_time_ms,
            bytes_in,
            bytes_out,
        )
    )
