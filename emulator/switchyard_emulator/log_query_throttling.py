"""Log Analytics' throttling of one user's queries (`POST /v1/workspaces/{id}/query`).

What Azure documents ("Azure Monitor service limits", "User query throttling",
https://learn.microsoft.com/azure/azure-monitor/service-limits#user-query-throttling; its source is
MicrosoftDocs/azure-docs, includes/azure-monitor-limits-log-queries.md), per user:

| measure                            | limit               | what happens                                         |
|---|---|---|
| Concurrent queries                 | 5                   | more wait in a queue, the first starts when one ends |
| Time in concurrency queue          | 3 minutes           | a query queued longer is ended with HTTP 429         |
| Total queries in concurrency queue | 200                 | with 200 queued, the next is rejected with 429       |
| Query rate                         | 200 per 30 seconds  | to all workspaces together                           |

The page does not say how the 30 seconds are counted: the emulator admits at most 200 queries in any
30 seconds (a sliding window), which no counting by fixed windows is stricter than. Nor does it say
what a 429 carries: the answer here is the API's OneAPI error object ("Azure Monitor Log Analytics
API response format", learn.microsoft.com/azure/azure-monitor/logs/api/response-format), with a code
of the emulator's choosing (`ThrottledError`) and no Retry-After, so a client can rely on neither.
A query refused at once (rate or queue full) is not counted against the rate; one that waited
in the queue and ran out of time was.

The emulator issues one token, so all its callers are one user, as a team's releases are when they
query as one service principal. Enforced with Resource Manager's throttling (the same switch: the
`azure` profile, `--arm-throttling`); off, queries are counted all the same.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

QUERIES_PER_WINDOW = 200
WINDOW_S = 30.0
CONCURRENT_QUERIES = 5
QUEUE_LIMIT = 200
QUEUE_TIMEOUT_S = 180.0
THROTTLED_CODE = "ThrottledError"


class QueryThrottled(Exception):
    """A query Log Analytics refuses with 429; `reason` names the limit it met."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": THROTTLED_CODE, "message": self.message}}


class LogQueryThrottle:
    """One user's query rate and concurrency. `admitted()` wraps a query's execution: it raises
    QueryThrottled when the rate or the queue is full or the queue wait runs out. Runs on the
    server's event loop (no locks: nothing between two awaits interleaves)."""

    def __init__(
        self,
        *,
        enforced: bool,
        clock: Callable[[], float] = time.monotonic,
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
    ) -> None:
        self._clock = clock
        self._queue_timeout_s = queue_timeout_s
        self._running = 0
        self._queued = 0
        self._slot_freed = asyncio.Condition()
        self.configure(enforced)

    def configure(self, enforced: bool) -> None:
        """On or off, the window empty and the counts at zero (queries running now finish as they are)."""
        self.enforced = enforced
        self._submitted: deque[float] = deque()  # when each query of the last WINDOW_S was admitted
        self.admitted = 0
        self.throttled: dict[str, int] = {"rate": 0, "queue_full": 0, "queue_timeout": 0}

    @asynccontextmanager
    async def admitted_query(self) -> AsyncIterator[None]:
        if not self.enforced:
            self.admitted += 1
            yield
            return
        self._check_rate()
        self._check_queue()
        self._submitted.append(self._clock())
        self.admitted += 1
        await self._take_slot()
        try:
            yield
        finally:
            self._running -= 1
            # Every waiter looks again, the queue's first first: a single notify can be lost to a waiter
            # whose queue time runs out at the same moment (asyncio.Condition in Python 3.11, CPython gh-112202).
            async with self._slot_freed:
                self._slot_freed.notify_all()

    def _check_rate(self) -> None:
        now = self._clock()
        while self._submitted and self._submitted[0] <= now - WINDOW_S:
            self._submitted.popleft()
        if len(self._submitted) >= QUERIES_PER_WINDOW:
            self.throttled["rate"] += 1
            raise QueryThrottled(
                "rate",
                f"Too many queries: this user sent {QUERIES_PER_WINDOW} in the last {WINDOW_S:.0f} seconds, "
                f"the most Log Analytics accepts.",
            )

    def _check_queue(self) -> None:
        if self._queued >= QUEUE_LIMIT:
            self.throttled["queue_full"] += 1
            raise QueryThrottled(
                "queue_full",
                f"Too many queries: {CONCURRENT_QUERIES} of this user's queries are running and {QUEUE_LIMIT} "
                "are waiting for them.",
            )

    async def _take_slot(self) -> None:
        if self._running < CONCURRENT_QUERIES and not self._queued:  # the queue's first go first
            self._running += 1
            return
        self._queued += 1
        try:
            async with self._slot_freed:
                await asyncio.wait_for(
                    self._slot_freed.wait_for(lambda: self._running < CONCURRENT_QUERIES), self._queue_timeout_s
                )
                self._running += 1
        except TimeoutError:
            self.throttled["queue_timeout"] += 1
            raise QueryThrottled(
                "queue_timeout",
                f"The query waited {self._queue_timeout_s:.0f} seconds for one of this user's "
                f"{CONCURRENT_QUERIES} running queries to end and was not started.",
            ) from None
        finally:
            self._queued -= 1

    def status(self) -> dict[str, object]:
        return {
            "enforced": self.enforced,
            "limits": {
                "queries_per_window": QUERIES_PER_WINDOW,
                "window_s": WINDOW_S,
                "concurrent": CONCURRENT_QUERIES,
                "queue": QUEUE_LIMIT,
                "queue_timeout_s": self._queue_timeout_s,
            },
            "admitted": self.admitted,
            "throttled": dict(self.throttled),
        }
