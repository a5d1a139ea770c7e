"""Provisioning tasks: create or update, idempotently, what a service needs in an environment."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import blocks
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.state import GatewayObservation


@task(name="load service configuration", cache_policy=NO_CACHE)
def load_service_context(service: str, environment: str) -> ServiceContext:
    """The service's and the environment's blocks; an environment the service is not deployed to is refused."""
    return blocks.load_service_context(service, environment)


@task(name="ensure network and gallery", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def ensure_foundation(context: ServiceContext) -> None:
    logger = get_run_logger()
    cloud_for(context).infrastructure.ensure_foundation(context.topology, context.service, logger.info)


@task(name="ensure gateway", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def ensure_gateway(context: ServiceContext) -> GatewayObservation:
    logger = get_run_logger()
    return cloud_for(context).infrastructure.ensure_gateway(context.topology, context.service, logger.info)


@task(name="ensure autoscale follows the live color", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def ensure_autoscale(context: ServiceContext, gateway: GatewayObservation) -> str:
    cloud = cloud_for(context)
    live = gateway.live_color
    if live is None:
        return "no live color: autoscale waits for the first release"
    live_set = cloud.scale_sets.observe(context.topology, live)
    if not live_set.exists:
        return f"{live_set.name} does not exist yet: autoscale waits for the first release"
    cloud.infrastructure.ensure_autoscale(context.topology, context.service, live)
    return f"autoscale targets {live_set.name}"
