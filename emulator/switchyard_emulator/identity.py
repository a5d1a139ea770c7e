"""The emulator's persisted identity: bearer token, subscription id, Log Analytics workspace id.

Kept in DIR/identity.json (mode 0600) so that a restart serves the same subscription and the
clients built from emulator.json keep working.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path

from pydantic import BaseModel


class Identity(BaseModel):
    token: str
    subscription_id: str
    log_analytics_workspace_id: str


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
