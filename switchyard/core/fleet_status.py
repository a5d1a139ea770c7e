"""`switchyard fleet status` and the fleet-status artifact: one row per service and environment.

Pure: the caller reads each service's observation and its live image's gallery tags from the cloud
(switchyard/cloud/readonly.py); this module turns them into rows. What cannot be read is a row too
(not deployed there, not provisioned, unreachable), so one broken environment never hides the rest
of the fleet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from switchyard.core.config import ServiceContext
from switchyard.core.image_metadata import ImageMetadata, ImageMetadataError
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase
from switchyard.core.state import ImageObservation, ServiceObservation
from switchyard.core.status import service_status
from switchyard.core.versions import ImageVersion, VersionError

RowState = Literal["ok", "not-deployed", "not-provisioned", "unreachable"]

# Phases of a release that has not finished: the gateway says so until finalize or a rollback.
_IN_FLIGHT = {Phase.CANARY.value, Phase.PROMOTED.value, Phase.INTERRUPTED.value}

COLUMNS = (
    "service",
    "environment",
    "live",
    "image",
    "base",
    "patch",
    "app",
    "age",
    "health",
    "release in flight",
    "note",
)


class FleetMember(BaseModel):
    """A service and an environment of the fleet, and what it takes to read it (or why it cannot be)."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    context: ServiceContext | None = None  # None: not deployed there, or its configuration is unusable
    problem: str = ""  # why the configuration could not be loaded

    def fallback_row(self) -> FleetRow:
        """The row of a member without a context."""
        if self.problem:
            return unreachable_row(self.service, self.environment, self.problem)
        return not_deployed_row(self.service, self.environment)


class FleetRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    state: RowState
    live_color: str | None = None
    image_version: str | None = None  # what every live instance runs (None: none, or mixed)
    base: str | None = None
    patch_level: str | None = None
    app_version: str | None = None
    built_at: datetime | None = None  # from the image's gallery tags
    released_at: datetime | None = None  # first time the image held full traffic (gallery tag)
    age_s: float | None = None  # since the live image was released, or built when never released
    healthy: int = 0
    total: int = 0
    release_in_flight: str | None = None
    note: str = ""  # why a row has no data, or what is odd about it

    def cells(self) -> dict[str, str]:
        """The row as a person reads it (the CLI table and the Prefect table artifact)."""
        if self.state != "ok":
            return {
                "service": self.service,
                "environment": self.environment,
                **dict.fromkeys(COLUMNS[2:], "-"),
                "live": self.state,
                "note": self.note,
            }
        return {
            "service": self.service,
            "environment": self.environment,
            "live": self.live_color or "-",
            "image": self.image_version or "-",
            "base": self.base or "-",
            "patch": self.patch_level or "-",
            "app": self.app_version or "-",
            "age": format_age(self.age_s),
            "health": f"{self.healthy}/{self.total}",
            "release in flight": self.release_in_flight or "-",
            "note": self.note,
        }


class FleetStatus(BaseModel):
    observed_at: datetime
    rows: list[FleetRow]

    def table(self) -> list[dict[str, str]]:
        return [row.cells() for row in self.rows]

    def text(self) -> str:
        table = self.table()
        widths = {c: max([len(c), *(len(r[c]) for r in table)]) for c in COLUMNS}
        lines = ["  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip()]
        lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in table]
        lines.append(f"{len(self.rows)} service/environment pair(s), read at {self.observed_at:%Y-%m-%d %H:%M:%S} UTC")
        return "\n".join(lines)


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    age = timedelta(seconds=max(seconds, 0))
    if age.days:
        return f"{age.days}d {age.seconds // 3600}h"
    if age.seconds >= 3600:
        return f"{age.seconds // 3600}h {age.seconds % 3600 // 60}m"
    return f"{age.seconds // 60}m"


def fleet_row(observed: ServiceObservation, live_image: ImageObservation | None, now: datetime) -> FleetRow:
    """A provisioned (or not) service in one environment. `live_image` is the gallery's record of
    the version every live instance runs (None when there is no single such version, or it could
    not be read); the version's own numbers give base, patch level and app version either way."""
    topology = observed.topology
    if not observed.gateway.exists:
        return FleetRow(
            service=topology.service,
            environment=topology.environment,
            state="not-provisioned",
            note=f"{observed.gateway.name} does not exist: run `switchyard provision`",
        )
    report = service_status(observed)
    live = observed.live_color
    live_set = observed.scale_set(live) if live is not None else None
    version = live_set.runs_only if live_set is not None else None
    live_status = next((c for c in report.colors if c.role == "live"), None)
    row: dict[str, object] = {
        "service": topology.service,
        "environment": topology.environment,
        "state": "ok",
        "live_color": report.live_color,
        "image_version": version,
        "healthy": live_status.healthy if live_status else 0,
        "total": live_status.instances if live_status else 0,
        "release_in_flight": release_in_flight(observed),
    }
    if live_set is not None and live_set.instances and version is None:
        row["note"] = "mixed versions"
    elif live_set is None or not live_set.instances:
        row["note"] = "nothing live yet"
    if version is not None:
        try:
            parsed = ImageVersion.from_gallery_version(version)
            row.update(base=str(parsed.base), patch_level=str(parsed.patch_level), app_version=str(parsed.app_version))
        except VersionError:
            row["note"] = f"{version} is not a switchyard gallery version"
    if version is not None and live_image is not None and live_image.exists:
        try:
            metadata = ImageMetadata.from_tags(live_image.tags)
        except ImageMetadataError as error:
            row["note"] = f"gallery tags unusable: {error}"
        else:
            row.update(built_at=metadata.built_at, released_at=metadata.released_at)
            since = metadata.released_at or metadata.built_at
            row["age_s"] = (now - since).total_seconds()
    return FleetRow.model_validate(row)


def release_in_flight(observed: ServiceObservation) -> str | None:
    """The release the gateway's tags say is not finished, with how far it got."""
    tags = observed.gateway.tags
    phase, release = tags.get(TAG_PHASE), tags.get(TAG_RELEASE)
    if release is None or phase not in _IN_FLIGHT:
        return None
    if phase == Phase.CANARY.value:
        share = service_status(observed).canary_share
        return f"{release} canary {share:.0%}" if observed.canary_serving else f"{release} canary (not serving)"
    if phase == Phase.PROMOTED.value:
        return f"{release} promoted, not finalized"
    return f"{release} interrupted (run the release again, or roll back)"


def not_deployed_row(service: str, environment: str) -> FleetRow:
    return FleetRow(
        service=service,
        environment=environment,
        state="not-deployed",
        note=f"{service} has no frontend ports in {environment}",
    )


def unreachable_row(service: str, environment: str, error: str) -> FleetRow:
    return FleetRow(service=service, environment=environment, state="unreachable", note=error)
