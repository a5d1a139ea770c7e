"""Autoscale: evaluate Microsoft.Insights/autoscaleSettings against the instances' real metrics
(Percentage CPU, Available Memory Bytes, Network In/Out Total: metric_definitions.py).

Azure's documented behaviour, with windows and cooldowns allowed to be seconds long here:
* The active profile: a fixedDate profile whose window holds now, else the recurrence profile
  that started most recently (a recurring profile lasts until the next one starts), else the
  default profile (no fixedDate, no recurrence).
* A rule's metric: samples in [now - timeWindow, now] are cut into timeGrain buckets; in each
  bucket every instance's samples are averaged, or summed for a Total metric (the per-VM metric at
  that grain), the instances' values are combined with `statistic` (Average/Min/Max/Sum/Count), and
  the bucket values are
  combined over the window with `timeAggregation` (Average/Minimum/Maximum/Total/Count/Last).
  dividePerInstance divides by the current instance count.
* Scale out if ANY Increase rule fires (the largest resulting capacity wins); scale in only if
  ALL Decrease rules fire (the largest resulting capacity, i.e. the smallest step, wins), and
  not if the scale-in would immediately trigger a scale-out ("flapping": each Increase rule is
  re-checked with its value projected by current/new capacity).
* A rule may act only when its cooldown has passed since the setting's last scale action.
* The result is clamped to [minimum, maximum]; a capacity outside the bounds is brought inside
  even without a rule; with no metric data at all and a capacity below `default`, capacity is
  set to `default`.
* Disabled settings (`enabled: false`) are stored but never evaluated.
* The rules see the metric as Azure Monitor has it: samples still being ingested (the timing
  profile's metrics latency) are not there yet.
Capacity changes go through the control plane (ArmFacade.set_scale_set_capacity) with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switchyard_emulator.dataplane import telemetry
from switchyard_emulator.dataplane.api import ArmFacade
from switchyard_emulator.dataplane.metric_definitions import SCALE_SET_METRICS, MetricDefinition
from switchyard_emulator.dataplane.timespec import TimeSpecError, parse_duration, parse_instant
from switchyard_emulator.errors import ArmError

log = logging.getLogger(__name__)

AUTOSCALE_TYPE = "microsoft.insights/autoscalesettings"
SCALE_SET_TYPE = "microsoft.compute/virtualmachinescalesets"
# The scale-set metrics rules may read (metric name, lower -> definition): every one Azure Monitor
# answers for a scale set, computed from the same telemetry as Metrics - List.
SUPPORTED_METRICS: dict[str, MetricDefinition] = {metric.name.lower(): metric for metric in SCALE_SET_METRICS}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "equals": lambda a, b: a == b,
    "notequals": lambda a, b: a != b,
    "greaterthan": lambda a, b: a > b,
    "greaterthanorequal": lambda a, b: a >= b,
    "lessthan": lambda a, b: a < b,
    "lessthanorequal": lambda a, b: a <= b,
}
_DAYS = {
    name: index
    for index, name in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
}


class AutoscaleConfigError(ValueError):
    """An autoscale setting the evaluator cannot follow (named field, reason)."""


@dataclass(frozen=True)
class MetricTrigger:
    metric_name: str
    metric_resource_uri: str
    time_grain_s: float
    statistic: str  # average|min|max|sum|count
    time_window_s: float
    time_aggregation: str  # average|minimum|maximum|total|count|last
    operator: str
    threshold: float
    divide_per_instance: bool = False


@dataclass(frozen=True)
class ScaleAction:
    direction: str  # increase|decrease|none
    type: str  # changecount|percentchangecount|exactcount|serviceallowednextvalue
    value: int
    cooldown_s: float


@dataclass(frozen=True)
class Rule:
    trigger: MetricTrigger
    action: ScaleAction


@dataclass(frozen=True)
class Profile:
    name: str
    minimum: int
    maximum: int
    default: int
    rules: tuple[Rule, ...]
    fixed_window: tuple[datetime, datetime] | None = None
    recurrence: tuple[ZoneInfo, tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class AutoscaleSetting:
    id: str
    name: str
    enabled: bool
    target_resource_uri: str
    profiles: tuple[Profile, ...]


@dataclass(frozen=True)
class Decision:
    new_capacity: int
    reason: str


# A sample: (unix ts, instance id, value)
Sample = tuple[float, str, float]


def _get(mapping: dict[str, Any], key: str, where: str, default: Any = ...) -> Any:
    for name, value in mapping.items():
        if name.lower() == key.lower():
            return value
    if default is ...:
        raise AutoscaleConfigError(f"{where}.{key} is missing")
    return default


def _int(value: Any, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise AutoscaleConfigError(f"{where} must be a whole number, got {value!r}") from exc


def _duration(value: Any, where: str) -> float:
    try:
        seconds = parse_duration(str(value))
    except TimeSpecError as exc:
        raise AutoscaleConfigError(f"{where}: {exc}") from exc
    if seconds <= 0:
        raise AutoscaleConfigError(f"{where} must be longer than zero")
    return seconds


def _zone(name: str | None, where: str) -> ZoneInfo:
    if not name or name.strip().lower() in ("utc", "coordinated universal time"):
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise AutoscaleConfigError(f"{where}: time zone {name!r} is not known (use UTC or an IANA name)") from exc


def parse_setting(resource: dict[str, Any]) -> AutoscaleSetting:
    """An ARM autoscale setting resource (as stored) -> the evaluator's model."""
    properties = resource.get("properties", resource)
    where = f"autoscale setting {resource.get('name', '?')}"
    profiles = []
    for index, raw_profile in enumerate(_get(properties, "profiles", where)):
        at = f"{where}.profiles[{index}]"
        capacity = _get(raw_profile, "capacity", at)
        minimum = _int(_get(capacity, "minimum", at + ".capacity"), at + ".capacity.minimum")
        maximum = _int(_get(capacity, "maximum", at + ".capacity"), at + ".capacity.maximum")
        default = _int(_get(capacity, "default", at + ".capacity"), at + ".capacity.default")
        if not 0 <= minimum <= default <= maximum:
            raise AutoscaleConfigError(f"{at}.capacity needs 0 <= minimum <= default <= maximum")
        rules = []
        for rule_index, raw_rule in enumerate(_get(raw_profile, "rules", at, [])):
            rule_at = f"{at}.rules[{rule_index}]"
            trigger = _get(raw_rule, "metricTrigger", rule_at)
            trigger_at = rule_at + ".metricTrigger"
            action = _get(raw_rule, "scaleAction", rule_at)
            action_at = rule_at + ".scaleAction"
            operator = str(_get(trigger, "operator", trigger_at)).lower()
            if operator not in _OPERATORS:
                raise AutoscaleConfigError(f"{trigger_at}.operator {operator!r} is not known")
            rules.append(
                Rule(
                    MetricTrigger(
                        metric_name=str(_get(trigger, "metricName", trigger_at)),
                        metric_resource_uri=str(_get(trigger, "metricResourceUri", trigger_at)),
                        time_grain_s=_duration(_get(trigger, "timeGrain", trigger_at), trigger_at + ".timeGrain"),
                        statistic=str(_get(trigger, "statistic", trigger_at)).lower(),
                        time_window_s=_duration(_get(trigger, "timeWindow", trigger_at), trigger_at + ".timeWindow"),
                        time_aggregation=str(_get(trigger, "timeAggregation", trigger_at)).lower(),
                        operator=operator,
                        threshold=float(_get(trigger, "threshold", trigger_at)),
                        divide_per_instance=bool(_get(trigger, "dividePerInstance", trigger_at, False)),
                    ),
                    ScaleAction(
                        direction=str(_get(action, "direction", action_at)).lower(),
                        type=str(_get(action, "type", action_at)).lower(),
                        value=_int(_get(action, "value", action_at, "1"), action_at + ".value"),
                        cooldown_s=_duration(_get(action, "cooldown", action_at), action_at + ".cooldown"),
                    ),
                )
            )
        fixed_window = None
        recurrence = None
        fixed = _get(raw_profile, "fixedDate", at, None)
        if fixed:
            zone = _zone(_get(fixed, "timeZone", at + ".fixedDate", None), at + ".fixedDate.timeZone")
            try:
                start = _in_zone(str(_get(fixed, "start", at + ".fixedDate")), zone)
                end = _in_zone(str(_get(fixed, "end", at + ".fixedDate")), zone)
            except TimeSpecError as exc:
                raise AutoscaleConfigError(f"{at}.fixedDate: {exc}") from exc
            fixed_window = (start, end)
        raw_recurrence = _get(raw_profile, "recurrence", at, None)
        if raw_recurrence:
            schedule = _get(raw_recurrence, "schedule", at + ".recurrence")
            frequency = str(_get(raw_recurrence, "frequency", at + ".recurrence")).lower()
            if frequency != "week":
                raise AutoscaleConfigError(f"{at}.recurrence.frequency {frequency!r}: only Week is supported")
            zone = _zone(_get(schedule, "timeZone", at, None), at + ".recurrence.schedule.timeZone")
            days = tuple(_day(day, at) for day in _get(schedule, "days", at + ".recurrence.schedule"))
            hours = tuple(_int(h, at + ".recurrence.schedule.hours") for h in _get(schedule, "hours", at))
            minutes = tuple(_int(m, at + ".recurrence.schedule.minutes") for m in _get(schedule, "minutes", at))
            recurrence = (zone, days, hours, minutes)
        profiles.append(
            Profile(
                name=str(_get(raw_profile, "name", at, f"profile{index}")),
                minimum=minimum,
                maximum=maximum,
                default=default,
                rules=tuple(rules),
                fixed_window=fixed_window,
                recurrence=recurrence,
            )
        )
    return AutoscaleSetting(
        id=str(resource.get("id", "")),
        name=str(resource.get("name", "")),
        enabled=bool(_get(properties, "enabled", where, True)),
        target_resource_uri=str(_get(properties, "targetResourceUri", where)),
        profiles=tuple(profiles),
    )


def _in_zone(text: str, zone: ZoneInfo) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else None
    if moment is None:
        return parse_instant(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _day(value: Any, where: str) -> int:
    text = str(value).strip().lower()
    if text in _DAYS:
        return _DAYS[text]
    if text.isdigit() and int(text) < 7:
        return (int(text) - 1) % 7  # "0" = Sunday, "1" = Monday, as Azure's portal numbers them
    raise AutoscaleConfigError(f"{where}.recurrence.schedule.days: {value!r} is not a day")


def _last_start(profile: Profile, now: datetime) -> datetime | None:
    assert profile.recurrence is not None
    zone, days, hours, minutes = profile.recurrence
    local_now = now.astimezone(zone)
    best: datetime | None = None
    for back in range(8):
        day = (local_now - timedelta(days=back)).date()
        if day.weekday() not in days:
            continue
        for hour in hours:
            for minute in minutes:
                start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                if start <= local_now and (best is None or start > best):
                    best = start
    return best


def active_profile(setting: AutoscaleSetting, now: datetime) -> Profile | None:
    for profile in setting.profiles:
        if profile.fixed_window and profile.fixed_window[0] <= now < profile.fixed_window[1]:
            return profile
    recurring = [(start, p) for p in setting.profiles if p.recurrence and (start := _last_start(p, now))]
    if recurring:
        return max(recurring, key=lambda pair: pair[0])[1]
    defaults = [p for p in setting.profiles if not p.fixed_window and not p.recurrence]
    return defaults[0] if defaults else None


def metric_value(trigger: MetricTrigger, samples: Sequence[Sample], now: float, instances: int) -> float | None:
    """The rule's metric over its window, or None when there is no data in it."""
    window_start = now - trigger.time_window_s
    buckets: dict[int, dict[str, list[float]]] = {}
    for ts, instance_id, value in samples:
        if window_start <= ts <= now:
            bucket = math.floor(ts / trigger.time_grain_s)
            buckets.setdefault(bucket, {}).setdefault(instance_id, []).append(value)
    if not buckets:
        return None
    bucket_values: list[float] = []
    definition = SUPPORTED_METRICS.get(trigger.metric_name.lower())
    # The per-VM metric at the grain is its primary aggregation: the mean of a gauge's samples (CPU,
    # memory), the sum of a counter's (network bytes: each sample is one exchange's).
    summed = definition is not None and definition.primary_aggregation == "Total"
    for bucket in sorted(buckets):
        per_instance = [sum(values) if summed else sum(values) / len(values) for values in buckets[bucket].values()]
        statistic = trigger.statistic
        if statistic == "average":
            combined = sum(per_instance) / len(per_instance)
        elif statistic == "min":
            combined = min(per_instance)
        elif statistic == "max":
            combined = max(per_instance)
        elif statistic == "sum":
            combined = sum(per_instance)
        elif statistic == "count":
            combined = float(len(per_instance))
        else:
            raise AutoscaleConfigError(f"metricTrigger.statistic {statistic!r} is not known")
        bucket_values.append(combined)
    aggregation = trigger.time_aggregation
    if aggregation == "average":
        result = sum(bucket_values) / len(bucket_values)
    elif aggregation == "minimum":
        result = min(bucket_values)
    elif aggregation == "maximum":
        result = max(bucket_values)
    elif aggregation == "total":
        result = sum(bucket_values)
    elif aggregation == "count":
        result = float(len(bucket_values))
    elif aggregation == "last":
        result = bucket_values[-1]
    else:
        raise AutoscaleConfigError(f"metricTrigger.timeAggregation {aggregation!r} is not known")
    if trigger.divide_per_instance:
        result = result / max(instances, 1)
    return result


def _apply_action(action: ScaleAction, current: int) -> int:
    kind = action.type
    sign = 1 if action.direction == "increase" else -1 if action.direction == "decrease" else 0
    if kind == "exactcount":
        return action.value
    if kind == "percentchangecount":
        return current + sign * max(1, math.ceil(current * action.value / 100.0))
    if kind in ("changecount", "serviceallowednextvalue"):
        return current + sign * (action.value if kind == "changecount" else 1)
    raise AutoscaleConfigError(f"scaleAction.type {action.type!r} is not known")


@dataclass
class Evaluation:
    """What one evaluation saw: per rule the metric value and whether it fired (for reasons/tests)."""

    values: dict[int, float | None] = field(default_factory=dict)
    fired: dict[int, bool] = field(default_factory=dict)


def decide(
    setting: AutoscaleSetting,
    current: int,
    samples_by_metric: Mapping[tuple[str, str], Sequence[Sample]],
    now: float,
    last_action_at: float | None,
) -> Decision | None:
    """The capacity change the setting asks for now, or None.

    `samples_by_metric[(metric resource uri lower, metric name lower)]` holds the samples the
    rules read; `last_action_at` is when this setting last changed capacity (unix seconds).
    """
    if not setting.enabled:
        return None
    profile = active_profile(setting, datetime.fromtimestamp(now, UTC))
    if profile is None:
        return None
    label = f"autoscale setting '{setting.name}' profile '{profile.name}'"

    def clamp(capacity: int) -> int:
        return max(profile.minimum, min(profile.maximum, capacity))

    if current < profile.minimum or current > profile.maximum:
        bound = "minimum" if current < profile.minimum else "maximum"
        return Decision(
            clamp(current),
            f"{label}: capacity {current} is outside [{profile.minimum}, {profile.maximum}]; moved to the {bound}",
        )

    evaluation = Evaluation()
    for index, rule in enumerate(profile.rules):
        trigger = rule.trigger
        samples = samples_by_metric.get((trigger.metric_resource_uri.lower(), trigger.metric_name.lower()), ())
        value = metric_value(trigger, samples, now, current)
        evaluation.values[index] = value
        evaluation.fired[index] = value is not None and _OPERATORS[trigger.operator](value, trigger.threshold)

    if profile.rules and all(value is None for value in evaluation.values.values()):
        if current < profile.default:
            return Decision(
                clamp(profile.default),
                f"{label}: no metric data; capacity {current} raised to the default {profile.default}",
            )
        return None

    def cooled(rule: Rule) -> bool:
        return last_action_at is None or now - last_action_at >= rule.action.cooldown_s

    def describe(index: int) -> str:
        rule = profile.rules[index]
        trigger, action = rule.trigger, rule.action
        return (
            f"{trigger.metric_name} {trigger.time_aggregation} over {trigger.time_window_s:g}s = "
            f"{evaluation.values[index]:.2f} {trigger.operator} {trigger.threshold:g} -> {action.direction} "
            f"{action.type} {action.value}"
        )

    scale_out = [
        (clamp(_apply_action(rule.action, current)), index)
        for index, rule in enumerate(profile.rules)
        if rule.action.direction == "increase" and evaluation.fired[index] and cooled(rule)
    ]
    scale_out = [(capacity, index) for capacity, index in scale_out if capacity != current]
    if scale_out:
        capacity, index = max(scale_out)
        return Decision(capacity, f"{label}: {describe(index)}: {current} -> {capacity}")

    scale_in_rules = [index for index, rule in enumerate(profile.rules) if rule.action.direction == "decrease"]
    if not scale_in_rules or not all(evaluation.fired[index] for index in scale_in_rules):
        return None
    if not all(cooled(profile.rules[index]) for index in scale_in_rules):
        return None
    capacity, index = max((clamp(_apply_action(profile.rules[i].action, current)), i) for i in scale_in_rules)
    if capacity >= current:
        return None
    # Flapping: would the smaller fleet immediately trip a scale-out rule?
    for out_index, rule in enumerate(profile.rules):
        value = evaluation.values.get(out_index)
        if rule.action.direction != "increase" or value is None or capacity <= 0:
            continue
        projected = value * current / capacity
        if _OPERATORS[rule.trigger.operator](projected, rule.trigger.threshold):
            log.info(
                "%s: scale-in to %d skipped: %s would project to %.2f and trigger a scale-out",
                label,
                capacity,
                rule.trigger.metric_name,
                projected,
            )
            return None
    reasons = "; ".join(describe(i) for i in scale_in_rules)
    return Decision(capacity, f"{label}: {reasons}: {current} -> {capacity}")


# ============================================================================================
# The loop
# ============================================================================================


def _capacity_of(resource: dict[str, Any]) -> int | None:
    sku = resource.get("sku") or {}
    capacity = sku.get("capacity")
    return int(capacity) if capacity is not None else None


class Autoscaler:
    def __init__(
        self,
        arm: ArmFacade,
        telemetry_db: Path,
        interval_s: float = 5.0,
        *,
        available_until: Callable[[float], float] | None = None,
    ) -> None:
        self.arm = arm
        self.telemetry_db = telemetry_db
        self.interval_s = interval_s
        # samples at or after available_until(now) are not in Azure Monitor yet (metrics latency)
        self.available_until = available_until or (lambda now: math.inf)
        self.last_action_at: dict[str, float] = {}
        self.decisions: list[tuple[float, str, Decision]] = []  # recent decisions (newest last)
        self._bad_settings: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="autoscale")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.evaluate_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscale evaluation failed")
            await asyncio.sleep(self.interval_s)

    async def evaluate_once(self, now: float | None = None) -> list[Decision]:
        now = time.time() if now is None else now
        settings: list[AutoscaleSetting] = []
        for resource in self.arm.list_resources(AUTOSCALE_TYPE):
            key = str(resource.get("id", resource.get("name", ""))).lower()
            try:
                settings.append(parse_setting(resource))
                self._bad_settings.pop(key, None)
            except AutoscaleConfigError as exc:
                if self._bad_settings.get(key) != str(exc):
                    log.warning("autoscale: ignoring %s: %s", key, exc)
                    self._bad_settings[key] = str(exc)
        if not settings:
            return []
        capacities = {
            str(resource.get("id", "")).lower(): _capacity_of(resource)
            for resource in self.arm.list_resources(SCALE_SET_TYPE)
        }
        made: list[Decision] = []
        for setting in settings:
            target = setting.target_resource_uri.lower()
            current = capacities.get(target)
            if current is None or not setting.enabled:
                continue
            profile = active_profile(setting, datetime.fromtimestamp(now, UTC))
            if profile is None:
                continue
            samples = await asyncio.to_thread(self._samples_for, profile, now)
            decision = decide(setting, current, samples, now, self.last_action_at.get(setting.id.lower()))
            if decision is None:
                continue
            log.info("autoscale: %s", decision.reason)
            try:
                await self.arm.set_scale_set_capacity(
                    setting.target_resource_uri, decision.new_capacity, decision.reason
                )
            except ArmError as refused:  # e.g. the vCPU quota: Azure logs the failed action and waits
                log.warning("autoscale could not scale %s: %s", setting.target_resource_uri, refused.message)
                self.last_action_at[setting.id.lower()] = now
                continue
            self.last_action_at[setting.id.lower()] = now
            self.decisions = [*self.decisions[-99:], (now, setting.id, decision)]
            made.append(decision)
        return made

    def _samples_for(self, profile: Profile, now: float) -> dict[tuple[str, str], list[Sample]]:
        wanted: dict[tuple[str, str], float] = {}
        for rule in profile.rules:
            key = (rule.trigger.metric_resource_uri.lower(), rule.trigger.metric_name.lower())
            if key[1] not in SUPPORTED_METRICS:
                continue
            wanted[key] = max(wanted.get(key, 0.0), rule.trigger.time_window_s)
        result: dict[tuple[str, str], list[Sample]] = {}
        if not wanted:
            return result
        available = self.available_until(now)
        connection = telemetry.connect(self.telemetry_db, readonly=True)
        try:
            for (resource_uri, metric), window in wanted.items():
                source = SUPPORTED_METRICS[metric].source
                try:
                    rows = connection.execute(
                        f"SELECT ts, {source.dimension_sql['VMName']}, {source.value_sql} FROM {source.table} "
                        f"WHERE {source.id_column} = ? AND ts >= ? AND ts <= ? AND ts < ? AND ({source.where_sql}) "
                        "ORDER BY ts",
                        (telemetry.canonical_id(resource_uri), now - window, now, available),
                    ).fetchall()
                except sqlite3.OperationalError:
                    rows = []
                result[(resource_uri, metric)] = [(float(ts), str(iid), float(v)) for ts, iid, v in rows]
        finally:
            connection.close()
        return result
