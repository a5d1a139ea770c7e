"""The one-slot locks on a real Prefect server: they keep two runs apart, and a limit that would not
(more than one slot, inactive) is refused with what to do instead of being used."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from flows.image_pipeline import image_build_lock
from tasks.locks import LockBusy, LockMisconfigured, ensure_lock, hold_lock, release_lock_or_preempt
from tests.prefect_test_server import prefect_test_server


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_server():
        yield


def _limit(name: str) -> tuple[int, bool]:
    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limit_by_name(name)
    return found.limit, found.active


def _create(name: str, limit: int, active: bool) -> None:
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, active=active))


def test_a_missing_lock_is_created_with_one_active_slot() -> None:
    ensure_lock("release:fresh:staging")
    assert _limit("release:fresh:staging") == (1, True)


@pytest.mark.parametrize(
    ("limit", "active", "said"),
    [(2, True, "it has 2 slots, not 1"), (1, False, "it is inactive"), (3, False, "3 slots, not 1 and it is inactive")],
)
def test_a_lock_that_would_not_exclude_a_second_run_is_refused_and_left_as_it_is(
    limit: int, active: bool, said: str
) -> None:
    name = f"release:loose-{limit}-{active}:staging".lower()
    _create(name, limit, active)
    with pytest.raises(LockMisconfigured) as refused, hold_lock(name, timeout_s=5):
        pytest.fail("a misconfigured lock was used")
    assert said in str(refused.value)
    assert f"prefect global-concurrency-limit update {name} --limit 1 --enable" in str(refused.value)
    assert _limit(name) == (limit, active)  # never silently "repaired": a person decides


@contextlib.contextmanager
def held_elsewhere(name: str) -> Iterator[None]:
    """`name` held by another holder (a thread here, another run's process in life) until the block ends."""
    holding, done = threading.Event(), threading.Event()

    def other() -> None:
        with hold_lock(name, timeout_s=10):
            holding.set()
            done.wait(30)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert holding.wait(30)
        yield
    finally:
        done.set()
        thread.join(30)


def test_a_second_holder_waits_then_is_told_who_held_it() -> None:
    name = image_build_lock("sample")
    with held_elsewhere(name):
        started = time.monotonic()
        busy = f"lock {name} was held by another run for more than 2 s"
        with pytest.raises(LockBusy, match=busy), hold_lock(name, timeout_s=2):
            pytest.fail("two holders of a one-slot lock")
        assert time.monotonic() - started >= 2
    with hold_lock(name, timeout_s=10):  # free again once the first let go
        pass


def test_a_rollback_goes_ahead_without_the_lock_when_a_release_holds_it() -> None:
    name = "release:preempted:production"
    with held_elsewhere(name), release_lock_or_preempt(name, wait_s=1) as held:
        assert held is False
    with release_lock_or_preempt(name, wait_s=10) as held:
        assert held is True
