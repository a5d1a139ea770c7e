"""The release history waits for Prefect to record the steps of a run that ended moments ago, and
never for a report of a past period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun

from tasks.history import TASK_RUNS_SETTLE, settle_wait_s

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


def _ended(ago_s: float) -> FlowRun:
    return FlowRun(flow_id=uuid4(), end_time=NOW - timedelta(seconds=ago_s))


def test_a_run_that_ended_a_second_ago_is_read_once_it_has_settled() -> None:
    wait = settle_wait_s([_ended(3600), _ended(1.0)], NOW)
    assert wait == pytest.approx(TASK_RUNS_SETTLE.total_seconds() - 1.0)


def test_runs_that_ended_long_enough_ago_are_read_at_once() -> None:
    assert settle_wait_s([_ended(TASK_RUNS_SETTLE.total_seconds()), _ended(86_400)], NOW) == 0.0


def test_no_runs_no_wait() -> None:
    assert settle_wait_s([], NOW) == 0.0
