"""Reading a `Metrics - List` request: timespan, interval (which grains the timing profile
accepts), metric names, aggregations, top and orderby, rollupby, and the $filter over dimensions
(one clause per dimension; `or` only within one dimension, as Azure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from switchyard_emulator.dataplane.errors import MetricsQueryError
from switchyard_emulator.dataplane.timespec import TimeSpecError, floor_to, parse_duration, parse_interval
from switchyard_emulator.profiles import TimingProfile, timing_profile

AGGREGATIONS = ("average", "minimum", "maximum", "total", "count")
_AGGREGATION_ALIASES = {"avg": "average", "min": "minimum", "max": "maximum", "sum": "total"}
MIN_INTERVAL_S = 1.0
MAX_POINTS_PER_SERIES = 100_000
DEFAULT_TOP = 10
# Metrics - List: metricnames are "the names of the metrics (comma separated) to retrieve. Limit 20
# metrics" (Azure Monitor REST reference, Metrics - List, URI parameters).
MAX_METRIC_NAMES = 20


def bad_query(message: str, code: str = "BadRequest") -> MetricsQueryError:
    return MetricsQueryError(code, message, 400)


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
            raise bad_query(f"Invalid $filter '{text}': cannot read it at position {position}")
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
            raise bad_query(f"Invalid $filter '{text}': expected \"<dimension> eq '<value>'\" at the end")
        (dim_kind, dimension), (op_kind, operator), (value_kind, value) = tokens[index : index + 3]
        if dim_kind != "word" or op_kind != "word" or value_kind != "str":
            raise bad_query(f"Invalid $filter '{text}': expected \"<dimension> eq '<value>'\" near '{dimension}'")
        operator = operator.lower()
        if operator not in ("eq", "ne"):
            raise bad_query(f"Invalid $filter '{text}': operator '{operator}' is not supported (use eq or ne)")
        key = dimension.lower()
        if joiner == "or" and previous_dimension is not None and previous_dimension != key:
            raise bad_query(
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
                raise bad_query(f"Invalid $filter '{text}': expected 'and' or 'or' before '{word}'")
            joiner = word.lower()
            index += 1
            if index >= len(tokens):
                raise bad_query(f"Invalid $filter '{text}': it ends with '{word}'")
    depth = 0
    for kind, _ in _tokenize_filter(text):
        depth += 1 if kind == "lpar" else -1 if kind == "rpar" else 0
        if depth < 0:
            raise bad_query(f"Invalid $filter '{text}': unbalanced parentheses")
    if depth:
        raise bad_query(f"Invalid $filter '{text}': unbalanced parentheses")
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
        raise bad_query(f"Invalid aggregation '{text}'; use Average, Minimum, Maximum, Total or Count")
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
        raise bad_query(f"Invalid timespan: {exc}") from exc
    if end <= start:
        raise bad_query(f"Invalid timespan '{timespan}': its end must be after its start")

    interval_text = (_query_value(query, "interval") or "PT1M").strip()
    interval_s: float | None
    if interval_text.upper() == "FULL":
        interval_s = None
    else:
        try:
            interval_s = parse_duration(interval_text)
        except TimeSpecError as exc:
            raise bad_query(f"Invalid interval: {exc}") from exc
        if not timing.arbitrary_metric_grains and interval_s not in timing.metric_grains_s:
            # Azure's 400 for a grain the metric does not have (Azure/azure-libraries-for-net#495)
            raise bad_query(
                f"Invalid time grain duration: {interval_text}, supported ones are: "
                + ",".join(_grain_text(grain) for grain in sorted(timing.metric_grains_s))
            )
        if interval_s < max(MIN_INTERVAL_S, timing.min_metric_grain_s):
            raise bad_query(f"Invalid interval '{interval_text}': the finest grain the emulator serves is PT1S")
        points = math.ceil((end.timestamp() - floor_to(start.timestamp(), interval_s)) / interval_s)
        if points > MAX_POINTS_PER_SERIES:
            raise bad_query(
                f"The timespan and interval ask for {points} points per series; at most {MAX_POINTS_PER_SERIES}"
            )

    names_text = _query_value(query, "metricnames")
    metric_names = [name.strip() for name in names_text.split(",") if name.strip()] if names_text else []
    if len(metric_names) > MAX_METRIC_NAMES:
        raise bad_query(
            f"Invalid metricnames: {len(metric_names)} metrics were asked for; "
            f"at most {MAX_METRIC_NAMES} in one request"
        )

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
            raise bad_query(f"Invalid top '{top_text}': it must be a positive integer") from exc
        if top <= 0:
            raise bad_query(f"Invalid top '{top_text}': it must be a positive integer")

    order_text = _query_value(query, "orderby")
    order_by = None
    if order_text and order_text.strip():
        parts = order_text.split()
        if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
            raise bad_query(f"Invalid orderby '{order_text}': use '<aggregation> asc' or '<aggregation> desc'")
        order_by = (_parse_aggregation(parts[0]), len(parts) == 1 or parts[1].lower() == "desc")

    result_type = (_query_value(query, "resultType") or "Data").strip().lower()
    if result_type not in ("data", "metadata"):
        raise bad_query(f"Invalid resultType '{result_type}': use Data or Metadata")
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
