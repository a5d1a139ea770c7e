"""The Azure adapter's warnings reach the flow run's log (what the Prefect UI shows), in a flow run
started with the environment the stack gives its workers and flow runs (client_environment)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL

from switchyard.stack.state import StackPaths, client_environment
from tests.prefect_test_server import prefect_test_server

FLOW_RUN = textwrap.dedent(
    """
    from prefect import flow, task
    from prefect.runtime import flow_run

    from switchyard.cloud.azure.pacing import ReadBudget


    @task
    def read_with_none_left() -> None:
        budget = ReadBudget()
        budget.told(0)  # what a 429 answers: the read waits its turn, and says so
        budget.take_turn()


    @flow
    def paced() -> str:
        read_with_none_left()
        return flow_run.get_id()


    print(paced())
    """
)


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    with prefect_test_server():
        yield str(PREFECT_API_URL.value())


def test_a_paced_read_warns_in_the_runs_log(api_url: str, tmp_path: Path, repo_root: Path) -> None:
    environment = client_environment(StackPaths(state_dir=tmp_path), api_url)
    finished = subprocess.run(
        [sys.executable, "-c", FLOW_RUN],
        env=environment,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    flow_run_id = UUID(finished.stdout.strip().splitlines()[-1])

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    warnings = [log.message for log in logs if log.name == "switchyard.cloud.azure.pacing"]
    assert len(warnings) == 1
    assert "reads left of this subscription's budget" in warnings[0]
