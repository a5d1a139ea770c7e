"""Fleet status: one table of every service in every environment, as the cloud shows it now.

The runbook:
  1. list the fleet: every service block x every environment block (blocks/__init__.py);
  2. read each pair from the cloud, read methods only (switchyard/cloud/readonly.py): the live
     color, the image every live instance runs and its gallery tags, backend health, and the
     release the gateway's tags say is in flight. A pair that is not deployed, not provisioned or
     unreachable is a row saying so;
  3. publish the table as the `fleet-status` table artifact (the fleet dashboard in the Prefect UI;
     the deployment runs it every 15 minutes), and return it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from switchyard.core.fleet_status import FleetStatus
from tasks.fleet import list_fleet, read_status

ARTIFACT_KEY = "fleet-status"


@flow(name="fleet-status", log_prints=True)
def fleet_status() -> FleetStatus:
    """Every service x environment: live color, image (base, patch level, app version), its age,
    health and any release in flight, as the table artifact `fleet-status`."""
    logger = get_run_logger()
    now = datetime.now(UTC)
    members = list_fleet()
    # The pairs are independent reads: run them side by side, so one slow environment costs its own
    # time, not everyone's.
    futures = [read_status.submit(member, now) for member in members]
    report = FleetStatus(observed_at=now, rows=[future.result() for future in futures])
    troubled = [r for r in report.rows if r.state in ("unreachable", "not-provisioned")]
    logger.info("%d pair(s) read; %d not provisioned or unreachable", len(report.rows), len(troubled))
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=report.table(),
        description=f"Fleet status at {now:%Y-%m-%d %H:%M} UTC: {len(report.rows)} service/environment pair(s)",
    )
    return report
