"""One Azure user's Log Analytics queries from several processes stay inside Azure's limit together.

A Prefect server (the test harness's, on a port of its own), an emulator that enforces Log
Analytics' 200 queries per user in 30 s, and two processes that each send 110 queries through
switchyard's clients, as two patch-services runs' canaries do from two workers: each is under
its own limit of 180, together they are 20 over Azure's. With the budget they share through
Prefect's rate limit (switchyard/cloud/shared_rate.py), none is throttled. The limit is created on
first use; one Prefect cannot pace by is reported and queries still go out.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from switchyard.cloud.shared_rate import (
    SHARED_QUERIES_PER_S,
    SHARED_QUERY_BURST,
    SharedQueryRate,
    log_query_limit_name,
)
from switchyard_emulator.testing import EmulatorHandle, free_port, run_emulator, set_throttling, throttling_status
from tests.prefect_test_server import prefect_test_server

REPO = Path(__file__).resolve().parents[3]
QUERIES_PER_PROCESS = 110  # two of them: 220, 20 over Log Analytics' 200 per user in 30 s


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_server():
        yield


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """This module's own: an emulator that throttles as Azure does, Log Analytics' queries included."""
    with run_emulator(tmp_path_factory.mktemp("shared-rate"), extra_args=["--arm-throttling"], storage=False) as handle:
        yield handle


def limit_named(name: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def create_limit(name: str, *, limit: int, decay: float, active: bool = True) -> None:
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay, active=active)
        )


def switchyard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What shared_rate.py said (Prefect's own acquisition service also logs, on a timeout)."""
    return [record.getMessage() for record in caplog.records if record.name == "switchyard.cloud.shared_rate"]


def burst_processes(emulator: EmulatorHandle, count: int, *, shared: bool) -> list[dict[str, Any]]:
    """`count` processes, each QUERIES_PER_PROCESS queries at once: what each reports."""
    environment = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    command = [
        sys.executable,
        "-m",
        "tests.integration.cloud.query_burst_process",
        str(emulator.state_dir / "emulator.json"),
        str(QUERIES_PER_PROCESS),
        *(["--shared"] if shared else []),
    ]
    processes = [
        subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_two_processes_of_one_user_share_the_budget_and_none_of_their_queries_is_throttled(
    emulator: EmulatorHandle,
) -> None:
    assert set_throttling(emulator.state_dir / "emulator.json", enforced=True)["enforced"]

    reports = burst_processes(emulator, 2, shared=True)

    assert [report["errors"] for report in reports] == [[], []]
    counts = throttling_status(emulator.state_dir / "emulator.json")["log_queries"]
    assert counts["throttled"] == {"rate": 0, "queue_full": 0, "queue_timeout": 0}
    assert counts["admitted"] == 2 * QUERIES_PER_PROCESS
    # Each process is under its own limit of 180: only the shared budget held them back.
    assert sum(report["shared_wait_s"] for report in reports) > 0


def test_a_missing_budget_is_created_with_room_for_180_queries_in_30_seconds() -> None:
    name = log_query_limit_name("https://logs.example sp-created")
    rate = SharedQueryRate(name)

    rate.take_turn()

    created = limit_named(name)
    assert (created.limit, created.slot_decay_per_second, created.active) == (
        SHARED_QUERY_BURST,
        SHARED_QUERIES_PER_S,
        True,
    )
    assert created.limit + 30 * created.slot_decay_per_second == 180


def test_a_budget_a_team_set_lower_is_used_as_it_is() -> None:
    name = log_query_limit_name("https://logs.example sp-lower")
    # A slot decays every 5 s: on a loaded machine the first five turns (HTTP calls to the Prefect
    # server) have taken over a second, and at one a second a slot had already decayed by the sixth.
    create_limit(name, limit=5, decay=0.2)
    rate = SharedQueryRate(name)

    for _ in range(5):
        rate.take_turn()

    assert (limit_named(name).limit, limit_named(name).slot_decay_per_second) == (5, 0.2)
    assert rate.take_turn() > 0.2  # the sixth waits for a slot to decay (up to five seconds)


@pytest.mark.parametrize(
    ("decay", "active", "said"),
    [(0.0, True, "has no slot decay"), (5.0, False, "is inactive")],
)
def test_a_budget_prefect_cannot_pace_by_is_reported_and_queries_go_out_paced_by_their_process(
    decay: float, active: bool, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = log_query_limit_name(f"https://logs.example sp-{decay}-{active}")
    create_limit(name, limit=1, decay=decay, active=active)
    rate = SharedQueryRate(name)

    with caplog.at_level(logging.WARNING, logger="switchyard.cloud.shared_rate"):
        waits = [rate.take_turn() for _ in range(3)]  # a one-slot limit would hold the second back

    assert waits == [0.0, 0.0, 0.0]
    warnings = switchyard_warnings(caplog)
    assert len(warnings) == 1 and said in warnings[0]
    assert f"prefect global-concurrency-limit update {name} --slot-decay-per-second 5 --enable" in warnings[0]
    found = limit_named(name)
    assert (found.limit, found.slot_decay_per_second, found.active) == (1, decay, active)  # left as it is


def test_without_a_prefect_server_to_ask_queries_go_out_and_the_server_is_asked_again_a_minute_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    rate = SharedQueryRate(log_query_limit_name("https://logs.example sp-no-server"), clock=lambda: now[0])
    gone = f"http://127.0.0.1:{free_port()}/api"

    with (
        temporary_settings({PREFECT_API_URL: gone, PREFECT_CLIENT_MAX_RETRIES: 0}),
        caplog.at_level(logging.WARNING, logger="switchyard.cloud.shared_rate"),
    ):
        first = [rate.take_turn() for _ in range(3)]
        now[0] = 61.0
        rate.take_turn()

    assert first == [0.0, 0.0, 0.0]
    warnings = switchyard_warnings(caplog)
    # Asked once, then not again until a minute later (each ask of a dead server costs its retries).
    assert len(warnings) == 2 and all("could not read the Log Analytics query budget" in w for w in warnings)


def test_a_query_that_waits_too_long_for_the_budget_goes_out_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    name = log_query_limit_name("https://logs.example sp-taken")
    create_limit(name, limit=1, decay=0.01)  # a slot every 100 s: taken by the first query
    rate = SharedQueryRate(name, wait_s=1.0)

    with caplog.at_level(logging.WARNING, logger="switchyard.cloud.shared_rate"):
        rate.take_turn()
        waited = rate.take_turn()

    assert waited >= 1.0
    warnings = switchyard_warnings(caplog)
    assert len(warnings) == 1 and "stayed taken for 1 s: this query goes out paced by this process alone" in warnings[0]


def test_the_first_queries_of_many_threads_ask_the_server_once(caplog: pytest.LogCaptureFixture) -> None:
    name = log_query_limit_name("https://logs.example sp-threads")
    create_limit(name, limit=1, decay=0.0)  # a limit Prefect cannot pace by: each ask would warn
    rate = SharedQueryRate(name)

    with caplog.at_level(logging.WARNING, logger="switchyard.cloud.shared_rate"), ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: rate.take_turn(), range(8)))

    assert waits == [0.0] * 8
    warnings = switchyard_warnings(caplog)
    assert len(warnings) == 1 and "has no slot decay" in warnings[0]
