"""Timing profiles: how fast the emulated Azure answers, and which time grains it allows.

Structural rules (what may be written, what must exist, what is immutable) hold in every profile;
a profile only changes *timing*:

* `fast` (the default) keeps the emulator second-scale so demos and most tests run in seconds:
  metrics down to PT1S, no ingestion delay, long-running operations finish as soon as the data
  plane has done the work.
* `azure` models what a release meets on Azure: metrics at PT1M and coarser only, a minute's
  datapoint available about a minute after it ends, access-log records visible minutes after the
  request, gateway and scale-set writes that take tens of seconds and answer without Retry-After
  (so a client that does not set its own polling interval waits the SDK's default 30 s), and
  Azure Resource Manager's request throttling (throttling.py): a client that reads faster than
  Azure allows gets Azure's 429s.

Throttling is off in `fast` by default: there, operations that take tens of seconds on Azure finish
in milliseconds and switchyard polls them every 50 ms, so a release's request rate says nothing
about the rate it would have on Azure.

Every timing value is a setting; `None` in `TimingOverrides` means "the profile's default".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

ProfileName = Literal["fast", "azure"]
PROFILES: tuple[ProfileName, ...] = ("fast", "azure")

# Azure Monitor's standard metric time grains, as metric definitions list them and as the metrics
# API accepts them: "Invalid time grain duration: PT3M, supported ones are: 00:01:00,00:05:00,
# 00:15:00,00:30:00,01:00:00,06:00:00,12:00:00,1.00:00:00" (Azure's 400, quoted in
# Azure/azure-libraries-for-net#495). Application Gateway and scale-set platform metrics are
# sampled at PT1M (https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/
# microsoft-network-applicationgateways-metrics, "Time Grains" column).
AZURE_METRIC_GRAINS_S: tuple[float, ...] = (60, 300, 900, 1800, 3600, 21600, 43200, 86400)
# The fast profile adds second-scale grains in front of Azure's (and accepts any grain >= PT1S).
FAST_METRIC_GRAINS_S: tuple[float, ...] = (1, 5, 10, 30, *AZURE_METRIC_GRAINS_S)

# Autoscale limits from the Microsoft.Insights autoscale spec (specification/monitor/
# resource-manager/Microsoft.Insights/stable/2022-10-01/autoscale_API.json, MetricTrigger and
# ScaleAction; the azure-mgmt-monitor MetricTrigger/ScaleAction docstrings quote them):
# timeGrain "Must be between 12 hours and 1 minute", timeWindow "Must be between 12 hours and 5
# minutes", cooldown "must be between 1 week and 1 minute". The maxima hold in every profile.
AUTOSCALE_GRAIN_MAX_S = 12 * 3600.0
AUTOSCALE_WINDOW_MAX_S = 12 * 3600.0
AUTOSCALE_COOLDOWN_MAX_S = 7 * 86400.0


class TimingOverrides(BaseModel):
    """Command-line overrides of a profile's timing (None = the profile's default)."""

    metrics_latency_s: float | None = Field(default=None, ge=0, le=3600)
    log_ingestion_delay_s: float | None = Field(default=None, ge=0, le=86400)
    gateway_write_s: float | None = Field(default=None, ge=0, le=3600)
    scale_set_write_s: float | None = Field(default=None, ge=0, le=3600)
    arm_throttling: bool | None = None


@dataclass(frozen=True)
class TimingProfile:
    name: ProfileName
    metric_grains_s: tuple[float, ...]  # what metric definitions list (metricAvailabilities)
    arbitrary_metric_grains: bool  # fast: any interval >= the finest grain; azure: only the listed ones
    metrics_latency_s: float  # a grain's datapoint appears this long after the grain ends
    log_ingestion_delay_s: float  # an access-log record is queryable this long after the request
    gateway_write_s: float  # minimum duration of an application gateway create/update
    scale_set_write_s: float  # minimum duration of a scale-set create/update/upgrade/reimage
    lro_without_retry_after: bool  # slow writes answer without Retry-After (SDK default: 30 s polls)
    # Azure Resource Manager's request limits are enforced (throttling.py), Microsoft.Compute's for
    # scale sets (compute_throttling.py) and Log Analytics' per-user query limits (log_query_throttling.py)
    arm_throttling: bool
    autoscale_grain_min_s: float
    autoscale_window_min_s: float
    autoscale_cooldown_min_s: float

    @property
    def min_metric_grain_s(self) -> float:
        return min(self.metric_grains_s)


def timing_profile(name: ProfileName = "fast", overrides: TimingOverrides | None = None) -> TimingProfile:
    given = overrides or TimingOverrides()

    def pick(value: float | None, default: float) -> float:
        return default if value is None else float(value)

    if name == "azure":
        return TimingProfile(
            name="azure",
            metric_grains_s=AZURE_METRIC_GRAINS_S,
            arbitrary_metric_grains=False,
            # "If there are requests flowing through the Application Gateway, it measures and sends
            # its metrics in 60-second intervals" (https://learn.microsoft.com/azure/application-
            # gateway/application-gateway-metrics): a minute is known about a minute after it ends.
            metrics_latency_s=pick(given.metrics_latency_s, 60.0),
            # "The average latency to ingest log data is between 20 seconds and 3 minutes"
            # (https://learn.microsoft.com/azure/azure-monitor/logs/data-ingestion-time): the
            # default is the upper end, so a client that waits less is caught here.
            log_ingestion_delay_s=pick(given.log_ingestion_delay_s, 180.0),
            gateway_write_s=pick(given.gateway_write_s, 20.0),
            scale_set_write_s=pick(given.scale_set_write_s, 20.0),
            lro_without_retry_after=True,
            arm_throttling=given.arm_throttling if given.arm_throttling is not None else True,
            autoscale_grain_min_s=60.0,
            autoscale_window_min_s=300.0,
            autoscale_cooldown_min_s=60.0,
        )
    if name != "fast":
        raise ValueError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
    return TimingProfile(
        name="fast",
        metric_grains_s=FAST_METRIC_GRAINS_S,
        arbitrary_metric_grains=True,
        metrics_latency_s=pick(given.metrics_latency_s, 0.0),
        log_ingestion_delay_s=pick(given.log_ingestion_delay_s, 0.0),
        gateway_write_s=pick(given.gateway_write_s, 0.0),
        scale_set_write_s=pick(given.scale_set_write_s, 0.0),
        lro_without_retry_after=False,
        arm_throttling=bool(given.arm_throttling),
        # second-scale windows and cooldowns for the demo and the tests; never beyond Azure's maxima
        autoscale_grain_min_s=1.0,
        autoscale_window_min_s=1.0,
        autoscale_cooldown_min_s=1.0,
    )
