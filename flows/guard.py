"""The release guard: a release that died while traffic was split must not leave it split.

A release emits a heartbeat event every 5 s while it runs and `finished` when it ends. The guard
deployment's trigger (prefect.yaml) is a proactive Prefect automation: after a heartbeat of a
service in an environment, it expects another heartbeat or `finished` within 20 s; when neither
comes, it runs this flow for that service and environment. The automation lives in the Prefect
server, so it works whatever happened to the release's process or machine.

The runbook:
  1. a release of this service and environment that heartbeats now is alive: leave it alone.
  2. observe the gateway; if canary instances serve in the live pool, remove them in one
     If-Match-guarded write (the production rule is not touched: colors never switch), verify.
  3. say so: a log line, the `switchyard.release.guarded` event and a Markdown artifact
     (key `guard-<service>-<environment>`).

Deadline: production is back on the stable color within 60 s of the release's death. The parts:
20 s of silence after the last heartbeat (which came before the death), up to 5 s until the server
evaluates proactive triggers (PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY), the worker's poll (2 s in the local stack),
the flow run's process start, one observation and one gateway write. tests/e2e/test_guard.py
kills a release mid-canary and holds the guard to this deadline (27-34 s measured on 2 cores).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from switchyard.core.guard import GuardReport
from switchyard.core.reports import guard_report
from tasks.guard import live_release_heartbeat, remove_canary
from tasks.provision import load_service_context
from tasks.release import emit, now, observe_service

DEFAULT_REASON = "the release stopped sending heartbeats without finishing"


@flow(name="guard", log_prints=True)
def restore_stable_traffic(service: str, environment: str, reason: str = DEFAULT_REASON) -> GuardReport:
    """If canary instances of a dead release serve `service`'s production traffic in `environment`,
    take them out so that all traffic is on the stable color. Never switches colors; a no-op when
    nothing is split or a release is still alive."""
    logger = get_run_logger()
    context = load_service_context(service, environment)
    heartbeat_at = live_release_heartbeat(service, environment)
    if heartbeat_at is not None:
        observed = observe_service(context)
        report = GuardReport(
            service=service,
            environment=environment,
            reason=reason,
            acted=False,
            action=f"a release of {service} in {environment} is alive (heartbeat at {heartbeat_at.isoformat()}): "
            "the guard leaves it alone",
            live_color=observed.live_color.value if observed.live_color else None,
            live_heartbeat_at=heartbeat_at,
            observed_at=observed.observed_at,
        )
    else:
        report = remove_canary(context, reason)
    logger.info("guard of %s in %s: %s", service, environment, report.action)
    emit(
        context,
        "guarded",
        {
            "acted": report.acted,
            "action": report.action,
            "reason": reason,
            "live_color": report.live_color or "",
            "removed_addresses": report.removed_addresses,
            "abandoned_release": report.abandoned_release or "",
            "restored_at": report.restored_at.isoformat() if report.restored_at else "",
            "at": now().isoformat(),
        },
    )
    artifact = guard_report(report)
    create_markdown_artifact(
        key=f"guard-{service}-{environment}", markdown=artifact.markdown, description=artifact.description
    )
    return report
