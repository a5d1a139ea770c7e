"""What the routine flows report: a chain of releases through the environments, one outcome each.

Release on merge ships one image through the chain; the monthly patch does so for every service
of the fleet. Both stop a chain at its first environment that does not go live.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

StageResult = Literal["promoted", "already-live", "rolled-back", "failed", "not-run"]
SUCCEEDED: tuple[StageResult, ...] = ("promoted", "already-live")


class StageOutcome(BaseModel):
    """How the release of one image to one environment ended."""

    environment: str
    outcome: StageResult
    detail: str = ""
    flow_run_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED


def chain_failure(stages: list[StageOutcome]) -> StageOutcome | None:
    """The stage that stopped the chain, if any."""
    return next((stage for stage in stages if stage.outcome not in (*SUCCEEDED, "not-run")), None)


class MergeRelease(BaseModel):
    """A merge shipped through the chain: what was built, and how each environment ended."""

    service: str
    app_version: str
    git_commit: str
    committed_at: datetime | None
    image_version: str | None
    stages: list[StageOutcome]


class ServicePatch(BaseModel):
    """One service's monthly patch: the image it ran, the one rebuilt, and the chain's outcomes."""

    service: str
    # held: not tried, because a service of an earlier wave failed
    result: Literal["patched", "skipped", "failed", "held"]
    detail: str = ""
    old_version: str | None = None
    new_version: str | None = None
    stages: list[StageOutcome] = []


def patch_waves(waves: Mapping[str, int]) -> list[list[str]]:
    """Services grouped by their patch wave, lowest wave first, names sorted within a wave."""
    grouped: dict[int, list[str]] = {}
    for service, wave in waves.items():
        grouped.setdefault(wave, []).append(service)
    return [sorted(grouped[wave]) for wave in sorted(grouped)]


def held_back(services: list[str], failed: list[ServicePatch]) -> list[ServicePatch]:
    """The services of the waves after one that failed: not tried, and why."""
    names = ", ".join(patch.service for patch in failed)
    return [
        ServicePatch(service=service, result="held", detail=f"not tried: an earlier wave failed ({names})")
        for service in services
    ]
