"""A release's stages as a person reads them (the demo's --json, the summary's "Test stages"): the
hooks, the test stages and the outcome, in the order they ran."""

from __future__ import annotations

from datetime import UTC, datetime

from switchyard.core.hooks import HookResult
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.reports import release_report
from switchyard.core.stages import StageResult

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def hook(name: str, passed: bool) -> HookResult:
    return HookResult(
        hook=name, kind="command", target="migrate.py", passed=passed, detail="exit 0", started_at=AT, duration_s=0.1
    )


def test_stages_run_in_order_from_the_expand_hook_to_the_outcome() -> None:
    summary = ReleaseSummary(
        service="sample", environment="production", image_version="1.0.1", strategy="blue-green", started_at=AT
    )
    summary.hooks = [hook("pre_deploy", True), hook("post_promote", False)]
    summary.tests = [
        StageResult(stage="smoke", passed=True, detail="3 checks passed"),
        StageResult(stage="integration", passed=True, detail="exit code 0"),
    ]
    summary.outcome = "promoted"

    assert [(s.name, s.outcome) for s in summary.stages()] == [
        ("pre_deploy hook", "passed"),
        ("smoke", "passed"),
        ("integration", "passed"),
        ("post_promote hook", "failed"),
        ("release", "promoted"),
    ]


def test_a_failed_test_stage_is_in_the_summary_the_person_reads() -> None:
    summary = ReleaseSummary(
        service="sample", environment="staging", image_version="1.0.1", strategy="canary", started_at=AT
    )
    summary.tests = [StageResult(stage="smoke", passed=False, detail="GET /version answered 500")]
    summary.outcome = "failed"

    markdown = release_report(summary).markdown
    assert "## Test stages" in markdown and "| smoke | **failed** | GET /version answered 500 |" in markdown
    assert summary.stages()[-1].outcome == "failed"
