"""`switchyard fleet patch` on the local stack, as a person runs it: both services of the fleet (the
sample and catalog, each on its own scale sets and gateways) rebuilt on this month's patch level and
released to staging, then to production in batches, under production traffic; then a month in which
catalog's rebuild is bad: it fails in staging, never reaches production, and is reported, while the
sample goes on to production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from switchyard.stages.traffic import SteadyTraffic, TrafficReport
from tests.commands import last_json
from tests.e2e.stack_support import (
    Stack,
    artifacts,
    assert_no_traceback,
    live_image,
    running_stack,
    switchyard,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SERVICES = ("catalog", "sample")
# What each service answers that users would ask for (catalog has no /work/echo).
USER_PATHS = {"sample": "/work/echo", "catalog": "/catalog/items"}
RATE = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fleet-patch-stack")) as running:
        yield running


def run(stack: Stack, *args: str, timeout_s: float = 600) -> dict[str, Any]:
    result = switchyard(stack, *args, "--json", timeout_s=timeout_s)
    assert_no_traceback(result)
    payload = last_json(result)
    payload["exit_code"] = result.returncode
    payload["stdout"] = result.stdout
    return payload


@pytest.fixture(scope="module")
def live_v1(stack: Stack) -> dict[str, str]:
    """Each service's 1.0.0 built and released to production by hand (blue-green, nothing live yet);
    staging has nothing."""
    live = {}
    for service in SERVICES:
        built = run(stack, "image", "build", service, "--app-version", "1.0.0", "--env", "production")
        assert built["exit_code"] == 0, built["stdout"][-3000:]
        version = built["gallery_version"]
        released = run(stack, "release", service, "--env", "production", "--image", version, "--strategy", "blue-green")
        assert released["exit_code"] == 0, released["stdout"][-3000:]
        live[service] = version
    return live


def user_traffic(stack: Stack) -> tuple[ExitStack, dict[str, SteadyTraffic]]:
    """Users of both services in production for as long as the patch runs."""
    loads = ExitStack()
    traffic = {
        service: loads.enter_context(
            SteadyTraffic(
                "127.0.0.1",
                stack.fleet["services"][service]["frontend_ports"]["production"]["production"],
                rate=RATE,
                connections=4,
                path=USER_PATHS[service],
            )
        )
        for service in SERVICES
    }
    return loads, traffic


@pytest.fixture(scope="module")
def first_patch(stack: Stack, live_v1: dict[str, str]) -> tuple[dict[str, Any], dict[str, TrafficReport]]:
    """The month's patch of the whole fleet, one service per production batch, under user traffic."""
    loads, traffic = user_traffic(stack)
    with loads:
        patched = run(stack, "fleet", "patch", "--batch-size", "1")
    return patched, {service: load.report() for service, load in traffic.items()}


def test_fleet_patch_moves_both_services_through_staging_then_production_without_a_failed_request(
    stack: Stack, live_v1: dict[str, str], first_patch: tuple[dict[str, Any], dict[str, TrafficReport]]
) -> None:
    patched, loads = first_patch
    assert patched["exit_code"] == 0 and patched["outcome"] == "ok", patched["stdout"][-4000:]
    results = {r["service"]: r for r in patched["results"]}
    assert sorted(results) == sorted(SERVICES)
    for service in SERVICES:
        result = results[service]
        assert result["result"] == "patched", result
        assert result["old_version"] == live_v1[service] and result["new_version"] != live_v1[service]
        assert [(s["environment"], s["outcome"]) for s in result["stages"]] == [
            ("staging", "promoted"),
            ("production", "promoted"),
        ]
        with stack.client_settings():
            assert live_image("staging", service) == live_image("production", service) == result["new_version"]
        # users met the old version, then the new one, and no request failed
        load = loads[service]
        assert load.failed == 0, f"{service}: {load.failed} of {load.sent} requests failed"
        assert load.by_version[live_v1[service]] > 0 and load.by_version[result["new_version"]] > 0
    # a line per service: result, the image it moved from and to, each environment's outcome
    for service in SERVICES:
        result = results[service]
        line = f"{result['old_version']} -> {result['new_version']}  staging promoted, production promoted"
        assert any(
            row.startswith(service) and "patched" in row and line in row for row in patched["stdout"].splitlines()
        )


def test_a_service_that_fails_in_staging_never_reaches_production_and_the_others_go_on(
    stack: Stack, first_patch: tuple[dict[str, Any], dict[str, TrafficReport]]
) -> None:
    before = {r["service"]: r["new_version"] for r in first_patch[0]["results"]}
    # This month, catalog's rebuild answers half its requests with errors (its image recipe says so).
    with stack.client_settings():
        from blocks import ImageRecipeBlock, load_recipe

        recipe = load_recipe("catalog")
        bad = recipe.model_copy(update={"fault_profile": recipe.fault_profile.model_copy(update={"error_rate": 0.5})})
        ImageRecipeBlock(**bad.model_dump()).save("catalog", overwrite=True)
    try:
        loads, traffic = user_traffic(stack)
        with loads:
            # one of two failing is a share of 0.5: not more than the limit, so the sample goes on
            patched = run(stack, "fleet", "patch", "--max-failed-share", "0.5")
        reports = {service: load.report() for service, load in traffic.items()}
    finally:
        with stack.client_settings():
            ImageRecipeBlock(**recipe.model_dump()).save("catalog", overwrite=True)

    assert patched["exit_code"] == 1 and patched["outcome"] == "failed", patched["stdout"][-4000:]
    assert "1 of 2 service(s) not patched: catalog: stopped in staging: rolled-back" in patched["error"]
    results = {r["service"]: r for r in patched["results"]}
    catalog, sample = results["catalog"], results["sample"]
    assert catalog["result"] == "failed" and catalog["old_version"] == before["catalog"]
    assert [(s["environment"], s["outcome"]) for s in catalog["stages"]] == [
        ("staging", "rolled-back"),
        ("production", "not-run"),
    ]
    assert catalog["stages"][1]["detail"] == "stopped: staging rolled-back"
    assert sample["result"] == "patched" and sample["new_version"] != before["sample"]
    with stack.client_settings():
        # catalog's bad image went no further than staging's canary; production never changed
        assert live_image("staging", "catalog") == live_image("production", "catalog") == before["catalog"]
        assert live_image("production", "sample") == sample["new_version"]
        # the monthly-patch artifact shows it too
        [newest, *_] = artifacts("monthly-patch")
    assert f"| catalog | {before['catalog']} | {catalog['new_version']} | ↩️ rolled-back | ⏭️ not-run |" in str(
        newest.data
    )
    assert "1 patched, 0 skipped, 1 failed." in str(newest.data)
    # production users of both services never met the bad image
    for service, load in reports.items():
        assert load.failed == 0, f"{service}: {load.failed} of {load.sent} requests failed"
    assert catalog["new_version"] not in reports["catalog"].by_version
    # the command says where catalog stopped and why, under its line
    lines = patched["stdout"].splitlines()
    [row] = [i for i, line in enumerate(lines) if line.startswith("catalog ")]
    assert lines[row + 1].strip().startswith("staging:"), lines[row : row + 2]
