"""Fault injection: a seeded share of calls answers 429 (Retry-After), 500, or slowly.

Set at start (`--fault-rate 0.1 --fault-kinds 429,500,slow --fault-seed 7`) or at runtime through
the authenticated admin route `PUT /switchyard/faults` (body: this module's `FaultConfig`). A
fault may be aimed at Resource Manager's calls or at the Log Analytics query API alone (`scope`),
and stop after a number of faults (`limit`): "the next four queries answer 500" is a telemetry
outage of a known length, which a random share cannot promise.
Faults are drawn before the request is handled, so a faulted call never writes anything and the
SDK's retry of it is safe.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard_emulator.errors import ArmError, validated_settings

FaultKind = Literal["429", "500", "slow"]
ALL_KINDS: tuple[FaultKind, ...] = ("429", "500", "slow")
# What a request is, for a fault's scope: a Resource Manager call or a Log Analytics query.
FaultTarget = Literal["arm", "log-queries"]


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of ARM calls that get a fault")
    kinds: list[FaultKind] = Field(default_factory=lambda: list(ALL_KINDS))
    seed: int | None = Field(default=None, description="seed of the draw; the same seed gives the same faults")
    slow_seconds: float = Field(default=2.0, ge=0.0, le=60.0, description="delay of a 'slow' fault")
    retry_after_seconds: int = Field(default=1, ge=0, le=60, description="Retry-After of a 429 fault")
    scope: Literal["all", "arm", "log-queries"] = Field(
        default="all", description="the calls a fault may hit: Resource Manager's, Log Analytics queries, or both"
    )
    limit: int | None = Field(default=None, ge=0, description="faults to inject in all before stopping; none: no end")


def parse_kinds(value: str) -> list[FaultKind]:
    kinds = [k.strip().lower() for k in value.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("429", "500", "slow"):
            raise ValueError(f"unknown fault kind {kind!r}: use 429, 500 and/or slow")
    return kinds  # type: ignore[return-value]


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None) -> None:
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.injected: dict[str, int] = {"429": 0, "500": 0, "slow": 0}

    def status(self) -> dict[str, object]:
        """The admin route's answer: the configuration and how many faults it injected so far."""
        return {**self.config.model_dump(), "injected": dict(self.injected)}

    def configure_from_json(self, data: object) -> FaultConfig:
        config = validated_settings(FaultConfig, data, "InvalidFaultConfiguration")
        self.configure(config)
        return config

    def draw(self, target: FaultTarget) -> FaultKind | None:
        if self.config.rate <= 0 or not self.config.kinds or self.config.scope not in ("all", target):
            return None
        if self.config.limit is not None and sum(self.injected.values()) >= self.config.limit:
            return None
        if self._rng.random() >= self.config.rate:
            return None
        kind = self._rng.choice(self.config.kinds)
        self.injected[kind] += 1
        return kind

    async def apply(self, kind: FaultKind) -> None:
        """Raise the faulted answer (429/500), or delay a 'slow' call and let it proceed."""
        if kind == "429":
            raise ArmError(
                429,
                "TooManyRequests",
                "The request is being throttled (fault injected by the switchyard emulator).",
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            )
        if kind == "500":
            raise ArmError(
                500,
                "InternalServerError",
                "The server encountered an internal error (fault injected by the switchyard emulator).",
            )
        await asyncio.sleep(self.config.slow_seconds)
