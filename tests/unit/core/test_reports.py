"""The Markdown reports people read in the Prefect UI, as they read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from switchyard.core.canary import judge_canary
from switchyard.core.canary_inputs import AnalysisWindow, CanaryEvidence, CanaryPolicy, SideEvidence
from switchyard.core.canary_split import verify_split
from switchyard.core.findings import Finding, FindingKind, Severity
from switchyard.core.guard import GuardReport
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.release_report import ReleaseSummary, StepAnalysis
from switchyard.core.reports import (
    guard_report,
    image_report,
    merge_report,
    monthly_patch_lines,
    monthly_patch_report,
    release_report,
    scan_gate_stop_report,
    stages_markdown,
)
from switchyard.core.routine import MergeRelease, ServicePatch, StageOutcome
from switchyard.core.scan_policy import ScanPolicy, evaluate
from tests.unit.core.cloud_states import V1, V2, image

AT = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def summary(**changes: object) -> ReleaseSummary:
    values: dict[str, object] = {
        "service": "shop",
        "environment": "production",
        "image_version": V2,
        "strategy": "canary",
        "started_at": AT,
    }
    values.update(changes)
    return ReleaseSummary.model_validate(values)


# --- a release ---------------------------------------------------------------------------------------


def test_a_rolled_back_release_says_so_first_and_how_fast_traffic_came_back() -> None:
    rolled_back = summary(
        outcome="rolled-back",
        outcome_detail="Rolled back: canary at 25.0% failed: error rate SLO",
        live_before="blue",
        live_after="blue",
        failed_verdict_at=AT,
        traffic_restored_at=AT + timedelta(seconds=0.25),
    )
    report = release_report(rolled_back)

    assert report.markdown.startswith(
        f"# ↩️ Release of shop {V2} to production: **ROLLED-BACK**\n\n"
        "Strategy **canary**; production was on **blue**, is now on **blue**.\n\n"
        "Rolled back: canary at 25.0% failed: error rate SLO\n\n"
        "Traffic was back on the stable color 0.25 s after the verdict.\n"
    )
    assert report.description == f"Release of shop {V2} to production: rolled-back"


def test_a_running_release_has_no_restore_time_and_no_colors_yet() -> None:
    text = release_report(summary()).markdown
    assert text.startswith(f"# ⏳ Release of shop {V2} to production: **RUNNING**")
    assert "production was on **-**, is now on **-**" in text
    assert "Traffic was back" not in text


def test_the_timeline_has_milliseconds_and_keeps_each_step_on_one_table_row() -> None:
    running = summary()
    running.add(AT, "preflight", "image ok | replicated\nquota ok")
    running.add(AT + timedelta(milliseconds=1500), "set split", "25%")
    text = release_report(running).markdown

    assert "| Time (UTC) | Step | Detail |\n|---|---|---|\n" in text
    assert "| 10:00:00.123 | preflight | image ok \\| replicated quota ok |\n" in text
    assert "| 10:00:01.623 | set split | 25% |\n" in text


def test_each_analysis_shows_its_split_and_its_verdict() -> None:
    window = AnalysisWindow(start=AT, end=AT + timedelta(seconds=30))
    baseline = SideEvidence(color="blue", latency_ms=[20.0] * 300, request_count=300, error_count=0)
    canary = SideEvidence(color="green", latency_ms=[20.0] * 100, request_count=100, error_count=0)
    verdict = judge_canary(CanaryEvidence(window=window, baseline=baseline, canary=canary), CanaryPolicy())
    split = verify_split(0.25, canary_requests=100, total_requests=400, tolerance=0.1)
    released = summary(
        analyses=[
            StepAnalysis(title="Canary 25% requested", verdict=verdict, split=split),
            StepAnalysis(title="Under full traffic", verdict=verdict),
        ]
    )
    text = release_report(released).markdown

    assert f"\n## Canary 25% requested\n\n**Traffic split:** {split.reason}\n\n## Canary verdict:" in text
    assert "\n## Under full traffic\n\n## Canary verdict:" in text
    assert text.count(verdict.markdown()) == 2


# --- the guard ------------------------------------------------------------------------------------------


def test_a_guard_that_restored_the_stable_color_names_what_it_removed() -> None:
    acted = GuardReport(
        service="shop",
        environment="production",
        reason="the release stopped sending heartbeats without finishing",
        acted=True,
        action="canary instances removed",
        live_color="blue",
        removed_addresses=["10.0.1.4", "10.0.1.5"],
        abandoned_release=V2,
        observed_at=AT,
        restored_at=AT,
    )
    report = guard_report(acted)

    assert report.markdown.startswith("# Release guard of shop in production: restored the stable color\n")
    assert "**Why the guard ran:** the release stopped sending heartbeats without finishing" in report.markdown
    assert "| canary instances removed | 10.0.1.4, 10.0.1.5 |" in report.markdown
    assert f"| release it interrupted | {V2} |" in report.markdown
    assert f"| traffic restored at | {AT.isoformat()} |" in report.markdown
    assert "live release heartbeat" not in report.markdown
    assert report.description == "Release guard of shop in production: canary instances removed"


def test_a_guard_that_found_a_live_release_did_nothing_and_shows_its_heartbeat() -> None:
    alive = GuardReport(
        service="shop",
        environment="production",
        reason="silence",
        acted=False,
        action="a release is alive",
        live_color=None,
        live_heartbeat_at=AT,
        observed_at=AT,
    )
    text = guard_report(alive).markdown
    assert text.startswith("# Release guard of shop in production: nothing to do\n")
    assert "| live color (unchanged) | - |" in text and "| canary instances removed | - |" in text
    assert f"| live release heartbeat | {AT.isoformat()} |" in text


# --- images --------------------------------------------------------------------------------------------


METADATA = ImageMetadata.from_tags(image(V2).tags)  # one HIGH vulnerability


def test_a_published_image_shows_its_history_its_scan_counts_and_its_gate() -> None:
    gate = evaluate(ScanPolicy(), [], today=AT.date())
    report = image_report(METADATA, reused=False, production=V1, gate=gate)

    assert report.markdown.startswith(f"# sample {V2}: published\n\n| | |\n|---|---|\n| base | debian-12 |\n")
    assert f"| commit | `{METADATA.git_commit}` |\n| production runs | {V1} |\n" in report.markdown
    assert (
        "| kind | critical | high | medium | low | unknown |\n|---|---|---|---|---|---|\n"
        "| vulnerability | 0 | 1 | 0 | 0 | 0 |\n"
        "| misconfiguration | 0 | 0 | 0 | 0 | 0 |\n"
        "| secret | 0 | 0 | 0 | 0 | 0 |\n"
    ) in report.markdown
    assert report.markdown.endswith("\n" + gate.to_markdown())
    assert report.description == f"sample {V2}"


def test_a_reused_image_says_so_and_has_no_gate_section() -> None:
    text = image_report(METADATA, reused=True).markdown
    assert text.startswith(f"# sample {V2}: reused\n")
    assert "| production runs | - |" in text and "Scan gate" not in text


def test_an_image_stopped_at_the_scan_gate_says_nothing_was_published() -> None:
    critical = Finding(id="CVE-9", kind=FindingKind.VULNERABILITY, severity=Severity.CRITICAL, package="p")
    gate = evaluate(ScanPolicy(), [critical], today=AT.date())
    report = scan_gate_stop_report("sample", V2, gate)

    heading = f"# sample {V2}: stopped at the scan gate\n\nNothing was published.\n\n"
    assert report.markdown == heading + gate.to_markdown()
    assert "## Scan gate: FAILED" in report.markdown
    assert report.description == f"sample {V2} failed its scan gate"


# --- the routine flows -----------------------------------------------------------------------------------

PROMOTED = StageOutcome(environment="staging", outcome="promoted")
ROLLED_BACK = StageOutcome(environment="production", outcome="rolled-back", detail="error rate | 5xx\nat 25%")
NOT_RUN = StageOutcome(environment="production", outcome="not-run", detail="stopped: staging failed")


def test_stages_are_one_row_each_with_an_icon_for_the_outcome() -> None:
    assert stages_markdown([PROMOTED, ROLLED_BACK]) == (
        "| Environment | Outcome | Detail |\n|---|---|---|\n"
        "| staging | ✅ promoted |  |\n"
        "| production | ↩️ rolled-back | error rate \\| 5xx at 25% |\n"
    )


def merge(stages: list[StageOutcome], *, image_version: str | None = V2) -> MergeRelease:
    return MergeRelease(
        service="shop",
        app_version="1.2.0",
        git_commit=COMMIT,
        committed_at=AT,
        image_version=image_version,
        stages=stages,
    )


def test_a_merge_report_shows_the_change_and_how_far_it_went() -> None:
    report = merge_report(merge([PROMOTED, ROLLED_BACK]))

    assert report.markdown.startswith(
        f"# Merge of shop at `{COMMIT[:12]}`\n\n| | |\n|---|---|\n| app version | 1.2.0 |\n"
        f"| commit | `{COMMIT}` |\n| committed at | {AT.isoformat()} |\n| image | {V2} |\n\n"
        "| Environment | Outcome | Detail |"
    )
    assert report.description == f"shop {COMMIT[:12]}: stopped in production"
    assert merge_report(merge([PROMOTED])).description == f"shop {COMMIT[:12]}: released"


def test_a_merge_that_never_got_an_image_puts_the_problem_above_the_stages() -> None:
    failed_build = merge([NOT_RUN], image_version=None)
    report = merge_report(failed_build, "The image pipeline failed: packer exited 1")

    assert "| image | - |\n\n**The image pipeline failed: packer exited 1**\n\n| Environment |" in report.markdown
    assert report.description == f"shop {COMMIT[:12]}: problem"


def test_the_monthly_patch_shows_every_service_in_every_environment_and_spells_out_failures() -> None:
    results = [
        ServicePatch(
            service="shop",
            result="failed",
            detail="stopped in production: rolled-back",
            old_version=V1,
            new_version=V2,
            stages=[PROMOTED, StageOutcome(environment="production", outcome="rolled-back", detail="error rate SLO")],
        ),
        ServicePatch(service="depot", result="skipped", detail="nothing in production: not deployed"),
    ]
    report = monthly_patch_report(results, ["staging", "production"], AT)

    assert report.markdown == (
        "# Monthly patch, November 2026\n\n"
        "| Service | Production before | Patched image | staging | production | Result |\n"
        "|---|---|---|---|---|---|\n"
        f"| shop | {V1} | {V2} | ✅ promoted | ↩️ rolled-back | **failed**: stopped in production: rolled-back |\n"
        "| depot | - | - | - | - | **skipped**: nothing in production: not deployed |\n\n"
        "0 patched, 1 skipped, 1 failed.\n\n"
        "## Failures\n\n"
        "- **shop** in production: error rate SLO\n"
    )
    assert report.description == "Monthly patch: 0 patched, 1 skipped, 1 failed"


def test_a_monthly_patch_without_failures_has_no_failures_section() -> None:
    patched = ServicePatch(service="shop", result="patched", detail="patch level 2026.11.1", stages=[PROMOTED])
    text = monthly_patch_report([patched], ["staging"], AT).markdown
    assert "1 patched, 0 skipped, 0 failed." in text and "## Failures" not in text


def test_the_command_line_shows_each_service_of_the_patch_and_why_one_stopped() -> None:
    results = [
        ServicePatch(
            service="catalog",
            result="failed",
            detail="stopped in staging: rolled-back",
            old_version=V1,
            new_version=V2,
            stages=[
                StageOutcome(
                    environment="staging", outcome="rolled-back", detail="canary at 50.0% failed:\n error rate"
                ),
                StageOutcome(environment="production", outcome="not-run", detail="stopped: staging rolled-back"),
            ],
        ),
        ServicePatch(
            service="shop",
            result="patched",
            old_version=V1,
            new_version=V2,
            stages=[PROMOTED, StageOutcome(environment="production", outcome="promoted")],
        ),
        ServicePatch(service="depot", result="skipped", detail="nothing in production: not deployed"),
    ]

    assert monthly_patch_lines(results) == [
        f"catalog  failed   {V1} -> {V2}  staging rolled-back, production not-run",
        "         staging: canary at 50.0% failed: error rate",
        f"shop     patched  {V1} -> {V2}  staging promoted, production promoted",
        "depot    skipped  - -> -  nothing in production: not deployed",
    ]
