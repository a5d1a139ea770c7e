"""Autoscale decisions: profiles, metric windows, scale out/in, cooldown, flapping, bounds."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from emulator_testdata import SCALE_SET_ID, T0

from switchyard_emulator.dataplane.autoscale import (
    AutoscaleConfigError,
    MetricTrigger,
    active_profile,
    decide,
    metric_value,
    parse_setting,
)
from tests.datasets import AZURE_REST_EXAMPLES

EXAMPLES = AZURE_REST_EXAMPLES / "monitor"


def rule(
    direction: str,
    operator: str,
    threshold: float,
    *,
    value: str = "1",
    kind: str = "ChangeCount",
    window: str = "PT10S",
    grain: str = "PT1S",
    cooldown: str = "PT30S",
    statistic: str = "Average",
    aggregation: str = "Average",
) -> dict[str, Any]:
    return {
        "metricTrigger": {
            "metricName": "Percentage CPU",
            "metricResourceUri": SCALE_SET_ID,
            "timeGrain": grain,
            "statistic": statistic,
            "timeWindow": window,
            "timeAggregation": aggregation,
            "operator": operator,
            "threshold": threshold,
        },
        "scaleAction": {"direction": direction, "type": kind, "value": value, "cooldown": cooldown},
    }


def setting(*rules: dict[str, Any], minimum: int = 1, maximum: int = 5, default: int = 2, enabled: bool = True):
    return parse_setting(
        {
            "id": "/subscriptions/s/resourceGroups/rg/providers/microsoft.insights/autoscalesettings/a",
            "name": "sample-test-autoscale",
            "properties": {
                "enabled": enabled,
                "targetResourceUri": SCALE_SET_ID,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {
                            "minimum": str(minimum),
                            "maximum": str(maximum),
                            "default": str(default),
                        },
                        "rules": list(rules),
                    }
                ],
            },
        }
    )


SCALE_OUT = rule("Increase", "GreaterThan", 70)
SCALE_IN = rule("Decrease", "LessThan", 20)


def cpu(
    *per_instance: float, seconds: int = 10, end: float = T0
) -> dict[tuple[str, str], list[tuple[float, str, float]]]:
    """Samples for the last `seconds` seconds, one per second per instance, at these CPU levels."""
    samples = [
        (end - seconds + 0.5 + second, str(index), level)
        for second in range(seconds)
        for index, level in enumerate(per_instance)
    ]
    return {(SCALE_SET_ID.lower(), "percentage cpu"): samples}


def test_high_cpu_scales_out_by_the_rule_step() -> None:
    decision = decide(setting(SCALE_OUT, SCALE_IN), 2, cpu(90, 80), T0, None)
    assert decision is not None
    assert decision.new_capacity == 3
    assert "Percentage CPU average over 10s = 85.00 greaterthan 70" in decision.reason
    assert "2 -> 3" in decision.reason


def test_moderate_cpu_changes_nothing() -> None:
    assert decide(setting(SCALE_OUT, SCALE_IN), 2, cpu(50, 40), T0, None) is None


def test_cooldown_blocks_a_second_scale_out() -> None:
    assert decide(setting(SCALE_OUT), 3, cpu(95, 95, 95), T0, last_action_at=T0 - 10) is None
    assert decide(setting(SCALE_OUT), 3, cpu(95, 95, 95), T0, last_action_at=T0 - 31) is not None


def test_scale_out_is_clamped_to_the_maximum() -> None:
    big_step = rule("Increase", "GreaterThan", 70, value="10")
    decision = decide(setting(big_step, maximum=4), 2, cpu(99, 99), T0, None)
    assert decision is not None and decision.new_capacity == 4
    assert decide(setting(big_step, maximum=4), 4, cpu(99, 99), T0, None) is None  # already at the maximum


def test_any_scale_out_rule_is_enough_and_the_biggest_wins() -> None:
    small = rule("Increase", "GreaterThan", 70, value="1")
    large = rule("Increase", "GreaterThan", 60, kind="PercentChangeCount", value="100")
    never = rule("Increase", "GreaterThan", 99)
    decision = decide(setting(never, small, large, maximum=10), 2, cpu(80, 80), T0, None)
    assert decision is not None and decision.new_capacity == 4


def test_scale_in_needs_every_decrease_rule_to_fire() -> None:
    low_cpu = rule("Decrease", "LessThan", 20)
    low_peak = rule("Decrease", "LessThan", 30, aggregation="Maximum")
    # Average 10 but one second at 50: the 'Maximum' rule does not fire -> no scale in.
    samples = cpu(10, 10, 10)
    key = (SCALE_SET_ID.lower(), "percentage cpu")
    samples[key] = [*samples[key][:-3], (T0 - 0.5, "0", 50.0), (T0 - 0.5, "1", 50.0), (T0 - 0.5, "2", 50.0)]
    assert decide(setting(low_cpu, low_peak), 3, samples, T0, None) is None
    decision = decide(setting(low_cpu, low_peak), 3, cpu(10, 10, 10), T0, None)
    assert decision is not None and decision.new_capacity == 2


def test_scale_in_is_skipped_when_it_would_flap() -> None:
    scale_out = rule("Increase", "GreaterThan", 50)
    scale_in = rule("Decrease", "LessThan", 40)
    # 2 instances at 35%: scaling in to 1 projects 70% -> the scale-out rule would fire.
    assert decide(setting(scale_out, scale_in), 2, cpu(35, 35), T0, None) is None
    # 3 instances at 30%: to 2 projects 45% -> below 50, so it scales in.
    decision = decide(setting(scale_out, scale_in), 3, cpu(30, 30, 30), T0, None)
    assert decision is not None and decision.new_capacity == 2


def test_scale_in_never_goes_below_the_minimum() -> None:
    assert decide(setting(SCALE_IN, minimum=2), 2, cpu(1, 1), T0, None) is None


def test_capacity_outside_the_bounds_is_brought_inside_without_a_rule() -> None:
    below = decide(setting(SCALE_OUT, minimum=2), 1, cpu(50), T0, None)
    assert below is not None and below.new_capacity == 2 and "outside [2, 5]" in below.reason
    above = decide(setting(SCALE_OUT, maximum=3), 6, cpu(50), T0, None)
    assert above is not None and above.new_capacity == 3


def test_no_metric_data_raises_capacity_to_the_default_only_when_below_it() -> None:
    decision = decide(setting(SCALE_OUT, default=3), 1, {}, T0, None)
    assert decision is not None and decision.new_capacity == 3 and "no metric data" in decision.reason
    assert decide(setting(SCALE_OUT, default=3), 4, {}, T0, None) is None


def test_disabled_setting_does_nothing() -> None:
    assert decide(setting(SCALE_OUT, enabled=False), 2, cpu(99, 99), T0, None) is None


def test_exact_count_sets_the_capacity() -> None:
    exact = rule("Increase", "GreaterThanOrEqual", 90, kind="ExactCount", value="5")
    decision = decide(setting(exact), 2, cpu(90, 90), T0, None)
    assert decision is not None and decision.new_capacity == 5


def test_metric_value_combines_instances_by_statistic_then_grains_by_time_aggregation() -> None:
    samples = [
        (T0 - 2.5, "0", 10.0), (T0 - 2.5, "0", 30.0), (T0 - 2.5, "1", 60.0),  # grain 1: per-VM 20 and 60
        (T0 - 1.5, "0", 40.0), (T0 - 1.5, "1", 80.0),  # grain 2: 40 and 80
        (T0 - 30, "0", 100.0),  # outside the window
    ]  # fmt: skip

    def value(statistic: str, aggregation: str, divide: bool = False) -> float | None:
        trigger = MetricTrigger(
            "Percentage CPU", SCALE_SET_ID, 1.0, statistic, 10.0, aggregation, "greaterthan", 0.0, divide
        )
        return metric_value(trigger, samples, T0, instances=2)

    assert value("average", "average") == 50.0  # (40 + 60) / 2
    assert value("max", "average") == 70.0  # (60 + 80) / 2
    assert value("min", "minimum") == 20.0
    assert value("sum", "total") == 200.0  # 80 + 120
    assert value("count", "count") == 2.0
    assert value("average", "last") == 60.0
    assert value("average", "maximum", divide=True) == 30.0
    empty = MetricTrigger("Percentage CPU", SCALE_SET_ID, 1.0, "average", 10.0, "average", "greaterthan", 0.0)
    assert metric_value(empty, [], T0, instances=1) is None


def test_the_azure_example_setting_parses_and_picks_its_profile_by_date() -> None:
    example = json.loads((EXAMPLES / "AutoscaleSettings_CreateOrUpdate.json").read_text())
    resource = copy.deepcopy(example["parameters"]["parameters"])
    resource["name"] = "MySetting"
    parsed = parse_setting(resource)
    assert [profile.name for profile in parsed.profiles] == ["adios", "saludos"]
    adios, saludos = parsed.profiles
    assert adios.rules[0].trigger.time_window_s == 300 and adios.rules[1].action.cooldown_s == 360
    # Inside adios' fixed date window it is the active profile.
    assert active_profile(parsed, datetime(2015, 3, 5, 14, 10, tzinfo=UTC)) is adios
    # Otherwise the weekly recurrence ('1' = Monday, 05:15 UTC) is the latest one started.
    assert active_profile(parsed, datetime(2026, 1, 6, 9, 0, tzinfo=UTC)) is saludos


def test_recurrence_profiles_last_until_the_next_one_starts() -> None:
    def profile(name: str, days: list[str], hour: int) -> dict[str, Any]:
        return {
            "name": name,
            "capacity": {"minimum": "1", "maximum": "3", "default": "1"},
            "rules": [],
            "recurrence": {
                "frequency": "Week",
                "schedule": {"timeZone": "UTC", "days": days, "hours": [hour], "minutes": [0]},
            },
        }

    weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    parsed = parse_setting(
        {
            "name": "business-hours",
            "properties": {
                "targetResourceUri": SCALE_SET_ID,
                "profiles": [profile("day", weekdays, 8), profile("night", weekdays, 18)],
            },
        }
    )
    monday = datetime(2026, 1, 5, tzinfo=UTC)
    assert active_profile(parsed, monday.replace(hour=9)).name == "day"
    assert active_profile(parsed, monday.replace(hour=19)).name == "night"
    assert active_profile(parsed, monday.replace(hour=7)).name == "night"  # since Friday 18:00


@pytest.mark.parametrize(
    ("mutate", "message_part"),
    [
        (lambda r: r["metricTrigger"].update(timeWindow="5 minutes"), "metricTrigger.timeWindow"),
        (lambda r: r["metricTrigger"].update(operator="Around"), "operator 'around' is not known"),
        (lambda r: r["metricTrigger"].pop("threshold"), "metricTrigger.threshold is missing"),
        (lambda r: r["scaleAction"].update(value="two"), "scaleAction.value must be a whole number"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(mutate: Any, message_part: str) -> None:
    broken = rule("Increase", "GreaterThan", 70)
    mutate(broken)
    with pytest.raises(AutoscaleConfigError) as caught:
        setting(broken)
    assert message_part in str(caught.value)
    assert "profiles[0].rules[0]" in str(caught.value)


def test_capacity_bounds_must_be_ordered() -> None:
    with pytest.raises(AutoscaleConfigError, match="minimum <= default <= maximum"):
        setting(SCALE_OUT, minimum=3, default=2, maximum=5)
