"""Roll back a service in an environment: all traffic to the stable color in one gateway write.

While a canary runs, the stable color is the one the production rule points at: the canary
instances leave its pool. After a promotion, the stable color is the previous one: it is scaled
up first if it was already scaled down, then production switches back. The abandoned image is
marked rolled back in the gallery so nothing picks it again.

A rollback takes the release lock, so that no retirement scales down the color it returns to. It
waits only a few seconds for it: a release holding the lock is pre-empted (the rollback goes
ahead; the release sees the gateway say its image was rolled back and stops at its next step).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.locks import release_lock_or_preempt
from tasks.provision import load_service_context
from tasks.release import mark_rolled_back
from tasks.rollback import RollbackReport, roll_back

# Long enough for a retirement's one scale-set write, short enough that users do not wait on it.
PREEMPT_AFTER_S = 10.0


@flow(name="rollback", log_prints=True)
def rollback(
    service: str,
    environment: str,
    reason: str = "requested by a person",
    preempt_after_s: float = PREEMPT_AFTER_S,
) -> RollbackReport:
    """Put all of `service`'s production traffic in `environment` back on the stable color. A release
    holding the lock for more than `preempt_after_s` seconds is pre-empted: it stops at its next step."""
    logger = get_run_logger()
    context = load_service_context(service, environment)
    lock = context.topology.release_lock
    with release_lock_or_preempt(lock, preempt_after_s) as held:
        if not held:
            logger.warning(
                "a release of %s in %s holds %s: this rollback goes ahead without it, and the release "
                "stops at its next step",
                service,
                environment,
                lock,
            )
        report = roll_back(context, reason, None)
        marked = mark_rolled_back(context, report.abandoned_image)
    preempted = "" if held else "\n\n**A running release was pre-empted:** it stops at its next step.\n"
    create_markdown_artifact(
        key=f"rollback-{service}-{environment}",
        markdown=(
            f"# Rollback of {service} in {environment}\n\n**Reason:** {reason}\n\n"
            f"**Action:** {report.action}\n\n**Image marked rolled back:** {marked or '-'}\n{preempted}"
        ),
    )
    return report
