"""The command line as a person meets it: real `switchyard` processes against a real local stack.

Every outcome is one line and an exit code (0 done, 2 bad input, 3 refused, 4 rolled back), with no
traceback, and `--json` ends with one JSON object that names the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from switchyard.checkout import REPO_ROOT
from switchyard.demo.traffic import SteadyTraffic
from tests.e2e.stack_support import SERVICE, Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ENV = "production"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


def switchyard(stack: Stack, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`switchyard ARGS` as a person runs it next to a running stack (found through its state dir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["SWITCHYARD_STATE_DIR"] = str(stack.state_dir)
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and 'File "' not in output, output[-3000:]


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
            "unknown service 'nosuch'; the fleet has: sample",
        ),
        (["release", SERVICE, "--env", "qa", "--image", "1000000.20261100.1"], "unknown environment 'qa'"),
        (
            ["release", "Bad_Name", "--env", ENV, "--image", "1000000.20261100.1"],
            "service name 'Bad_Name' is not valid",
        ),
        (["image", "build", SERVICE, "--app-version", "1.2"], "is not MAJOR.MINOR.PATCH"),
        (["status", "nosuch", "--env", ENV], "unknown service 'nosuch'"),
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
