"""The canary watch rides over a few failed reads of the golden signals in a row, and no more; and
reads the access log (the scarce Log Analytics budget) less often than it looks."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from switchyard.cloud.errors import CloudError
from switchyard.core.analysis import AccessLogEntry, GoldenSignals
from tasks.canary import TELEMETRY_FAILURES_IN_A_ROW, AccessLogReads, BackgroundLogReads, TelemetryReads

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


class BlockedRead:
    """An access log query that answers (or fails) only when the test lets it, counting its calls."""

    def __init__(self, answer: list[AccessLogEntry] | CloudError) -> None:
        self.answer = answer
        self.released = threading.Event()
        self.calls = 0
        self.context_seen: list[str] = []

    def __call__(self) -> list[AccessLogEntry]:
        self.calls += 1
        self.context_seen.append(LOOK.get())
        if not self.released.wait(timeout=30):
            raise AssertionError("the test never released the read")
        if isinstance(self.answer, CloudError):
            raise self.answer
        return self.answer


LOOK: contextvars.ContextVar[str] = contextvars.ContextVar("look", default="no context")


def test_a_look_does_not_wait_for_a_slow_access_log_and_a_later_look_picks_it_up() -> None:
    """Log Analytics down or slow (a failing query is retried by the SDK for seconds) must not hold
    the looks that read the metrics, where a failing canary's errors are counted."""
    log = AccessLogReads(every_s=5.0)
    reads = TelemetryReads(lambda *args: None)
    background = BackgroundLogReads(log, reads, wait_s=0.01)
    slow = BlockedRead([entry(1)])
    read_to = T0 + timedelta(seconds=10)
    LOOK.set("the watch's run")
    try:
        assert log.due(read_to)  # never read: every look is due a read
        assert background.look(read_to, slow, read_to) is False  # returned while the query is still out
        assert background.look(read_to, slow, read_to) is False  # and never sends a second one meanwhile
        assert log.entries == [] and not log.holds(read_to)

        slow.released.set()
        # A later look (still due, but the read is still the one running) keeps what it read.
        assert any(background.look(read_to, slow, read_to) for _ in range(3000))
    finally:
        background.close()

    assert slow.calls == 1
    assert slow.context_seen == ["the watch's run"]  # run with the look's context (Prefect's settings)
    assert log.entries == [entry(1)] and log.holds(read_to)


def test_a_failed_background_read_counts_as_a_failed_read_and_the_next_due_look_reads_again() -> None:
    log = AccessLogReads(every_s=5.0)
    warnings: list[tuple[Any, ...]] = []
    reads = TelemetryReads(lambda *args: warnings.append(args))
    background = BackgroundLogReads(log, reads, wait_s=30)
    try:
        for attempt in range(1, TELEMETRY_FAILURES_IN_A_ROW):
            failing_query = BlockedRead(CloudError("Log Analytics is down"))
            failing_query.released.set()
            assert background.look(T0, failing_query, T0) is False
            assert failing_query.calls == 1  # each due look sends one query again
            assert [w[2] for w in warnings][-1] == attempt  # counted in a row, as a read in the look was

        last = BlockedRead(CloudError("still down"))
        last.released.set()
        with pytest.raises(CloudError, match=r"\(the access log\) could not be read 4 times in a row; last: still"):
            background.look(T0, last, T0)
    finally:
        background.close()
    assert log.entries == [] and not log.holds(T0)
