"""Log Analytics answers: the AzureDiagnostics table built from the gateway's access log.

Rows look like Application Gateway v2 access log records in the AzureDiagnostics table (Category
"ApplicationGatewayAccessLog"): ResourceId upper-cased as Azure writes it, `_s` string and `_d`
number columns, timeTaken_d in seconds. Only the columns a query needs are built.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane import kql, telemetry
from switchyard_emulator.dataplane.errors import LogsQueryError
from switchyard_emulator.dataplane.timespec import TimeSpecError, parse_interval

TABLE = "AzureDiagnostics"
_ACCESS_COLUMNS = (
    "ts, gateway_id, listener, rule, pool, settings, backend, method, path, client, status, "
    "backend_status, time_taken_ms, backend_time_ms, bytes_in, bytes_out"
)
AccessRow = tuple[Any, ...]


def _id_part(gateway_id: str, key: str) -> str:
    parts = gateway_id.strip("/").split("/")
    lowered = [part.lower() for part in parts]
    if key in lowered and lowered.index(key) + 1 < len(parts):
        return parts[lowered.index(key) + 1]
    return ""


def _client_ip(client: str | None) -> str:
    if not client:
        return ""
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() and "." in host else client


def _client_port(client: str | None) -> float | None:
    if not client or ":" not in client:
        return None
    port = client.rpartition(":")[2]
    return float(port) if port.isdigit() else None


def _latency_text(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000.0:.3f}"


# Column name -> (type, how to compute it from an access_log row).
_COLUMNS: dict[str, tuple[str, Callable[[AccessRow, str], Any]]] = {
    "TenantId": (kql.STRING, lambda r, ws: ws),
    "TimeGenerated": (kql.DATETIME, lambda r, ws: datetime.fromtimestamp(r[0], UTC)),
    "ResourceId": (kql.STRING, lambda r, ws: r[1].upper()),
    "_ResourceId": (kql.STRING, lambda r, ws: r[1].lower()),
    "SubscriptionId": (kql.STRING, lambda r, ws: _id_part(r[1], "subscriptions")),
    "ResourceGroup": (kql.STRING, lambda r, ws: _id_part(r[1], "resourcegroups").upper()),
    "ResourceProvider": (kql.STRING, lambda r, ws: "MICROSOFT.NETWORK"),
    "ResourceType": (kql.STRING, lambda r, ws: "APPLICATIONGATEWAYS"),
    "Resource": (kql.STRING, lambda r, ws: _id_part(r[1], "applicationgateways").upper()),
    "Category": (kql.STRING, lambda r, ws: "ApplicationGatewayAccessLog"),
    "OperationName": (kql.STRING, lambda r, ws: "ApplicationGatewayAccess"),
    "Type": (kql.STRING, lambda r, ws: TABLE),
    "instanceId_s": (kql.STRING, lambda r, ws: "appgw_0"),
    "listenerName_s": (kql.STRING, lambda r, ws: r[2] or ""),
    "ruleName_s": (kql.STRING, lambda r, ws: r[3] or ""),
    "backendPoolName_s": (kql.STRING, lambda r, ws: r[4] or ""),
    "backendSettingName_s": (kql.STRING, lambda r, ws: r[5] or ""),
    "serverRouted_s": (kql.STRING, lambda r, ws: r[6] or ""),
    "httpMethod_s": (kql.STRING, lambda r, ws: r[7] or ""),
    "requestUri_s": (kql.STRING, lambda r, ws: r[8] or ""),
    "clientIP_s": (kql.STRING, lambda r, ws: _client_ip(r[9])),
    "clientPort_d": (kql.REAL, lambda r, ws: _client_port(r[9])),
    "httpStatus_d": (kql.REAL, lambda r, ws: float(r[10])),
    "serverStatus_s": (kql.STRING, lambda r, ws: "-" if r[11] is None else str(r[11])),
    "timeTaken_d": (kql.REAL, lambda r, ws: r[12] / 1000.0),
    "serverResponseLatency_s": (kql.STRING, lambda r, ws: _latency_text(r[13])),
    "receivedBytes_d": (kql.REAL, lambda r, ws: float(r[14])),
    "sentBytes_d": (kql.REAL, lambda r, ws: float(r[15])),
    "httpVersion_s": (kql.STRING, lambda r, ws: "HTTP/1.1"),
    "sslEnabled_s": (kql.STRING, lambda r, ws: "off"),
}
SCHEMA: list[tuple[str, str]] = [(name, kind) for name, (kind, _) in _COLUMNS.items()]


class LogsEngine:
    def __init__(self, telemetry_db: Path) -> None:
        self.telemetry_db = telemetry_db

    def query(
        self, workspace_id: str, text: str, timespan: str | None, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Parse, check and run a KQL query; runs in a worker thread (it reads SQLite)."""
        now = now or datetime.now(UTC)
        parsed = kql.parse(text)
        if parsed.table != TABLE:
            raise LogsQueryError(
                "SemanticError",
                f"Failed to resolve table or column expression named '{parsed.table}' (the emulator's "
                f"workspace has the table '{TABLE}')",
            )
        lower, upper = kql.time_bounds(parsed, "TimeGenerated", now)
        if timespan:
            try:
                span_start, span_end = parse_interval(timespan, now)
            except TimeSpecError as exc:
                raise LogsQueryError("InvalidTimespan", f"Invalid timespan '{timespan}': {exc}") from exc
            lower = span_start if lower is None else max(lower, span_start)
            upper = span_end if upper is None else min(upper, span_end)
        needed = parsed.needed_columns(_COLUMNS) | {"TimeGenerated"}
        rows = self._rows(workspace_id, needed, lower, upper)
        source = kql.Table(SCHEMA, rows)
        return kql.answer(kql.run(parsed, source, now))

    def _rows(
        self, workspace_id: str, needed: set[str], lower: datetime | None, upper: datetime | None
    ) -> list[kql.Row]:
        builders = [(name, build) for name, (_, build) in _COLUMNS.items() if name in needed]
        conditions, params = [], []
        if lower is not None:
            conditions.append("ts >= ?")
            params.append(lower.timestamp())
        if upper is not None:
            conditions.append("ts <= ?")
            params.append(upper.timestamp())
        sql = f"SELECT {_ACCESS_COLUMNS} FROM access_log"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += " ORDER BY ts"
        connection = telemetry.connect(self.telemetry_db, readonly=True)
        try:
            try:
                records = connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        finally:
            connection.close()
        return [{name: build(record, workspace_id) for name, build in builders} for record in records]
