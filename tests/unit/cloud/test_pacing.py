"""The read budget's arithmetic on a fake clock: reads go out at once while Azure says there are reads
to spare, and at the refill rate once its count nears the reserve; and the Log Analytics query rate's:
at most its share of queries in any 30 s. Over the wire, against the emulator's throttling:
tests/integration/cloud/test_arm_pacing.py."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from switchyard.cloud.azure.pacing import (
    LOG_QUERY_WINDOW_S,
    THROTTLED_QUERY_WAITS_S,
    LogQueryPacing,
    QueryRate,
    ReadBudget,
    query_rate,
    read_budget,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget_on(fake: FakeTime, reserve: int = 25) -> ReadBudget:
    return ReadBudget(size=250, refill_per_s=25.0, reserve=reserve, clock=fake.clock, sleep=fake.sleep)


def test_before_azure_says_anything_no_read_waits() -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    assert [budget.take_turn() for _ in range(1000)] == [0.0] * 1000
    assert fake.slept == []


def test_reads_go_at_once_while_plenty_are_left() -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    budget.told(249)
    # 249 left, 25 kept in hand: 224 reads need no wait, the next one does
    waits = [budget.take_turn() for _ in range(225)]
    assert waits[:224] == [0.0] * 224
    assert waits[224] == pytest.approx(1 / 25)


def test_below_the_reserve_reads_go_at_the_refill_rate() -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    budget.told(25)
    start = fake.now
    for _ in range(50):
        budget.take_turn()
    # fifty reads from the reserve take two seconds of refill: 25 a second, as Azure admits them
    assert fake.now - start == pytest.approx(50 / 25)
    assert budget.paced_reads == 50


def test_the_refill_since_the_last_answer_counts() -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    budget.told(0)  # a 429's answer: nothing left
    fake.now += 2.0  # 50 reads refilled meanwhile
    waits = [budget.take_turn() for _ in range(25)]
    assert waits == [0.0] * 25  # 50 - 25 kept in hand
    assert budget.take_turn() == pytest.approx(1 / 25)


def test_the_bucket_never_refills_beyond_its_size() -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    budget.told(0)
    fake.now += 3600.0
    waits = [budget.take_turn() for _ in range(226)]
    assert waits[:225] == [0.0] * 225  # 250, not 90,000
    assert waits[225] > 0.0


def test_an_answer_does_not_forget_the_reads_still_waiting_their_turn() -> None:
    """A thread that took its turn and sleeps has spent its read: an answer that arrives meanwhile
    (to a read sent before) is lowered by it, so later reads queue behind it."""
    fake = FakeTime()
    release = threading.Event()
    asleep = threading.Event()

    def sleep_until_released(seconds: float) -> None:  # the clock stands still
        asleep.set()
        release.wait(5)

    budget = ReadBudget(size=250, refill_per_s=25.0, reserve=25, clock=fake.clock, sleep=sleep_until_released)
    budget.told(25)
    sleeper = threading.Thread(target=budget.take_turn)
    sleeper.start()
    assert asleep.wait(5)
    budget.told(30)  # thirty left by Azure's count, one of them the sleeper's
    release.set()
    sleeper.join(5)
    # 29 left: four reads down to the reserve, then one turn more each
    assert [budget.take_turn() for _ in range(6)] == pytest.approx([0, 0, 0, 0, 1 / 25, 2 / 25])


def test_a_waiting_read_says_so_in_the_log_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    budget = budget_on(fake)
    budget.told(10)
    with caplog.at_level(logging.WARNING, logger="switchyard.cloud.azure.pacing"):
        for _ in range(30):  # 1.2 s of reads
            budget.take_turn()
        fake.now += 61.0
        budget.told(0)
        budget.take_turn()
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 2
    assert "about 10 reads left" in notices[0]
    assert "wait their turn" in notices[0]


def test_one_budget_per_principal_and_subscription() -> None:
    first = read_budget("https://127.0.0.1:1", "sub-a", "emulator")
    assert read_budget("https://127.0.0.1:1", "sub-a", "emulator") is first
    assert read_budget("https://127.0.0.1:1", "sub-b", "emulator") is not first
    assert read_budget("azure", "sub-a", "client-1") is not read_budget("azure", "sub-a", "client-2")


def test_queries_go_at_once_up_to_the_share_then_each_waits_for_the_oldest_to_be_a_window_old() -> None:
    fake = FakeTime()
    rate = QueryRate(limit=180, window_s=30.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(90):
        rate.take_turn()
    fake.now += 10
    assert [rate.take_turn() for _ in range(90)] == [0.0] * 90
    assert fake.slept == []

    assert rate.take_turn() == 20.0  # the first 90 went at 1000: the next may go at 1030
    assert [rate.take_turn() for _ in range(89)] == [0.0] * 89  # 1030: those 90 have aged out
    assert rate.take_turn() == 10.0  # then the ones sent at 1010
    assert rate.paced_queries == 2


def test_queries_waiting_together_each_book_their_own_moment_so_no_window_holds_more_than_the_share() -> None:
    now = 1000.0
    # Twelve threads asking at the same instant: none of their waits has passed when the next asks.
    rate = QueryRate(limit=5, window_s=30.0, clock=lambda: now, sleep=lambda _: None)

    waits = [rate.take_turn() for _ in range(12)]

    assert waits == [0.0] * 5 + [30.0] * 5 + [60.0] * 2
    assert rate.paced_queries == 7


def test_a_query_rate_refuses_a_limit_it_cannot_keep() -> None:
    with pytest.raises(ValueError, match="limit >= 1"):
        QueryRate(limit=0)


def test_one_query_rate_per_user_shared_by_every_client_of_the_process() -> None:
    assert query_rate("https://logs", "sp-1") is query_rate("https://logs", "sp-1")
    assert query_rate("https://logs", "sp-1") is not query_rate("https://logs", "sp-2")


class Answers:
    """The rest of the pipeline, stubbed: answers each attempt with the next status."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent = 0

    def send(self, request: object) -> SimpleNamespace:
        self.sent += 1
        return SimpleNamespace(http_response=SimpleNamespace(status_code=self.statuses.pop(0)))


class CountedGate:
    """A shared budget that never makes anyone wait, counting the turns taken."""

    def __init__(self) -> None:
        self.turns = 0

    def take_turn(self) -> float:
        self.turns += 1
        return 0.0


def pacing_with(answers: Answers, slept: list[float], shared: CountedGate | None = None) -> LogQueryPacing:
    policy = LogQueryPacing(QueryRate(), shared, sleep=slept.append)
    policy.next = answers  # type: ignore[assignment]
    return policy


def test_a_throttled_query_is_sent_again_after_growing_waits_until_it_is_answered() -> None:
    slept: list[float] = []
    answers = Answers(429, 429, 200)
    policy = pacing_with(answers, slept)

    response = policy.send(
        PipelineRequest(HttpRequest("POST", "https://logs/v1/workspaces/w/query"), PipelineContext(None))
    )

    assert response.http_response.status_code == 200
    assert answers.sent == 3 and slept == [1.0, 2.0]
    assert policy.rate.throttled_queries == 2


def test_a_query_throttled_past_every_wait_returns_azures_429_to_the_sdk() -> None:
    slept: list[float] = []
    answers = Answers(*[429] * (len(THROTTLED_QUERY_WAITS_S) + 1))
    policy = pacing_with(answers, slept)

    response = policy.send(
        PipelineRequest(HttpRequest("POST", "https://logs/v1/workspaces/w/query"), PipelineContext(None))
    )

    assert response.http_response.status_code == 429
    assert slept == list(THROTTLED_QUERY_WAITS_S) and sum(slept) > LOG_QUERY_WINDOW_S
    assert answers.sent == len(THROTTLED_QUERY_WAITS_S) + 1


def test_every_attempt_of_a_query_takes_a_turn_of_the_shared_budget_too() -> None:
    slept: list[float] = []
    shared = CountedGate()
    policy = pacing_with(Answers(429, 200), slept, shared)

    policy.send(PipelineRequest(HttpRequest("POST", "https://logs/v1/workspaces/w/query"), PipelineContext(None)))

    # The resend is a query Azure counts again, so it waits its turn again, here and everywhere.
    assert shared.turns == 2
    assert policy.rate.throttled_queries == 1
