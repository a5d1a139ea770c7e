"""Every Markdown report people read in the Prefect UI, rendered in one place.

Pure functions from switchyard's models to a `Report`: the Markdown of an artifact and the one
line the artifact list shows. Flows only choose the artifact's key and publish it. (The canary
verdict, the scan gate and the DORA report render their own sections, which these include.)
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from switchyard.core.findings import SEVERITIES_WORST_FIRST, FindingKind
from switchyard.core.flags import FlagChange, FlagState, on_off
from switchyard.core.guard import GuardReport
from switchyard.core.hooks import HookResult
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.image_records import PatchRecord
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.routine import MergeRelease, ServicePatch, StageOutcome, chain_failure
from switchyard.core.scan_policy import GateResult

STAGE_ICONS: dict[str, str] = {
    "promoted": "✅",
    "already-live": "✅",
    "rolled-back": "↩️",
    "failed": "❌",
    "not-run": "⏭️",
}


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    markdown: str
    description: str  # one line: what the artifact list shows beside the key


def _cell(text: str) -> str:
    """Free text inside a Markdown table cell: a pipe would end the cell, a newline the row."""
    return text.replace("|", "\\|").replace("\n", " ")


# Releases ----------------------------------------------------------------------------------------


def release_report(summary: ReleaseSummary) -> Report:
    """A release: outcome, the colors before and after, the timeline, and every analysis."""
    icons = {"promoted": "✅", "already-live": "✅", "refused": "🛑", "rolled-back": "↩️", "failed": "❌"}
    icon = "⚠️" if summary.outcome == "promoted" and summary.warnings else icons.get(summary.outcome, "⏳")
    lines = [
        f"# {icon} Release of {summary.service} {summary.image_version} to {summary.environment}: "
        f"**{summary.outcome.upper()}**",
        "",
        f"Strategy **{summary.strategy}**; production was on **{summary.live_before or '-'}**, "
        f"is now on **{summary.live_after or '-'}**.",
    ]
    if summary.outcome_detail:
        lines += ["", summary.outcome_detail]
    for warning in summary.warnings:
        lines += ["", f"**Warning:** {warning}"]
    if summary.seconds_to_restore is not None:
        lines += ["", f"Traffic was back on the stable color {summary.seconds_to_restore:.2f} s after the verdict."]
    if summary.plan is not None:
        # The plan comes first: what the release meant to do, then (the timeline) what it did.
        lines += ["", summary.plan.markdown().rstrip("\n")]
    lines += ["", "## Timeline", "", "| Time (UTC) | Step | Detail |", "|---|---|---|"]
    for entry in summary.timeline:
        # Milliseconds: the steps of a rollback are a few of them apart.
        lines.append(f"| {entry.at:%H:%M:%S.%f}"[:-3] + f" | {entry.step} | {_cell(entry.detail)} |")
    if summary.tests:
        lines += ["", "## Test stages", "", "| Stage | Result | Detail |", "|---|---|---|"]
        for test in summary.tests:
            lines.append(f"| {test.stage} | {'passed' if test.passed else '**failed**'} | {_cell(test.detail)} |")
    for analysis in summary.analyses:
        lines += ["", f"## {analysis.title}", ""]
        if analysis.split is not None:
            lines += [f"**Traffic split:** {analysis.split.reason}", ""]
        lines.append(analysis.verdict.markdown())
    if summary.hooks:
        lines += ["", hooks_markdown(summary.hooks)]
    if summary.flags:
        lines += ["", "## Flags turned on", "", flags_changed_markdown(summary.flags)]
    warned = " (with warnings)" if summary.warnings else ""
    return Report(
        markdown="\n".join(lines) + "\n",
        description=f"Release of {summary.service} {summary.image_version} to {summary.environment}: "
        f"{summary.outcome}{warned}",
    )


def hooks_markdown(results: list[HookResult]) -> str:
    """The release's hooks: what ran, how it ended, and the end of its output (already redacted)."""
    lines = ["## Hooks", "", "| Hook | Ran | Result | Detail |", "|---|---|---|---|"]
    for result in results:
        mark = "✅ passed" if result.passed else "❌ failed"
        lines.append(f"| {result.hook} | `{_cell(result.target)}` | {mark} | {_cell(result.detail)} |")
    for result in results:
        output = "response" if result.kind == "http" else "output"
        for stream, text in ((output, result.stdout_tail), ("errors", result.stderr_tail)):
            if text:
                # A fence longer than any run of backticks in the output, so the output cannot end it.
                fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
                lines += ["", f"**{result.hook} {stream}** (the end):", "", fence, text, fence]
    return "\n".join(lines)


def flags_changed_markdown(changes: list[FlagChange]) -> str:
    """A table of flags set: before and after, when and by whom."""
    lines = ["| Flag | Before | Now | Set at (UTC) | By |", "|---|---|---|---|---|"]
    for change in changes:
        before = "off (no row)" if change.previous is None else on_off(change.previous)
        lines.append(
            f"| {change.name} | {before} | **{on_off(change.enabled)}** | {change.updated_at:%Y-%m-%d %H:%M:%S} | "
            f"{_cell(change.updated_by)} |"
        )
    return "\n".join(lines)


def flag_report(change: FlagChange, flags: list[FlagState]) -> Report:
    """A flag set by a person (the set-flag flow): the change, then every flag of the service there."""
    lines = [
        f"# Flag {change.name} of {change.service} in {change.environment}: **{on_off(change.enabled).upper()}**",
        "",
        flags_changed_markdown([change]),
        "",
        f"Database: `{change.database}`. The service reads its flags at run time: instances see the change "
        "within their cache's age (the sample app: half a second), with no deploy. Set it back the same way.",
        "",
        f"## Every flag of {change.service} in {change.environment}",
        "",
        "| Flag | State | Set at (UTC) | By |",
        "|---|---|---|---|",
    ]
    for flag in flags:
        lines.append(
            f"| {flag.name} | {on_off(flag.enabled)} | {flag.updated_at:%Y-%m-%d %H:%M:%S} | {_cell(flag.updated_by)} |"
        )
    return Report(markdown="\n".join(lines) + "\n", description=change.describe())


def guard_report(report: GuardReport) -> Report:
    """What the release guard saw and did."""
    title = "restored the stable color" if report.acted else "nothing to do"
    lines = [
        f"# Release guard of {report.service} in {report.environment}: {title}",
        "",
        f"**Why the guard ran:** {report.reason}",
        "",
        f"**What it did:** {report.action}",
        "",
        "| | |",
        "|---|---|",
        f"| live color (unchanged) | {report.live_color or '-'} |",
        f"| canary instances removed | {', '.join(report.removed_addresses) or '-'} |",
        f"| release it interrupted | {report.abandoned_release or '-'} |",
        f"| observed at | {report.observed_at.isoformat()} |",
        f"| traffic restored at | {report.restored_at.isoformat() if report.restored_at else '-'} |",
    ]
    if report.live_heartbeat_at:
        lines.append(f"| live release heartbeat | {report.live_heartbeat_at.isoformat()} |")
    lines += [
        "",
        "The guard never switches colors and does not mark the image rolled back: the release died, "
        "it was not judged. Run the release again to continue it, or `switchyard rollback` to undo a promotion.",
    ]
    return Report(
        markdown="\n".join(lines) + "\n",
        description=f"Release guard of {report.service} in {report.environment}: {report.action}",
    )


# Images ------------------------------------------------------------------------------------------


def image_report(
    image: ImageMetadata,
    *,
    reused: bool,
    production: str | None = None,
    gate: GateResult | None = None,
    patches: PatchRecord | None = None,
) -> Report:
    """An image the pipeline published (with its gate's report and its patch changes) or reused."""
    rows = "\n".join(
        f"| {kind.value} | "
        + " | ".join(str(image.scan_summary.count(kind, severity)) for severity in SEVERITIES_WORST_FIRST)
        + " |"
        for kind in FindingKind
    )
    markdown = (
        f"# {image.service} {image.gallery_version}: {'reused' if reused else 'published'}\n\n"
        f"| | |\n|---|---|\n| base | {image.base} |\n| patch level | {image.patch_level} |\n"
        f"| app version | {image.app_version} |\n| commit | `{image.git_commit}` |\n"
        f"| production runs | {production or '-'} |\n\n"
        "## Scan summary\n\n| kind | critical | high | medium | low | unknown |\n|---|---|---|---|---|---|\n"
        f"{rows}\n"
    )
    if patches is not None:
        markdown += "\n" + patch_markdown(patches)
    if gate is not None:
        markdown += "\n" + gate.to_markdown()
    return Report(markdown=markdown, description=f"{image.service} {image.gallery_version}")


def patch_markdown(patches: PatchRecord) -> str:
    """What the patch step changed: every package with its version before and after."""
    snapshot = f" from the package snapshot `{patches.snapshot}`" if patches.snapshot else ""
    lines = [f"## Patches (patch level {patches.patch_level}{snapshot})", ""]
    if patches.reason:
        lines += [f"No package changes to show: {_cell(patches.reason)}.", ""]
    elif not patches.changes:
        lines += ["No package needed an update at this patch level.", ""]
    if patches.changes:
        lines += ["| package | from | to |", "|---|---|---|"]
        lines += [
            f"| {_cell(c.package)} | {_cell(c.before or '(new)')} | {_cell(c.after or '(removed)')} |"
            for c in patches.changes
        ]
        lines.append("")
    return "\n".join(lines)


def scan_gate_stop_report(service: str, gallery_version: str, gate: GateResult) -> Report:
    """An image stopped at the scan gate: nothing was published."""
    return Report(
        markdown=f"# {service} {gallery_version}: stopped at the scan gate\n\nNothing was published.\n\n"
        + gate.to_markdown(),
        description=f"{service} {gallery_version} failed its scan gate",
    )


# Routine flows -----------------------------------------------------------------------------------


def stages_markdown(stages: list[StageOutcome]) -> str:
    """One row per environment of a chain of releases."""
    lines = ["| Environment | Outcome | Detail |", "|---|---|---|"]
    for stage in stages:
        lines.append(f"| {stage.environment} | {STAGE_ICONS[stage.outcome]} {stage.outcome} | {_cell(stage.detail)} |")
    return "\n".join(lines) + "\n"


def merge_report(result: MergeRelease, problem: str = "") -> Report:
    """A merge shipped through the chain; `problem` is what stopped it before any release."""
    committed = result.committed_at.isoformat() if result.committed_at else "unknown"
    markdown = (
        f"# Merge of {result.service} at `{result.git_commit[:12]}`\n\n"
        f"| | |\n|---|---|\n| app version | {result.app_version} |\n| commit | `{result.git_commit}` |\n"
        f"| committed at | {committed} |\n| image | {result.image_version or '-'} |\n\n"
        + (f"**{problem}**\n\n" if problem else "")
        + stages_markdown(result.stages)
    )
    failed = chain_failure(result.stages)
    outcome = f"stopped in {failed.environment}" if failed else "problem" if problem else "released"
    return Report(markdown=markdown, description=f"{result.service} {result.git_commit[:12]}: {outcome}")


def monthly_patch_lines(results: list[ServicePatch]) -> list[str]:
    """The monthly patch as the command line prints it: a line per service (its result, the image it
    moved from and to, each environment's outcome) and, below a service that stopped, why."""
    width = max((len(patch.service) for patch in results), default=0)
    lines = []
    for patch in results:
        moved = f"{patch.old_version or '-'} -> {patch.new_version or '-'}"
        stages = ", ".join(f"{stage.environment} {stage.outcome}" for stage in patch.stages) or patch.detail
        lines.append(f"{patch.service.ljust(width)}  {patch.result:<7}  {moved}  {stages}".rstrip())
        stopped = chain_failure(patch.stages)
        if stopped is not None:
            lines.append(f"{' ' * width}  {stopped.environment}: {' '.join(stopped.detail.split()) or stopped.outcome}")
        elif patch.result in ("failed", "held") and patch.stages:
            lines.append(f"{' ' * width}  {patch.detail}")
    return lines


def monthly_patch_report(results: list[ServicePatch], environments: list[str], month: datetime) -> Report:
    """The fleet's monthly patch: per service the version before and after, each environment's
    outcome, and the failures spelled out below the table."""
    header = "| Service | Production before | Patched image | " + " | ".join(environments) + " | Result |"
    lines = [f"# Monthly patch, {month:%B %Y}", "", header, "|---" * (len(environments) + 4) + "|"]
    for patch in results:
        by_environment = {stage.environment: stage for stage in patch.stages}
        cells = []
        for environment in environments:
            stage = by_environment.get(environment)
            cells.append(f"{STAGE_ICONS[stage.outcome]} {stage.outcome}" if stage else "-")
        lines.append(
            f"| {patch.service} | {patch.old_version or '-'} | {patch.new_version or '-'} | "
            + " | ".join(cells)
            + f" | **{patch.result}**: {_cell(patch.detail)} |"
        )
    kinds = ("patched", "skipped", "failed", "held")
    counts = {kind: sum(1 for r in results if r.result == kind) for kind in kinds}
    tally = f"{counts['patched']} patched, {counts['skipped']} skipped, {counts['failed']} failed"
    if counts["held"]:
        tally += f", {counts['held']} held back from {environments[-1]} (too many failed)"
    lines += ["", f"{tally}."]
    failures = [(p.service, s) for p in results for s in p.stages if s.outcome in ("failed", "rolled-back")]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{service}** in {stage.environment}: {stage.detail}" for service, stage in failures]
    return Report(markdown="\n".join(lines) + "\n", description=f"Monthly patch: {tally}")
