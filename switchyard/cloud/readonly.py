"""Read-only views of the cloud: what a release's preflight and plan read, and a fleet-status row.

Only `Cloud.observe()` and the ports' read methods are called here (image_version, image_versions,
compute_quota, timing, observe), never a write, so `switchyard release --plan` and `fleet status`
change nothing (tests/integration/cloud/test_readonly.py compares the emulator's whole ARM state
before and after). The release's preflight task reads through here too, so the plan and the
release judge the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from switchyard.cloud.errors import CloudError
from switchyard.cloud.ports import Cloud
from switchyard.core.capacity import ComputeQuota
from switchyard.core.config import ServiceContext
from switchyard.core.fleet_status import FleetMember, FleetRow, FleetStatus, fleet_row, unreachable_row
from switchyard.core.plan import ReleasePlan, plan_release
from switchyard.core.preflight import RecentTraffic, traffic_lookback_s
from switchyard.core.rollout import ReleasePolicy
from switchyard.core.state import ImageObservation, ServiceObservation
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Topology

# How a reader gets the cloud of a service context: switchyard.cloud.factory.cloud_for.
Connect = Callable[[ServiceContext], Cloud]


@dataclass(frozen=True)
class ReleaseInputs:
    """Everything preflight.check_release and plan.plan_release judge. The quota and the metric
    timing may be the error reading them: preflight reports that as a problem rather than crash."""

    image: ImageObservation
    published: list[str]
    observed: ServiceObservation
    quota: ComputeQuota | CloudError
    timing: MetricTiming | CloudError
    traffic: RecentTraffic | CloudError | None


def read_release_inputs(
    cloud: Cloud, context: ServiceContext, policy: ReleasePolicy, image_version: str
) -> ReleaseInputs:
    image = cloud.gallery.image_version(context.service.name, image_version)
    # The published versions only matter to say what exists instead of a missing image.
    published = [] if image.exists else [v.gallery_version for v in cloud.gallery.image_versions(context.service.name)]
    observed = cloud.observe(context.topology)
    quota: ComputeQuota | CloudError
    try:
        quota = cloud.scale_sets.compute_quota()
    except CloudError as error:
        quota = error
    timing: MetricTiming | CloudError
    if not observed.gateway.exists:
        # No gateway, no metric definitions: preflight's blocker already says to provision.
        timing = CloudError(f"{context.topology.gateway} does not exist")
    else:
        try:
            timing = cloud.telemetry.timing(context.topology).with_delay(policy.metrics_delay_s)
        except CloudError as error:
            timing = error
    traffic = _recent_traffic(cloud, context, policy, observed, timing)
    return ReleaseInputs(
        image=image, published=published, observed=observed, quota=quota, timing=timing, traffic=traffic
    )


def _recent_traffic(
    cloud: Cloud,
    context: ServiceContext,
    policy: ReleasePolicy,
    observed: ServiceObservation,
    timing: MetricTiming | CloudError,
) -> RecentTraffic | CloudError | None:
    """What production served in the last complete grains: its color's pool and that color's canary
    pool (users are in one of them), never the test listener's pool (smoke tests). None when there is
    nothing to read it from (no live color, or no metric timing: preflight reports those)."""
    live = observed.live_color
    if live is None or isinstance(timing, CloudError):
        return None
    seconds = traffic_lookback_s(timing, policy)
    end = timing.complete_until(datetime.now(UTC))
    start = end - timedelta(seconds=seconds)
    try:
        served = sum(
            cloud.telemetry.pool_requests(context.topology, start, end, pool).total
            for pool in (Topology.pool(live), Topology.canary_pool(live))
        )
    except CloudError as error:
        return error
    return RecentTraffic(requests=served, seconds=seconds)


def read_release_plan(cloud: Cloud, context: ServiceContext, policy: ReleasePolicy, image_version: str) -> ReleasePlan:
    inputs = read_release_inputs(cloud, context, policy, image_version)
    return plan_release(
        context, policy, inputs.image, inputs.published, inputs.observed, inputs.quota, inputs.timing, inputs.traffic
    )


def read_fleet_status(members: list[FleetMember], connect: Connect, now: datetime) -> FleetStatus:
    return FleetStatus(observed_at=now, rows=[read_fleet_row(member, connect, now) for member in members])


def read_fleet_row(member: FleetMember, connect: Connect, now: datetime) -> FleetRow:
    """One service in one environment, as the cloud shows it; any failure to read is the row's
    answer ("unreachable: ..."), so one environment never hides the rest of the fleet."""
    context = member.context
    if context is None:
        return member.fallback_row()
    topology = context.topology
    try:
        cloud = connect(context)  # building the adapter reads credentials and emulator.json: it may fail
        observed = cloud.observe(topology)
        live = observed.live_color
        version = observed.scale_set(live).runs_only if live is not None else None
        image = cloud.gallery.image_version(topology.service, version) if version else None
    except Exception as error:  # anything: a refused connection, a bad credential, an SDK error
        return unreachable_row(topology.service, topology.environment, _one_line(error))
    return fleet_row(observed, image, now)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
