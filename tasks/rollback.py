"""The way back: all traffic on the stable color in one gateway write, verified, seconds counting.

Mid-canary, production routes to the live color's canary pool: routing it to the live color's own
pool is the whole rollback, and it needs nothing but the gateway (one GET, one guarded PUT); the
canary instances leave the canary pool afterwards. After a promotion, production switches back to
the previous color (scaled up first if it was already scaled down), and autoscale follows it.
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase, rollback_target
from switchyard.core.topology import Color, Topology
from tasks.canary import leave_canary_pool
from tasks.events import emit, now
from tasks.release import VerificationFailed, own_pool, retry_unless, wait_healthy


class NothingToRollBackTo(Exception):
    """The first release of a service has no previous version to return to."""


class RollbackReport(BaseModel):
    stable_color: Color | None
    action: str
    restored_at: datetime | None
    abandoned_image: str | None  # the version traffic left: to be marked rolled back


@task(
    name="roll back",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=0.2,
    retry_condition_fn=retry_unless(NothingToRollBackTo),
)
def roll_back(context: ServiceContext, reason: str, image_version: str | None) -> RollbackReport:
    """All traffic back on the stable color in one gateway write, verified."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    topology = context.topology
    tags = {TAG_PHASE: Phase.ROLLED_BACK.value}
    # Mid-canary the way back needs nothing but the gateway itself: production off the canary pool
    # first, look around afterwards. Seconds count here.
    left = cloud.router.restore_live_pool(topology, tags)
    restored_at = now() if left else None
    observed = cloud.observe(topology, with_health=False)
    abandoned = image_version or observed.gateway.tags.get(TAG_RELEASE)
    stable = observed.live_color if left else rollback_target(observed)
    if left:
        action = f"production back on the {stable.value if stable else '?'} pool (off {left})"
    elif stable is None:
        action = f"production already stable on {observed.live_color.value if observed.live_color else '-'}"
    else:
        previous = observed.scale_set(stable)
        if not previous.instances:
            if previous.image_version is None:
                raise NothingToRollBackTo(
                    f"{previous.name} has never run an image: this was the first release of "
                    f"{context.service.name} in {context.environment.name}, there is no previous version"
                )
            capacity = max(context.service.capacity, 1)
            logger.warning("%s was scaled down; scaling it to %d first", previous.name, capacity)
            cloud.scale_sets.roll_out(
                topology, stable, image_version=previous.image_version, capacity=capacity, progress=logger.info
            )
            observed = wait_healthy(context, own_pool(stable), 300)
        assert observed.gateway.etag is not None
        cloud.router.route(
            topology,
            production=Topology.pool(stable),
            test=Topology.pool(stable.other),
            expect_etag=observed.gateway.etag,
            tags=tags,
        )
        restored_at = now()
        action = f"production switched back to {stable.value}"
    after = cloud.observe(topology, with_health=False)
    if after.gateway.canary_routed or (stable is not None and after.live_color != stable):
        raise VerificationFailed(f"after rollback production routes to {after.gateway.production_pool}")
    logger.warning("rolled back (%s): %s", reason, action)
    emit(context, "rolled-back", {"reason": reason, "action": action, "image": abandoned or ""})
    _tidy_after_rollback(context, stable, switched_colors=stable is not None and not left)
    return RollbackReport(
        stable_color=stable,
        action=action,
        restored_at=restored_at,
        abandoned_image=abandoned if stable is not None else None,
    )


def _tidy_after_rollback(context: ServiceContext, stable: Color | None, *, switched_colors: bool) -> None:
    """What users no longer depend on once traffic is back: canary instances leave the canary pool,
    and after a switch autoscale follows the color that serves. A failure here is logged, never
    raised: traffic is already safe, and the next release (or provisioning) tidies up again."""
    logger = get_run_logger()
    leave_canary_pool(context)
    if switched_colors and stable is not None:
        try:
            cloud_for(context).infrastructure.ensure_autoscale(context.topology, context.service, stable)
            logger.info("autoscale follows %s again", stable.value)
        except Exception as error:  # best effort by design: users are already safe
            logger.warning("traffic is back on %s, but autoscale did not follow it yet: %s", stable.value, error)
