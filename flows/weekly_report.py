"""The weekly DORA report: the four keys of software delivery, from switchyard's own release history.

The runbook:
  1. read the release runs that ended in the last `days` days from Prefect (tasks/history.py says
     which records are used and why);
  2. compute deployment frequency, lead time for changes, change failure rate and time to restore
     per service and environment, overall for production, and production split by change type
     (app, patch, rollback, unknown: switchyard/core/dora.py says how a release is classified);
  3. publish them as the Markdown artifact `dora-weekly`, log them, and return them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from switchyard.core.dora import DoraMetrics, DoraReport, ReportingPeriod, dora_report
from tasks.history import read_release_history

ARTIFACT_KEY = "dora-weekly"
MAX_DAYS = 366


@flow(name="weekly-report", log_prints=True)
def weekly_report(days: int = 7) -> DoraReport:
    """DORA metrics of the releases that ended in the last `days` days (1..366), as the artifact
    `dora-weekly`."""
    logger = get_run_logger()
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    end = datetime.now(UTC)
    period = ReportingPeriod(start=end - timedelta(days=days), end=end)
    history = read_release_history(period.start, period.end)
    report = dora_report(history.records, period)
    overall = report.overall
    logger.info(
        "%d release(s) ended in the period; production: %d deployment(s), change failure rate %s",
        sum(g.releases for g in report.groups),
        overall.promoted,
        _rate(overall),
    )
    for metrics in report.by_change_type:
        logger.info(
            "production, %s: %d release(s), %d deployment(s), lead time median %s, change failure rate %s, "
            "time to restore median %s",
            metrics.scope,
            metrics.releases,
            metrics.promoted,
            metrics.lead_time_median if metrics.lead_time_median is not None else "-",
            _rate(metrics),
            metrics.time_to_restore_median if metrics.time_to_restore_median is not None else "-",
        )
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=report.markdown() + "\n" + history.notes_markdown(),
        description=f"DORA metrics, last {days} day(s)",
    )
    return report


def _rate(metrics: DoraMetrics) -> str:
    return f"{metrics.change_failure_rate:.1%}" if metrics.change_failure_rate is not None else "-"
