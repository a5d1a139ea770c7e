"""Pacing Resource Manager reads by what Azure says is left of the budget, before Azure throttles them.

Azure Resource Manager gives a principal a bucket of 250 reads per subscription, refilled at 25 a
second, and answers a read beyond it with 429 and a Retry-After ("Understand how Azure Resource
Manager throttles requests", learn.microsoft.com/azure/azure-resource-manager/management/
request-limits-and-throttling; the emulator enforces the same: emulator/switchyard_emulator/
throttling.py). The SDK waits the Retry-After out and sends the read again, but at most three times
per call (azure-core's RetryPolicy, `retry_status=3`): processes that keep reading faster than 25 a
second meet errors, not only delays. A release's observation that fails after users reached the new
version rolls the release back; a rollback's own reads would meet the same wall.

Every admitted read answers how many are left (`x-ms-ratelimit-remaining-subscription-reads`, the
same page's "Remaining requests" table). ArmReadPacing, one policy in each ARM client's pipeline,
keeps this process's reads off the last RESERVE_READS of them: below that, each read waits its turn
at the refill rate, so reads go out at the rate Azure admits them instead of bursting into 429s. The
processes that share a principal (several workers, a fleet's releases) see each other's reads in
the header, so each slows down as the budget runs low. Writes are not paced: a release makes about
one for every ten reads, and a rollback's gateway write must never wait on switchyard itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

REMAINING_READS_HEADER = "x-ms-ratelimit-remaining-subscription-reads"
# Resource Manager's documented read bucket per subscription and principal, and its refill rate.
READ_BUCKET = 250
READ_REFILL_PER_S = 25.0
# Reads kept in hand: a second's refill, more than this process's threads have in flight at once,
# so reads sent before the last answer came back cannot empty the bucket.
RESERVE_READS = 25
# How often a process says (in its log) that its reads are being paced.
NOTICE_EVERY_S = 60.0

logger = logging.getLogger(__name__)


class ReadBudget:
    """This process's view of one principal's read bucket in one subscription.

    The last remaining count Azure answered, refilled at the documented rate since, less the reads
    sent since: a read that would take it below RESERVE_READS waits until the refill has made room.
    Thread-safe: a patch run's services read from threads of one process.
    """

    def __init__(
        self,
        *,
        size: int = READ_BUCKET,
        refill_per_s: float = READ_REFILL_PER_S,
        reserve: int = RESERVE_READS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.size = size
        self.refill_per_s = refill_per_s
        self.reserve = reserve
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._left: float | None = None  # None until Azure has said (no header: nothing to pace by)
        self._at = 0.0
        self._waiting = 0
        self._noticed_at: float | None = None
        self.paced_reads = 0  # reads that waited their turn

    def take_turn(self) -> float:
        """Before a read: spend one of the reads left, first waiting for the refill when that would go
        below the reserve. Returns the seconds waited."""
        with self._lock:
            if self._left is None:
                return 0.0
            now = self._clock()
            left = min(float(self.size), self._left + (now - self._at) * self.refill_per_s)
            wait = max(0.0, (self.reserve + 1 - left) / self.refill_per_s)
            # Spent now, before the wait: the next read counts this one and waits a turn longer.
            self._left, self._at = left - 1, now
            if wait == 0.0:
                return 0.0
            self._waiting += 1
            self.paced_reads += 1
            notice = self._noticed_at is None or now - self._noticed_at >= NOTICE_EVERY_S
            if notice:
                self._noticed_at = now
        if notice:
            logger.warning(
                "Azure Resource Manager has about %d reads left of this subscription's budget: reads wait their "
                "turn (%g a second) to stay clear of its throttling",
                max(0, int(left)),
                self.refill_per_s,
            )
        try:
            self._sleep(wait)
        finally:
            with self._lock:
                self._waiting -= 1
        return wait

    def told(self, remaining: int) -> None:
        """After a read: what Azure says is left. The reads still waiting their turn are spent already."""
        with self._lock:
            self._left = float(remaining) - self._waiting
            self._at = self._clock()


_budgets: dict[tuple[str, ...], ReadBudget] = {}
_budgets_lock = threading.Lock()


def read_budget(*key: str) -> ReadBudget:
    """The process's budget for one principal in one subscription (the bucket Azure keeps), shared by
    every client built for it."""
    with _budgets_lock:
        return _budgets.setdefault(key, ReadBudget())


class ArmReadPacing(HTTPPolicy[Any, Any]):
    """A per-retry pipeline policy: every attempt of a read waits its turn, and reads what is left."""

    def __init__(self, budget: ReadBudget) -> None:
        super().__init__()
        self.budget = budget

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        is_read = request.http_request.method.upper() in ("GET", "HEAD")
        if is_read:
            self.budget.take_turn()
        response = self.next.send(request)
        if is_read:
            remaining = _remaining(response.http_response.headers.get(REMAINING_READS_HEADER))
            if remaining is not None:
                self.budget.told(remaining)
        return response


def _remaining(header: str | None) -> int | None:
    if header is None:
        return None
    try:
        return max(0, int(header))
    except ValueError:
        return None  # not a count: keep what was known
