"""What the routine flows report: a chain of releases through the environments, one outcome each.

Release on merge ships one image through the chain; the monthly patch does so for every service
of the fleet. Both stop a chain at its first environment that does not go live, or that does not
hold it for the environment's soak time (`soak_s`) before the next one starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

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


# How much of a stage's error a service's one-line result carries (its artifact has all of it).
STOPPED_REASON_CHARS = 200


def stopped_detail(stage: StageOutcome) -> str:
    """A service's result when its chain stopped at `stage`: where, how, and the first line of why
    (a failed release's error), so the run's summary says why without opening each release."""
    lines = stage.detail.strip().splitlines()
    why = lines[0][:STOPPED_REASON_CHARS] if lines else ""
    return f"stopped in {stage.environment}: {stage.outcome}" + (f" ({why})" if why else "")


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
    # staged: rebuilt and live in every environment before production, which is still to come (only
    #   while the patch runs: the production batch makes it patched, failed or held);
    # held: production not started, because too large a share of the fleet failed
    result: Literal["patched", "staged", "skipped", "failed", "held"]
    detail: str = ""
    old_version: str | None = None
    new_version: str | None = None
    stages: list[StageOutcome] = []
    # The change the rebuild shipped, for the production step's runs (DORA's lead time starts at
    # the rebuild's start; the commit is what production ran).
    git_commit: str | None = None
    change_at: datetime | None = None


# A run's services share its process, as threads: more than this and one process's Python work
# (one core, the GIL) becomes the bottleneck.
MAX_SERVICES_PER_RUN = 10


class PatchRollout(BaseModel):
    """How the monthly patch moves the fleet: every service through the environments before
    production at once (staging is where a bad patch should show), then production in batches, and
    no new service started once more than `max_failed_share` of those tried failed.

    Each step's services are split into runs of at most `services_per_run` (on the work pool: a
    process each, on any worker): a process costs seconds of CPU before it does anything (Python,
    Prefect, the Azure SDK), so a run per service would spend most of a small machine on start-ups,
    while one run for the whole fleet could not spread over workers. The default is the most one
    process takes (ADR 0012): measured on 2 cores, 20 services patched in 95 s at 10 per run and in
    110 s at 5 per run, the difference being the process starts."""

    production_batch_size: int = Field(
        5, ge=1, le=1000, description="Services released to production at once, lower patch_wave first"
    )
    max_failed_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Once more than this share of the services tried failed, no further service goes to "
        "production (0: stop at the first failure; 1: never stop)",
    )
    services_per_run: int = Field(
        MAX_SERVICES_PER_RUN,
        ge=1,
        le=MAX_SERVICES_PER_RUN,
        description="Services one patch-services run takes on (side by side, in one process on one worker)",
    )

    def run_groups(self, services: list[str]) -> list[list[str]]:
        """`services` split into as few runs as `services_per_run` allows, as even as can be (20 by 8:
        7, 7, 6, not 8, 8, 4), in the given order."""
        if not services:
            return []
        count = -(-len(services) // self.services_per_run)
        size, extra = divmod(len(services), count)
        groups, start = [], 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            groups.append(services[start:end])
            start = end
        return groups

    def production_batches(self, waves: Mapping[str, int]) -> list[list[str]]:
        """The services for production, in batches: lower patch_wave first, by name within a wave."""
        order = sorted(waves, key=lambda service: (waves[service], service))
        size = self.production_batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def stop_reason(self, results: list[ServicePatch]) -> str | None:
        """Why no further service may start, or None: the share of the services tried (all but the
        skipped) that failed is above the limit."""
        tried = [r for r in results if r.result != "skipped"]
        failed = [r.service for r in tried if r.result == "failed"]
        if not tried or len(failed) / len(tried) <= self.max_failed_share:
            return None
        return (
            f"{len(failed)} of {len(tried)} service(s) failed ({', '.join(failed)}), more than the "
            f"max_failed_share of {self.max_failed_share:g}"
        )


def not_run_in(patch: ServicePatch, production: str, why: str) -> ServicePatch:
    """A service that did not pass the environments before production: its production stage is
    recorded as not run, and why."""
    if any(stage.environment == production for stage in patch.stages):
        return patch
    stage = StageOutcome(environment=production, outcome="not-run", detail=why)
    return patch.model_copy(update={"stages": [*patch.stages, stage]})


def held_back(staged: ServicePatch, production: str, reason: str) -> ServicePatch:
    """A staged service whose production batch was not started: held, and why."""
    stage = StageOutcome(environment=production, outcome="not-run", detail=f"held: {reason}")
    detail = f"not released to {production}: {reason}"
    return staged.model_copy(update={"result": "held", "detail": detail, "stages": [*staged.stages, stage]})


def after_production(staged: ServicePatch, stages: list[StageOutcome]) -> ServicePatch:
    """A staged service once its production release ended: both parts of its chain, and the result."""
    failed = chain_failure(stages)
    if failed is None:
        return staged.model_copy(update={"result": "patched", "stages": [*staged.stages, *stages]})
    return staged.model_copy(
        update={
            "result": "failed",
            "detail": stopped_detail(failed),
            "stages": [*staged.stages, *stages],
        }
    )
