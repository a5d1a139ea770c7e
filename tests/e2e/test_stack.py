"""`switchyard up` and `switchyard down` for real: the emulator, a Prefect server with its UI, the
blocks, the sample service's topologies, prefect.yaml's deployments and a worker, as processes on
this machine. The tests drive them the way a person does: the commands, the API behind the UI's
forms (run_deployment), Git hosts' merge webhooks through the merge relay, and the process table
afterwards.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from azure.mgmt.resource.resources import ResourceManagementClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.server.schemas.schedules import CronSchedule
from prefect.states import Cancelling
from prefect.workers.process import ProcessWorker
from pydantic import ValidationError

from blocks import ALL_BLOCKS, AzureEnvironmentBlock, ServiceBlock, known_names
from switchyard.checkout import PREFECT_FILE, REPO_ROOT, checkout_fleet
from switchyard.core.topology import Topology
from switchyard.stack.processes import ProcStat, port_is_free, proc_stat
from switchyard.stack.state import WORK_POOL, WORKER_NAME, StackPaths, read_stack
from switchyard.stack.up import flow_run_command
from switchyard_emulator.testing import StaticTokenCredential
from tests.e2e.repo_commits import COMMITTED_AT, changed_commit, head_commit, labelled_commit, merge_commit
from tests.e2e.stack_support import (
    SERVICE,
    Stack,
    all_flow_runs,
    artifacts,
    build_image,
    deployment_runs,
    flow_run,
    live_processes_of,
    new_stack,
    service_observation,
    start_run,
    wait_for,
)
from tests.integration.relay.relay_support import SECRET, gitlab_merge_request, push, running_relay

pytestmark = pytest.mark.e2e

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
DEPLOYMENTS = {
    "image-pipeline",
    "provision",
    "release",
    "rollback",
    "monthly-patch",
    "patch-services",
    "release-on-merge",
    "weekly-report",
    "retire-idle-colors",
    "fleet-status",
    "guard",
    "set-flag",
}
COMMIT = labelled_commit("stack")
# What the Git hosts call this repository in the merge webhooks (the relay routes any name to this checkout).
REPOSITORY = "acme/switchyard"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Not started: the first test starts it (from cold), the last one stops it."""
    stack = new_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        stack.down()
        stack.kill_leftovers()


def patch_thursday(year: int, month: int) -> date:
    """Independently of cron: the 2nd Tuesday of the month (Patch Tuesday) plus two days."""
    tuesdays = [d for d in calendar.Calendar().itermonthdates(year, month) if d.month == month and d.weekday() == 1]
    return tuesdays[1] + timedelta(days=2)


def test_up_from_cold_starts_everything_and_up_again_changes_nothing(stack: Stack) -> None:
    started = time.monotonic()
    first = stack.up()
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"switchyard up from cold took {took:.1f} s")  # the speed target lives in the report, not here
    state = stack.state
    assert f"Prefect UI: http://127.0.0.1:{stack.port}" in first.stdout
    assert state.prefect_api_url == f"http://127.0.0.1:{stack.port}/api"
    assert Path(state.emulator_file) == stack.state_dir / "emulator" / "emulator.json"
    assert set(state.pids) == {"azurite", "emulator", "prefect_server", "worker"}
    # Azurite's account: its name and key in the state dir only, readable by the owner only, and the
    # key nowhere else (not in stack.json, a command line or a log)
    storage = json.loads((stack.state_dir / "azurite" / "storage.json").read_text())
    key = storage["accounts"][0]["key"]
    for private in ("storage.json", "account.json"):
        assert (stack.state_dir / "azurite" / private).stat().st_mode & 0o777 == 0o600
    assert key not in (stack.state_dir / "stack.json").read_text()
    assert all(key not in " ".join(record.argv) for record in state.processes.values())
    for log in (stack.state_dir / "logs").glob("*.log"):
        assert key not in log.read_text(errors="replace"), log
    for name, record in state.processes.items():
        stat = proc_stat(record.pid)
        assert stat is not None and stat.state != "Z", f"{name} is not running"
        assert stat.pgrp == record.pid, f"{name} is not the leader of its own process group"

    # Everything answers: the Prefect API and UI, the emulator's ARM API (with the sample topologies).
    assert httpx.get(f"{state.prefect_api_url}/health", timeout=5).json() is True
    assert "<html" in httpx.get(state.ui_url, timeout=5).text.lower()
    emulator = json.loads(Path(state.emulator_file).read_text())
    resources = ResourceManagementClient(
        StaticTokenCredential(emulator["token"]),
        emulator["subscription_id"],
        base_url=emulator["endpoint"],
        connection_verify=emulator["ca_bundle"],
    )
    with resources:
        groups = {group.name for group in resources.resource_groups.list()}
    assert {"switchyard-staging", "switchyard-production"} <= groups
    assert emulator["storage_accounts"] == [storage["accounts"][0]["name"]]
    with stack.client_settings(), get_client(sync_client=True) as client:
        assert {d.name for d in client.read_deployments()} == DEPLOYMENTS
        pool = client.read_work_pool(WORK_POOL)
        assert pool.type == "process"
        # flow runs start as Prefect's engine under the stack's interpreter (no workspace supervisor)
        assert pool.base_job_template["variables"]["properties"]["command"]["default"] == flow_run_command()
        workers = client.read_workers_for_work_pool(WORK_POOL)
        assert [w.status.value for w in workers if w.name == WORKER_NAME] == ["ONLINE"]
        automations = {a.name: a for a in client.read_automations()}
        assert automations["release-guard"].enabled and automations["release-on-merge"].enabled
        # every service of the fleet file, each on a topology of its own in each environment
        assert set(known_names(ServiceBlock)) == set(stack.fleet["services"]) == {SERVICE, "catalog"}
        for service in stack.fleet["services"]:
            for environment in ("staging", "production"):
                gateway = service_observation(environment, service).gateway
                assert gateway.exists and gateway.live_color is not None, (
                    f"{service} is not provisioned in {environment}"
                )
                assert gateway.name == Topology(service=service, environment=environment).gateway
    runs_before = len(_all_runs(stack))
    stack_file_before = (stack.state_dir / "stack.json").read_bytes()
    # The pool as an older switchyard left it (Prefect's default template): up brings it up to date.
    with stack.client_settings(), get_client(sync_client=True) as client:
        client.update_work_pool(
            WORK_POOL, WorkPoolUpdate(base_job_template=ProcessWorker.get_default_base_job_template())
        )

    second = stack.up()

    assert second.returncode == 0, second.stdout + second.stderr
    for what in (
        "Azurite already running",
        "emulator already running",
        "Prefect server already running",
        "worker already running",
    ):
        assert what in second.stdout
    assert "nothing changed" in second.stdout
    assert f"work pool {WORK_POOL} updated" in second.stdout
    with stack.client_settings(), get_client(sync_client=True) as client:
        template = client.read_work_pool(WORK_POOL).base_job_template
        assert template["variables"]["properties"]["command"]["default"] == flow_run_command()
    assert (stack.state_dir / "stack.json").read_bytes() == stack_file_before
    assert len(_all_runs(stack)) == runs_before  # no provisioning ran again


def test_the_block_types_register_with_the_prefect_cli_and_refuse_invalid_values(stack: Stack) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        cwd=REPO_ROOT,
        env={**environment, "PREFECT_API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Successfully registered {len(ALL_BLOCKS)} blocks" in result.stdout
    with stack.client_settings(), get_client(sync_client=True) as client:
        for block in ALL_BLOCKS:
            registered = client.read_block_type_by_slug(block.get_block_type_slug())
            schema = client.get_most_recent_block_schema_for_block_type(registered.id)
            assert schema is not None and set(block.model_fields) <= set(schema.fields["properties"])
        azure = client.read_block_type_by_slug("switchyard-azure-environment")
        schema = client.get_most_recent_block_schema_for_block_type(azure.id)
        assert schema is not None and schema.fields["secret_fields"] == ["client_secret"]

    # What the UI's block form sends is validated by the same models: one bad field, named.
    fleet = checkout_fleet()
    for block, valid, field, bad in (
        (ServiceBlock, fleet.services[SERVICE], "capacity", 0),
        (AzureEnvironmentBlock, fleet.environments["production"], "location", "West Europe"),
    ):
        with pytest.raises(ValidationError) as refused:
            block.model_validate({**valid.model_dump(), field: bad})
        [error] = refused.value.errors()
        assert error["loc"] == (field,), error


def _all_runs(stack: Stack) -> list[FlowRun]:
    """Flow runs anything started (the server's own scheduler adds runs of schedules: not those)."""
    with stack.client_settings():
        return [run for run in all_flow_runs() if "auto-scheduled" not in run.tags]


def test_monthly_patch_runs_on_the_thursday_after_patch_tuesday(stack: Stack) -> None:
    """Computed by Prefect's own schedule code from prefect.yaml, and scheduled by the stack's server."""
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    (monthly,) = deployments["monthly-patch"]["schedules"]
    schedule = CronSchedule(cron=monthly["cron"], timezone=monthly["timezone"], day_or=monthly["day_or"])
    # Two years, across daylight-saving changes, starting from a month whose Thursday has passed.
    dates = asyncio.run(schedule.get_dates(24, start=datetime(2026, 11, 20, tzinfo=UTC)))
    expected = [(2026 + (11 + i) // 12, (11 + i) % 12 + 1) for i in range(24)]
    assert [(d.year, d.month) for d in dates] == expected
    for run_at in dates:
        local = run_at.astimezone(AMSTERDAM)
        assert local.date() == patch_thursday(local.year, local.month), f"{local} is not the Thursday after"
        assert (local.hour, local.minute) == (3, 0)
    (weekly,) = deployments["weekly-report"]["schedules"]
    assert weekly["timezone"] == "Europe/Amsterdam"

    # The running server scheduled the same dates (it creates the next runs of active schedules).
    with stack.client_settings():
        scheduled = wait_for("scheduled monthly-patch runs", lambda: deployment_runs("monthly-patch"), timeout_s=60)
        weekly_runs = wait_for("scheduled weekly-report runs", lambda: deployment_runs("weekly-report"), timeout_s=60)
    for run in scheduled:
        assert run.state_type == StateType.SCHEDULED and run.expected_start_time is not None
        local = run.expected_start_time.astimezone(AMSTERDAM)
        assert local.date() == patch_thursday(local.year, local.month) and (local.hour, local.minute) == (3, 0)
    for run in weekly_runs:
        assert run.expected_start_time is not None
        local = run.expected_start_time.astimezone(AMSTERDAM)
        assert (local.weekday(), local.hour, local.minute) == (0, 7, 0)


def test_a_release_started_from_the_deployment_runs_on_the_worker_and_finishes(stack: Stack) -> None:
    with stack.client_settings():
        image = build_image("1.0.0", COMMIT)
        # What the UI's "Run" form does: create a run of the deployment with the form's parameters.
        released = start_run("release", {"service": SERVICE, "environment": "staging", "image_version": image})
        assert released.state is not None and released.state.is_completed(), released.state
        assert released.work_pool_name == WORK_POOL
        assert released.infrastructure_pid, "the run did not run in a worker's process"
        observed = service_observation("staging")
        assert observed.live_color is not None and observed.scale_set(observed.live_color).runs_only == image
        (summary, *_) = artifacts(f"release-{SERVICE}-staging")
        assert summary.flow_run_id == released.id
        assert f"Release of {SERVICE} {image} to staging: **PROMOTED**" in str(summary.data)


@pytest.fixture
def started(stack: Stack) -> Stack:
    """The stack the first test started; started here when that test was not selected (`-k`)."""
    if read_stack(StackPaths(state_dir=stack.state_dir)) is None:
        result = stack.up()
        assert result.returncode == 0, result.stdout + result.stderr
    return stack


@pytest.mark.timeout(600)  # `up` from cold, when this test runs on its own
def test_github_and_gitlab_merges_start_release_on_merge_through_the_relay(started: Stack, tmp_path: Path) -> None:
    """Issue 14: `switchyard relay`, started as docs/relay.md says (the webhook secret in its
    environment, no --config: it routes this checkout's services) and pointed at the stack's Prefect
    API, receives a signed GitHub push and a merged GitLab merge request over HTTP, for two commits
    of this repository that each bump the sample's version; the stack's automation starts one
    release-on-merge run for each, with the service, the version at that commit and the commit."""
    stack = started
    version_file = f"apps/{SERVICE}/VERSION"
    main = head_commit()
    # GitHub: a push to main of a commit that bumps the sample to 1.1.0.
    pushed = changed_commit("relay-github-push", main, {version_file: "1.1.0\n"})
    # GitLab: then a merge request, a feature branch bumping it to 1.2.0, merged into main with a merge commit.
    feature = changed_commit("relay-gitlab-feature", pushed, {version_file: "1.2.0\n"})
    merged = merge_commit("relay-gitlab-merge", pushed, feature)

    with running_relay(tmp_path / "relay", stack.api_url, None) as relay:
        github = relay.post(
            "/webhooks/github",
            push(pushed, [version_file], before=main, repository=REPOSITORY, timestamp="2026-11-26T10:30:00+01:00"),
        )
        assert github.status_code == 202, github.text
        assert _emitted(github) == [(SERVICE, "1.1.0", pushed)]
        with stack.client_settings():
            from_github = _release_on_merge_run(pushed)
            assert from_github.parameters["service"] == SERVICE
            assert from_github.parameters["app_version"] == "1.1.0"
            assert _committed_at(from_github) == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
            _cancel_once_the_worker_runs_it(from_github)

        merge_request = gitlab_merge_request(
            REPOSITORY, action="merge", state="merged", merge_commit_sha=merged, last_commit=feature
        )
        gitlab = relay.gitlab(merge_request, event="Merge Request Hook")
        assert gitlab.status_code == 202, gitlab.text
        assert _emitted(gitlab) == [(SERVICE, "1.2.0", merged)]
        with stack.client_settings():
            from_gitlab = _release_on_merge_run(merged)
            assert from_gitlab.parameters["service"] == SERVICE
            assert from_gitlab.parameters["app_version"] == "1.2.0"
            assert _committed_at(from_gitlab) == COMMITTED_AT  # the merge commit's own time, read by the relay
            _cancel_once_the_worker_runs_it(from_gitlab)

    with stack.client_settings():
        runs = deployment_runs("release-on-merge")
    assert sorted(run.parameters["git_commit"] for run in runs) == sorted([pushed, merged]), "one run per merge"
    # The shared secret (the HMAC key, the GitLab token) is in no log of the relay or the stack.
    assert relay.logs() and SECRET not in relay.logs()
    for log in (stack.state_dir / "logs").glob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log


def _emitted(answer: httpx.Response) -> list[tuple[str, str, str]]:
    """The merge events the relay says it emitted: (service, app version, commit)."""
    return [(event["service"], event["app_version"], event["commit"]) for event in answer.json()["events"]]


def _committed_at(run: FlowRun) -> datetime:
    return datetime.fromisoformat(str(run.parameters["committed_at"]))


def _release_on_merge_run(commit: str) -> FlowRun:
    """The release-on-merge run the stack's automation started for `commit`."""

    def of_the_commit() -> list[FlowRun]:
        return [run for run in deployment_runs("release-on-merge") if run.parameters.get("git_commit") == commit]

    (run,) = wait_for(f"a release-on-merge run of {commit[:12]}", of_the_commit, timeout_s=60)
    return run


def _cancel_once_the_worker_runs_it(run: FlowRun) -> None:
    """The worker picks the run up; then it is cancelled (a whole build and two releases is not this test)."""

    def picked_up() -> FlowRun | None:
        current = flow_run(run.id)
        return None if current.state_type in (StateType.SCHEDULED, StateType.PENDING) else current

    running = wait_for(f"the worker running release-on-merge of {run.parameters['git_commit'][:12]}", picked_up, 60)
    assert running.state_type in (StateType.RUNNING, StateType.COMPLETED), running.state  # a failed run says why
    assert running.infrastructure_pid
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    wait_for(
        "the cancelled run to stop",
        lambda: flow_run(run.id).state_type in (StateType.CANCELLED, StateType.COMPLETED),
        timeout_s=60,
    )


def test_down_stops_everything_up_started_and_leaves_no_process(stack: Stack) -> None:
    from switchyard.stack.processes import process_tree

    state = stack.state
    trees = {name: process_tree(record) for name, record in state.processes.items()}
    seen = {stat.pid: stat.start_ticks for tree in trees.values() for stat in tree}
    # the emulator runs the scale-set instances and the gateway worker: they are part of the stack
    assert len(trees["emulator"]) > 2, trees["emulator"]

    result = stack.down()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "none left" in result.stdout
    assert live_processes_of(list(seen), seen) == []
    for record in state.processes.values():
        members = [p for p in _group_members(record.pid) if p.state not in ("Z", "X")]
        assert members == [], f"process group {record.pid} still has {members}"
    assert not (stack.state_dir / "stack.json").exists()
    assert port_is_free(stack.port)
    for environment in ("staging", "production"):
        for port in stack.ports(environment).values():
            assert port_is_free(port), f"gateway port {port} of {environment} is still held"
    again = stack.down()
    assert again.returncode == 0 and "no stack to stop" in again.stdout


def _group_members(pgid: int) -> list[ProcStat]:
    from switchyard.stack.processes import _all_processes

    return [p for p in _all_processes() if p.pgrp == pgid]


def test_up_refuses_a_port_in_use_and_starts_nothing(tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.port))
        squatter.listen()
        result = stack.up()
    assert result.returncode == 1
    assert f"port {stack.port} on 127.0.0.1 is in use by another program" in result.stderr
    assert not (stack.state_dir / "stack.json").exists()
    assert not (stack.state_dir / "emulator" / "emulator.json").exists()


def test_up_stops_what_it_started_when_the_emulator_cannot_start(tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    emulator_dir = stack.state_dir / "emulator"
    emulator_dir.mkdir(parents=True)
    (emulator_dir / "arm.sqlite").write_bytes(b"this is not a database" * 100)
    try:
        result = stack.up()
        assert result.returncode == 1
        assert "the emulator exited with code" in result.stderr, result.stdout + result.stderr
        assert "stopping what this run started: prefect_server" in result.stdout
        assert not (stack.state_dir / "stack.json").exists()
        assert port_is_free(stack.port), "the Prefect server this run started is still listening"
        # no process of this stack survives: nothing runs with its Prefect home
        assert _processes_with_environment(f"PREFECT_HOME={stack.state_dir / 'prefect'}") == []
    finally:
        stack.kill_leftovers()


def _processes_with_environment(entry: str) -> list[int]:
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            environment = (pid_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = proc_stat(int(pid_dir.name))
        if entry.encode() in environment and stat is not None and stat.state not in ("Z", "X"):
            found.append(int(pid_dir.name))
    return found
