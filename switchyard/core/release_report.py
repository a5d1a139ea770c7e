"""The release summary: timeline, splits, verdicts, golden signals (switchyard.core.reports renders it)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from switchyard.core.canary_split import SplitCheck
from switchyard.core.canary_verdict import Verdict
from switchyard.core.flags import FlagChange
from switchyard.core.hooks import HookResult
from switchyard.core.plan import ReleasePlan
from switchyard.core.stages import StageResult

# "refused": stopped before any change by this run (a failed pre_deploy hook).
Outcome = Literal["running", "promoted", "already-live", "refused", "rolled-back", "failed"]


class TimelineEntry(BaseModel):
    at: datetime
    step: str
    detail: str


class StepAnalysis(BaseModel):
    title: str  # e.g. "canary 25.0% (1 new beside 3 live)"
    verdict: Verdict
    split: SplitCheck | None = None


class ReleaseStage(BaseModel):
    """One stage of a release as a person reads it: what ran, how it ended, in one line."""

    name: str  # "pre_deploy hook", "smoke", "Canary 25% ...", "release"
    outcome: str  # passed / failed, a canary verdict (pass, fail, inconclusive ...), or the release's outcome
    detail: str = ""

    @classmethod
    def of_hook(cls, result: HookResult) -> ReleaseStage:
        return cls(name=f"{result.hook} hook", outcome="passed" if result.passed else "failed", detail=result.detail)


class ReleaseSummary(BaseModel):
    service: str
    environment: str
    image_version: str
    strategy: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: Outcome = "running"
    outcome_detail: str = ""
    live_before: str | None = None
    live_after: str | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    analyses: list[StepAnalysis] = Field(default_factory=list)
    failed_verdict_at: datetime | None = None
    traffic_restored_at: datetime | None = None
    first_user_request_at: datetime | None = None
    # What the release planned at its start, from preflight's observation (its summary opens with it).
    plan: ReleasePlan | None = None
    hooks: list[HookResult] = Field(default_factory=list)
    tests: list[StageResult] = Field(default_factory=list)  # the test stages, in the order they ran
    # The flags the policy's enable_flags turned on once the release was promoted and finalized.
    flags: list[FlagChange] = Field(default_factory=list)
    # What went wrong without changing the outcome, e.g. a failed post_promote hook after promotion.
    warnings: list[str] = Field(default_factory=list)

    def stages(self) -> list[ReleaseStage]:
        """The release's stages in order, each with its outcome: the hooks, the test stages, each
        canary analysis and the outcome of the release as a whole."""
        hook_of = {h.hook: h for h in self.hooks}
        stages: list[ReleaseStage] = []
        if "pre_deploy" in hook_of:
            stages.append(ReleaseStage.of_hook(hook_of["pre_deploy"]))
        stages += [
            ReleaseStage(name=t.stage, outcome="passed" if t.passed else "failed", detail=t.detail) for t in self.tests
        ]
        stages += [
            ReleaseStage(name=a.title, outcome=a.verdict.outcome.value, detail=a.verdict.summary) for a in self.analyses
        ]
        if "post_promote" in hook_of:
            stages.append(ReleaseStage.of_hook(hook_of["post_promote"]))
        stages.append(ReleaseStage(name="release", outcome=self.outcome, detail=self.outcome_detail))
        return stages

    def add(self, at: datetime, step: str, detail: str) -> TimelineEntry:
        entry = TimelineEntry(at=at, step=step, detail=detail)
        self.timeline.append(entry)
        return entry

    @property
    def seconds_to_restore(self) -> float | None:
        if self.failed_verdict_at and self.traffic_restored_at:
            return (self.traffic_restored_at - self.failed_verdict_at).total_seconds()
        return None
