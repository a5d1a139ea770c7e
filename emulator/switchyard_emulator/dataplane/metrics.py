"""Azure Monitor `Metrics - List` and `Metric Definitions - List` answers, from telemetry.

The bodies are the ones api-version 2024-02-01 returns (see the Metrics_List example in the
shared azure-rest-examples). Values are computed from what really happened: the gateway worker's
access log and backend health samples, and the supervisor's per-instance CPU/memory samples.

Semantics (Azure's, with the differences noted):
* timespan: 'start/end', 'start/duration', 'duration/end' or 'duration' (ending now); default the
  last hour. interval: an ISO 8601 duration (default PT1M) or FULL. Which grains are accepted is
  the timing profile's (profiles.py): `azure` takes only Azure's grains (PT1M ... P1D; anything else
  is Azure's 400 "Invalid time grain duration"), `fast` any grain down to PT1S so analysis windows
  can be seconds long. Metric definitions list the profile's grains in metricAvailabilities.
* Ingestion latency (the profile's metrics latency): a grain's values appear only once the grain
  ended that long ago; a more recent point carries its timeStamp and no values, as Azure's do while
  the data is not in yet.
* Buckets start on whole multiples of the interval (epoch-aligned, as Azure aligns to minutes);
  each point's timeStamp is its bucket start. Rows are counted exactly within [start, end)
  (Azure would include its whole first minute) so counts equal what clients saw in the window.
* Each access-log row is one raw sample: for counters (TotalRequests, ...) the sample value is 1,
  so total == count == number of requests; for times it is the request's milliseconds.
  Health and instance samples are one raw sample per second.
* Empty buckets: count is 0; total is 0 for metrics whose default aggregation is Total or Count;
  average/minimum/maximum are absent (Azure's "no data").
* $filter: `Dim eq 'v'`, `ne`, `and`, `or` (an `or` may only join clauses on one dimension,
  like Azure), parentheses; `Dim eq '*'` splits by Dim. Any dimension named with `eq` is split
  on (it appears in metadatavalues), unless it is listed in rollupby.
* top (default 10) and orderby ('<aggregation> asc|desc') choose among split series, ranked by
  their aggregate over the whole timespan.
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane import telemetry
from switchyard_emulator.dataplane.errors import MetricsQueryError
from switchyard_emulator.dataplane.timespec import (
    TimeSpecError,
    floor_to,
    format_duration,
    format_instant,
    parse_duration,
    parse_interval,
)
from switchyard_emulator.profiles import TimingProfile, timing_profile

GATEWAY_NAMESPACE = "Microsoft.Network/applicationGateways"
SCALE_SET_NAMESPACE = "Microsoft.Compute/virtualMachineScaleSets"
AGGREGATIONS = ("average", "minimum", "maximum", "total", "count")
_AGGREGATION_ALIASES = {"avg": "average", "min": "minimum", "max": "maximum", "sum": "total"}
_SUPPORTED_AGGREGATION_TYPES = ["None", "Average", "Minimum", "Maximum", "Total", "Count"]
MIN_INTERVAL_S = 1.0
MAX_POINTS_PER_SERIES = 100_000
DEFAULT_TOP = 10

_BACKEND_IP = "CASE WHEN instr(backend, ':') > 0 THEN substr(backend, 1, instr(backend, ':') - 1) ELSE backend END"


@dataclass(frozen=True)
class MetricSource:
    table: str
    id_column: str
    value_sql: str  # the raw sample's value
    where_sql: str = "1"  # which rows are samples of this metric
    dimension_sql: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    display_name: str
    description: str
    unit: str
    primary_aggregation: str
    dimensions: tuple[str, ...]
    category: str
    metric_class: str
    source: MetricSource

    def definition_body(self, resource_id: str, namespace: str, grains_s: tuple[float, ...]) -> dict[str, Any]:
        return {
            "id": f"{resource_id}/providers/microsoft.insights/metricdefinitions/{self.name}",
            "resourceId": resource_id,
            "namespace": namespace,
            "name": {"value": self.name, "localizedValue": self.display_name},
            "displayDescription": self.description,
            "category": self.category,
            "metricClass": self.metric_class,
            "isDimensionRequired": False,
            "unit": self.unit,
            "primaryAggregationType": self.primary_aggregation,
            "supportedAggregationTypes": list(_SUPPORTED_AGGREGATION_TYPES),
            # the grains a client may ask for, finest first: how it discovers the minimum grain
            "metricAvailabilities": [
                {"timeGrain": format_duration(grain), "retention": "P93D"} for grain in sorted(grains_s)
            ],
            "dimensions": [{"value": dim, "localizedValue": dim} for dim in self.dimensions],
        }


def _access(value_sql: str, where_sql: str = "1", **dimension_sql: str) -> MetricSource:
    return MetricSource("access_log", "gateway_id", value_sql, where_sql, dimension_sql)


_POOL_SETTINGS = "coalesce(pool, '') || '~' || coalesce(settings, '')"
_LISTENER = "coalesce(listener, '')"
_STATUS_GROUP = "CAST(status / 100 AS INTEGER) || 'xx'"
_BACKEND_DIMS = {
    "BackendServer": f"coalesce({_BACKEND_IP}, '')",
    "BackendPool": "coalesce(pool, '')",
    "BackendHttpSetting": "coalesce(settings, '')",
}

GATEWAY_METRICS: tuple[MetricDefinition, ...] = (
    MetricDefinition(
        "TotalRequests",
        "Total Requests",
        "Count of requests that Application Gateway has served",
        "Count",
        "Total",
        ("BackendSettingsPool",),
        "Traffic",
        "Transactions",
        _access("1", BackendSettingsPool=_POOL_SETTINGS),
    ),
    MetricDefinition(
        "FailedRequests",
        "Failed Requests",
        "Count of requests that Application Gateway served with a 5xx status, its own or the backend's",
        "Count",
        "Total",
        ("BackendSettingsPool",),
        "Traffic",
        "Errors",
        _access("1", "status >= 500", BackendSettingsPool=_POOL_SETTINGS),
    ),
    MetricDefinition(
        "ResponseStatus",
        "Response Status",
        "Http response status returned by Application Gateway",
        "Count",
        "Total",
        ("HttpStatusGroup",),
        "Traffic",
        "Errors",
        _access("1", HttpStatusGroup=_STATUS_GROUP),
    ),
    MetricDefinition(
        "BackendResponseStatus",
        "Backend Response Status",
        "The number of HTTP response codes generated by the backend members",
        "Count",
        "Total",
        ("BackendServer", "BackendPool", "BackendHttpSetting", "HttpStatusGroup"),
        "Traffic",
        "Errors",
        _access(
            "1",
            "backend_status IS NOT NULL",
            **_BACKEND_DIMS,
            HttpStatusGroup="CAST(backend_status / 100 AS INTEGER) || 'xx'",
        ),
    ),
    MetricDefinition(
        "BackendLastByteResponseTime",
        "Backend Last Byte Response Time",
        "Time interval between start of establishing a connection to backend server and receiving the "
        "last byte of the response body",
        "MilliSeconds",
        "Average",
        ("Listener", "BackendServer", "BackendPool", "BackendHttpSetting"),
        "Latency",
        "Latency",
        _access("backend_time_ms", "backend_time_ms IS NOT NULL", Listener=_LISTENER, **_BACKEND_DIMS),
    ),
    MetricDefinition(
        "ApplicationGatewayTotalTime",
        "Application Gateway Total Time",
        "Time that it takes for a request to be processed and its response to be sent: from the first "
        "byte of the request received to the last byte of the response sent",
        "MilliSeconds",
        "Average",
        ("Listener",),
        "Latency",
        "Latency",
        _access("time_taken_ms", Listener=_LISTENER),
    ),
    MetricDefinition(
        "BytesReceived",
        "Bytes Received",
        "The total number of bytes received by the Application Gateway from the clients",
        "Bytes",
        "Total",
        ("Listener",),
        "Traffic",
        "Transactions",
        _access("bytes_in", Listener=_LISTENER),
    ),
    MetricDefinition(
        "BytesSent",
        "Bytes Sent",
        "The total number of bytes sent by the Application Gateway to the clients",
        "Bytes",
        "Total",
        ("Listener",),
        "Traffic",
        "Transactions",
        _access("bytes_out", Listener=_LISTENER),
    ),
    MetricDefinition(
        "HealthyHostCount",
        "Healthy Host Count",
        "Number of healthy backend hosts",
        "Count",
        "Average",
        ("BackendSettingsPool",),
        "Backend",
        "Availability",
        MetricSource(
            "backend_health_samples",
            "gateway_id",
            "healthy",
            "1",
            {"BackendSettingsPool": "pool || '~' || settings"},
        ),
    ),
    MetricDefinition(
        "UnhealthyHostCount",
        "Unhealthy Host Count",
        "Number of unhealthy backend hosts",
        "Count",
        "Average",
        ("BackendSettingsPool",),
        "Backend",
        "Availability",
        MetricSource(
            "backend_health_samples",
            "gateway_id",
            "unhealthy",
            "1",
            {"BackendSettingsPool": "pool || '~' || settings"},
        ),
    ),
)

SCALE_SET_METRICS: tuple[MetricDefinition, ...] = (
    MetricDefinition(
        "Percentage CPU",
        "Percentage CPU",
        "The percentage of allocated compute units that are currently in use by the Virtual Machine(s)",
        "Percent",
        "Average",
        ("VMName",),
        "Compute",
        "Saturation",
        MetricSource("instance_samples", "scale_set_id", "cpu_percent", "1", {"VMName": "vm_name"}),
    ),
    MetricDefinition(
        "Available Memory Bytes",
        "Available Memory Bytes",
        "Amount of physical memory, in bytes, immediately available for allocation to a process or for "
        "system use in the Virtual Machine",
        "Bytes",
        "Average",
        ("VMName",),
        "Memory",
        "Saturation",
        MetricSource("instance_samples", "scale_set_id", "available_memory_bytes", "1", {"VMName": "vm_name"}),
    ),
)

CATALOG: dict[str, tuple[str, tuple[MetricDefinition, ...]]] = {
    GATEWAY_NAMESPACE.lower(): (GATEWAY_NAMESPACE, GATEWAY_METRICS),
    SCALE_SET_NAMESPACE.lower(): (SCALE_SET_NAMESPACE, SCALE_SET_METRICS),
}


def _bad(message: str, code: str = "BadRequest") -> MetricsQueryError:
    return MetricsQueryError(code, message, 400)


def namespace_metrics(resource_type: str) -> tuple[str, tuple[MetricDefinition, ...]]:
    entry = CATALOG.get(resource_type.strip("/").lower())
    if entry is None:
        raise MetricsQueryError(
            "ResourceTypeNotSupported",
            f"The emulator has no metrics for resource type '{resource_type}'; supported: "
            f"{', '.join(namespace for namespace, _ in CATALOG.values())}",
            400,
        )
    return entry


def metric_definitions_body(
    resource_id: str, resource_type: str, timing: TimingProfile | None = None
) -> dict[str, Any]:
    namespace, metrics = namespace_metrics(resource_type)
    grains = (timing or timing_profile("fast")).metric_grains_s
    return {"value": [metric.definition_body(resource_id, namespace, grains) for metric in metrics]}


# --------------------------------------------------------------------------------------------
# $filter
# --------------------------------------------------------------------------------------------
@dataclass
class DimensionClause:
    """All the conditions on one dimension: values it must equal (any of), values it must not."""

    dimension: str
    equals: set[str] = field(default_factory=set)  # lower-cased values
    not_equals: set[str] = field(default_factory=set)
    split: bool = False  # eq '*' or eq 'value' -> the series is split by this dimension
    wildcard: bool = False

    def admits(self, value: str) -> bool:
        lowered = value.lower()
        if lowered in self.not_equals:
            return False
        return self.wildcard or not self.equals or lowered in self.equals


_FILTER_TOKEN = re.compile(r"\s*(?:(?P<lpar>\()|(?P<rpar>\))|'(?P<str>(?:[^']|'')*)'|(?P<word>[^\s()']+))")


def _tokenize_filter(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _FILTER_TOKEN.match(text, position)
        if not match:
            raise _bad(f"Invalid $filter '{text}': cannot read it at position {position}")
        position = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        tokens.append((kind, value.replace("''", "'") if kind == "str" else value))
    return tokens


def parse_filter(text: str) -> list[DimensionClause]:
    """`A eq 'a1' and (B eq 'b1' or B eq 'b2') and C eq '*'` -> one clause per dimension."""
    tokens = [(kind, value) for kind, value in _tokenize_filter(text) if kind not in ("lpar", "rpar")]
    # Azure's $filter is a conjunction of per-dimension disjunctions; parentheses only group the
    # disjunctions, so after checking the shape we can read it as a flat sequence.
    clauses: dict[str, DimensionClause] = {}
    index = 0
    previous_dimension: str | None = None
    joiner = "and"
    while index < len(tokens):
        if index + 3 > len(tokens):
            raise _bad(f"Invalid $filter '{text}': expected \"<dimension> eq '<value>'\" at the end")
        (dim_kind, dimension), (op_kind, operator), (value_kind, value) = tokens[index : index + 3]
        if dim_kind != "word" or op_kind != "word" or value_kind != "str":
            raise _bad(f"Invalid $filter '{text}': expected \"<dimension> eq '<value>'\" near '{dimension}'")
        operator = operator.lower()
        if operator not in ("eq", "ne"):
            raise _bad(f"Invalid $filter '{text}': operator '{operator}' is not supported (use eq or ne)")
        key = dimension.lower()
        if joiner == "or" and previous_dimension is not None and previous_dimension != key:
            raise _bad(
                f"Invalid $filter '{text}': 'or' cannot join conditions on different dimensions "
                f"('{previous_dimension}' and '{dimension}')"
            )
        clause = clauses.setdefault(key, DimensionClause(dimension))
        if operator == "eq":
            clause.split = True
            if value == "*":
                clause.wildcard = True
            else:
                clause.equals.add(value.lower())
        else:
            clause.not_equals.add(value.lower())
        previous_dimension = key
        index += 3
        if index < len(tokens):
            kind, word = tokens[index]
            if kind != "word" or word.lower() not in ("and", "or"):
                raise _bad(f"Invalid $filter '{text}': expected 'and' or 'or' before '{word}'")
            joiner = word.lower()
            index += 1
            if index >= len(tokens):
                raise _bad(f"Invalid $filter '{text}': it ends with '{word}'")
    depth = 0
    for kind, _ in _tokenize_filter(text):
        depth += 1 if kind == "lpar" else -1 if kind == "rpar" else 0
        if depth < 0:
            raise _bad(f"Invalid $filter '{text}': unbalanced parentheses")
    if depth:
        raise _bad(f"Invalid $filter '{text}': unbalanced parentheses")
    return list(clauses.values())


# --------------------------------------------------------------------------------------------
# The query
# --------------------------------------------------------------------------------------------
@dataclass
class MetricsQuery:
    start: datetime
    end: datetime
    interval_s: float | None  # None = FULL
    metric_names: list[str]
    aggregations: list[str] | None  # None = each metric's primary aggregation
    clauses: list[DimensionClause]
    top: int
    order_by: tuple[str, bool] | None  # (aggregation, descending)
    metadata_only: bool
    rollup: set[str]
    validate_dimensions: bool
    namespace: str | None


def _query_value(query: dict[str, str], name: str) -> str | None:
    for key, value in query.items():
        if key.lower() == name.lower():
            return value
    return None


def _parse_aggregation(text: str) -> str:
    key = text.strip().lower()
    key = _AGGREGATION_ALIASES.get(key, key)
    if key not in AGGREGATIONS:
        raise _bad(f"Invalid aggregation '{text}'; use Average, Minimum, Maximum, Total or Count")
    return key


def _grain_text(seconds: float) -> str:
    """A grain as .NET's TimeSpan prints it in Azure's error ("00:01:00", "1.00:00:00")."""
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}." if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_query(query: dict[str, str], now: datetime, timing: TimingProfile | None = None) -> MetricsQuery:
    timing = timing or timing_profile("fast")
    timespan = _query_value(query, "timespan")
    try:
        if timespan:
            start, end = parse_interval(timespan, now)
        else:
            start, end = now - timedelta(hours=1), now
    except TimeSpecError as exc:
        raise _bad(f"Invalid timespan: {exc}") from exc
    if end <= start:
        raise _bad(f"Invalid timespan '{timespan}': its end must be after its start")

    interval_text = (_query_value(query, "interval") or "PT1M").strip()
    interval_s: float | None
    if interval_text.upper() == "FULL":
        interval_s = None
    else:
        try:
            interval_s = parse_duration(interval_text)
        except TimeSpecError as exc:
            raise _bad(f"Invalid interval: {exc}") from exc
        if not timing.arbitrary_metric_grains and interval_s not in timing.metric_grains_s:
            # Azure's 400 for a grain the metric does not have (Azure/azure-libraries-for-net#495)
            raise _bad(
                f"Invalid time grain duration: {interval_text}, supported ones are: "
                + ",".join(_grain_text(grain) for grain in sorted(timing.metric_grains_s))
            )
        if interval_s < max(MIN_INTERVAL_S, timing.min_metric_grain_s):
            raise _bad(f"Invalid interval '{interval_text}': the finest grain the emulator serves is PT1S")
        points = math.ceil((end.timestamp() - floor_to(start.timestamp(), interval_s)) / interval_s)
        if points > MAX_POINTS_PER_SERIES:
            raise _bad(f"The timespan and interval ask for {points} points per series; at most {MAX_POINTS_PER_SERIES}")

    names_text = _query_value(query, "metricnames")
    metric_names = [name.strip() for name in names_text.split(",") if name.strip()] if names_text else []

    aggregation_text = _query_value(query, "aggregation")
    aggregations = None
    if aggregation_text and aggregation_text.strip():
        aggregations = []
        for part in aggregation_text.split(","):
            aggregation = _parse_aggregation(part)
            if aggregation not in aggregations:
                aggregations.append(aggregation)

    filter_text = _query_value(query, "$filter") or _query_value(query, "filter")
    clauses = parse_filter(filter_text) if filter_text and filter_text.strip() else []

    top_text = _query_value(query, "top")
    top = DEFAULT_TOP
    if top_text is not None and top_text.strip():
        try:
            top = int(top_text)
        except ValueError as exc:
            raise _bad(f"Invalid top '{top_text}': it must be a positive integer") from exc
        if top <= 0:
            raise _bad(f"Invalid top '{top_text}': it must be a positive integer")

    order_text = _query_value(query, "orderby")
    order_by = None
    if order_text and order_text.strip():
        parts = order_text.split()
        if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
            raise _bad(f"Invalid orderby '{order_text}': use '<aggregation> asc' or '<aggregation> desc'")
        order_by = (_parse_aggregation(parts[0]), len(parts) == 1 or parts[1].lower() == "desc")

    result_type = (_query_value(query, "resultType") or "Data").strip().lower()
    if result_type not in ("data", "metadata"):
        raise _bad(f"Invalid resultType '{result_type}': use Data or Metadata")
    rollup_text = _query_value(query, "rollupby") or ""
    validate_text = (_query_value(query, "ValidateDimensions") or "true").strip().lower()
    return MetricsQuery(
        start=start,
        end=end,
        interval_s=interval_s,
        metric_names=metric_names,
        aggregations=aggregations,
        clauses=clauses,
        top=top,
        order_by=order_by,
        metadata_only=result_type == "metadata",
        rollup={part.strip().lower() for part in rollup_text.split(",") if part.strip()},
        validate_dimensions=validate_text != "false",
        namespace=_query_value(query, "metricnamespace"),
    )


@dataclass
class _Accumulator:
    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, count: int, total: float, minimum: float, maximum: float) -> None:
        self.count += count
        self.total += total
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)

    def merge(self, other: _Accumulator) -> None:
        self.add(other.count, other.total, other.minimum, other.maximum)

    def value(self, aggregation: str, zero_total: bool) -> float | None:
        if aggregation == "count":
            return float(self.count)
        if self.count == 0:
            return 0.0 if aggregation == "total" and zero_total else None
        if aggregation == "total":
            return self.total
        if aggregation == "average":
            return self.total / self.count
        if aggregation == "minimum":
            return self.minimum
        return self.maximum


class MetricsEngine:
    def __init__(self, telemetry_db: Path, timing: TimingProfile | None = None) -> None:
        self.telemetry_db = telemetry_db
        self.timing = timing or timing_profile("fast")

    def available_until(self, now: float) -> float:
        """Samples before this instant are in Azure Monitor; later ones are still being ingested.

        A grain is published whole, `metrics_latency_s` after it ends: with a PT1M minimum grain
        the newest available minute is the last one that ended that long ago."""
        timing = self.timing
        if timing.metrics_latency_s <= 0 and timing.arbitrary_metric_grains:
            return math.inf  # fast: what happened is queryable at once
        return floor_to(now - timing.metrics_latency_s, timing.min_metric_grain_s)

    def query(
        self,
        resource_id: str,
        resource_type: str,
        query: dict[str, str],
        *,
        region: str = "local",
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Runs in a worker thread (it reads SQLite)."""
        namespace, catalog = namespace_metrics(resource_type)
        now = now or datetime.now(UTC)
        parsed = parse_query(query, now, self.timing)
        if parsed.namespace and parsed.namespace.strip().lower() != namespace.lower():
            raise _bad(f"Invalid metricnamespace '{parsed.namespace}' for a resource of type {namespace}")
        by_name = {metric.name.lower(): metric for metric in catalog}
        wanted = parsed.metric_names or [catalog[0].name]
        metrics: list[MetricDefinition] = []
        for name in wanted:
            metric = by_name.get(name.lower())
            if metric is None:
                raise MetricsQueryError(
                    "BadRequest",
                    f"Failed to find metric configuration for provider: {namespace.split('/')[0]}, "
                    f"resource Type: {namespace.split('/')[1]}, metric: {name}, Valid metrics: "
                    f"{','.join(m.name for m in catalog)}",
                    400,
                )
            metrics.append(metric)

        start_s, end_s = parsed.start.timestamp(), parsed.end.timestamp()
        available = self.available_until(now.timestamp())
        if parsed.interval_s is None:
            origin, step, buckets = start_s, end_s - start_s, 1
        else:
            step = parsed.interval_s
            origin = floor_to(start_s, step)
            buckets = max(1, math.ceil((end_s - origin) / step))

        connection = telemetry.connect(self.telemetry_db, readonly=True)
        try:
            values = [
                self._metric_value(
                    connection,
                    telemetry.canonical_id(resource_id),
                    resource_id,
                    metric,
                    parsed,
                    origin,
                    step,
                    buckets,
                    start_s,
                    end_s,
                    available,
                )
                for metric in metrics
            ]
        finally:
            connection.close()
        interval_text = format_duration(step) if parsed.interval_s is not None else format_duration(end_s - start_s)
        return {
            "cost": sum(len(series.get("data", [])) for value in values for series in value["timeseries"]),
            "timespan": f"{format_instant(parsed.start)}/{format_instant(parsed.end)}",
            "interval": interval_text,
            "value": values,
            "namespace": namespace.lower(),
            "resourceregion": region,
        }

    def _metric_value(
        self,
        connection: sqlite3.Connection,
        canonical_id: str,
        resource_id: str,
        metric: MetricDefinition,
        query: MetricsQuery,
        origin: float,
        step: float,
        buckets: int,
        start_s: float,
        end_s: float,
        available: float,
    ) -> dict[str, Any]:
        known = {dim.lower(): dim for dim in metric.dimensions}
        clauses: list[DimensionClause] = []
        for clause in query.clauses:
            if clause.dimension.lower() not in known:
                if query.validate_dimensions:
                    raise _bad(
                        f"Metric '{metric.name}' has no dimension '{clause.dimension}'; its dimensions: "
                        f"{', '.join(metric.dimensions) or '(none)'}"
                    )
                continue
            clauses.append(clause)
        split_dims = [
            known[c.dimension.lower()] for c in clauses if c.split and c.dimension.lower() not in query.rollup
        ]
        filter_dims = [known[c.dimension.lower()] for c in clauses]
        source = metric.source
        dim_columns = ", ".join(f"{source.dimension_sql[dim]} AS d{i}" for i, dim in enumerate(filter_dims))
        sql = (
            f"SELECT CAST((ts - ?) / ? AS INTEGER) AS bucket{', ' + dim_columns if dim_columns else ''}, "
            f"COUNT(*), TOTAL({source.value_sql}), MIN({source.value_sql}), MAX({source.value_sql}) "
            f"FROM {source.table} WHERE {source.id_column} = ? AND ts >= ? AND ts < ? "
            f"AND ({source.where_sql}) "
            f"GROUP BY bucket{''.join(f', d{i}' for i in range(len(filter_dims)))}"
        )
        try:
            rows = connection.execute(sql, (origin, step, canonical_id, start_s, min(end_s, available))).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                rows = []  # nothing was ever recorded
            else:
                raise
        series: dict[tuple[str, ...], dict[int, _Accumulator]] = {}
        clause_by_dim = {known[c.dimension.lower()]: c for c in clauses}
        for row in rows:
            bucket = int(row[0])
            dim_values = {dim: str(row[1 + i]) for i, dim in enumerate(filter_dims)}
            if not all(clause_by_dim[dim].admits(value) for dim, value in dim_values.items()):
                continue
            key = tuple(dim_values[dim] for dim in split_dims)
            count, total, minimum, maximum = row[1 + len(filter_dims) :]
            series.setdefault(key, {}).setdefault(bucket, _Accumulator()).add(count, total, minimum, maximum)

        aggregations = query.aggregations or [metric.primary_aggregation.lower()]
        zero_total = metric.primary_aggregation in ("Total", "Count")
        if not split_dims and not series:
            series[()] = {}
        keys = list(series)
        if split_dims:
            order_aggregation, descending = query.order_by or (aggregations[0], True)

            def rank(key: tuple[str, ...]) -> float:
                overall = _Accumulator()
                for accumulator in series[key].values():
                    overall.merge(accumulator)
                value = overall.value(order_aggregation, zero_total)
                return -math.inf if value is None else value

            keys.sort(key=lambda key: (rank(key), key), reverse=descending)
            keys = keys[: query.top]

        timeseries: list[dict[str, Any]] = []
        for key in keys:
            element: dict[str, Any] = {
                "metadatavalues": [
                    {"name": {"value": dim.lower(), "localizedValue": dim.lower()}, "value": value}
                    for dim, value in zip(split_dims, key, strict=True)
                ]
            }
            if not query.metadata_only:
                points = []
                by_bucket = series[key]
                for bucket in range(buckets):
                    accumulator = by_bucket.get(bucket, _Accumulator())
                    bucket_start = origin + bucket * step if query.interval_s else start_s
                    point: dict[str, Any] = {"timeStamp": format_instant(bucket_start)}
                    if bucket_start >= available:
                        points.append(point)  # not ingested yet: the grain has no values
                        continue
                    for aggregation in aggregations:
                        value = accumulator.value(aggregation, zero_total)
                        if value is not None:
                            point[aggregation] = value
                    points.append(point)
                element["data"] = points
            timeseries.append(element)
        return {
            "id": f"{resource_id}/providers/Microsoft.Insights/metrics/{metric.name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": metric.name, "localizedValue": metric.display_name},
            "displayDescription": metric.description,
            "unit": metric.unit,
            "timeseries": timeseries,
            "errorCode": "Success",
        }
