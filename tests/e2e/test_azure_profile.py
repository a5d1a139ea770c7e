"""Releases on the emulator's `azure` timing profile: what a release meets on Azure.

One-minute metric grains published after the minute ends, access-log records visible after an
ingestion delay, gateway and scale-set writes that take seconds and answer without Retry-After, and
Azure's autoscale limits. The same release code as everywhere: it must promote a good canary with
no failed request, roll a bad one back, switch colors twice in a row, and leave autoscale on the
serving color after a manual rollback.

The delays are shorter than Azure's where the behaviour is the same (writes of 6 s, not tens;
metrics 20 s after their minute, not one or two minutes; log ingestion of 20 s, Azure's documented
minimum), and the release policy's windows are Azure's: one grain, judged once its data has arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prefect.client.orchestration import get_client

from blocks import AzureEnvironmentBlock, ReleasePolicyBlock, ServiceBlock, load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from flows.rollback import rollback
from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.factory import cloud_for
from switchyard.cloud.shared_rate import SharedQueryRate
from switchyard.core.config import FaultProfile, FrontendPorts, ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseFailed
from switchyard.core.rollout import Strategy
from switchyard.core.topology import Color
from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import EmulatorHandle, free_port, run_emulator, throttling_status
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import autoscale_enabled as enabled_autoscale

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SERVICE, ENV, POLICY = "patient", "slowcloud", "azure-timing"
COMMIT = labelled_commit("azure-profile")
WRITE_S = 6
RATE = 40.0


@pytest.fixture(scope="module")
def slow_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    args = [
        "--lro-retry-after", "0",
        "--metrics-latency", "20",
        "--log-ingestion-delay", "20",
        "--gateway-write-seconds", str(WRITE_S),
        "--scale-set-write-seconds", str(WRITE_S),
    ]  # fmt: skip
    with run_emulator(tmp_path_factory.mktemp("azure-profile"), extra_args=args, profile="azure") as handle:
        yield handle


@pytest.fixture(scope="module")
def ports(fleet: Fleet, slow_emulator: EmulatorHandle) -> FrontendPorts:
    """The environment, service and policy of this module, as blocks (Azure-timed values)."""
    production = fleet.environments["production"]
    AzureEnvironmentBlock(
        **production.model_copy(
            update={
                "name": ENV,
                "resource_group": "switchyard-slowcloud",
                "gallery_resource_group": "switchyard-slowcloud-images",
                "target_regions": [],
                "emulator_file": str(slow_emulator.state_dir / "emulator.json"),
            }
        ).model_dump()
    ).save(ENV, overwrite=True)
    frontend = FrontendPorts(production=free_port(), test=free_port())
    sample = fleet.services["sample"]
    ServiceBlock(
        **sample.model_copy(
            update={
                "name": SERVICE,
                "capacity": 2,
                "frontend_ports": {ENV: frontend},
                # Azure's minima: a 5 minute window, a 1 minute cooldown.
                "autoscale": sample.autoscale.model_copy(update={"time_window_s": 300, "cooldown_s": 60}),
            }
        ).model_dump()
    ).save(SERVICE, overwrite=True)
    default = fleet.release_policies["default"]
    ReleasePolicyBlock(
        **default.model_copy(
            update={
                "strategy": Strategy.CANARY,
                "canary_steps": [0.5],
                "analysis_window_s": 60,  # one grain
                "check_interval_s": 5,
                "promoted_analysis_window_s": 0,
                "metrics_delay_s": 20,  # the emulator publishes a minute's datapoint 20 s after it
                "healthy_timeout_s": 120,
                "scale_down_delay_s": 600,
                "slo": default.slo.model_copy(update={"min_requests": 200, "min_latency_samples": 200}),
            }
        ).model_dump()
    ).save(POLICY, overwrite=True)
    return frontend


def context() -> ServiceContext:
    return ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))


def live() -> tuple[Color, str | None]:
    ctx = context()
    observed = cloud_for(ctx).observe(ctx.topology, with_health=False)
    assert observed.live_color is not None
    return observed.live_color, observed.scale_set(observed.live_color).runs_only


def autoscale_enabled() -> dict[Color, bool]:
    return cast(dict[Color, bool], enabled_autoscale(context()))


@pytest.fixture(scope="module")
def images(ports: FrontendPorts) -> dict[str, str]:
    built = {
        "v1": image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=COMMIT, environment=ENV),
        "v2": image_pipeline(service=SERVICE, app_version="2.0.0", git_commit=COMMIT, environment=ENV),
        "v3": image_pipeline(
            service=SERVICE,
            app_version="3.0.0",
            git_commit=COMMIT,
            environment=ENV,
            fault_profile=FaultProfile(error_rate=0.3),
        ),
    }
    return {name: image.gallery_version for name, image in built.items()}


def throttled_requests(emulator: EmulatorHandle) -> dict[str, int]:
    """How many requests the emulator refused for going over Azure's rate: Resource Manager's reads,
    writes and deletes, Microsoft.Compute's scale-set policies (by name, those it refused) and Log
    Analytics' queries."""
    status = throttling_status(emulator.state_dir / "emulator.json")
    assert status["enforced"], "the azure profile enforces Resource Manager's throttling"
    compute = cast(dict[str, Any], status["compute"])
    assert compute["enforced"], "and Microsoft.Compute's"
    queries = cast(dict[str, Any], status["log_queries"])
    assert queries["enforced"] and queries["admitted"] > 0, "and Log Analytics', which the canary queried"
    return {
        **cast(dict[str, int], status["throttled"]),
        **cast(dict[str, int], compute["throttled"]),
        "log_queries": sum(cast(dict[str, int], queries["throttled"]).values()),
    }


def shared_query_budget() -> tuple[int, float]:
    """The Log Analytics query budget the flows' Azure clients share through the Prefect server
    (switchyard/cloud/shared_rate.py): its burst and slot decay, as the first query created it."""
    gate = cast(AzureCloud, cloud_for(context())).clients.shared_log_query_gate
    assert isinstance(gate, SharedQueryRate), "flows pace their queries by the budget in the Prefect server"
    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limit_by_name(gate.name)
    return found.limit, found.slot_decay_per_second


def users(ports: FrontendPorts) -> SteadyTraffic:
    return SteadyTraffic("127.0.0.1", ports.production, rate=RATE, connections=4)


def test_on_azure_timing_a_good_canary_is_promoted_and_a_rollback_leaves_autoscale_on_the_serving_color(
    ports: FrontendPorts, images: dict[str, str], slow_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    provision(service=SERVICE, environment=ENV)
    first = release(service=SERVICE, environment=ENV, image_version=images["v1"], policy=POLICY)
    assert first.outcome == "promoted" and first.live_after is not None
    v1_color = Color(first.live_after)
    assert autoscale_enabled() == {v1_color: True}  # the idle color has no scale set yet

    with users(ports) as load:
        second = release(service=SERVICE, environment=ENV, image_version=images["v2"], policy=POLICY)
    report = load.report()

    assert second.outcome == "promoted", second.outcome_detail
    assert [a.verdict.outcome.value for a in second.analyses] == ["pass"]
    assert second.analyses[0].split is not None and second.analyses[0].split.matches
    assert report.failed == 0, f"{report.failed} of {report.sent} requests failed"
    assert report.by_version[images["v1"]] > 0 and report.by_version[images["v2"]] > 0
    assert live() == (v1_color.other, images["v2"])  # the second color change in a row
    assert autoscale_enabled() == {v1_color.other: True, v1_color: False}

    back = rollback(service=SERVICE, environment=ENV, reason="a person prefers v1")
    assert back.stable_color == v1_color
    assert live() == (v1_color, images["v1"])
    assert autoscale_enabled() == {v1_color: True, v1_color.other: False}
    # Three images built and published, two releases and a rollback, all within Azure's request rate.
    assert throttled_requests(slow_emulator) == {"read": 0, "write": 0, "delete": 0, "log_queries": 0}
    # The canary's access-log queries took their turns of the budget every process of the principal
    # shares, created by the first of them (30 at once, then 5 a second).
    assert shared_query_budget() == (30, 5.0)


def test_on_azure_timing_a_bad_canary_is_rolled_back(ports: FrontendPorts, images: dict[str, str]) -> None:
    stable = live()
    with users(ports) as load, pytest.raises(ReleaseFailed) as failure:
        release(service=SERVICE, environment=ENV, image_version=images["v3"], policy=POLICY)
    summary = failure.value.summary
    report = load.report()

    assert summary is not None and summary.outcome == "rolled-back", summary
    assert "error rate" in summary.outcome_detail
    assert live() == stable
    # Users met the bad version for about two grains (a grain and the metrics' delay) plus one slow
    # gateway write, at half the traffic: a share of requests failed, and none were lost.
    assert report.failed_by_version.get("no answer", 0) == 0
    assert 0 < report.failed < report.sent
