"""Turn a feature flag of a service on or off in an environment: behaviour changes without a deploy.

The runbook:
  1. load the service and the environment (an environment the service is not in is refused);
  2. set the flag in the service's database for that environment, and read it back through a
     connection of its own (refused, changing nothing, when the service has no database there);
  3. say so: one log line, a `switchyard.flag.set` event, and the flag-<service>-<environment>
     artifact with every flag of the service there.
Instances read their flags at run time, so the change reaches users within their cache's age, and
setting it back is just as quick: this flow is also the way back.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from switchyard.core.flags import FlagChange, check_flag_name
from switchyard.core.reports import flag_report
from tasks.events import emit_flag_set
from tasks.flags import read_flags, set_flag
from tasks.provision import load_service_context


@flow(name="set-flag", log_prints=True)
def set_feature_flag(service: str, environment: str, name: str, enabled: bool) -> FlagChange:
    """Turn flag `name` of `service` in `environment` on (`enabled`) or off."""
    logger = get_run_logger()
    check_flag_name(name)  # before anything is loaded: a bad name is the caller's to fix
    context = load_service_context(service, environment)
    run_id = flow_run.get_id()
    change = set_flag(context, name, enabled, f"set-flag {run_id}" if run_id else "set-flag")
    logger.info("%s, in %s", change.describe(), change.database)
    emit_flag_set(context, change)
    report = flag_report(change, read_flags(context))
    create_markdown_artifact(
        key=f"flag-{service}-{environment}", markdown=report.markdown, description=report.description
    )
    return change
