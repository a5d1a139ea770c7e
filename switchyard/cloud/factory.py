"""The one place that builds a cloud from configuration: the Azure adapter for a service in an
environment, once per process (its SDK clients keep their connections)."""

from __future__ import annotations

import threading

from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.ports import Cloud
from switchyard.cloud.shared_rate import prefect_query_gate
from switchyard.core.config import ServiceContext

_clouds: dict[str, Cloud] = {}
_clouds_lock = threading.Lock()


def cloud_for(context: ServiceContext) -> Cloud:
    """The adapter for this context (keyed by everything in it, secrets included)."""
    key = context.fingerprint()
    with _clouds_lock:
        cloud = _clouds.get(key)
        if cloud is None:
            cloud = _clouds[key] = AzureCloud(
                context.environment, context.service, shared_query_gate=prefect_query_gate()
            )
        return cloud
