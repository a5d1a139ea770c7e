"""What the release guard saw and did (tasks/guard.py explains when it runs and why)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class GuardReport(BaseModel):
    """What the guard saw and did; the flow turns it into an event and a Markdown artifact."""

    service: str
    environment: str
    reason: str
    acted: bool
    action: str
    live_color: str | None
    removed_addresses: list[str] = []
    abandoned_release: str | None = None  # the image the dead release was rolling out (gateway tag)
    live_heartbeat_at: datetime | None = None  # a release is alive: its last heartbeat
    observed_at: datetime
    restored_at: datetime | None = None


class Liveness(StrEnum):
    ALIVE = "alive"  # leave it alone
    DEAD = "dead"  # take any canary it left out of production
    UNSURE = "unsure"  # look again shortly: silent, but Prefect still says it runs


# Prefect's terminal run states: the run is over, whatever its heartbeats said.
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class ReleaseSignals(BaseModel):
    """What the guard knows about the newest release of a service in an environment."""

    model_config = ConfigDict(frozen=True)

    heartbeat_age_s: float | None  # the newest heartbeat's age (None: no heartbeat in the look-back)
    finished_after_heartbeat: bool  # a `finished` event came after it: the release ended on its terms
    run_state: str | None  # the heartbeat's flow run's state type (None: unknown, e.g. an older release)


def liveness(signals: ReleaseSignals, *, beat_window_s: float, presumed_dead_after_s: float) -> tuple[Liveness, str]:
    """Is the release alive? Heartbeats alone can lie: event delivery lags, clocks skew, a heartbeat
    thread can die while the release works on. So Prefect's own view of the run decides where it
    can: a run in a terminal state is over; a running one that beat within `beat_window_s` is alive;
    a running one silent for longer is looked at again until `presumed_dead_after_s` (a process
    killed without its worker noticing stays "running" in Prefect's eyes forever)."""
    if signals.heartbeat_age_s is None or signals.finished_after_heartbeat:
        return Liveness.DEAD, "no release is running: the newest one finished, or none beat recently"
    age = signals.heartbeat_age_s
    if signals.run_state in TERMINAL_STATES:
        return Liveness.DEAD, f"its flow run is {signals.run_state.lower()} (last heartbeat {age:.0f} s ago)"
    if age <= beat_window_s:
        return Liveness.ALIVE, f"it beat {age:.0f} s ago" + (
            f" and its run is {signals.run_state.lower()}" if signals.run_state else ""
        )
    if signals.run_state is None:
        return Liveness.DEAD, f"silent for {age:.0f} s, and its flow run is unknown"
    if age <= presumed_dead_after_s:
        return Liveness.UNSURE, f"silent for {age:.0f} s, but its run is {signals.run_state.lower()}: looking again"
    return Liveness.DEAD, f"silent for {age:.0f} s although its run is {signals.run_state.lower()}: presumed dead"
