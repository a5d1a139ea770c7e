"""Fixtures for the gateway data plane tests (helpers live in gateway_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gateway_harness import Backend, BackendSet, start_backend_set


@pytest.fixture
def start_backends() -> Iterator[Callable[[int], BackendSet]]:
    """start_backends(n): n real backend processes b0..b(n-1); all killed after the test."""
    started: list[Backend] = []
    yield lambda count: start_backend_set(count, started)
    for backend in started:
        if backend.process.poll() is None:
            backend.kill()
