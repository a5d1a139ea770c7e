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

Here: the query's evaluation and aggregation over the telemetry DB (MetricsEngine). The metrics
and their definitions: metric_definitions.py; reading the request and its $filter: metrics_query.py.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane import telemetry
from switchyard_emulator.dataplane.errors import MetricsQueryError
from switchyard_emulator.dataplane.metric_definitions import MetricDefinition, namespace_metrics
from switchyard_emulator.dataplane.metrics_query import DimensionClause, MetricsQuery, bad_query, parse_query
from switchyard_emulator.dataplane.timespec import floor_to, format_duration, format_instant
from switchyard_emulator.profiles import TimingProfile, timing_profile


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
            raise bad_query(f"Invalid metricnamespace '{parsed.namespace}' for a resource of type {namespace}")
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
                    raise bad_query(
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
