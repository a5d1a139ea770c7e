"""The emulator's persisted identity: bearer token, subscription id, Log Analytics workspace id.

Kept in DIR/identity.json (mode 0600) so that a restart serves the same subscription and the
clients built from emulator.json keep working.

The Log Analytics workspace has two names, as on Azure: its customer id (a GUID, what the query
API `POST /v1/workspaces/{customerId}/query` takes) and its ARM resource id (what a diagnostic
setting's `workspaceId` names). The resource lives in a resource group the emulator owns.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path

from pydantic import BaseModel

# The emulator's own resource group and its Log Analytics workspace (resources/workspaces.py).
MONITOR_RESOURCE_GROUP = "switchyard-monitor"
WORKSPACE_NAME = "switchyard-logs"


class Identity(BaseModel):
    token: str
    subscription_id: str
    log_analytics_workspace_id: str

    @property
    def log_analytics_workspace_resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{MONITOR_RESOURCE_GROUP}"
            f"/providers/Microsoft.OperationalInsights/workspaces/{WORKSPACE_NAME}"
        )


def load_or_create_identity(state_dir: Path) -> Identity:
    path = state_dir / "identity.json"
    if path.exists():
        return Identity.model_validate_json(path.read_text())
    identity = Identity(
        token=secrets.token_urlsafe(32),
        subscription_id=str(uuid.uuid4()),
        log_analytics_workspace_id=str(uuid.uuid4()),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(identity.model_dump(), handle)
    return identity
