"""The canary watch rides over a few failed reads of the golden signals in a row, and no more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from switchyard.cloud.errors import CloudError
from switchyard.core.analysis import GoldenSignals
from tasks.canary import TELEMETRY_FAILURES_IN_A_ROW, TelemetryReads

SIGNALS = cast(GoldenSignals, object())  # what a read returns is passed through untouched


def failing(message: str) -> Callable[[], GoldenSignals]:
    def read() -> GoldenSignals:
        raise CloudError(message)

    return read


def test_failed_reads_short_of_the_limit_decide_nothing_and_are_kept_for_the_summary() -> None:
    warnings: list[tuple[Any, ...]] = []
    reads = TelemetryReads(lambda *args: warnings.append(args))

    for attempt in range(TELEMETRY_FAILURES_IN_A_ROW - 1):
        assert reads.read("the complete grains", failing(f"500 number {attempt}")) is None

    assert reads.read("the complete grains", lambda: SIGNALS) is SIGNALS
    assert reads.failed == [f"the complete grains: 500 number {n}" for n in range(TELEMETRY_FAILURES_IN_A_ROW - 1)]
    assert [w[2] for w in warnings] == list(range(1, TELEMETRY_FAILURES_IN_A_ROW))  # the count in a row, said


def test_a_read_that_works_starts_the_count_again() -> None:
    reads = TelemetryReads(lambda *args: None)
    for _ in range(3):
        for _ in range(TELEMETRY_FAILURES_IN_A_ROW - 1):
            assert reads.read("the grains still arriving", failing("throttled")) is None
        assert reads.read("the grains still arriving", lambda: SIGNALS) is SIGNALS
    assert len(reads.failed) == 3 * (TELEMETRY_FAILURES_IN_A_ROW - 1)


def test_the_limit_in_a_row_ends_the_analysis_with_the_last_error() -> None:
    reads = TelemetryReads(lambda *args: None)
    for _ in range(TELEMETRY_FAILURES_IN_A_ROW - 1):
        reads.read("the complete grains", failing("first ones"))

    with pytest.raises(
        CloudError, match=rf"could not be read {TELEMETRY_FAILURES_IN_A_ROW} times in a row; last: gone"
    ):
        reads.read("the complete grains", failing("gone"))


def test_an_error_that_is_not_the_clouds_is_not_ridden_over() -> None:
    """A bug in switchyard's own code must not pass for a flaky Azure Monitor."""
    reads = TelemetryReads(lambda *args: None)

    def broken() -> GoldenSignals:
        raise KeyError("p95")

    with pytest.raises(KeyError):
        reads.read("the complete grains", broken)
    assert reads.failed == []
