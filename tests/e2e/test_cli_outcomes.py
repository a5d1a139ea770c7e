"""The command line as a person meets it: real `switchyard` processes against a real local stack.

Every outcome is one line and an exit code (0 done, 2 bad input, 3 refused, 4 rolled back), with no
traceback, and `--json` ends with one JSON object that names the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from switchyard.stages.traffic import SteadyTraffic
from tests.commands import last_json
from tests.e2e.stack_support import SERVICE, Stack, assert_no_traceback, running_stack, switchyard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ENV = "production"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def images(stack: Stack) -> dict[str, str]:
    """v1 and v2 built through the CLI; v3 answers 30% of requests with errors (the flow's
    fault_profile parameter, which the CLI does not offer people)."""
    built = {}
    for name, version in (("v1", "1.0.0"), ("v2", "2.0.0")):
        result = switchyard(stack, "image", "build", SERVICE, "--app-version", version, "--env", ENV, "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        assert_no_traceback(result)
        built[name] = last_json(result)["gallery_version"]
    with stack.client_settings():
        from switchyard.runbooks import load_flow

        built["v3"] = load_flow("image-pipeline")(
            service=SERVICE, app_version="3.0.0", environment=ENV, fault_profile={"error_rate": 0.3}
        ).gallery_version
    return built


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["release", SERVICE, "--env", ENV, "--image", "1000000.20261100.1", "--strategy", "bogus"], "bogus"),
        (["release", SERVICE, "--env", ENV, "--image", "1.0.0"], "is not a switchyard gallery version"),
        (
            ["release", "nosuch", "--env", ENV, "--image", "1000000.20261100.1"],
            "unknown service 'nosuch'; the fleet has: catalog, sample",
        ),
        (["release", SERVICE, "--env", "qa", "--image", "1000000.20261100.1"], "unknown environment 'qa'"),
        (
            ["release", "Bad_Name", "--env", ENV, "--image", "1000000.20261100.1"],
            "service name 'Bad_Name' is not valid",
        ),
        (["image", "build", SERVICE, "--app-version", "1.2"], "is not MAJOR.MINOR.PATCH"),
        (["status", "nosuch", "--env", ENV], "unknown service 'nosuch'"),
        (["fleet", "patch", "--service", SERVICE, "--service", "nosuch"], "unknown service 'nosuch'"),
        (["fleet", "patch", "--env", "staging", "--env", "qa"], "unknown environment 'qa'"),
        (["release", SERVICE, "--env", ENV, "--image", "1000000.20261100.1", "--policy", "nosuch"], "nosuch"),
    ],
)
def test_bad_input_is_refused_with_exit_code_2_and_one_line(stack: Stack, args: list[str], says: str) -> None:
    result = switchyard(stack, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in " ".join((result.stdout + result.stderr).split()), result.stderr
    assert_no_traceback(result)


def test_a_promoted_release_says_so_and_exits_0(stack: Stack, images: dict[str, str]) -> None:
    result = switchyard(stack, "release", SERVICE, "--env", ENV, "--image", images["v1"], "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"release of {SERVICE} {images['v1']} to {ENV}: promoted" in result.stdout
    assert last_json(result)["outcome"] == "ok"
    assert_no_traceback(result)


def test_a_rolled_back_release_exits_4_and_a_second_try_is_refused_with_3(stack: Stack, images: dict[str, str]) -> None:
    port = stack.ports(ENV)["production"]
    with SteadyTraffic("127.0.0.1", port, rate=80.0, connections=4):
        result = switchyard(
            stack, "release", SERVICE, "--env", ENV, "--image", images["v3"], "--strategy", "canary", "--json"
        )
    assert result.returncode == 4, (result.stdout[-2000:], result.stderr[-3000:])
    assert f"release of {SERVICE} {images['v3']} to {ENV}: rolled back." in result.stderr
    assert "error rate" in result.stderr
    outcome = last_json(result)
    assert outcome["outcome"] == "rolled-back" and outcome["summary"]["outcome"] == "rolled-back"
    assert_no_traceback(result)

    again = switchyard(stack, "release", SERVICE, "--env", ENV, "--image", images["v3"])
    assert again.returncode == 3, again.stderr[-3000:]
    assert "refused, nothing was changed" in again.stderr and "was rolled back before" in again.stderr
    assert_no_traceback(again)


def whole_cloud(stack: Stack) -> dict[str, Any]:
    """What switchyard could change of the sample service in every environment, read through the
    adapter: the gateway (ETag, rules, tags, pools), the idle color whole, the live color's image, and
    every gallery version with its tags. The live color's size is left out: it belongs to its
    autoscale setting, which may scale it in while the test runs (as on Azure; test_release.py's
    refusal test does the same)."""
    from blocks import load_environment, load_service
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.config import ServiceContext

    seen: dict[str, Any] = {}
    with stack.client_settings():
        for environment in ("staging", ENV):
            context = ServiceContext(environment=load_environment(environment), service=load_service(SERVICE))
            cloud = cloud_for(context)
            observed = cloud.observe(context.topology, with_health=False)
            gateway = observed.gateway
            live = observed.live_color
            seen[environment] = {
                "gateway": (gateway.etag, gateway.production_pool, gateway.test_pool, gateway.tags),
                "idle": observed.scale_set(live.other).model_dump(mode="json") if live else None,
                "live image": observed.scale_set(live).image_version if live else None,
                "live runs": {i.image_version for i in observed.scale_set(live).instances} if live else None,
                "gallery": [v.model_dump(mode="json") for v in cloud.gallery.image_versions(SERVICE)],
            }
    return seen


def test_a_release_plan_prints_the_steps_from_where_production_stands_and_changes_nothing(
    stack: Stack, images: dict[str, str]
) -> None:
    """After the releases above production runs v1; the plan of v2 is a canary from there."""
    before = whole_cloud(stack)

    result = switchyard(stack, "release", SERVICE, "--env", ENV, "--image", images["v2"], "--plan")
    as_json = switchyard(stack, "release", SERVICE, "--env", ENV, "--image", images["v2"], "--plan", "--json")

    assert whole_cloud(stack) == before
    for run in (result, as_json):
        assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
        assert_no_traceback(run)
    lines = result.stdout.splitlines()
    assert lines[0] == f"Plan: release of {SERVICE} {images['v2']} to {ENV} (canary); nothing has been changed"
    assert "Preflight:" in lines and "Steps:" in lines
    assert not [line for line in lines if line.startswith("  FAIL")], result.stdout
    assert any("canary at " in line and "set the split, judge it" in line for line in lines), result.stdout
    assert lines[-1].startswith("Ends: promoted:")
    plan = last_json(as_json)
    assert plan["outcome"] == "ok"
    kinds = [step["kind"] for step in plan["plan"]["steps"]]
    assert kinds[-3:] == ["promote", "analyse_promoted", "finalize"] and "smoke_test" in kinds
    assert plan["plan"]["live_image"] == images["v1"] and plan["plan"]["outcome"] == "promoted"


def test_fleet_status_shows_every_environment_as_the_cloud_has_it_and_changes_nothing(
    stack: Stack, images: dict[str, str]
) -> None:
    before = whole_cloud(stack)

    result = switchyard(stack, "fleet", "status")
    as_json = switchyard(stack, "fleet", "status", "--json")

    assert whole_cloud(stack) == before
    for run in (result, as_json):
        assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
        assert_no_traceback(run)
    assert result.stdout.splitlines()[0].split()[:4] == ["SERVICE", "ENVIRONMENT", "LIVE", "IMAGE"]
    rows = {(row["service"], row["environment"]): row for row in last_json(as_json)["rows"]}
    # the fleet file's two services, each in both environments
    assert set(rows) == {(service, env) for service in (SERVICE, "catalog") for env in ("staging", ENV)}
    assert {tuple(line.split()[:2]) for line in result.stdout.splitlines()[1:-1]} == set(rows)
    production = rows[(SERVICE, ENV)]
    assert production["state"] == "ok" and production["image_version"] == images["v1"]
    assert (production["base"], production["app_version"]) == ("debian-12", "1.0.0")
    assert 0 < production["healthy"] <= production["total"]  # autoscale may be draining one meanwhile
    assert production["release_in_flight"] is None and production["age_s"] is not None
    # `up` provisions staging but nothing was released there: a row that says so, not an error.
    for pair in ((SERVICE, "staging"), ("catalog", "staging"), ("catalog", ENV)):
        assert rows[pair]["state"] == "ok" and rows[pair]["note"] == "nothing live yet", rows[pair]
