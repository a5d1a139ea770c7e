"""Locks of one slot (Prefect global concurrency limits): one release per service and environment,
one image build per service.

The lock lives in the Prefect server, not in process memory, so it holds across workers and
machines; slots are leased, so a run that dies stops holding it when its lease runs out.

Releases, retirements and rollbacks of a service in an environment take the same lock; image
builds of a service take their own (flows/image_pipeline.py). A rollback never waits long for it: after
a few seconds it goes ahead without it (it pre-empts a running release, which stops at its next
step because the gateway then says its image was rolled back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

# A dead run's lock expires after this (Prefect's minimum lease); a live run renews it.
LOCK_LEASE_S = 60.0


class LockMisconfigured(RuntimeError):
    """The release lock exists but would not exclude a second run (more than one slot, or inactive)."""


class LockBusy(TimeoutError):
    """Someone else held the lock for longer than we were willing to wait."""


def ensure_lock(name: str) -> None:
    """Create the one-slot limit if it does not exist; two runs racing to create it both succeed.

    An existing limit must have exactly one slot and be active: anything else would let two runs
    change the same service at once, so it is refused with what to do, never silently used."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            existing = client.read_global_concurrency_limit_by_name(name)
    problems = []
    if existing.limit != 1:
        problems.append(f"it has {existing.limit} slots, not 1")
    if not existing.active:
        problems.append("it is inactive")
    if problems:
        raise LockMisconfigured(
            f"the lock {name} would not keep two runs apart: {' and '.join(problems)}. Nothing was "
            f"changed. Fix it with `prefect global-concurrency-limit update {name} --limit 1 --enable`"
        )


@contextlib.contextmanager
def hold_lock(name: str, timeout_s: float) -> Iterator[None]:
    """Hold the lock (one slot, leased and renewed while held); LockBusy after `timeout_s` of waiting."""
    ensure_lock(name)
    acquired = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout_s, lease_duration=LOCK_LEASE_S, strict=True):
            acquired = True
            yield
    except TimeoutError:
        if acquired:
            raise
        raise LockBusy(f"lock {name} was held by another run for more than {timeout_s:.0f} s") from None


@contextlib.contextmanager
def release_lock_or_preempt(name: str, wait_s: float) -> Iterator[bool]:
    """For rollbacks: hold the lock if it comes within `wait_s`; otherwise go on without it (yields
    False), because putting traffic back must never wait for a release's analysis window."""
    try:
        with hold_lock(name, wait_s):
            yield True
    except LockBusy:
        yield False
