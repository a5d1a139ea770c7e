"""Fleet-wide reads: which services and environments the fleet has, and how each looks now."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import fleet_members
from switchyard.cloud.factory import cloud_for
from switchyard.cloud.readonly import read_fleet_row
from switchyard.core.fleet_status import FleetMember, FleetRow


@task(name="list the fleet", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def list_fleet() -> list[FleetMember]:
    """Every service block x every environment: the fleet as configured in Prefect."""
    return fleet_members()


# No retries: a row that cannot be read says so ("unreachable: ..."), and the next scheduled run
# looks again; a status that waited on retries would be older than it says.
@task(
    name="read a service's status",
    cache_policy=NO_CACHE,
    task_run_name="status of {member.service}/{member.environment}",
)
def read_status(member: FleetMember, now: datetime) -> FleetRow:
    return read_fleet_row(member, cloud_for, now)
