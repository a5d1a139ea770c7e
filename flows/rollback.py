"""Roll back a service in an environment: all traffic to the stable color in one gateway write.

While a canary runs, the stable color is the one the production rule points at: the canary
instances leave its pool. After a promotion, the stable color is the previous one: it is scaled
up first if it was already scaled down, then production switches back. The abandoned image is
marked rolled back in the gallery so nothing picks it again.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tasks.provision import load_service_context
from tasks.release import RollbackReport, mark_rolled_back, roll_back


@flow(name="rollback", log_prints=True)
def rollback(service: str, environment: str, reason: str = "requested by a person") -> RollbackReport:
    """Put all of `service`'s production traffic in `environment` back on the stable color."""
    context = load_service_context(service, environment)
    report = roll_back(context, reason, None)
    marked = mark_rolled_back(context, report.abandoned_image)
    create_markdown_artifact(
        key=f"rollback-{service}-{environment}",
        markdown=(
            f"# Rollback of {service} in {environment}\n\n**Reason:** {reason}\n\n"
            f"**Action:** {report.action}\n\n**Image marked rolled back:** {marked or '-'}\n"
        ),
    )
    return report
