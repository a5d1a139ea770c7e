"""Autoscale settings as Azure judges them: the target is immutable, the setting outlives its target,
durations stay within Azure's documented ranges, and a disabled setting is stored but never acts.
Through the real MonitorManagementClient over HTTPS (fast timing profile)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format
from emulator_helpers import eventually

from switchyard_emulator.testing import EmulatorClients, SampleTopology


def _error(raised: pytest.ExceptionInfo[HttpResponseError]) -> ODataV4Format:
    assert raised.value.error is not None
    return raised.value.error


def _setting(
    target: str, *, enabled: bool = True, threshold: float = 95.0, timing: dict[str, str] | None = None
) -> dict[str, Any]:
    timing = timing or {}
    trigger = {
        "metricName": "Percentage CPU",
        "metricResourceUri": target,
        "timeGrain": timing.get("grain", "PT1S"),
        "statistic": "Average",
        "timeWindow": timing.get("window", "PT3S"),
        "timeAggregation": "Average",
        "operator": "GreaterThanOrEqual",
        "threshold": threshold,
    }
    action = {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": timing.get("cooldown", "PT1H")}
    return {
        "location": "westus",
        "properties": {
            "enabled": enabled,
            "targetResourceUri": target,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": "1", "maximum": "2", "default": "1"},
                    "rules": [{"metricTrigger": trigger, "scaleAction": action}],
                }
            ],
        },
    }


@pytest.fixture
def two_scale_sets(topo: SampleTopology, clients: EmulatorClients, artifacts: dict[str, Path]) -> tuple[str, str]:
    topo.network()
    topo.gallery()
    version = topo.publish("1.0.0", artifacts["1.0.0"])
    scale_sets = clients.compute.virtual_machine_scale_sets
    first = scale_sets.begin_create_or_update(topo.rg, "web", topo.scale_set_body(version.id, 1))
    second = scale_sets.begin_create_or_update(topo.rg, "other", topo.scale_set_body(version.id, 1))
    return first.result().id, second.result().id


def test_the_target_of_a_setting_is_immutable_and_outlives_its_target(
    clients: EmulatorClients, topo: SampleTopology, two_scale_sets: tuple[str, str]
) -> None:
    web, other = two_scale_sets
    autoscale = clients.monitor.autoscale_settings
    created = autoscale.create_or_update(topo.rg, "web-autoscale", _setting(web))
    moved = _setting(other)
    with pytest.raises(HttpResponseError) as raised:
        autoscale.create_or_update(topo.rg, "web-autoscale", moved)
    assert raised.value.status_code == 400
    assert _error(raised).code == "TargetResourceIdIsImmutable"
    assert _error(raised).message == (
        f"The autoscale setting 'web-autoscale' under resource group '{topo.rg}' is referencing target resource "
        f"'{web}'. The target resource reference is immutable. If you want to change it, please create a new "
        "autoscale setting with a different name."
    )
    with pytest.raises(HttpResponseError) as raised:  # PATCH cannot move it either
        autoscale.update(topo.rg, "web-autoscale", {"target_resource_uri": other})
    assert _error(raised).code == "TargetResourceIdIsImmutable"
    unchanged = autoscale.get(topo.rg, "web-autoscale")
    assert unchanged.target_resource_uri == web  # nothing was written
    # the same target in other casing is the same target
    same = _setting(web.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"))
    assert autoscale.create_or_update(topo.rg, "web-autoscale", same).target_resource_uri

    # Azure does not delete a setting with its target (Azure/vm-scale-sets#4); the setting still
    # holds the old target, so pointing it elsewhere stays refused
    clients.compute.virtual_machine_scale_sets.begin_delete(topo.rg, "web").result()
    survivor = autoscale.get(topo.rg, "web-autoscale")
    assert survivor.id == created.id
    with pytest.raises(HttpResponseError) as raised:
        autoscale.create_or_update(topo.rg, "web-autoscale", moved)
    assert _error(raised).code == "TargetResourceIdIsImmutable"
    assert autoscale.create_or_update(topo.rg, "other-autoscale", moved).target_resource_uri == other


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        ({"grain": "PT13H"}, "metricTrigger.timeGrain"),  # Azure: at most 12 hours
        ({"window": "PT12H1M"}, "metricTrigger.timeWindow"),  # at most 12 hours
        ({"cooldown": "P8D"}, "scaleAction.cooldown"),  # at most 1 week
        ({"grain": "PT0S"}, "metricTrigger.timeGrain"),
        ({"cooldown": "PT0.5S"}, "scaleAction.cooldown"),  # the fast profile's floor is one second
    ],
)
def test_durations_beyond_azures_maxima_are_refused_in_every_profile(
    clients: EmulatorClients, topo: SampleTopology, two_scale_sets: tuple[str, str], timing: dict[str, str], field: str
) -> None:
    web, _ = two_scale_sets
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.autoscale_settings.create_or_update(topo.rg, "bad", _setting(web, timing=timing))
    assert raised.value.status_code == 400
    assert _error(raised).target == f"properties.profiles[0].rules[0].{field}"
    with pytest.raises(HttpResponseError):
        clients.monitor.autoscale_settings.get(topo.rg, "bad")


def test_a_setting_has_at_most_twenty_profiles(
    clients: EmulatorClients, topo: SampleTopology, two_scale_sets: tuple[str, str]
) -> None:
    web, _ = two_scale_sets
    body = _setting(web)
    profile = body["properties"]["profiles"][0]
    body["properties"]["profiles"] = [{**profile, "name": f"p{i}"} for i in range(21)]
    with pytest.raises(HttpResponseError) as raised:
        clients.monitor.autoscale_settings.create_or_update(topo.rg, "many", body)
    assert _error(raised).target == "properties.profiles"
    body["properties"]["profiles"] = body["properties"]["profiles"][:20]
    assert len(clients.monitor.autoscale_settings.create_or_update(topo.rg, "many", body).profiles) == 20


def test_the_fast_profile_takes_second_scale_durations_and_azures_extremes(
    clients: EmulatorClients, topo: SampleTopology, two_scale_sets: tuple[str, str]
) -> None:
    web, _ = two_scale_sets
    autoscale = clients.monitor.autoscale_settings
    assert autoscale.create_or_update(
        topo.rg, "quick", _setting(web, timing={"grain": "PT1S", "window": "PT3S", "cooldown": "PT2S"})
    )
    slow = _setting(web, timing={"grain": "PT12H", "window": "PT12H", "cooldown": "P7D"})
    assert autoscale.create_or_update(topo.rg, "quick", slow).profiles[0].rules[0].scale_action.cooldown


def test_a_disabled_setting_is_stored_but_never_scales(
    clients: EmulatorClients, topo: SampleTopology, two_scale_sets: tuple[str, str]
) -> None:
    web, _ = two_scale_sets
    scale_sets = clients.compute.virtual_machine_scale_sets
    # a rule that fires on any measured CPU; disabled, it must not act
    autoscale = clients.monitor.autoscale_settings
    autoscale.create_or_update(topo.rg, "web-autoscale", _setting(web, enabled=False, threshold=0))
    assert autoscale.get(topo.rg, "web-autoscale").enabled is False
    time.sleep(12)  # two autoscale evaluations and more, with CPU samples in the window
    assert scale_sets.get(topo.rg, "web").sku.capacity == 1
    # the same setting enabled scales out
    autoscale.update(topo.rg, "web-autoscale", {"enabled": True})
    eventually(lambda: scale_sets.get(topo.rg, "web").sku.capacity == 2, timeout=40)
