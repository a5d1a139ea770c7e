"""The KQL subset: parsing, evaluation over AzureDiagnostics rows from a real telemetry DB, errors;
and which records the workspace holds (what diagnostic settings collected, after ingestion)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from emulator_testdata import GATEWAY_ID, T0

from switchyard_emulator.dataplane import kql
from switchyard_emulator.dataplane.api import LogCollection
from switchyard_emulator.dataplane.errors import LogsQueryError
from switchyard_emulator.dataplane.logs import LogsEngine

NOW = datetime.fromtimestamp(T0 + 600, UTC)  # ten minutes after T0
WORKSPACE = "00000000-0000-0000-0000-00000000beef"
# a diagnostic setting that has sent the test gateway's access log to AzureDiagnostics all along
ALWAYS = [LogCollection(resource_id=GATEWAY_ID, table="AzureDiagnostics", start=0.0)]


def run(
    db: Path,
    text: str,
    timespan: str | None = None,
    collections: list[LogCollection] = ALWAYS,
    delay_s: float = 0.0,
) -> tuple[list[dict[str, str]], list[list[Any]]]:
    body = LogsEngine(db, ingestion_delay_s=delay_s).query(WORKSPACE, text, timespan, collections, now=NOW)
    (table,) = body["tables"]
    assert table["name"] == "PrimaryResult"
    return table["columns"], table["rows"]


@pytest.fixture
def traffic(add_request: Callable[..., None]) -> None:
    """60 requests over 60 s: backends .2/.3/.4 in turn; every 10th is a 500; times 1..60 ms."""
    for second in range(60):
        status = 500 if second % 10 == 0 else 200
        add_request(
            T0 + second + 0.5,
            backend=f"127.1.0.{2 + second % 3}:8000",
            status=status,
            time_taken_ms=float(second + 1),
            backend_time_ms=float(second),
            pool="blue" if second < 30 else "green",
            path=f"/work/echo?i={second}",
        )


def test_summarize_count_by_column(telemetry_db: Path, traffic: None) -> None:
    columns, rows = run(
        telemetry_db,
        'AzureDiagnostics | where Category == "ApplicationGatewayAccessLog" '
        "| summarize count() by serverRouted_s | order by serverRouted_s asc",
    )
    assert columns == [{"name": "serverRouted_s", "type": "string"}, {"name": "count_", "type": "long"}]
    assert rows == [["127.1.0.2:8000", 20], ["127.1.0.3:8000", 20], ["127.1.0.4:8000", 20]]


def test_countif_avg_and_percentiles_with_named_columns(telemetry_db: Path, traffic: None) -> None:
    columns, rows = run(
        telemetry_db,
        """AzureDiagnostics
        | where TimeGenerated >= ago(1h)
        | summarize total = count(), failed = countif(httpStatus_d >= 500), mean = avg(timeTaken_d),
                    (p50, p95, p99) = percentiles(timeTaken_d, 50, 95, 99) by backendPoolName_s
        | order by backendPoolName_s asc""",
    )
    assert [column["name"] for column in columns] == [
        "backendPoolName_s", "total", "failed", "mean", "p50", "p95", "p99",
    ]  # fmt: skip
    assert [column["type"] for column in columns] == [
        "string",
        "long",
        "long",
        "real",
        "real",
        "real",
        "real",
    ]
    blue, green = rows
    # blue: seconds 0..29 -> timeTaken 1..30 ms; nearest-rank percentiles.
    assert blue[:3] == ["blue", 30, 3]
    assert blue[3] == pytest.approx(0.0155)
    assert blue[4:] == [0.015, 0.029, 0.030]
    assert green[:3] == ["green", 30, 3]


def test_default_aggregate_column_names(telemetry_db: Path, traffic: None) -> None:
    columns, rows = run(
        telemetry_db,
        "AzureDiagnostics | summarize count(), countif(httpStatus_d == 500), sum(sentBytes_d),"
        " min(timeTaken_d), max(timeTaken_d), dcount(serverRouted_s), percentile(timeTaken_d, 90),"
        " percentiles(timeTaken_d, 99.9)",
    )
    assert [column["name"] for column in columns] == [
        "count_", "countif_", "sum_sentBytes_d", "min_timeTaken_d", "max_timeTaken_d",
        "dcount_serverRouted_s",
        "percentile_timeTaken_d_90", "percentile_timeTaken_d_99_9",
    ]  # fmt: skip
    assert rows == [[60, 6, 12000.0, 0.001, 0.06, 3, 0.054, 0.06]]


def test_bin_by_time_buckets_rows(telemetry_db: Path, traffic: None) -> None:
    columns, rows = run(
        telemetry_db,
        "AzureDiagnostics | summarize requests = count(), errors = countif(httpStatus_d >= 500)"
        " by bin(TimeGenerated, 15s) | order by TimeGenerated asc",
    )
    assert columns[0] == {"name": "TimeGenerated", "type": "datetime"}
    assert rows == [
        ["2026-01-01T00:00:00Z", 15, 2],
        ["2026-01-01T00:00:15Z", 15, 1],
        ["2026-01-01T00:00:30Z", 15, 2],
        ["2026-01-01T00:00:45Z", 15, 1],
    ]


def test_where_in_between_and_or_with_datetime_literals(telemetry_db: Path, traffic: None) -> None:
    _, rows = run(
        telemetry_db,
        "AzureDiagnostics"
        " | where TimeGenerated between (datetime(2026-01-01T00:00:10Z) .. datetime(2026-01-01 00:00:20))"
        " | where serverRouted_s in ('127.1.0.2:8000', '127.1.0.3:8000')"
        "   and (httpStatus_d != 500 or timeTaken_d > 0.01)"
        " | count",
    )
    # seconds 10..19 (TimeGenerated = s + 0.5 <= 20 excludes 20); not .4 (s % 3 == 2): 10,12,13,15,16,18,19
    assert rows == [[7]]


def test_not_in_negated_between_and_string_operators(telemetry_db: Path, traffic: None) -> None:
    _, rows = run(
        telemetry_db,
        "AzureDiagnostics | where serverRouted_s !in ('127.1.0.2:8000')"
        " and timeTaken_d !between (0.005 .. 0.055)"
        " and originalRequestUriWithArgs_s startswith '/WORK' and requestQuery_s contains 'i='"
        " and requestUri_s !has 'health'"
        " | project originalRequestUriWithArgs_s | order by originalRequestUriWithArgs_s asc",
    )
    assert rows == [["/work/echo?i=1"], ["/work/echo?i=2"], ["/work/echo?i=55"], ["/work/echo?i=56"],
                    ["/work/echo?i=58"], ["/work/echo?i=59"]]  # fmt: skip


def test_case_insensitive_equality_and_in(telemetry_db: Path, traffic: None) -> None:
    _, rows = run(telemetry_db, "AzureDiagnostics | where backendPoolName_s =~ 'BLUE' | count")
    assert rows == [[30]]
    _, rows = run(telemetry_db, "AzureDiagnostics | where backendPoolName_s in~ ('GREEN') | count")
    assert rows == [[30]]
    _, rows = run(telemetry_db, "AzureDiagnostics | where backendPoolName_s == 'BLUE' | count")
    assert rows == [[0]]


def test_project_extend_order_and_take(telemetry_db: Path, traffic: None) -> None:
    columns, rows = run(
        telemetry_db,
        "AzureDiagnostics | extend ms = timeTaken_d * 1000"
        " | project TimeGenerated, ms, status = toint(httpStatus_d)"
        " | order by ms desc | take 2",
    )
    assert columns == [
        {"name": "TimeGenerated", "type": "datetime"},
        {"name": "ms", "type": "real"},
        {"name": "status", "type": "int"},
    ]
    assert rows == [["2026-01-01T00:00:59.5Z", 60.0, 200], ["2026-01-01T00:00:58.5Z", 59.0, 200]]


def test_access_log_columns_look_like_azure_diagnostics(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 1.25, backend="127.1.0.7:8000", status=503, time_taken_ms=12.5, backend_time_ms=11.0,
                path="/work/sleep?ms=10", client="10.0.0.9")  # fmt: skip
    add_request(T0 + 2, backend=None, status=502, backend_status=None)
    columns, rows = run(
        telemetry_db,
        "AzureDiagnostics | project ResourceId, Category, listenerName_s, ruleName_s, backendPoolName_s,"
        " backendSettingName_s, serverRouted_s, httpStatus_d, serverStatus_s, timeTaken_d,"
        " serverResponseLatency_s, requestUri_s, httpMethod_s, clientIP_s, receivedBytes_d, sentBytes_d"
        " | order by httpStatus_d desc",
    )
    assert rows[0] == [
        GATEWAY_ID.upper(), "ApplicationGatewayAccessLog", "production", "production", "blue", "service",
        "127.1.0.7:8000", 503.0, "503", 0.0125, "0.011", "/work/sleep", "GET", "10.0.0.9", 100.0, 200.0,
    ]  # fmt: skip
    assert rows[1][6:9] == ["", 502.0, "-"]
    assert {column["name"]: column["type"] for column in columns}["httpStatus_d"] == "real"


def test_timespan_parameter_restricts_rows(telemetry_db: Path, traffic: None) -> None:
    _, rows = run(telemetry_db, "AzureDiagnostics | count", timespan="2026-01-01T00:00:00Z/2026-01-01T00:00:10Z")
    assert rows == [[10]]
    _, rows = run(telemetry_db, "AzureDiagnostics | count", timespan="PT9M50S")  # ends at NOW = T0 + 600
    assert rows == [[50]]


def test_summarize_without_rows_answers_one_row(telemetry_db: Path) -> None:
    columns, rows = run(telemetry_db, "AzureDiagnostics | summarize count(), avg(timeTaken_d)")
    assert rows == [[0, None]]
    assert [column["type"] for column in columns] == ["long", "real"]
    _, grouped = run(telemetry_db, "AzureDiagnostics | summarize count() by serverRouted_s")
    assert grouped == []


def test_top_and_distinct(telemetry_db: Path, traffic: None) -> None:
    _, rows = run(telemetry_db, "AzureDiagnostics | top 2 by timeTaken_d asc | project timeTaken_d")
    assert rows == [[0.001], [0.002]]
    _, rows = run(telemetry_db, "AzureDiagnostics | distinct backendPoolName_s | order by backendPoolName_s asc")
    assert rows == [["blue"], ["green"]]


def test_arithmetic_on_datetimes_and_timespans() -> None:
    query = kql.parse(
        "T | extend age = now() - TimeGenerated, later = TimeGenerated + 1h, half = 1d / 2, x = 7 / 2, y = 7.0 / 2"
    )
    source = kql.Table(
        [("TimeGenerated", kql.DATETIME)], [{"TimeGenerated": datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)}]
    )
    result = kql.answer(kql.run(query, source, datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)))["tables"][0]
    assert result["rows"] == [["2026-01-01T00:00:30Z", "00:00:30", "2026-01-01T01:00:30Z", "12:00:00", 3, 3.5]]
    assert [c["type"] for c in result["columns"]] == [
        "datetime",
        "timespan",
        "datetime",
        "timespan",
        "long",
        "real",
    ]


def test_comments_and_multiline_queries_parse() -> None:
    query = kql.parse("AzureDiagnostics // the table\n| where httpStatus_d >= 500 // failures\n| take 5")
    assert [type(operator).__name__ for operator in query.operators] == ["Where", "Take"]


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("AzureDiagnostics | where httpStatus_d = = 500", "'='"),
        ("AzureDiagnostics | join kind=inner (X) on Y", "'join'"),
        ("AzureDiagnostics | where", "end of query"),
        ("AzureDiagnostics | summarize count() by", "end of query"),
        ("AzureDiagnostics | take ten", "'ten'"),
        ("AzureDiagnostics | where x between (1, 2)", "','"),
        ("AzureDiagnostics | where a == 'unterminated", "unterminated string"),
        ("AzureDiagnostics | where a ^ b", "'^'"),
    ],
)
def test_syntax_errors_name_the_token(telemetry_db: Path, text: str, token: str) -> None:
    with pytest.raises(LogsQueryError) as caught:
        run(telemetry_db, text)
    assert caught.value.code == "SyntaxError"
    assert token in caught.value.message
    body = caught.value.to_body()
    assert body["error"]["code"] == "BadArgumentError"
    assert body["error"]["innererror"]["message"] == caught.value.message


@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        (
            "AzureDiagnostics | where httpstatus_d == 500",
            "named 'httpstatus_d' (column names are case-sensitive",
        ),
        ("AppRequests | take 1", "table or column expression named 'AppRequests'"),
        ("AzureDiagnostics | summarize median(timeTaken_d)", "'median' is not a supported aggregation"),
        ("AzureDiagnostics | where httpStatus_d == '500'", "Cannot compare a real with a string"),
        ("AzureDiagnostics | where count() > 1", "only allowed in 'summarize'"),
        ("AzureDiagnostics | extend x = sha256(requestUri_s)", "Unknown function 'sha256'"),
        ("AzureDiagnostics | summarize p = percentiles(timeTaken_d, 50, 99)", "one name per value"),
        ("AzureDiagnostics | where timeTaken_d", "needs a bool predicate"),
    ],
)
def test_semantic_errors_are_specific(telemetry_db: Path, text: str, message_part: str) -> None:
    with pytest.raises(LogsQueryError) as caught:
        run(telemetry_db, text)
    assert caught.value.code == "SemanticError"
    assert message_part in caught.value.message


def test_time_bounds_are_read_from_leading_where_clauses() -> None:
    now = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    query = kql.parse(
        "AzureDiagnostics | where TimeGenerated > ago(30m) and httpStatus_d >= 500"
        " | where TimeGenerated <= datetime(2026-01-01T00:50:00Z) | summarize count()"
    )
    lower, upper = kql.time_bounds(query, "TimeGenerated", now)
    assert lower == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert upper == datetime(2026, 1, 1, 0, 50, tzinfo=UTC)
    either = kql.parse("AzureDiagnostics | where TimeGenerated > ago(1h) or true")
    assert kql.time_bounds(either, "TimeGenerated", now) == (None, None)


def test_the_cloud_adapters_latency_query_shape(telemetry_db: Path, traffic: None) -> None:
    """The query switchyard's Azure adapter sends for per-backend latency (microsecond datetimes)."""
    _, rows = run(
        telemetry_db,
        "AzureDiagnostics"
        ' | where Category == "ApplicationGatewayAccessLog" and ResourceId == "' + GATEWAY_ID.upper() + '"'
        ' and listenerName_s == "production"'
        " and TimeGenerated >= datetime(2026-01-01T00:00:10.000000Z)"
        " and TimeGenerated < datetime(2026-01-01T00:00:13.500000Z)"
        " | project serverRouted_s, timeTaken_d",
        timespan="2026-01-01T00:00:00.000000Z/2026-01-01T00:01:00.000000Z",
    )
    assert rows == [["127.1.0.3:8000", 0.011], ["127.1.0.4:8000", 0.012], ["127.1.0.2:8000", 0.013]]


# -- what the workspace holds: diagnostic-setting spans, the two tables, ingestion -----------------


def test_a_gateway_without_a_collecting_setting_has_no_rows(telemetry_db: Path, traffic: None) -> None:
    """Azure collects resource logs only while a diagnostic setting routes them: no span, no data."""
    _, rows = run(telemetry_db, "AzureDiagnostics | count", collections=[])
    assert rows == [[0]]
    other = "/subscriptions/x/resourcegroups/y/providers/microsoft.network/applicationgateways/other"
    _, rows = run(
        telemetry_db,
        "AzureDiagnostics | count",
        collections=[LogCollection(resource_id=other, table="AzureDiagnostics", start=0.0)],
    )
    assert rows == [[0]]


def test_only_records_inside_a_span_exist(telemetry_db: Path, traffic: None) -> None:
    """Records from before the setting was created (and after it was deleted) are not in the workspace."""
    span = [LogCollection(resource_id=GATEWAY_ID, table="AzureDiagnostics", start=T0 + 20, end=T0 + 30)]
    _, rows = run(telemetry_db, "AzureDiagnostics | count", collections=span)
    assert rows == [[10]]  # seconds 20..29 (TimeGenerated = s + 0.5)


def test_dedicated_settings_fill_agwaccesslogs_with_typed_columns(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    add_request(T0 + 1.25, backend="127.1.0.7:8000", status=503, time_taken_ms=12.5, backend_time_ms=11.0,
                path="/work/sleep?ms=10", client="10.0.0.9:4321")  # fmt: skip
    add_request(T0 + 2, backend=None, status=502, backend_status=None)
    dedicated = [LogCollection(resource_id=GATEWAY_ID, table="AGWAccessLogs", start=0.0)]
    columns, rows = run(
        telemetry_db,
        "AGWAccessLogs | project _ResourceId, ListenerName, RuleName, BackendPoolName, BackendSettingName,"
        " ServerRouted, ServerStatus, HttpStatus, TimeTaken, ServerResponseLatency, ClientIp, ClientPort,"
        " HttpMethod, RequestUri, RequestQuery, OriginalRequestUriWithArgs, ReceivedBytes, SentBytes, Type"
        " | order by HttpStatus desc",
        collections=dedicated,
    )
    assert rows[0] == [
        GATEWAY_ID.lower(), "production", "production", "blue", "service", "127.1.0.7:8000", 503, 503,
        0.0125, 0.011, "10.0.0.9", 4321, "GET", "/work/sleep", "ms=10", "/work/sleep?ms=10", 100, 200,
        "AGWAccessLogs",
    ]  # fmt: skip
    assert rows[1][5:10] == ["", None, 502, 0.01, None]  # the gateway's own 502: no backend status
    types = {column["name"]: column["type"] for column in columns}
    assert (types["HttpStatus"], types["ServerStatus"], types["TimeTaken"]) == ("int", "int", "real")
    # the table the setting does not fill is empty, and AzureDiagnostics column names do not exist here
    _, rows = run(telemetry_db, "AzureDiagnostics | count", collections=dedicated)
    assert rows == [[0]]
    with pytest.raises(LogsQueryError, match="httpStatus_d"):
        run(telemetry_db, "AGWAccessLogs | where httpStatus_d >= 500", collections=dedicated)


def test_records_appear_only_after_the_ingestion_delay(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for seconds_ago in (500, 200, 100, 10):
        add_request(T0 + 600 - seconds_ago)
    _, rows = run(telemetry_db, "AzureDiagnostics | count", delay_s=180)
    assert rows == [[2]]  # the records of 200 s and 500 s ago; the newer ones are still being ingested
    _, rows = run(telemetry_db, "AzureDiagnostics | count")
    assert rows == [[4]]
