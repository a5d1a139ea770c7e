"""What the routine flows report: a chain of releases through the environments, one outcome each.

Release on merge ships one image through the chain; the monthly patch does so for every service
of the fleet. Both stop a chain at its first environment that does not go live, or that does not
hold it for the environment's soak time (`soak_s`) before the next one starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from switchyard.core.state import ServiceObservation

StageResult = Literal["promoted", "already-live", "rolled-back", "failed", "not-run"]
SUCCEEDED: tuple[StageResult, ...] = ("promoted", "already-live")


def soak_problem(observed: ServiceObservation, image_version: str) -> str | None:
    """Why a version that went live is not holding during its soak, or None while it holds: production
    routes to a color that runs only it, and every one of those instances is healthy in the pool
    production routes to (a person's rollback, a newer release or failing instances all stop a chain)."""
    live = observed.live_color
    if live is None:
        return "production routes to no color"
    live_set = observed.scale_set(live)
    if not live_set.instances:
        return f"the live color {live.value} runs no instances"
    runs = live_set.runs_only
    if runs != image_version:
        return f"production runs {runs or 'a mix of versions'} now, not {image_version} (rolled back or replaced)"
    gateway = observed.gateway
    probed = gateway.canary_pool_of(live) if gateway.canary_routed else gateway.pool_of(live)
    unhealthy = [address for address in live_set.addresses if probed.health.get(address) != "Up"]
    if unhealthy:
        return f"live instances not healthy: {', '.join(unhealthy)}"
    return None


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
