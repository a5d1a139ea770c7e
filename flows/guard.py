"""The release guard: a release that died while traffic was split must not leave it split.

A release emits a heartbeat event every 5 s while it runs and `finished` when it ends. The guard
deployment's trigger (prefect.yaml) is a proactive Prefect automation: after a heartbeat of a
service in an environment, it expects another heartbeat or `finished` within 20 s; when neither
comes, it runs this flow for that service and environment. The automation lives in the Prefect
server, so it works whatever happened to the release's process or machine.

The runbook:
  1. is the release alive? Its heartbeats name its flow run, and Prefect's state of that run
     decides where it can: heartbeats alone can lie (delivery lags, clocks skew, a heartbeat thread
     can die while the release works on). A run in a terminal state is over; a running one that
     beat recently is alive: leave it alone; a running one that went silent is looked at again
     every few seconds, and presumed dead after PRESUMED_DEAD_AFTER_S without a beat (a process
     killed without its worker noticing stays "running" for Prefect).
  2. observe the gateway; if a canary serves (production routes to the live color's canary
     pool), route production back to the live color's own pool in one If-Match-guarded write
     (colors never switch), verify, and take the canary instances out of the canary pool.
  3. say so: a log line, the `switchyard.release.guarded` event and a Markdown artifact
     (key `guard-<service>-<environment>`).

Deadline: production is back on the stable color within 60 s of the release's death. The parts:
20 s of silence after the last heartbeat (which came before the death), up to 5 s until the server
evaluates proactive triggers (PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY), the worker's poll (2 s in the local stack),
the flow run's process start, one observation and one gateway write. tests/e2e/test_guard.py
kills a release mid-canary and holds the guard to this deadline (27-34 s measured on 2 cores).
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from switchyard.core.guard import GuardReport, Liveness, liveness
from switchyard.core.reports import guard_report
from tasks.events import emit, now
from tasks.guard import LIVE_HEARTBEAT_WINDOW_S, PRESUMED_DEAD_AFTER_S, release_signals, remove_canary
from tasks.provision import load_service_context
from tasks.release import observe_service

DEFAULT_REASON = "the release stopped sending heartbeats without finishing"
# While unsure (silent, but Prefect says the run still runs), look again this often.
RECHECK_S = 5.0


def _judge_liveness(service: str, environment: str) -> tuple[Liveness, str]:
    """Alive or dead, looking again while unsure (silent, but Prefect says the run still runs)."""
    logger = get_run_logger()
    while True:
        signals = release_signals(service, environment)
        verdict, why = liveness(
            signals, beat_window_s=LIVE_HEARTBEAT_WINDOW_S, presumed_dead_after_s=PRESUMED_DEAD_AFTER_S
        )
        if verdict is not Liveness.UNSURE:
            return verdict, why
        logger.info("%s", why)
        time.sleep(RECHECK_S)


@flow(name="guard", log_prints=True)
def restore_stable_traffic(service: str, environment: str, reason: str = DEFAULT_REASON) -> GuardReport:
    """If canary instances of a dead release serve `service`'s production traffic in `environment`,
    take them out so that all traffic is on the stable color. Never switches colors; a no-op when
    nothing is split or a release is still alive."""
    logger = get_run_logger()
    context = load_service_context(service, environment)
    verdict, why = _judge_liveness(service, environment)
    if verdict is Liveness.ALIVE:
        observed = observe_service(context)
        report = GuardReport(
            service=service,
            environment=environment,
            reason=reason,
            acted=False,
            action=f"a release of {service} in {environment} is alive ({why}): the guard leaves it alone",
            live_color=observed.live_color.value if observed.live_color else None,
            observed_at=observed.observed_at,
        )
    else:
        logger.info("the release of %s in %s is not alive: %s", service, environment, why)
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
