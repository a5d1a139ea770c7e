"""The release summary people read in the Prefect UI: timeline, splits, verdicts, golden signals."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from switchyard.core.canary import SplitCheck, Verdict

Outcome = Literal["running", "promoted", "already-live", "rolled-back", "failed"]


class TimelineEntry(BaseModel):
    at: datetime
    step: str
    detail: str


class StepAnalysis(BaseModel):
    title: str  # e.g. "canary 25.0% (1 new beside 3 live)"
    verdict: Verdict
    split: SplitCheck | None = None


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

    def add(self, at: datetime, step: str, detail: str) -> TimelineEntry:
        entry = TimelineEntry(at=at, step=step, detail=detail)
        self.timeline.append(entry)
        return entry

    @property
    def seconds_to_restore(self) -> float | None:
        if self.failed_verdict_at and self.traffic_restored_at:
            return (self.traffic_restored_at - self.failed_verdict_at).total_seconds()
        return None

    def markdown(self) -> str:
        icon = {"promoted": "✅", "already-live": "✅", "rolled-back": "↩️", "failed": "❌"}.get(self.outcome, "⏳")
        lines = [
            f"# {icon} Release of {self.service} {self.image_version} to {self.environment}: "
            f"**{self.outcome.upper()}**",
            "",
            f"Strategy **{self.strategy}**; production was on **{self.live_before or '-'}**, "
            f"is now on **{self.live_after or '-'}**.",
        ]
        if self.outcome_detail:
            lines += ["", self.outcome_detail]
        if self.seconds_to_restore is not None:
            lines += [
                "",
                f"Traffic was back on the stable color {self.seconds_to_restore:.2f} s after the verdict.",
            ]
        lines += ["", "## Timeline", "", "| Time (UTC) | Step | Detail |", "|---|---|---|"]
        for entry in self.timeline:
            detail = entry.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {entry.at:%H:%M:%S.%f}"[:-3] + f" | {entry.step} | {detail} |")
        for analysis in self.analyses:
            lines += ["", f"## {analysis.title}", ""]
            if analysis.split is not None:
                lines += [f"**Traffic split:** {analysis.split.reason}", ""]
            lines.append(analysis.verdict.markdown())
        return "\n".join(lines) + "\n"
