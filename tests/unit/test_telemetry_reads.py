"""The canary watch rides over a few failed reads of the golden signals in a row, and no more; and
reads the access log (the scarce Log Analytics budget) less often than it looks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from switchyard.cloud.errors import CloudError
from switchyard.core.analysis import AccessLogEntry, GoldenSignals
from tasks.canary import TELEMETRY_FAILURES_IN_A_ROW, AccessLogReads, TelemetryReads

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


def test_each_read_counts_its_own_failures_in_a_row() -> None:
    """Metrics that answer at every look must not hide an access log that never does: its complete
    grains would never be judged, and the watch would wait for ever."""
    reads = TelemetryReads(lambda *args: None)
    for _ in range(TELEMETRY_FAILURES_IN_A_ROW - 1):
        assert reads.read("the grains still arriving", lambda: SIGNALS) is SIGNALS
        assert reads.read("the access log", failing("Log Analytics is down")) is None

    assert reads.read("the grains still arriving", lambda: SIGNALS) is SIGNALS
    with pytest.raises(CloudError, match=r"\(the access log\) could not be read 4 times in a row"):
        reads.read("the access log", failing("Log Analytics is down"))


T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def entry(second: float) -> AccessLogEntry:
    return AccessLogEntry(at=T0 + timedelta(seconds=second), backend="10.0.0.4", latency_ms=12.0)


def test_the_access_log_is_read_as_grains_complete_and_otherwise_every_so_often() -> None:
    seconds = [0.0]  # the monotonic clock, moved by the test
    log = AccessLogReads(every_s=5.0, clock=lambda: seconds[0])
    assert log.due(complete_until=T0) and not log.holds(T0)  # never read

    log.keep([entry(1)], read_to=T0 + timedelta(seconds=10))
    seconds[0] = 1.0
    assert not log.due(complete_until=T0 + timedelta(seconds=10))  # the complete grains are all read
    assert log.holds(T0 + timedelta(seconds=10))
    assert log.entries == [entry(1)]  # looks in between judge with the entries read
    assert log.due(complete_until=T0 + timedelta(seconds=11))  # a grain completed past the read
    assert not log.holds(T0 + timedelta(seconds=11))
    seconds[0] = 5.0
    assert log.due(complete_until=T0)  # the grains still arriving, read again after every_s

    log.keep([entry(1), entry(11)], read_to=T0 + timedelta(seconds=12))
    assert not log.due(complete_until=T0 + timedelta(seconds=12))
    assert log.entries == [entry(1), entry(11)]
