"""A flag flip changes what a running service answers, without a deploy, and flipping it back is as quick.

The real sample app runs as a process of its own, told its shared database through its custom data
(the JSON file SWITCHYARD_CUSTOM_DATA names, as the emulator and a VM's provisioning agent hand it
over). switchyard turns `new_greeting` on with the real set-flag flow (in this process, on Prefect's
test server) and off again with the real `switchyard flag set` command (a process of its own); the
same app process answers the new greeting, then the old one. Bad input to the command changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.settings import PREFECT_API_URL

from blocks import AzureEnvironmentBlock, ServiceBlock
from switchyard.core.config import AzureEnvironment, FrontendPorts, ServiceConfig
from switchyard.flags.sqlite_store import SqliteFlagStore
from switchyard.runbooks import load_flow
from switchyard_emulator.testing import free_port
from tests.commands import last_json, run_module
from tests.datasets import REPO_ROOT
from tests.e2e.stack_support import all_flow_runs, wait_for
from tests.prefect_test_server import prefect_test_server

SERVICE, WITHOUT_DATABASE, ENV = "greeter", "plain", "staging"
OLD, NEW = "hello", "hello, and welcome to the new greeting"
T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], timeout_s: float = 20.0) -> T:
    """Ask until `probe` says yes. The bound only ends a broken test: the flag's own promise (half a
    second) is the app's cache age, and a loaded machine may stretch it."""
    return wait_for(what, probe, timeout_s, interval_s=0.05)


@dataclass
class Greeter:
    process: subprocess.Popen[bytes]
    url: str
    database: Path
    state_dir: Path
    api_url: str

    def greeting(self) -> str:
        assert self.process.poll() is None, "the app process ended: that would be a deploy, not a flag flip"
        response = httpx.get(self.url + "/work/greeting", timeout=5)
        assert response.status_code == 200, response.text
        return str(response.json()["greeting"])


@pytest.fixture(scope="module")
def greeter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Greeter]:
    """Prefect's test server with the service's blocks, and the app running against its database."""
    state_dir = tmp_path_factory.mktemp("state")
    previous_state_dir = os.environ.get("SWITCHYARD_STATE_DIR")
    os.environ["SWITCHYARD_STATE_DIR"] = str(state_dir)  # the worker's {state_dir}: this process runs the flow
    database = state_dir / "databases" / f"{SERVICE}-{ENV}.sqlite3"
    ports = {ENV: FrontendPorts(production=free_port(), test=free_port())}
    with prefect_test_server():
        environment = AzureEnvironment(
            name=ENV,
            emulator_file=str(state_dir / "emulator.json"),  # never read: flags need no cloud
            resource_group="switchyard-staging",
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3lib3gga2V5IGZvciB0ZXN0cyBvbmx5 test",
        )
        asyncio.run(AzureEnvironmentBlock(**environment.model_dump()).asave(ENV, overwrite=True))
        for name, databases in (
            (SERVICE, {ENV: "sqlite:///{state_dir}/databases/greeter-staging.sqlite3"}),
            (WITHOUT_DATABASE, {}),
        ):
            service = ServiceConfig(name=name, app_dir="apps/sample", frontend_ports=ports, database=databases)
            asyncio.run(ServiceBlock(**service.model_dump()).asave(name, overwrite=True))
        # What switchyard puts in the instances' custom data, as the app reads it.
        custom_data = state_dir / "CustomData"
        custom_data.write_text(
            json.dumps({"service": SERVICE, "environment": ENV, "database_url": f"sqlite:///{database}"})
        )
        port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "SWITCHYARD_LISTEN_PORT": str(port),
            "SWITCHYARD_INSTANCE_ID": "0",
            "SWITCHYARD_CUSTOM_DATA": str(custom_data),
        }
        process = subprocess.Popen(
            [sys.executable, "app/server.py"], cwd=REPO_ROOT / "apps" / "sample", env=env, stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None and b"listening on" in process.stdout.readline()
            yield Greeter(process, f"http://127.0.0.1:{port}", database, state_dir, str(PREFECT_API_URL.value()))
        finally:
            process.terminate()
            process.wait(timeout=30)
            if previous_state_dir is None:
                os.environ.pop("SWITCHYARD_STATE_DIR", None)
            else:
                os.environ["SWITCHYARD_STATE_DIR"] = previous_state_dir


def switchyard(greeter: Greeter, *args: str) -> subprocess.CompletedProcess[str]:
    """`switchyard ARGS` as a person runs it, against the same Prefect API and state folder."""
    env = {"PREFECT_API_URL": greeter.api_url, "SWITCHYARD_STATE_DIR": str(greeter.state_dir)}
    return run_module("switchyard.cli", *args, env=env)


def flag_events(since: datetime) -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter.model_validate({"since": since}),
                event=EventNameFilter(name=["switchyard.flag.set"]),
                resource=EventResourceFilter(id=[f"switchyard.service.{SERVICE}.{ENV}"]),
            ),
            limit=50,
        )
    return list(page.events)


def set_flag_runs() -> int:
    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["set-flag"]))))


def test_a_flag_flip_changes_the_running_apps_answer_and_flipping_back_is_as_quick(greeter: Greeter) -> None:
    assert greeter.greeting() == OLD  # no database yet: every flag is off
    since = datetime.now(UTC)

    # On, by the set-flag flow (the deployment's entrypoint in prefect.yaml), run here.
    change = load_flow("set-flag")(service=SERVICE, environment=ENV, name="new_greeting", enabled=True)

    assert change.enabled is True and change.previous is None and change.database == str(greeter.database)
    poll("the new greeting from the same process", lambda: greeter.greeting() == NEW)
    events = poll("the switchyard.flag.set event", lambda: flag_events(since))
    assert events[0].payload["flag"] == "new_greeting" and events[0].payload["enabled"] is True
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["flag-greeter-staging"]))
        )
    assert "# Flag new_greeting of greeter in staging: **ON**" in str(artifact.data)

    # Off again, by the command a person types: the old answer is back as quickly.
    result = switchyard(greeter, "flag", "set", SERVICE, "new_greeting", "off", "--env", ENV, "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == "flag new_greeting of greeter in staging: off (was on)"
    flag = last_json(result)["flag"]
    assert last_json(result)["outcome"] == "ok" and flag["enabled"] is False and flag["previous"] is True
    assert flag["updated_by"].startswith("set-flag ")  # the run that set it
    poll("the old greeting from the same process", lambda: greeter.greeting() == OLD)

    listed = switchyard(greeter, "flag", "list", SERVICE, "--env", ENV, "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert [(f["name"], f["enabled"]) for f in last_json(listed)["flags"]] == [("new_greeting", False)]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        ([SERVICE, "new_greeting", "yes", "--env", ENV], 2, "flag value 'yes' is neither on nor off"),
        ([SERVICE, "New-Greeting", "on", "--env", ENV], 2, "flag name 'New-Greeting' is not valid"),
        ([SERVICE, "new_greeting", "on", "--env", "qa"], 2, "unknown environment 'qa'"),
        (["nosuch", "new_greeting", "on", "--env", ENV], 2, "unknown service 'nosuch'"),
        ([WITHOUT_DATABASE, "new_greeting", "on", "--env", ENV], 3, "service 'plain' has no database in 'staging'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_line_and_changes_nothing(
    greeter: Greeter, args: list[str], code: int, says: str
) -> None:
    before = SqliteFlagStore(str(greeter.database)).read()
    runs = set_flag_runs()

    result = switchyard(greeter, "flag", "set", *args, "--json")

    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert last_json(result)["outcome"] == {2: "bad-input", 3: "refused"}[code]
    assert SqliteFlagStore(str(greeter.database)).read() == before
    assert set_flag_runs() == runs  # no flow ran


@pytest.mark.parametrize(
    "args",
    [
        ["release", SERVICE, "--env", "production", "--image", "1000000.20261100.1"],
        ["release", SERVICE, "--env", "production", "--image", "1000000.20261100.1", "--plan"],
        ["status", SERVICE, "--env", "production"],
        ["flag", "set", SERVICE, "new_greeting", "on", "--env", "production"],
    ],
    ids=["release", "release-plan", "status", "flag-set"],
)
def test_an_environment_the_service_is_not_deployed_to_is_bad_input(greeter: Greeter, args: list[str]) -> None:
    """production is an environment of the fleet, but greeter has frontend ports in staging only."""
    runs = len(all_flow_runs())

    result = switchyard(greeter, *args, "--json")

    assert result.returncode == 2, result.stdout + result.stderr
    says = "service 'greeter' is not deployed to environment 'production' (its environments: staging)"
    assert says in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "a bug" not in result.stderr
    assert last_json(result)["outcome"] == "bad-input"
    # A release flow may have started and stopped at its first step; nothing else ran.
    assert len(all_flow_runs()) - runs <= (1 if args[0] == "release" and "--plan" not in args else 0)
