"""The stack beyond one worker: `switchyard up --database postgresql --workers 2`.

A real PostgreSQL (Debian's, started by the stack as the postgres user when we are root) holds the
Prefect server's data; two process workers, each taking one flow run at a time (--worker-limit 1,
so that a second run must go to the other worker), run what the tests start as deployment runs,
the way the UI's Run form and the schedules do. What a user would notice:

* the password of the stack's database is in one 0600 file and nowhere else;
* two services released at the same moment run side by side, on different workers;
* two releases of one service started together run on different workers too, and the release
  lock (a Prefect concurrency limit in the server's database) makes one wait for the other:
  their lock-holding spans, read back from the release events, do not overlap;
* the monthly patch started from its deployment fans its services out as patch-services runs on
  the workers, and reads each service's outcome back from Prefect.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun

from blocks import load_environment, load_service
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.versions import ImageVersion
from switchyard.stack.processes import free_port, proc_stat
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import (
    SERVICE,
    Stack,
    all_flow_runs,
    artifacts,
    finished_run,
    live_image,
    new_stack,
    release_events,
    start_run,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

TWIN = "twin"  # a second service: the sample app on its own ports
COMMIT = labelled_commit("scale")
RUN_TIMEOUT_S = 420.0


def _add_twin(stack: Stack) -> None:
    fleet = yaml.safe_load(stack.fleet_file.read_text())
    twin = dict(fleet["services"][SERVICE])
    twin["frontend_ports"] = {env: {"production": free_port(), "test": free_port()} for env in twin["frontend_ports"]}
    fleet["services"][TWIN] = twin
    fleet["image_recipes"][TWIN] = {"service": TWIN}
    stack.fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    stack.fleet = fleet


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not pytest's tmp_path: its directories let only their owner in, and PostgreSQL runs as the
    # postgres user when the tests run as root. /tmp lets anyone pass; this directory, too.
    directory = Path(tempfile.mkdtemp(prefix="switchyard-scale-", dir="/tmp"))
    directory.chmod(0o711)
    stack = new_stack(directory)
    _add_twin(stack)
    try:
        result = stack.up("--database", "postgresql", "--workers", "2", "--worker-limit", "1")
        assert result.returncode == 0, f"switchyard up failed:\n{result.stdout}\n{result.stderr}"
        stack.up_output = result.stdout + result.stderr
        yield stack
    finally:
        stack.down()
        stack.kill_leftovers()
        shutil.rmtree(directory, ignore_errors=True)


def _gallery_version(service: str, app_version: str) -> str:
    context = ServiceContext(environment=load_environment("staging"), service=load_service(service))
    versions = [v.gallery_version for v in cloud_for(context).gallery.image_versions(service) if v.exists]
    matching = [v for v in versions if str(ImageVersion.from_gallery_version(v).app_version) == app_version]
    assert matching, f"no image of {service} {app_version} in the gallery: {versions}"
    return max(matching, key=lambda v: tuple(int(p) for p in v.split(".")))


def _wait_all(runs: dict[str, FlowRun], timeout_s: float = RUN_TIMEOUT_S) -> dict[str, FlowRun]:
    done = {name: wait_for(f"run {name}", partial(finished_run, run.id), timeout_s) for name, run in runs.items()}
    for name, run in done.items():
        assert run.state is not None and run.state.is_completed(), f"{name}: {run.state}"
    return done


def _worker_of(stack: Stack, run: FlowRun) -> str:
    """Which worker took the run, from the workers' own logs (STATE/logs/worker*.log). Two workers
    polling at once may both start to submit a run; the server lets one move it to Pending, and the
    other logs that it aborted its submission."""
    found = set()
    for log in (stack.state_dir / "logs").glob("worker*.log"):
        text = log.read_text()
        if f"Aborted submission of flow run '{run.id}'" in text:
            continue
        for match in re.finditer(r"Worker '([^']+)' submitting flow run '([0-9a-f-]+)'", text):
            if match.group(2) == str(run.id):
                found.add(match.group(1))
    assert len(found) == 1, f"run {run.id} was submitted by {found or 'no worker'}"
    return found.pop()


def _overlap(first: FlowRun, second: FlowRun) -> float:
    """Seconds both runs were running at once."""
    assert first.start_time and first.end_time and second.start_time and second.end_time
    start = max(first.start_time, second.start_time)
    end = min(first.end_time, second.end_time)
    return max(0.0, (end - start).total_seconds())


@pytest.fixture(scope="module")
def images(stack: Stack) -> dict[tuple[str, str], str]:
    """twin provisioned in staging (on a worker, as a deployment run), and the images the tests
    release: (service, app version) -> gallery version. Builds of different services run side by side."""
    with stack.client_settings():
        _wait_all({"provision twin": start_run("provision", {"service": TWIN, "environment": "staging"}, 0)})
        wanted = [(SERVICE, "1.0.0"), (TWIN, "1.0.0"), (SERVICE, "1.1.0"), (SERVICE, "1.2.0")]
        builds = {
            f"{service} {version}": start_run(
                "image-pipeline", {"service": service, "app_version": version, "git_commit": COMMIT}, timeout_s=0
            )
            for service, version in wanted
        }
        _wait_all(builds)
        return {(service, version): _gallery_version(service, version) for service, version in wanted}


def test_the_prefect_server_keeps_its_data_in_the_stacks_own_postgresql_whose_password_is_nowhere_else(
    stack: Stack,
) -> None:
    state = stack.state
    database = state.database
    assert database.kind == "postgresql" and database.url is not None and database.passfile is not None
    assert database.url.startswith("postgresql+asyncpg://switchyard@127.0.0.1:")
    passfile = Path(database.passfile)
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    password = passfile.read_text().strip().split(":", 4)[4]
    assert len(password) >= 24

    # PostgreSQL runs as its own process group, as the postgres user when we are root, and the
    # Prefect server's environment names the database without the password.
    postgres = state.processes["postgres"]
    assert proc_stat(postgres.pid) is not None
    owner = Path(f"/proc/{postgres.pid}").stat().st_uid
    assert owner == (pwd_uid("postgres") if os.geteuid() == 0 else os.geteuid())
    server_env = Path(f"/proc/{state.processes['prefect_server'].pid}/environ").read_bytes().split(b"\0")
    assert f"PREFECT_API_DATABASE_CONNECTION_URL={database.url}".encode() in server_env
    assert not any(password.encode() in entry for entry in server_env)

    # The password appears in no file of the state directory but its pgpass (the data directory
    # is PostgreSQL's: it keeps a hash), and not in what `up` printed.
    assert password not in stack.up_output
    for path in stack.state_dir.rglob("*"):
        if path.is_file() and path != passfile and "postgres/data" not in str(path):
            assert password.encode() not in path.read_bytes(), f"the database password is in {path}"

    # Prefect's tables are in that database: the deployments `up` created are rows there.
    async def deployments() -> list[str]:
        port = database.port
        connection = await asyncpg.connect(
            host="127.0.0.1", port=port, user="switchyard", password=password, database="prefect"
        )
        try:
            return [row["name"] for row in await connection.fetch("SELECT name FROM deployment")]
        finally:
            await connection.close()

    assert {"release", "image-pipeline", "monthly-patch"} <= set(asyncio.run(deployments()))


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_two_services_released_at_once_run_side_by_side_on_different_workers(
    stack: Stack, images: dict[tuple[str, str], str]
) -> None:
    with stack.client_settings():
        runs = {
            service: start_run(
                "release",
                {"service": service, "environment": "staging", "image_version": images[(service, "1.0.0")]},
                timeout_s=0,
            )
            for service in (SERVICE, TWIN)
        }
        done = _wait_all(runs)
        for service in (SERVICE, TWIN):
            (summary, *_) = artifacts(f"release-{service}-staging")
            assert summary.flow_run_id == done[service].id
            assert "**PROMOTED**" in str(summary.data)
    workers = {service: _worker_of(stack, run) for service, run in done.items()}
    assert workers[SERVICE] != workers[TWIN], workers
    assert _overlap(done[SERVICE], done[TWIN]) > 5, "the two releases did not run at the same time"


def test_two_releases_of_one_service_started_together_take_turns_across_workers(
    stack: Stack, images: dict[tuple[str, str], str]
) -> None:
    since = datetime.now(UTC)
    # 1.0.0 is live in staging after the previous test: 1.1.0 and 1.2.0 both change the service,
    # whichever gets the lock first.
    first, second = images[(SERVICE, "1.1.0")], images[(SERVICE, "1.2.0")]
    with stack.client_settings():
        runs = {
            image: start_run(
                "release",
                # blue-green: a canary would need traffic, and what is tested here is the lock
                {
                    "service": SERVICE,
                    "environment": "staging",
                    "image_version": image,
                    "strategy": "blue-green",
                    "lock_timeout_s": 600,
                },
                timeout_s=0,
            )
            for image in (first, second)
        }
        done = _wait_all(runs)
        assert _worker_of(stack, done[first]) != _worker_of(stack, done[second])
        assert _overlap(done[first], done[second]) > 3, "the second release did not run while the first held the lock"

        # The lock's holder is the run between its first heartbeat and its `finished`: one after the other.
        def spans() -> dict[str, tuple[datetime, datetime]] | None:
            beats = release_events("heartbeat", SERVICE, "staging", since)
            ends = release_events("finished", SERVICE, "staging", since)
            found: dict[str, tuple[datetime, datetime]] = {}
            for image in (first, second):
                starts = [e.occurred for e in beats if _image(e) == image]
                finished = [e.occurred for e in ends if _image(e) == image]
                if not starts or not finished:
                    return None
                found[image] = (min(starts), max(finished))
            return found

        held = wait_for("both releases' heartbeats and finished events", spans, timeout_s=60)
    (_, a_end), (b_start, _) = sorted(held.values())
    assert a_end <= b_start, f"two releases of {SERVICE} held the lock at once: {held}"


def test_the_monthly_patch_from_its_deployment_patches_each_service_in_a_run_on_the_workers(
    stack: Stack, images: dict[tuple[str, str], str]
) -> None:
    """Both services are live in staging after the tests above. A monthly patch whose only (and so
    last) environment is staging rebuilds what each runs there and releases the rebuild to it; one
    service per patch-services run, so each step is two runs the workers take."""
    services = sorted([SERVICE, TWIN])
    since = datetime.now(UTC)
    with stack.client_settings():
        before = {service: _live_in_staging(service) for service in services}
        parameters = {"services": services, "environments": ["staging"], "services_per_run": 1}
        parent = start_run("monthly-patch", parameters, timeout_s=0)
        _wait_all({"monthly patch": parent}, timeout_s=900)

        children = {run.name: run for run in all_flow_runs() if run.start_time is not None and run.start_time >= since}
        expected = {f"patch-{step}-{service}": service for step in ("staging", "production") for service in services}
        assert set(expected) <= set(children), sorted(children)
        for name, service in expected.items():  # each a run of its own, on a worker, that ended well
            run = children[name]
            assert run.state is not None and run.state.is_completed(), f"{name}: {run.state}"
            assert run.parameters["services"] == [service]
            _worker_of(stack, run)
        (summary, *_) = artifacts("monthly-patch")
        assert summary.flow_run_id == parent.id
        for service in services:
            after = _live_in_staging(service)
            old, new = ImageVersion.from_gallery_version(before[service]), ImageVersion.from_gallery_version(after)
            # the same app on a newer patch revision of the month, live; the parent read it from the child
            assert new.app_version == old.app_version and new.patch_level > old.patch_level, (before, after)
            (outcome, *_) = artifacts(f"patch-{service}")
            assert outcome.flow_run_id == children[f"patch-production-{service}"].id
            assert f"| {service} | {before[service]} | {after} |" in str(summary.data)
            assert "**patched**" in str(summary.data)


def _live_in_staging(service: str) -> str:
    version = live_image("staging", service)
    assert version is not None, f"{service} runs a mix of versions in staging"
    return version


def _image(event: Any) -> str | None:
    payload = event.payload if isinstance(event.payload, dict) else {}
    image = payload.get("image")
    return str(image) if image is not None else None
