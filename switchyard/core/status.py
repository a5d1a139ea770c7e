"""`switchyard status`: what a service looks like in an environment, from one observation."""

from __future__ import annotations

from pydantic import BaseModel

from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE
from switchyard.core.state import ServiceObservation


class ColorStatus(BaseModel):
    color: str
    role: str  # live / idle
    image_version: str | None
    instances: int
    healthy: int
    health: dict[str, str]


class StatusReport(BaseModel):
    service: str
    environment: str
    live_color: str | None
    canary_share: float
    canary_addresses: list[str]
    release: str | None
    phase: str | None
    colors: list[ColorStatus]

    def text(self) -> str:
        lines = [
            f"{self.service} in {self.environment}: production on {self.live_color or 'nothing'}"
            + (
                f", canary {self.canary_share:.0%} ({', '.join(self.canary_addresses)})"
                if self.canary_share
                else f", idle instance(s) in the canary pool, not serving ({', '.join(self.canary_addresses)})"
                if self.canary_addresses
                else ""
            )
        ]
        if self.release:
            lines.append(f"last release {self.release} ({self.phase})")
        for color in self.colors:
            lines.append(
                f"  {color.color:<5} {color.role:<4} image {color.image_version or '-':<22} "
                f"{color.healthy}/{color.instances} healthy"
            )
        return "\n".join(lines)


def service_status(observed: ServiceObservation) -> StatusReport:
    live = observed.live_color
    colors = []
    for color, scale_set in observed.scale_sets.items():
        pool = observed.gateway.pool_of(color)
        health = {address: pool.health.get(address, "not in pool") for address in scale_set.addresses}
        colors.append(
            ColorStatus(
                color=color.value,
                role="live" if color == live else "idle",
                image_version=scale_set.runs_only or scale_set.image_version,
                instances=len(scale_set.instances),
                healthy=sum(1 for state in health.values() if state == "Up"),
                health=health,
            )
        )
    canary = observed.canary_addresses
    live_count = len(observed.scale_set(live).instances) if live else 0
    # Idle instances sit in the canary pool before production routes there (a canary prepared), and
    # after a switch (the last canary, kept warm as it is until the next release prepares that
    # color): they get a share of users only while the canary serves.
    share = len(canary) / (live_count + len(canary)) if observed.canary_serving else 0.0
    return StatusReport(
        service=observed.topology.service,
        environment=observed.topology.environment,
        live_color=live.value if live else None,
        canary_share=share,
        canary_addresses=canary,
        release=observed.gateway.tags.get(TAG_RELEASE),
        phase=observed.gateway.tags.get(TAG_PHASE),
        colors=sorted(colors, key=lambda c: c.role),
    )
