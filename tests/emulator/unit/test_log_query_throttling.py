"""Log Analytics' per-user query limits (switchyard_emulator/log_query_throttling.py) on a clock the
test moves: 200 queries in any 30 seconds, five at a time, a queue of 200 that a query leaves after 3
minutes, and the 429s Azure answers past them."""

from __future__ import annotations

import asyncio

import pytest

from switchyard_emulator.log_query_throttling import (
    CONCURRENT_QUERIES,
    QUERIES_PER_WINDOW,
    QUEUE_LIMIT,
    LogQueryThrottle,
    QueryThrottled,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def run_one(throttle: LogQueryThrottle) -> None:
    async with throttle.admitted_query():
        pass


def test_the_201st_query_within_30_seconds_is_refused_and_any_30_seconds_count() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttle = LogQueryThrottle(enforced=True, clock=clock)
        for _ in range(QUERIES_PER_WINDOW // 2):
            await run_one(throttle)
        clock.now += 20
        for _ in range(QUERIES_PER_WINDOW // 2):
            await run_one(throttle)
        with pytest.raises(QueryThrottled) as refused:
            await run_one(throttle)
        assert refused.value.reason == "rate"
        assert refused.value.to_body()["error"]["code"] == "ThrottledError"
        # 15 s later the first hundred are 35 s old: room for a hundred more, not for two hundred.
        clock.now += 15
        for _ in range(QUERIES_PER_WINDOW // 2):
            await run_one(throttle)
        with pytest.raises(QueryThrottled):
            await run_one(throttle)
        assert throttle.status()["admitted"] == 300
        assert throttle.status()["throttled"] == {"rate": 2, "queue_full": 0, "queue_timeout": 0}

    asyncio.run(scenario())


def test_a_refused_query_is_not_counted_against_the_rate() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttle = LogQueryThrottle(enforced=True, clock=clock)
        for _ in range(QUERIES_PER_WINDOW):
            await run_one(throttle)
        clock.now += 29
        for _ in range(50):  # a client hammering on: none of these extend the wait
            with pytest.raises(QueryThrottled):
                await run_one(throttle)
        clock.now += 1.5
        await run_one(throttle)

    asyncio.run(scenario())


def test_five_queries_run_at_once_and_the_sixth_waits_for_one_to_end() -> None:
    async def scenario() -> None:
        throttle = LogQueryThrottle(enforced=True, clock=Clock())
        release = asyncio.Event()
        started: list[int] = []

        async def query(number: int) -> None:
            async with throttle.admitted_query():
                started.append(number)
                if number < CONCURRENT_QUERIES:
                    await release.wait()

        tasks = [asyncio.create_task(query(n)) for n in range(CONCURRENT_QUERIES + 1)]
        await asyncio.sleep(0.05)
        assert sorted(started) == list(range(CONCURRENT_QUERIES))  # the sixth is queued
        release.set()
        await asyncio.gather(*tasks)
        assert sorted(started) == list(range(CONCURRENT_QUERIES + 1))

    asyncio.run(scenario())


def test_with_200_queued_the_next_is_refused_and_a_queued_query_gives_up_after_its_time() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttle = LogQueryThrottle(enforced=True, clock=clock, queue_timeout_s=0.3)
        hold = asyncio.Event()

        async def long_query() -> None:
            async with throttle.admitted_query():
                await hold.wait()

        running = [asyncio.create_task(long_query()) for _ in range(CONCURRENT_QUERIES)]
        queued = []
        for _ in range(2):  # queued in two windows: the queue is the limit met, not the rate
            clock.now += 31
            queued += [asyncio.create_task(run_one(throttle)) for _ in range(QUEUE_LIMIT // 2)]
            await asyncio.sleep(0.01)
        with pytest.raises(QueryThrottled) as refused:
            await run_one(throttle)
        assert refused.value.reason == "queue_full"
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(o, QueryThrottled) and o.reason == "queue_timeout" for o in outcomes)
        hold.set()
        await asyncio.gather(*running)
        await run_one(throttle)  # the slots are free again
        assert throttle.status()["throttled"] == {"rate": 0, "queue_full": 1, "queue_timeout": QUEUE_LIMIT}

    asyncio.run(scenario())


def test_off_it_counts_queries_and_refuses_none_and_turning_it_on_starts_a_fresh_window() -> None:
    async def scenario() -> None:
        throttle = LogQueryThrottle(enforced=False, clock=Clock())
        for _ in range(QUERIES_PER_WINDOW + 50):
            await run_one(throttle)
        assert throttle.status()["admitted"] == QUERIES_PER_WINDOW + 50
        throttle.configure(True)
        for _ in range(QUERIES_PER_WINDOW):
            await run_one(throttle)
        with pytest.raises(QueryThrottled):
            await run_one(throttle)

    asyncio.run(scenario())
