"""The local stack in tests: `switchyard up` / `down` run as real commands, in a temporary state
directory, on free ports, with a copy of fleet.yaml whose release windows are short.

Each test module that needs a stack starts one (`start_stack`) and stops it when done; nothing
here is shared between modules, so a module that kills processes cannot harm another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from switchyard.checkout import REPO_ROOT
from switchyard.core.state import ServiceObservation
from switchyard.stack.processes import free_port, is_running, process_tree, stop_processes
from switchyard.stack.state import StackPaths, StackState, read_stack
from tests.commands import run_module

SERVICE = "sample"
FLEET_FILE = REPO_ROOT / "deployments" / "fleet.yaml"
UP_TIMEOUT_S = 240.0

# Short windows for every test release (the session fleet in conftest.py and each stack): the
# emulator's metrics have one-second grains and test traffic is steady.
TEST_RELEASE_POLICY = {
    "analysis_window_s": 4,
    "check_interval_s": 0.1,
    "promoted_analysis_window_s": 2,
    "scale_down_delay_s": 1,
    "healthy_timeout_s": 60,
    "min_ready_s": 3,
    "split_tolerance": 0.15,
}
TEST_SLO = {"min_requests": 40, "min_latency_samples": 40, "min_cpu_samples": 1}

T = TypeVar("T")


def write_test_fleet(path: Path) -> dict[str, Any]:
    """fleet.yaml with free gateway ports for every service (stacks of other test files run beside
    this one) and a fast release policy; returns it."""
    fleet = yaml.safe_load(FLEET_FILE.read_text())
    for service in fleet["services"].values():
        service["frontend_ports"] = {
            environment: {"production": free_port(), "test": free_port()} for environment in service["frontend_ports"]
        }
    for environment in fleet["environments"].values():
        if environment.get("soak_s"):
            environment["soak_s"] = 1  # still watched, briefly
    for policy in fleet["release_policies"].values():
        policy.update(TEST_RELEASE_POLICY)
        policy["slo"] = {**policy["slo"], **TEST_SLO}
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return fleet


def stack_command(*args: str, timeout_s: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`python -m switchyard.stack.cli ARGS` (what `switchyard up/down` run), output captured."""
    return run_module("switchyard.stack.cli", *args, timeout_s=timeout_s)


@dataclass
class Stack:
    state_dir: Path
    fleet_file: Path
    fleet: dict[str, Any]
    port: int
    up_output: str = ""

    @property
    def state(self) -> StackState:
        state = read_stack(StackPaths(state_dir=self.state_dir))
        assert state is not None, f"no stack.json in {self.state_dir}"
        return state

    @property
    def api_url(self) -> str:
        return self.state.prefect_api_url

    def ports(self, environment: str) -> dict[str, int]:
        return dict(self.fleet["services"][SERVICE]["frontend_ports"][environment])

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return stack_command(
            "up", "--state-dir", str(self.state_dir), "--port", str(self.port), "--fleet", str(self.fleet_file), *extra
        )

    def down(self) -> subprocess.CompletedProcess[str]:
        return stack_command("down", "--state-dir", str(self.state_dir), timeout_s=120)

    def kill_leftovers(self) -> None:
        """Safety net after a failed test: stop whatever stack.json still names (our processes only)."""
        state = read_stack(StackPaths(state_dir=self.state_dir))
        if state is None:
            return
        trees = [process_tree(record) for record in state.processes.values() if is_running(record)]
        stop_processes(trees, grace_s=2.0)

    @contextmanager
    def client_settings(self) -> Iterator[None]:
        """This test process's Prefect client (run_deployment, flows, blocks) talks to the stack.

        Prefect's events worker is a process-wide singleton bound to the API it first sent to:
        it is drained on the way in and out, so that events (block loads, flow runs) of this
        stack and of the session's own Prefect server never reach the other one."""
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = self.api_url
        EventsWorker.drain_all(timeout=10)
        try:
            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                try:
                    yield
                finally:
                    EventsWorker.drain_all(timeout=10)
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def new_stack(directory: Path) -> Stack:
    fleet_file = directory / "fleet.yaml"
    fleet = write_test_fleet(fleet_file)
    return Stack(state_dir=directory / "state", fleet_file=fleet_file, fleet=fleet, port=free_port())


@contextmanager
def running_stack(directory: Path) -> Iterator[Stack]:
    """`up` (asserted to succeed), then `down` at the end; a failed test leaves nothing behind."""
    stack = new_stack(directory)
    try:
        result = stack.up()
        assert result.returncode == 0, f"switchyard up failed:\n{result.stdout}\n{result.stderr}"
        stack.up_output = result.stdout
        yield stack
    finally:
        stack.down()
        stack.kill_leftovers()


def start_run(deployment: str, parameters: dict[str, Any], timeout_s: float = 300) -> FlowRun:
    """What the UI's Run form does: a run of the deployment with these parameters, for the worker.
    Waits up to `timeout_s` for it to end (0: returns at once, the run scheduled)."""
    from prefect.deployments import run_deployment

    name = deployment if "/" in deployment else f"{deployment}/{deployment}"
    return cast(FlowRun, run_deployment(name, parameters=parameters, timeout=timeout_s))


def python_in_a_subprocess(code: str, log: Path) -> subprocess.Popen[bytes]:
    """Run Python `code` from the repository root in a session of its own (so a test can SIGKILL it
    and everything it started, as a dying worker would), its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.5) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


def release_events(step: str, service: str, environment: str, since: datetime) -> list[Event]:
    """`switchyard.release.<step>` events of a service in an environment since `since`, newest first."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter.model_validate({"since": since}),
                event=EventNameFilter(name=[f"switchyard.release.{step}"]),
                resource=EventResourceFilter(id=[f"switchyard.service.{service}.{environment}"]),
            ),
            limit=50,
        )
    return list(page.events)


def deployment_runs(deployment: str) -> list[FlowRun]:
    """Flow runs of a deployment (by deployment name), newest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )


def flow_run(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def finished_run(run_id: UUID) -> FlowRun | None:
    """The run once it is in a final state; None while it still runs (a probe for `wait_for`)."""
    current = flow_run(run_id)
    return current if current.state is not None and current.state.is_final() else None


def all_flow_runs() -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=200)


def service_observation(environment: str, service: str = SERVICE, *, with_health: bool = True) -> ServiceObservation:
    """A service (default: the sample) as the cloud adapter sees it (blocks read from the Prefect
    server the test talks to: a stack's, or the session's)."""
    from blocks import load_environment, load_service
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.config import ServiceContext

    context = ServiceContext(environment=load_environment(environment), service=load_service(service))
    return cloud_for(context).observe(context.topology, with_health=with_health)


def live_image(environment: str, service: str = SERVICE) -> str | None:
    """The image the live color of `service` runs in `environment` (None: a mix of versions)."""
    observed = service_observation(environment, service, with_health=False)
    assert observed.live_color is not None, f"{service} is not live in {environment}"
    return observed.scale_set(observed.live_color).runs_only


def live_processes_of(pids: list[int], start_ticks: dict[int, int]) -> list[int]:
    """Which of these processes still run (zombies and reused pids do not count)."""
    from switchyard.stack.processes import proc_stat

    alive = []
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None and stat.state not in ("Z", "X") and stat.start_ticks == start_ticks[pid]:
            alive.append(pid)
    return alive


def artifacts(key: str) -> list[Any]:
    """Every version of the artifact with this key, newest first."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


def published_image(app_version: str, environment: str = "staging") -> str:
    """The gallery version of `sample` at `app_version` (read from the gallery, newest first)."""
    from blocks import load_environment, load_service
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.config import ServiceContext
    from switchyard.core.versions import ImageVersion

    context = ServiceContext(environment=load_environment(environment), service=load_service(SERVICE))
    versions = [v.gallery_version for v in cloud_for(context).gallery.image_versions(SERVICE) if v.exists]
    matching = [v for v in versions if str(ImageVersion.from_gallery_version(v).app_version) == app_version]
    assert matching, f"no image of {SERVICE} {app_version} in the gallery: {versions}"
    return max(matching, key=lambda v: tuple(int(p) for p in v.split(".")))


def build_images(*app_versions: str, commit: str, timeout_s: float = 300) -> dict[str, str]:
    """Run the image-pipeline deployment on the stack's worker, one run per app version, side by
    side; return app version -> published gallery version."""
    runs = {
        version: start_run(
            "image-pipeline", {"service": SERVICE, "app_version": version, "git_commit": commit}, timeout_s=0
        )
        for version in app_versions
    }
    for version, run in runs.items():
        done = wait_for(f"the image build of {version}", partial(finished_run, run.id), timeout_s)
        assert done.state is not None and done.state.is_completed(), f"image build {version}: {done.state}"
    return {version: published_image(version) for version in app_versions}


def build_image(app_version: str, commit: str, timeout_s: float = 300) -> str:
    """Run the image-pipeline deployment on the stack's worker; return the published gallery version."""
    return build_images(app_version, commit=commit, timeout_s=timeout_s)[app_version]


def autoscale_enabled(context: Any) -> dict[Any, bool]:
    """Which color's autoscale setting is enabled (`context`: a ServiceContext), read straight from
    Azure Monitor through the SDK, not through switchyard's adapter."""
    from switchyard.cloud.azure.clients import AzureClients
    from switchyard.core.topology import Color

    monitor = AzureClients(context.environment).monitor
    settings = {
        s.name: s for s in monitor.autoscale_settings.list_by_resource_group(context.environment.resource_group)
    }
    return {
        color: bool(settings[context.topology.autoscale_setting(color)].enabled)
        for color in Color
        if context.topology.autoscale_setting(color) in settings
    }


def switchyard(stack: Stack, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`switchyard ARGS` as a person runs it next to a running stack (found through its state dir)."""
    return run_module("switchyard.cli", *args, env={"SWITCHYARD_STATE_DIR": str(stack.state_dir)}, timeout_s=timeout_s)


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and 'File "' not in output, output[-3000:]
