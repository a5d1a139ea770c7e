"""What the release guard saw and did (tasks/guard.py explains when it runs and why)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class GuardReport(BaseModel):
    """What the guard saw and did; the flow turns it into an event and a Markdown artifact."""

    service: str
    environment: str
    reason: str
    acted: bool
    action: str
    live_color: str | None
    removed_addresses: list[str] = []
    abandoned_release: str | None = None  # the image the dead release was rolling out (gateway tag)
    live_heartbeat_at: datetime | None = None  # a release is alive: its last heartbeat
    observed_at: datetime
    restored_at: datetime | None = None
