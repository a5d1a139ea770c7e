"""When metric data can be trusted: grains, data delay, and windows that hold only whole grains.

Azure Monitor's platform metrics of Application Gateway and scale sets come in one-minute grains
(PT1M is the finest; "supported metrics" tables, docs/emulator.md), and a minute's datapoint arrives
about a minute or more after the minute ends. The emulator's `fast` profile offers one-second grains
with no delay, its `azure` profile models Azure. switchyard reads the finest grain from the cloud
(the metric definitions) and derives everything else from it here, so the same release policy
logic runs on both; a policy that cannot work with a cloud's grain is refused before any change.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

# Azure's documented autoscale limits (Microsoft.Insights autoscale spec, MetricTrigger/ScaleAction):
# timeWindow 5 minutes to 12 hours, cooldown at least 1 minute. They apply wherever metrics come in
# minutes (Azure, or the emulator's azure profile, which enforces them too).
AZURE_MIN_AUTOSCALE_WINDOW_S = 300
AZURE_MIN_AUTOSCALE_COOLDOWN_S = 60
AZURE_METRIC_GRAIN_S = 60


class MetricTiming(BaseModel):
    """What one cloud's metrics allow: the finest grain, and how long after a grain ends its data is
    complete."""

    model_config = ConfigDict(frozen=True)

    grain_s: float = Field(gt=0, description="The finest metric grain, seconds (60 on Azure).")
    delay_s: float = Field(ge=0, description="A grain's data is complete this long after the grain ends.")

    @classmethod
    def for_grain(cls, grain_s: float, delay_s: float | None = None) -> MetricTiming:
        """Second-scale grains arrive at once (the emulator's fast profile); minute grains arrive a
        minute or two late on Azure (Azure Monitor: "metrics ... typically within a minute or two").
        Two grains of delay covers that without waiting for the worst case; `delay_s` overrides it
        (a release policy's metrics_delay_s)."""
        if delay_s is None:
            delay_s = 0.0 if grain_s < AZURE_METRIC_GRAIN_S else 2 * grain_s
        return cls(grain_s=grain_s, delay_s=delay_s)

    def with_delay(self, delay_s: float | None) -> MetricTiming:
        """The same grain, with a policy's own idea of the delay (None keeps this one)."""
        return self if delay_s is None else self.model_copy(update={"delay_s": delay_s})

    @property
    def in_minutes(self) -> bool:
        """Azure's timing (or a cloud that behaves like it): autoscale limits apply."""
        return self.grain_s >= AZURE_METRIC_GRAIN_S

    def grain_start(self, moment: datetime) -> datetime:
        """The start of the grain `moment` falls in (grains are aligned to the epoch, as Azure's)."""
        seconds = moment.timestamp()
        return datetime.fromtimestamp(math.floor(seconds / self.grain_s) * self.grain_s, UTC)

    def next_grain(self, moment: datetime) -> datetime:
        """The first grain boundary at or after `moment`."""
        start = self.grain_start(moment)
        return start if start == moment else start + timedelta(seconds=self.grain_s)

    def whole_grains(self, seconds: float) -> float:
        """`seconds` rounded up to whole grains."""
        return math.ceil(seconds / self.grain_s - 1e-9) * self.grain_s

    def window_after(self, changed_at: datetime, window_s: float) -> tuple[datetime, datetime]:
        """An analysis window that starts at the first grain boundary after a change (so no grain
        mixes traffic from before it) and holds `window_s` rounded up to whole grains."""
        start = self.next_grain(changed_at)
        return start, start + timedelta(seconds=self.whole_grains(window_s))

    def complete_until(self, now: datetime) -> datetime:
        """Data before this moment is complete: the end of the last grain whose data has arrived."""
        return self.grain_start(now - timedelta(seconds=self.delay_s))


def timing_problems(
    *,
    analysis_window_s: float,
    promoted_analysis_window_s: float,
    autoscale_window_s: float | None,
    autoscale_cooldown_s: float | None,
    timing: MetricTiming,
) -> list[str]:
    """What in a release policy and a service's autoscale cannot work with this cloud's metrics."""
    problems = []
    grain = timing.grain_s
    if analysis_window_s < grain:
        problems.append(
            f"analysis_window_s {analysis_window_s:g} is shorter than one metric grain ({grain:g} s here): "
            f"use at least {grain:g}"
        )
    if 0 < promoted_analysis_window_s < grain:
        problems.append(
            f"promoted_analysis_window_s {promoted_analysis_window_s:g} is shorter than one metric grain "
            f"({grain:g} s here): use 0 (no analysis under full traffic) or at least {grain:g}"
        )
    if timing.in_minutes and autoscale_window_s is not None and autoscale_window_s < AZURE_MIN_AUTOSCALE_WINDOW_S:
        problems.append(
            f"the service's autoscale time_window_s {autoscale_window_s:g} is under Azure's minimum of "
            f"{AZURE_MIN_AUTOSCALE_WINDOW_S} s (5 minutes)"
        )
    if timing.in_minutes and autoscale_cooldown_s is not None and autoscale_cooldown_s < AZURE_MIN_AUTOSCALE_COOLDOWN_S:
        problems.append(
            f"the service's autoscale cooldown_s {autoscale_cooldown_s:g} is under Azure's minimum of "
            f"{AZURE_MIN_AUTOSCALE_COOLDOWN_S} s"
        )
    return problems
