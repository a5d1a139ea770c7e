"""The release guard's tasks: is a release still alive, and take a dead release's canary out.

A release emits `switchyard.release.heartbeat` every few seconds while it holds the release lock
(tasks/release.py `heartbeat()`). When those stop without a `switchyard.release.finished`, the
run died (a killed process, a lost machine) and may have left traffic split between two image
versions. The guard puts all traffic back on the stable color: the color the production rule
points at. It never switches colors: a promotion that went through is the new truth, and undoing
it is a decision for a person (`switchyard rollback`) or a live release, not for a watchdog.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from switchyard.cloud.errors import StaleStateError
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.guard import GuardReport
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase
from switchyard.core.state import ServiceObservation
from tasks.release import FINISHED_EVENT, HEARTBEAT_EVENT, VerificationFailed, now

# A live release beats every 5 s; three missed beats is silence, one seen in this window is life.
LIVE_HEARTBEAT_WINDOW_S = 15.0


def service_resource_id(service: str, environment: str) -> str:
    """The resource id release events carry (tasks/release.py `emit`)."""
    return f"switchyard.service.{service}.{environment}"


@task(name="look for a live release", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def live_release_heartbeat(
    service: str, environment: str, window_s: float = LIVE_HEARTBEAT_WINDOW_S
) -> datetime | None:
    """The newest release heartbeat of the last `window_s` seconds, or None when no release is alive.

    The guard starts well after the silence began (the automation waits for it), so a heartbeat
    this recent belongs to a release that is alive now: a new run, or the old one recovering;
    unless a `finished` came after it (that release ended)."""
    since = now() - timedelta(seconds=window_s)
    event_filter = EventFilter(
        occurred=EventOccurredFilter.model_validate({"since": since, "until": now() + timedelta(seconds=5)}),
        event=EventNameFilter(name=[HEARTBEAT_EVENT, FINISHED_EVENT]),
        resource=EventResourceFilter(id=[service_resource_id(service, environment)]),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=event_filter, limit=1)  # newest first
    newest = page.events[0] if page.events else None
    return newest.occurred if newest is not None and newest.event == HEARTBEAT_EVENT else None


@task(name="take the canary out of production", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=0.5)
def remove_canary(context: ServiceContext, reason: str) -> GuardReport:
    """Observe; if canary instances serve in the live pool, remove them in one If-Match-guarded
    gateway write and verify. Each attempt observes again, so a retry after a concurrent change
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
    if not canary:
        report.action = f"production is not split: all traffic is on {live.value}; nothing changed"
        return report
    assert observed.gateway.etag is not None
    try:
        cloud.router.set_split(topology, [], observed.gateway.etag, tags={TAG_PHASE: Phase.INTERRUPTED.value})
    except StaleStateError:
        logger.warning("the gateway changed while the guard decided; observing again")
        raise
    restored_at = now()
    after = cloud.observe(topology, with_health=False)
    if after.canary_addresses:
        raise VerificationFailed(f"canary instances still serve in the {live.value} pool: {after.canary_addresses}")
    if after.live_color != live:
        # The write only edits the live pool's addresses; a different color means someone else switched.
        raise VerificationFailed(f"production now routes to {after.live_color}, the guard left it on {live.value}")
    report.acted = True
    report.removed_addresses = canary
    report.restored_at = restored_at
    report.action = (
        f"canary instances {', '.join(canary)} removed from the {live.value} pool: all production traffic "
        f"is back on {live.value}"
    )
    logger.warning("guard: %s (%s)", report.action, reason)
    return report
