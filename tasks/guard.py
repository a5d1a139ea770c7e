"""The release guard's tasks: is a release still alive, and take a dead release's canary out.

A release emits `switchyard.release.heartbeat` every few seconds while it holds the release lock
(tasks/events.py `heartbeat()`). When those stop without a `switchyard.release.finished`, the
run died (a killed process, a lost machine) and may have left traffic split between two image
versions. The guard puts all traffic back on the stable color: the color the production rule
points at. It never switches colors: a promotion that went through is the new truth, and undoing
it is a decision for a person (`switchyard rollback`) or a live release, not for a watchdog.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound

from switchyard.cloud.errors import StaleStateError
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.guard import GuardReport, ReleaseSignals
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Topology
from tasks.canary import leave_canary_pool
from tasks.events import FINISHED_EVENT, HEARTBEAT_EVENT, now
from tasks.release import VerificationFailed

# A live release beats every 5 s; three missed beats is silence, one seen in this window is life.
LIVE_HEARTBEAT_WINDOW_S = 15.0
# A run Prefect still calls running but that has not beaten for this long is presumed dead: its
# process was killed without its worker noticing (an in-process run, a lost machine).
PRESUMED_DEAD_AFTER_S = 120.0
# How far back the guard looks for a release's heartbeats (a release longer than this without a
# beat is not running).
LOOK_BACK_S = 3600.0


def service_resource_id(service: str, environment: str) -> str:
    """The resource id release events carry (tasks/events.py `emit`)."""
    return f"switchyard.service.{service}.{environment}"


@task(name="look for a live release", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def release_signals(service: str, environment: str, look_back_s: float = LOOK_BACK_S) -> ReleaseSignals:
    """The newest release heartbeat of the service in the environment, whether a `finished` came after
    it, and its flow run's state as Prefect sees it (the heartbeat names the run)."""
    since = now() - timedelta(seconds=look_back_s)
    event_filter = EventFilter(
        occurred=EventOccurredFilter.model_validate({"since": since, "until": now() + timedelta(seconds=5)}),
        event=EventNameFilter(name=[HEARTBEAT_EVENT, FINISHED_EVENT]),
        resource=EventResourceFilter(id=[service_resource_id(service, environment)]),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=event_filter, limit=1)  # newest first
        newest = page.events[0] if page.events else None
        if newest is None:
            return ReleaseSignals(heartbeat_age_s=None, finished_after_heartbeat=False, run_state=None)
        if newest.event == FINISHED_EVENT:
            return ReleaseSignals(heartbeat_age_s=None, finished_after_heartbeat=True, run_state=None)
        # The server's receipt time, not the emitter's clock: one clock for every release's machine.
        seen = newest.received or newest.occurred
        run_state = None
        run_id = newest.payload.get("flow_run_id")
        if run_id:
            try:
                run = client.read_flow_run(UUID(str(run_id)))
                run_state = run.state_type.value if run.state_type else None
            except (ObjectNotFound, ValueError):
                run_state = None
    return ReleaseSignals(
        heartbeat_age_s=max(0.0, (now() - seen).total_seconds()),
        finished_after_heartbeat=False,
        run_state=run_state,
    )


@task(name="take the canary out of production", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=0.5)
def remove_canary(context: ServiceContext, reason: str) -> GuardReport:
    """Observe; if a canary serves, route production to the live color's own pool in one
    If-Match-guarded gateway write and verify. Each attempt observes again, so a retry after a concurrent change
    (a stale ETag) decides on what is true now."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    topology = context.topology
    observed: ServiceObservation = cloud.observe(topology, with_health=False)
    live = observed.live_color
    report = GuardReport(
        service=topology.service,
        environment=topology.environment,
        reason=reason,
        acted=False,
        action="",
        live_color=live.value if live else None,
        abandoned_release=observed.gateway.tags.get(TAG_RELEASE),
        observed_at=observed.observed_at,
    )
    if not observed.gateway.exists or live is None:
        report.action = f"nothing to guard: {topology.gateway} does not exist or routes production nowhere"
        return report
    canary = list(observed.canary_addresses)
    if not observed.canary_serving:
        report.action = f"production is not split: all traffic is on {live.value}; nothing changed"
        return report
    assert observed.gateway.etag is not None
    try:
        # The production rule moves from the live color's canary pool to its own pool: the same
        # color, without the canary. Colors never switch.
        cloud.router.route(
            topology,
            production=Topology.pool(live),
            test=observed.gateway.test_pool or Topology.pool(live.other),
            expect_etag=observed.gateway.etag,
            tags={TAG_PHASE: Phase.INTERRUPTED.value},
        )
    except StaleStateError:
        logger.warning("the gateway changed while the guard decided; observing again")
        raise
    restored_at = now()
    after = cloud.observe(topology, with_health=False)
    if after.canary_serving:
        raise VerificationFailed(f"the canary still serves: production routes to {after.gateway.production_pool}")
    if after.live_color != live:
        # The write only moves production within the live color; another color means someone else switched.
        raise VerificationFailed(f"production now routes to {after.live_color}, the guard left it on {live.value}")
    leave_canary_pool(context)
    report.acted = True
    report.removed_addresses = canary
    report.restored_at = restored_at
    report.action = (
        f"production moved off the canary ({', '.join(canary)}) to the {live.value} pool: all production "
        f"traffic is back on {live.value}"
    )
    logger.warning("guard: %s (%s)", report.action, reason)
    return report
