"""Saturation beyond CPU against a real emulator: the telemetry port's memory and network-out readings
of instances that really served requests, and autoscale on memory, written by ensure_autoscale and
acted on by the emulator's autoscale engine (a scale-out when available memory is LOW)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.ports import InstanceMetrics
from switchyard.core.config import MIB, AutoscaleConfig
from switchyard.core.topology import Color, Topology
from tests.integration.cloud.cloud_support import V1, V2, backends_reached, deploy_both_colors, eventually


@pytest.fixture(scope="module")
def deployed(cloud: AzureCloud, artifacts: dict[str, Path]) -> None:
    deploy_both_colors(cloud, artifacts, blue=V1, green=V2)


def test_memory_used_and_network_out_are_read_per_instance(
    cloud: AzureCloud, topology: Topology, deployed: None
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    answered = backends_reached(cloud, "production", 40)
    end = datetime.now(UTC) + timedelta(seconds=1)
    blue = cloud.scale_sets.observe(topology, Color.BLUE)
    names = [instance.name for instance in blue.instances]
    assert sum(answered.values()) == 40

    def metrics() -> dict[str, InstanceMetrics] | None:
        found = cloud.telemetry.instance_metrics(topology, Color.BLUE, start, end, blue.vm_size)
        sent = [m.network_out_bytes for m in found.values()]
        return found if set(found) == set(names) and all(v is not None and v > 0 for v in sent) else None

    per_vm = eventually(metrics)
    # Each instance answered about half of 40 /version requests: a few hundred bytes each at least.
    assert all((m.network_out_bytes or 0) > 20 * 100 for m in per_vm.values()), per_vm
    memory = [used for m in per_vm.values() for used in m.memory_used_percent]
    # The sample app's resident set against a Standard_B2s's 4 GiB: in use, far from full.
    assert memory and all(0.0 < used < 20.0 for used in memory), memory


def test_autoscale_on_memory_scales_out_when_available_memory_is_low_and_the_metric_changes_in_place(
    cloud: AzureCloud, topology: Topology, deployed: None
) -> None:
    group = cloud.environment.resource_group
    settings_api = cloud.clients.monitor.autoscale_settings
    name = topology.autoscale_setting(Color.BLUE)
    # "Low" here is below ~1 TB: every instance qualifies, so the rule fires on the first samples.
    on_memory = cloud.service.model_copy(
        update={
            "autoscale": AutoscaleConfig(
                metric="Available Memory Bytes",
                scale_out_available_memory_mib=1_000_000,
                scale_in_available_memory_mib=2_000_000,
                minimum=1,
                maximum=4,
            )
        }
    )
    before = cloud.scale_sets.observe(topology, Color.BLUE).capacity

    cloud.infrastructure.ensure_autoscale(topology, on_memory, Color.BLUE)

    written = settings_api.get(group, name)
    out, in_ = (rule.metric_trigger for rule in written.profiles[0].rules)
    assert (out.metric_name, out.operator, out.threshold) == ("Available Memory Bytes", "LessThan", 1_000_000 * MIB)
    assert (in_.metric_name, in_.operator, in_.threshold) == ("Available Memory Bytes", "GreaterThan", 2_000_000 * MIB)
    eventually(lambda: cloud.scale_sets.observe(topology, Color.BLUE).capacity == before + 1, timeout_s=60)

    # Back to CPU: the same setting (its target cannot change on Azure) gets new rules.
    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.BLUE)
    again = settings_api.get(group, name)
    assert again.id == written.id and again.target_resource_uri == written.target_resource_uri
    assert {rule.metric_trigger.metric_name for rule in again.profiles[0].rules} == {"Percentage CPU"}


def test_a_rule_on_a_metric_the_scale_set_does_not_have_is_refused_as_azure_refuses_it(
    cloud: AzureCloud, topology: Topology, deployed: None
) -> None:
    settings_api = cloud.clients.monitor.autoscale_settings
    group = cloud.environment.resource_group
    # Its own setting to edit, so the test does not depend on which tests ran before it.
    cloud.infrastructure.ensure_autoscale(topology, cloud.service, Color.GREEN)
    setting = settings_api.get(group, topology.autoscale_setting(Color.GREEN))
    setting.profiles[0].rules[0].metric_trigger.metric_name = "Percentage memory"
    with pytest.raises(HttpResponseError) as raised:
        settings_api.create_or_update(group, topology.autoscale_setting(Color.GREEN), setting)
    assert raised.value.error is not None and raised.value.error.code == "UnsupportedMetric"
    assert "metricname: Percentage memory" in str(raised.value.error.message)
