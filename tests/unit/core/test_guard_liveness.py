"""Is a release alive? Prefect's view of its run decides where it can; heartbeats alone can lie."""

from __future__ import annotations

import pytest

from switchyard.core.guard import Liveness, ReleaseSignals, liveness

WINDOW, PRESUMED_DEAD = 15.0, 120.0


def judge(age: float | None, state: str | None, *, finished: bool = False) -> Liveness:
    signals = ReleaseSignals(heartbeat_age_s=age, finished_after_heartbeat=finished, run_state=state)
    return liveness(signals, beat_window_s=WINDOW, presumed_dead_after_s=PRESUMED_DEAD)[0]


def test_a_running_release_whose_heartbeats_are_late_is_looked_at_again_not_taken_for_dead() -> None:
    """Event delivery lag, a clock skew or a heartbeat thread that died: 30 s of silence while Prefect
    says the run runs is no reason to take its canary out."""
    assert judge(30, "RUNNING") is Liveness.UNSURE
    assert judge(5, "RUNNING") is Liveness.ALIVE
    assert judge(5, "PAUSED") is Liveness.ALIVE  # waiting for a person's approval


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED", "COMPLETED"])
def test_a_run_prefect_says_is_over_is_dead_whatever_its_last_beat(state: str) -> None:
    assert judge(2, state) is Liveness.DEAD


def test_a_long_silence_is_death_even_if_prefect_still_says_running() -> None:
    """A process killed without its worker noticing (an in-process run, a lost machine) stays
    running in Prefect's eyes forever: after long enough without a beat it is presumed dead."""
    assert judge(PRESUMED_DEAD + 1, "RUNNING") is Liveness.DEAD


def test_without_a_known_run_the_heartbeats_decide_alone() -> None:
    assert judge(5, None) is Liveness.ALIVE and judge(30, None) is Liveness.DEAD
    assert judge(None, None) is Liveness.DEAD and judge(2, "RUNNING", finished=True) is Liveness.DEAD
