"""One release per service and environment: a Prefect global concurrency limit of one slot.

The lock lives in the Prefect server, not in process memory, so it holds across workers and
machines; slots are leased, so a run that dies stops holding it when its lease runs out.
"""

from __future__ import annotations

import contextlib

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def ensure_release_lock(name: str) -> None:
    """Create the one-slot limit if it does not exist; two runs racing to create it both succeed."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # another run created it meanwhile
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
