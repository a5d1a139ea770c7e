"""Provision a service's topology in one environment: create what is missing, update what drifted.

Two scale sets (blue and green) are created by the first release, on its image; provisioning
lays down everything they plug into: resource group, network, public IP, the gallery image
definition, and the Application Gateway with a production and a test listener, one pool per
color, the health probe and the routing rules. Re-running it is safe: the gateway keeps whichever
color is live (routing belongs to releases).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.provision import ensure_autoscale, ensure_foundation, ensure_gateway, load_service_context


@flow(name="provision", log_prints=True)
def provision(service: str, environment: str) -> str:
    """Create or update `service`'s topology in `environment`."""
    logger = get_run_logger()
    context = load_service_context(service, environment)
    ensure_foundation(context)
    gateway = ensure_gateway(context)
    autoscale = ensure_autoscale(context, gateway)
    ports = context.service.ports_in(environment)
    summary = (
        f"# {service} in {environment}\n\n"
        f"| | |\n|---|---|\n"
        f"| gateway | {gateway.name} ({gateway.provisioning_state}) |\n"
        f"| production listener | port {ports.production} -> pool {gateway.production_pool} |\n"
        f"| test listener | port {ports.test} -> pool {gateway.test_pool} |\n"
        f"| autoscale | {autoscale} |\n"
    )
    create_markdown_artifact(key=f"topology-{service}-{environment}", markdown=summary)
    logger.info("%s in %s provisioned: production on %s", service, environment, gateway.production_pool)
    return gateway.production_pool or ""
