"""Log Analytics answers: the gateway access log, as diagnostic settings put it into the workspace.

A gateway's access-log records exist in the workspace only within the spans in which a diagnostic
setting sent its ApplicationGatewayAccessLog category there (`LogCollection`, from the control
plane): "Resource logs aren't collected until they're routed to a destination"
(https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings). Each span names
the table the records went to:

* `AzureDiagnostics` (the setting has no logAnalyticsDestinationType): rows shaped like Application
  Gateway v2 access log records in AzureDiagnostics (Category "ApplicationGatewayAccessLog"):
  ResourceId upper-cased as Azure writes it, `_s` string and `_d` number columns, timeTaken_d in
  seconds (https://learn.microsoft.com/azure/application-gateway/application-gateway-diagnostics).
* `AGWAccessLogs` (logAnalyticsDestinationType "Dedicated"): the resource-specific table, columns
  and types as the Azure Monitor table reference gives them
  (https://learn.microsoft.com/azure/azure-monitor/reference/tables/agwaccesslogs): HttpStatus and
  ServerStatus int, TimeTaken and ServerResponseLatency real *seconds*.

A table the workspace knows but no span fills answers no rows (the data simply is not there, as on
Azure); a table the emulator does not know is a SemanticError. With an ingestion delay (the azure
timing profile) a record is queryable only that long after the request. Only the columns a query
needs are built.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane import kql, telemetry
from switchyard_emulator.dataplane.api import LogCollection
from switchyard_emulator.dataplane.errors import LogsQueryError
from switchyard_emulator.dataplane.timespec import TimeSpecError, parse_interval

AZURE_DIAGNOSTICS = "AzureDiagnostics"
AGW_ACCESS_LOGS = "AGWAccessLogs"
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


def _client_port(client: str | None) -> int | None:
    if not client or ":" not in client:
        return None
    port = client.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def _latency_text(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000.0:.3f}"


def _path(target: str | None) -> str:
    """The request URI without its query: Azure logs the query apart (requestQuery)."""
    return (target or "").partition("?")[0]


def _query(target: str | None) -> str:
    return (target or "").partition("?")[2]


def _time(r: AccessRow, ws: str) -> datetime:
    return datetime.fromtimestamp(r[0], UTC)


# AzureDiagnostics: column -> (type, value from an access_log row and the workspace id).
_AZURE_DIAGNOSTICS: dict[str, tuple[str, Callable[[AccessRow, str], Any]]] = {
    "TenantId": (kql.STRING, lambda r, ws: ws),
    "TimeGenerated": (kql.DATETIME, _time),
    "ResourceId": (kql.STRING, lambda r, ws: r[1].upper()),
    "_ResourceId": (kql.STRING, lambda r, ws: r[1].lower()),
    "SubscriptionId": (kql.STRING, lambda r, ws: _id_part(r[1], "subscriptions")),
    "ResourceGroup": (kql.STRING, lambda r, ws: _id_part(r[1], "resourcegroups").upper()),
    "ResourceProvider": (kql.STRING, lambda r, ws: "MICROSOFT.NETWORK"),
    "ResourceType": (kql.STRING, lambda r, ws: "APPLICATIONGATEWAYS"),
    "Resource": (kql.STRING, lambda r, ws: _id_part(r[1], "applicationgateways").upper()),
    "Category": (kql.STRING, lambda r, ws: "ApplicationGatewayAccessLog"),
    "OperationName": (kql.STRING, lambda r, ws: "ApplicationGatewayAccess"),
    "Type": (kql.STRING, lambda r, ws: AZURE_DIAGNOSTICS),
    "instanceId_s": (kql.STRING, lambda r, ws: "appgw_0"),
    "listenerName_s": (kql.STRING, lambda r, ws: r[2] or ""),
    "ruleName_s": (kql.STRING, lambda r, ws: r[3] or ""),
    "backendPoolName_s": (kql.STRING, lambda r, ws: r[4] or ""),
    "backendSettingName_s": (kql.STRING, lambda r, ws: r[5] or ""),
    "serverRouted_s": (kql.STRING, lambda r, ws: r[6] or ""),
    "httpMethod_s": (kql.STRING, lambda r, ws: r[7] or ""),
    # requestUri is the path; the query string is requestQuery, the whole target
    # originalRequestUriWithArgs (the access log sample of application-gateway-diagnostics)
    "requestUri_s": (kql.STRING, lambda r, ws: _path(r[8])),
    "requestQuery_s": (kql.STRING, lambda r, ws: _query(r[8])),
    "originalRequestUriWithArgs_s": (kql.STRING, lambda r, ws: r[8] or ""),
    "clientIP_s": (kql.STRING, lambda r, ws: _client_ip(r[9])),
    "clientPort_d": (kql.REAL, lambda r, ws: None if (p := _client_port(r[9])) is None else float(p)),
    "httpStatus_d": (kql.REAL, lambda r, ws: float(r[10])),
    "serverStatus_s": (kql.STRING, lambda r, ws: "-" if r[11] is None else str(r[11])),
    "timeTaken_d": (kql.REAL, lambda r, ws: r[12] / 1000.0),
    "serverResponseLatency_s": (kql.STRING, lambda r, ws: _latency_text(r[13])),
    "receivedBytes_d": (kql.REAL, lambda r, ws: float(r[14])),
    "sentBytes_d": (kql.REAL, lambda r, ws: float(r[15])),
    "httpVersion_s": (kql.STRING, lambda r, ws: "HTTP/1.1"),
    "sslEnabled_s": (kql.STRING, lambda r, ws: "off"),
}

# AGWAccessLogs, as the table reference lists it (the columns the emulator's gateway can fill).
_AGW_ACCESS_LOGS: dict[str, tuple[str, Callable[[AccessRow, str], Any]]] = {
    "TenantId": (kql.STRING, lambda r, ws: ws),
    "TimeGenerated": (kql.DATETIME, _time),
    "_ResourceId": (kql.STRING, lambda r, ws: r[1].lower()),
    "_SubscriptionId": (kql.STRING, lambda r, ws: _id_part(r[1], "subscriptions")),
    "SourceSystem": (kql.STRING, lambda r, ws: "Azure"),
    "Type": (kql.STRING, lambda r, ws: AGW_ACCESS_LOGS),
    "OperationName": (kql.STRING, lambda r, ws: "ApplicationGatewayAccess"),
    "InstanceId": (kql.STRING, lambda r, ws: "appgw_0"),
    "ListenerName": (kql.STRING, lambda r, ws: r[2] or ""),
    "RuleName": (kql.STRING, lambda r, ws: r[3] or ""),
    "BackendPoolName": (kql.STRING, lambda r, ws: r[4] or ""),
    "BackendSettingName": (kql.STRING, lambda r, ws: r[5] or ""),
    "ServerRouted": (kql.STRING, lambda r, ws: r[6] or ""),
    "ServerStatus": (kql.INT, lambda r, ws: r[11]),  # null when no backend answered
    "ServerResponseLatency": (kql.REAL, lambda r, ws: None if r[13] is None else r[13] / 1000.0),
    "HttpMethod": (kql.STRING, lambda r, ws: r[7] or ""),
    "RequestUri": (kql.STRING, lambda r, ws: _path(r[8])),
    "RequestQuery": (kql.STRING, lambda r, ws: _query(r[8])),
    "OriginalRequestUriWithArgs": (kql.STRING, lambda r, ws: r[8] or ""),
    "ClientIp": (kql.STRING, lambda r, ws: _client_ip(r[9])),
    "ClientPort": (kql.INT, lambda r, ws: _client_port(r[9])),
    "HttpStatus": (kql.INT, lambda r, ws: int(r[10])),
    "TimeTaken": (kql.REAL, lambda r, ws: r[12] / 1000.0),
    "ReceivedBytes": (kql.INT, lambda r, ws: int(r[14])),
    "SentBytes": (kql.INT, lambda r, ws: int(r[15])),
    "HttpVersion": (kql.STRING, lambda r, ws: "HTTP/1.1"),
    "SslEnabled": (kql.STRING, lambda r, ws: "off"),
}

TABLES: dict[str, dict[str, tuple[str, Callable[[AccessRow, str], Any]]]] = {
    AZURE_DIAGNOSTICS: _AZURE_DIAGNOSTICS,
    AGW_ACCESS_LOGS: _AGW_ACCESS_LOGS,
}
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    table: [(name, kind) for name, (kind, _) in columns.items()] for table, columns in TABLES.items()
}
# kept for callers that knew the one table
TABLE = AZURE_DIAGNOSTICS
SCHEMA = SCHEMAS[AZURE_DIAGNOSTICS]


class LogsEngine:
    def __init__(self, telemetry_db: Path, *, ingestion_delay_s: float = 0.0) -> None:
        self.telemetry_db = telemetry_db
        self.ingestion_delay_s = ingestion_delay_s

    def query(
        self,
        workspace_id: str,
        text: str,
        timespan: str | None,
        collections: Sequence[LogCollection],
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Parse, check and run a KQL query; runs in a worker thread (it reads SQLite)."""
        now = now or datetime.now(UTC)
        parsed = kql.parse(text)
        columns = TABLES.get(parsed.table)
        if columns is None:
            raise LogsQueryError(
                "SemanticError",
                f"Failed to resolve table or column expression named '{parsed.table}' (the emulator's "
                f"workspace has the tables {', '.join(repr(t) for t in TABLES)})",
            )
        lower, upper = kql.time_bounds(parsed, "TimeGenerated", now)
        if timespan:
            try:
                span_start, span_end = parse_interval(timespan, now)
            except TimeSpecError as exc:
                raise LogsQueryError("InvalidTimespan", f"Invalid timespan '{timespan}': {exc}") from exc
            lower = span_start if lower is None else max(lower, span_start)
            upper = span_end if upper is None else min(upper, span_end)
        # ingestion: a record written at ts is queryable from ts + delay on
        ingested = now - timedelta(seconds=self.ingestion_delay_s)
        upper = ingested if upper is None else min(upper, ingested)
        needed = parsed.needed_columns(columns) | {"TimeGenerated"}
        spans = [c for c in collections if c.table == parsed.table]
        rows = self._rows(workspace_id, columns, needed, spans, lower, upper)
        source = kql.Table(SCHEMAS[parsed.table], rows)
        return kql.answer(kql.run(parsed, source, now))

    def _rows(
        self,
        workspace_id: str,
        columns: dict[str, tuple[str, Callable[[AccessRow, str], Any]]],
        needed: set[str],
        spans: Sequence[LogCollection],
        lower: datetime | None,
        upper: datetime | None,
    ) -> list[kql.Row]:
        if not spans:
            return []  # nothing was collected into this table
        builders = [(name, build) for name, (_, build) in columns.items() if name in needed]
        conditions, params = [], []
        if lower is not None:
            conditions.append("ts >= ?")
            params.append(lower.timestamp())
        if upper is not None:
            conditions.append("ts <= ?")
            params.append(upper.timestamp())
        # only the records of a gateway while a setting collected them
        collected: list[str] = []
        for span in spans:
            clause = "(gateway_id = ? AND ts >= ?"
            params_span: list[Any] = [telemetry.canonical_id(span.resource_id), span.start]
            if span.end is not None:
                clause += " AND ts < ?"
                params_span.append(span.end)
            collected.append(clause + ")")
            params.extend(params_span)
        conditions.append("(" + " OR ".join(collected) + ")")
        sql = f"SELECT {_ACCESS_COLUMNS} FROM access_log WHERE " + " AND ".join(conditions) + " ORDER BY ts"
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
