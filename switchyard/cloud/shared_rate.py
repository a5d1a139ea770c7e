"""Log Analytics' query budget shared by every process and machine that asks one Prefect server.

Log Analytics limits a user's queries to 200 in 30 s, to all workspaces together (pacing.py). A
process counts only its own queries, and a monthly patch runs its services in several processes
(patch-services runs on several workers, on several machines), each of which would take the whole
budget: two of them at their own limit are 360 queries a window, and the canaries' looks meet 429s.
Nothing in switchyard may assume one process or one machine (docs/architecture.md), so the budget
is kept where every worker sees it: a Prefect global concurrency limit with slot decay, which is
Prefect's rate limit ("Global concurrency limits", "Concurrency limits vs rate limits":
docs.prefect.io/v3/concepts/global-concurrency-limits; `rate_limit` needs slot_decay_per_second).
Each query occupies a slot that frees itself at SHARED_QUERIES_PER_S,
so however many processes share the user, at most SHARED_QUERY_BURST go out at once and
SHARED_QUERIES_PER_S a second after that: in any 30 s window, at most BURST + 30 x PER_S = 180, the
20 left of Azure's 200 covering queries that reach Azure later than they were counted.

This gate is advisory, Azure is the judge: when the Prefect server cannot be asked, or the budget
stays taken for longer than SHARED_QUERY_WAIT_S, the query goes out with this process's own pacing
only (the warning says so), and a throttled one is sent again (LogQueryPacing).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from switchyard.cloud.azure.pacing import LOG_QUERIES_PER_WINDOW, LOG_QUERY_WINDOW_S, NOTICE_EVERY_S, Notices

# The shared limit a new one is created with: 30 at once, then 5 a second (30 + 30 x 5 = 180 a window).
SHARED_QUERY_BURST = 30
SHARED_QUERIES_PER_S = 5.0
# How long a query waits for the shared budget before it goes out with this process's pacing alone.
SHARED_QUERY_WAIT_S = 2 * LOG_QUERY_WINDOW_S
LIMIT_NAME_PREFIX = "switchyard-log-queries-"

# What a process knows of the shared limit: not read yet (or the server could not be asked), usable,
# or unusable for pacing (no slot decay, inactive).
BudgetState = Literal["unknown", "shared", "off"]

logger = logging.getLogger(__name__)


def log_query_limit_name(key: str) -> str:
    """The Prefect limit of one user's queries: `key` names the user and the endpoint (AzureClients).
    A digest, because the key holds an application id that the UI need not show."""
    return LIMIT_NAME_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]


class SharedQueryRate:
    """One user's Log Analytics queries, paced by a Prefect rate limit that every process shares.

    The limit is created on first use when it does not exist. One that exists is used as its owners
    set it (a team that shares the user with other tools may give switchyard less), except one
    Prefect cannot rate-limit with (no slot decay): then this process paces its queries alone and
    says why. Thread-safe."""

    def __init__(
        self,
        name: str,
        *,
        burst: int = SHARED_QUERY_BURST,
        per_s: float = SHARED_QUERIES_PER_S,
        wait_s: float = SHARED_QUERY_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_s <= 0:
            raise ValueError(f"a shared query rate needs burst >= 1 and per_s > 0, not {burst} and {per_s}")
        self.name = name
        self.burst = burst
        self.per_s = per_s
        self.wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()  # waited_s and the notices
        self._asking = threading.Lock()  # what is known of the limit (_ready)
        self._state: BudgetState = "unknown"  # until the limit was read
        self._ask_again_at = 0.0  # after the server could not be asked: not before this
        self._notices = Notices()
        self.waited_s = 0.0  # seconds this process's queries waited for the shared budget

    def take_turn(self) -> float:
        """Before a query: one slot of the shared limit, waiting for it while others hold the budget.
        Returns the seconds waited; never raises for the limit's sake."""
        if self._ready() != "shared":
            return 0.0
        from prefect.concurrency.sync import rate_limit

        started = self._clock()
        try:
            rate_limit(self.name, occupy=1, timeout_seconds=self.wait_s, strict=True)
        except TimeoutError:
            self._warn(
                "the Log Analytics query budget %s stayed taken for %.0f s: this query goes out paced by this "
                "process alone",
                self.name,
                self.wait_s,
            )
        except Exception as error:  # the Prefect server could not be asked: Azure still judges
            self._warn(
                "could not take a turn of the Log Analytics query budget %s (%s): paced by this process alone",
                self.name,
                error,
            )
        waited = self._clock() - started
        with self._lock:
            self.waited_s += waited
        return waited

    def _ready(self) -> BudgetState:
        # One thread asks the server at a time and the others wait for its answer: a patch run's
        # canaries make their first queries together. _state and _ask_again_at change only under it.
        with self._asking:
            if self._state == "unknown" and self._clock() >= self._ask_again_at:
                self._state = self._ensure()
                if self._state == "unknown":
                    # Each ask of a server that is down costs the Prefect client's own retries: a query
                    # must not pay them every time.
                    self._ask_again_at = self._clock() + NOTICE_EVERY_S
            return self._state

    def _ensure(self) -> BudgetState:
        """Create the limit when missing; "shared" when Prefect can pace by it, "off" when it cannot,
        "unknown" (asked again next time) when the server could not be asked."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        try:
            with get_client(sync_client=True) as client:
                try:
                    limit = client.read_global_concurrency_limit_by_name(self.name)
                except ObjectNotFound:
                    with contextlib.suppress(ObjectAlreadyExists):  # another process created it meanwhile
                        client.create_global_concurrency_limit(
                            GlobalConcurrencyLimitCreate(
                                name=self.name, limit=self.burst, slot_decay_per_second=self.per_s
                            )
                        )
                    limit = client.read_global_concurrency_limit_by_name(self.name)
        except Exception as error:
            self._warn(
                "could not read the Log Analytics query budget %s (%s): paced by this process alone", self.name, error
            )
            return "unknown"
        fix = f"`prefect global-concurrency-limit update {self.name} --slot-decay-per-second {self.per_s:g} --enable`"
        if not limit.slot_decay_per_second or limit.slot_decay_per_second <= 0:
            logger.warning(
                "the Log Analytics query budget %s has no slot decay, so Prefect cannot pace queries by it: each "
                "process paces its own queries only, and several of them can go over Azure's limit. Fix it with %s",
                self.name,
                fix,
            )
            return "off"
        if not limit.active:
            logger.warning(
                "the Log Analytics query budget %s is inactive: each process paces its own queries only. Turn it "
                "on with %s",
                self.name,
                fix,
            )
            return "off"
        most = limit.limit + LOG_QUERY_WINDOW_S * limit.slot_decay_per_second
        if most > LOG_QUERIES_PER_WINDOW:
            logger.warning(
                "the Log Analytics query budget %s lets %d queries through in %.0f s, more than Azure's %d per user",
                self.name,
                most,
                LOG_QUERY_WINDOW_S,
                LOG_QUERIES_PER_WINDOW,
            )
        return "shared"

    def _warn(self, message: str, *args: object) -> None:
        with self._lock:
            due = self._notices.due(self._clock())
        if due:
            logger.warning(message, *args)


_rates: dict[str, SharedQueryRate] = {}
_rates_lock = threading.Lock()


def shared_log_query_rate(key: str) -> SharedQueryRate:
    """The process's handle on one user's shared query budget, one per user and endpoint."""
    name = log_query_limit_name(key)
    with _rates_lock:
        return _rates.setdefault(name, SharedQueryRate(name))


def prefect_query_gate() -> Callable[[str], SharedQueryRate] | None:
    """The shared budgets when this process talks to a Prefect server (a flow run, a worker, the
    stack's CLI); None when it has no API to share them through (Prefect would start a temporary
    server of its own for the first call, which no other process sees)."""
    from prefect.settings import PREFECT_API_URL

    return shared_log_query_rate if PREFECT_API_URL.value() else None
