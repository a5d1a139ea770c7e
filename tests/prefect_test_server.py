"""Prefect's test server for the integration tests, with this process's events going to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.events.worker import EventsWorker
from prefect.testing.utilities import prefect_test_harness


@contextmanager
def prefect_test_server() -> Iterator[None]:
    """Prefect's test harness: a server of its own on SQLite in a temporary folder, the API for
    everything in this process while it runs.

    Prefect's events worker is a process-wide singleton that keeps the API it was started with.
    pytest-xdist runs many test modules in one process, so one left running by an earlier module
    would send this module's events (flow-run states, switchyard's own) to a server that is gone:
    it is drained first. The harness drains it again on the way out."""
    EventsWorker.drain_all(timeout=10)
    with prefect_test_harness(server_startup_timeout=120):
        yield
