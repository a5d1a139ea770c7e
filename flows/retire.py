"""Retire idle colors: after a release's warm period, the old color scales to zero.

The old color stays warm after a release (a fast way back); the release records on the gateway when
that period ends, and this flow (scheduled every few minutes) scales down what is due. It never
touches a color that serves anything, and skips a service whose release is in flight.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from blocks import load_service
from tasks.locks import LockBusy, hold_lock
from tasks.provision import load_service_context
from tasks.release import retire_idle_color
from tasks.routine import fleet_services


@flow(name="retire-idle-colors", log_prints=True)
def retire_idle_colors(services: list[str] | None = None) -> dict[str, str]:
    """For every service (or those named) in every environment it runs in: scale the idle color to
    zero once its warm period is over."""
    logger = get_run_logger()
    results: dict[str, str] = {}
    for service in services or fleet_services():
        for environment in load_service(service).frontend_ports:
            context = load_service_context(service, environment)
            try:
                # A release (or a rollback) in flight owns the colors: try again on the next run.
                with hold_lock(context.topology.release_lock, timeout_s=15):
                    results[f"{service}/{environment}"] = retire_idle_color(context)
            except LockBusy:
                results[f"{service}/{environment}"] = "a release is running: skipped"
            logger.info("%s/%s: %s", service, environment, results[f"{service}/{environment}"])
    return results
