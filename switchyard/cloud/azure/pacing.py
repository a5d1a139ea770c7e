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

Log Analytics' query API (the gateway access log a canary's latency comes from) has a limit of its
own: 200 queries per user in 30 seconds, to all workspaces together ("Azure Monitor service limits",
"User query throttling": learn.microsoft.com/azure/azure-monitor/service-limits#user-query-throttling;
the emulator enforces it: emulator/switchyard_emulator/log_query_throttling.py), answered 429 past
it with no Retry-After and no count of what is left. LogQueryPacing keeps this process's queries to
QueryRate's share of that window by its own count, so the canaries of a patch run's services,
looking every second from one process, wait their turn instead of meeting 429s; and, where the
clients were given one, to a budget every process of the user shares (QueryGate: a Prefect rate
limit, switchyard/cloud/shared_rate.py), since no answer tells one process what the others sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

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
# Log Analytics' documented query rate per user, and the queries of each window this process leaves
# to others: queries reach Azure a little after they are sent, so two sent 30 s apart can land closer.
LOG_QUERIES_PER_WINDOW = 200
LOG_QUERY_WINDOW_S = 30.0
LOG_QUERY_RESERVE = 20
# The waits before sending a throttled query again: 31 s in all, more than the window.
THROTTLED_QUERY_WAITS_S = (1.0, 2.0, 4.0, 8.0, 16.0)

logger = logging.getLogger(__name__)


class QueryGate(Protocol):
    """What a query waits on before it goes out (beside this process's own QueryRate): a budget that
    other processes share (switchyard/cloud/shared_rate.py). Returns the seconds waited."""

    def take_turn(self) -> float: ...


class Notices:
    """When a pacer says in the log that it waits: the first time, then at most once per NOTICE_EVERY_S.
    Not thread-safe on its own: the pacer asks under its lock."""

    def __init__(self) -> None:
        self._last: float | None = None

    def due(self, now: float) -> bool:
        if self._last is not None and now - self._last < NOTICE_EVERY_S:
            return False
        self._last = now
        return True


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
        self._notices = Notices()
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
            notice = self._notices.due(now)
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


class QueryRate:
    """At most `limit` queries of this process in any `window_s`: a query that would be one more waits
    until the oldest it counts is window_s old. Each waiting query books its own moment, so threads
    that wait together go out one by one, in order. Thread-safe."""

    def __init__(
        self,
        *,
        limit: int = LOG_QUERIES_PER_WINDOW - LOG_QUERY_RESERVE,
        window_s: float = LOG_QUERY_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"a query rate needs limit >= 1 and window_s > 0, not {limit} and {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()  # when each counted query goes out, oldest first
        self._notices = Notices()
        self.paced_queries = 0  # queries that waited their turn
        self.throttled_queries = 0  # queries Log Analytics throttled all the same (LogQueryPacing)

    def take_turn(self) -> float:
        """Before a query: book the first moment it may go out and wait for it. Returns the seconds waited."""
        with self._lock:
            now = self._clock()
            while self._sent and self._sent[0] <= now - self.window_s:
                self._sent.popleft()
            at = now if len(self._sent) < self.limit else max(now, self._sent[-self.limit] + self.window_s)
            self._sent.append(at)
            wait = at - now
            if wait <= 0:
                return 0.0
            self.paced_queries += 1
            notice = self._notices.due(now)
        if notice:
            logger.warning(
                "this process sent %d Log Analytics queries in the last %.0f s: queries wait their turn to stay "
                "clear of Azure's limit of %d per user",
                self.limit,
                self.window_s,
                LOG_QUERIES_PER_WINDOW,
            )
        self._sleep(wait)
        return wait

    def count_throttled(self) -> None:
        with self._lock:
            self.throttled_queries += 1


_budgets: dict[tuple[str, ...], ReadBudget] = {}
_query_rates: dict[tuple[str, ...], QueryRate] = {}
_budgets_lock = threading.Lock()


def read_budget(*key: str) -> ReadBudget:
    """The process's budget for one principal in one subscription (the bucket Azure keeps), shared by
    every client built for it."""
    with _budgets_lock:
        return _budgets.setdefault(key, ReadBudget())


def query_rate(*key: str) -> QueryRate:
    """The process's share of one user's Log Analytics query rate, shared by every client built for it."""
    with _budgets_lock:
        return _query_rates.setdefault(key, QueryRate())


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


class LogQueryPacing(HTTPPolicy[Any, Any]):
    """A per-retry pipeline policy for the Log Analytics client: every attempt of a query waits its
    turn, and a throttled one is sent again after THROTTLED_QUERY_WAITS_S.

    The SDK would not send it again: a query is a POST, and azure-core's RetryPolicy retries a POST
    only on 500, 503 and 504 or when the answer has a Retry-After, which Log Analytics does not promise.
    A query only reads, so sending it again is safe; the waits add up to more than the 30 s window,
    so a query throttled by other processes' gets room unless they keep the user over the limit."""

    def __init__(
        self, rate: QueryRate, shared: QueryGate | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__()
        self.rate = rate
        self.shared = shared
        self._sleep = sleep

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        waits = iter(THROTTLED_QUERY_WAITS_S)
        while True:
            self.rate.take_turn()
            if self.shared is not None:
                self.shared.take_turn()
            response = self.next.send(request)
            if response.http_response.status_code != 429:
                return response
            self.rate.count_throttled()
            wait = next(waits, None)
            if wait is None:
                return response  # the SDK raises it: Log Analytics kept the user over its limit
            logger.warning("Log Analytics throttled a query (429): sending it again in %g s", wait)
            self._sleep(wait)


def _remaining(header: str | None) -> int | None:
    if header is None:
        return None
    try:
        return max(0, int(header))
    except ValueError:
        return None  # not a count: keep what was known
