"""The scan gate: thresholds, UNKNOWN severities, allowlists with expiry, new_only against a baseline."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from switchyard.core.findings import Finding, FindingKind, Severity
from switchyard.core.scan_policy import AllowlistEntry, GateMode, ScanPolicy, evaluate

TODAY = date(2026, 11, 26)

CRITICAL_ADVISORY = Finding(
    id="SWITCHYARD-TEST-2026-0001",
    kind=FindingKind.VULNERABILITY,
    severity=Severity.CRITICAL,
    package="switchyard-fixture-critical",
    installed_version="1.0.0",
    fixed_version="1.0.1",
    title="TEST ADVISORY, NOT REAL",
    target="app/requirements.txt",
    aliases=("SWITCHYARD-TEST-CVE-0001",),
)
OLD_REQUESTS_ADVISORY = Finding(
    id="PYSEC-2023-74",
    kind=FindingKind.VULNERABILITY,
    severity=Severity.UNKNOWN,
    package="requests",
    installed_version="2.19.1",
    fixed_version="2.31.0",
    target="app/requirements.txt",
    aliases=("CVE-2023-32681", "GHSA-j8r2-6x86-q33q"),
)
MEDIUM_ADVISORY = Finding(
    id="PYSEC-2023-212", kind=FindingKind.VULNERABILITY, severity=Severity.MEDIUM, package="urllib3"
)
LOW_SECRET = Finding(id="generic-api-key", kind=FindingKind.SECRET, severity=Severity.LOW, target="app/x.py")
HIGH_MISCONFIG = Finding(id="DS-0002", kind=FindingKind.MISCONFIGURATION, severity=Severity.HIGH, target="Dockerfile")
LOW_MISCONFIG = Finding(id="DS-0005", kind=FindingKind.MISCONFIGURATION, severity=Severity.LOW, target="Dockerfile")


def test_a_critical_advisory_stops_the_gate_and_is_named() -> None:
    result = evaluate(ScanPolicy(), [CRITICAL_ADVISORY, MEDIUM_ADVISORY], today=TODAY)
    assert not result.passed
    assert [item.finding.id for item in result.failing] == ["SWITCHYARD-TEST-2026-0001"]
    assert result.failing[0].reason == "CRITICAL is at or above the vulnerability threshold HIGH"
    assert result.below_threshold == (MEDIUM_ADVISORY,)
    markdown = result.to_markdown()
    assert "## Scan gate: FAILED" in markdown
    row = "| CRITICAL | vulnerability | SWITCHYARD-TEST-2026-0001 | switchyard-fixture-critical | 1.0.0 | 1.0.1 |"
    assert row in markdown


def test_findings_below_every_threshold_pass() -> None:
    result = evaluate(ScanPolicy(), [MEDIUM_ADVISORY, LOW_MISCONFIG], today=TODAY)
    assert result.passed
    assert result.failing == ()
    assert "## Scan gate: PASSED" in result.to_markdown()


def test_unknown_severity_counts_as_high_by_default() -> None:
    result = evaluate(ScanPolicy(), [OLD_REQUESTS_ADVISORY], today=TODAY)
    assert not result.passed
    assert result.failing[0].reason.startswith("severity UNKNOWN counts as HIGH")


def test_unknown_severity_can_be_counted_lower_on_purpose() -> None:
    policy = ScanPolicy(unknown_counts_as=Severity.MEDIUM)
    assert evaluate(policy, [OLD_REQUESTS_ADVISORY], today=TODAY).passed


def test_any_secret_fails_whatever_its_severity() -> None:
    result = evaluate(ScanPolicy(), [LOW_SECRET], today=TODAY)
    assert not result.passed
    assert result.failing[0].finding == LOW_SECRET


def test_misconfiguration_threshold_is_high() -> None:
    result = evaluate(ScanPolicy(), [HIGH_MISCONFIG, LOW_MISCONFIG], today=TODAY)
    assert [item.finding.id for item in result.failing] == ["DS-0002"]


def test_a_valid_allowlist_entry_lets_the_finding_through_and_says_so() -> None:
    entry = AllowlistEntry(
        id="CVE-2023-32681",
        package="Requests",
        reason="proxy not used by this service",
        expires=date(2026, 12, 31),
    )
    result = evaluate(ScanPolicy(allowlist=(entry,)), [OLD_REQUESTS_ADVISORY], today=TODAY)
    assert result.passed
    assert result.allowlisted[0].finding == OLD_REQUESTS_ADVISORY
    assert result.allowlisted[0].entry == entry
    assert "proxy not used by this service" in result.to_markdown()


def test_an_allowlist_entry_is_valid_through_its_expiry_day() -> None:
    entry = AllowlistEntry(id="PYSEC-2023-74", reason="accepted", expires=TODAY)
    assert evaluate(ScanPolicy(allowlist=(entry,)), [OLD_REQUESTS_ADVISORY], today=TODAY).passed


def test_an_expired_allowlist_entry_does_not_apply_and_is_reported() -> None:
    entry = AllowlistEntry(id="SWITCHYARD-TEST-2026-0001", reason="waiting for 1.0.1", expires=date(2026, 11, 25))
    result = evaluate(ScanPolicy(allowlist=(entry,)), [CRITICAL_ADVISORY], today=TODAY)
    assert not result.passed
    assert result.allowlisted == ()
    assert [hit.entry for hit in result.expired_allowlist_hits] == [entry]
    assert "its allowlist entry expired (2026-11-25)" in result.failing[0].reason
    assert "Expired allowlist entries hit (1)" in result.to_markdown()


def test_an_allowlist_entry_for_another_package_does_not_apply() -> None:
    entry = AllowlistEntry(id="PYSEC-2023-74", package="urllib3", reason="wrong package", expires=date(2027, 1, 1))
    assert not evaluate(ScanPolicy(allowlist=(entry,)), [OLD_REQUESTS_ADVISORY], today=TODAY).passed


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_allowlist_entry_needs_a_reason(reason: str) -> None:
    with pytest.raises(ValidationError, match="needs a reason"):
        AllowlistEntry(id="PYSEC-2023-74", reason=reason, expires=date(2027, 1, 1))


def test_an_allowlist_entry_needs_an_expiry_date() -> None:
    with pytest.raises(ValidationError, match="expires"):
        AllowlistEntry.model_validate({"id": "PYSEC-2023-74", "reason": "forever"})


def test_new_only_passes_a_finding_production_already_has_and_fails_a_new_one() -> None:
    policy = ScanPolicy(mode=GateMode.NEW_ONLY)
    # The baseline's finding may differ in everything but its identity (kind, id, package).
    baseline = [OLD_REQUESTS_ADVISORY.model_copy(update={"installed_version": "2.18.0", "target": "elsewhere"})]

    only_known = evaluate(policy, [OLD_REQUESTS_ADVISORY], baseline=baseline, today=TODAY)
    assert only_known.passed
    assert only_known.accepted_from_baseline == (OLD_REQUESTS_ADVISORY,)

    with_new = evaluate(policy, [OLD_REQUESTS_ADVISORY, CRITICAL_ADVISORY], baseline=baseline, today=TODAY)
    assert not with_new.passed
    assert [item.finding.id for item in with_new.failing] == ["SWITCHYARD-TEST-2026-0001"]
    assert with_new.failing[0].reason.endswith("new: the production image does not have it")
    assert "Already in production, not new (1)" in with_new.to_markdown()


def test_new_only_without_a_baseline_treats_everything_as_new() -> None:
    result = evaluate(ScanPolicy(mode=GateMode.NEW_ONLY), [OLD_REQUESTS_ADVISORY], baseline=None, today=TODAY)
    assert not result.passed


def test_mode_all_ignores_the_baseline() -> None:
    result = evaluate(ScanPolicy(), [OLD_REQUESTS_ADVISORY], baseline=[OLD_REQUESTS_ADVISORY], today=TODAY)
    assert not result.passed


def test_a_kind_that_was_not_scanned_fails_the_gate() -> None:
    result = evaluate(
        ScanPolicy(),
        [],
        today=TODAY,
        scanned_kinds=[FindingKind.SECRET, FindingKind.MISCONFIGURATION],
    )
    assert not result.passed
    assert result.missing_kinds == (FindingKind.VULNERABILITY,)
    assert "Not scanned (missing data fails the gate)" in result.to_markdown()


def test_required_kinds_can_be_narrowed() -> None:
    policy = ScanPolicy(required_kinds=frozenset({FindingKind.SECRET}))
    assert evaluate(policy, [], today=TODAY, scanned_kinds=[FindingKind.SECRET]).passed


def test_summary_counts_by_kind_and_severity() -> None:
    findings = [CRITICAL_ADVISORY, OLD_REQUESTS_ADVISORY, MEDIUM_ADVISORY, LOW_SECRET, HIGH_MISCONFIG]
    summary = evaluate(ScanPolicy(), findings, today=TODAY).summary
    assert summary.count(FindingKind.VULNERABILITY) == 3
    assert summary.count(FindingKind.VULNERABILITY, Severity.UNKNOWN) == 1
    assert summary.count(FindingKind.SECRET, Severity.LOW) == 1
    assert summary.total == 5


def test_thresholds_can_be_tightened_per_kind() -> None:
    policy = ScanPolicy(thresholds={FindingKind.VULNERABILITY: Severity.MEDIUM})
    assert policy.thresholds[FindingKind.SECRET] is Severity.LOW  # the others keep their defaults
    assert not evaluate(policy, [MEDIUM_ADVISORY], today=TODAY).passed


def test_unknown_is_not_a_threshold() -> None:
    with pytest.raises(ValidationError, match="a threshold must be a known severity"):
        ScanPolicy(thresholds={FindingKind.VULNERABILITY: Severity.UNKNOWN})


def test_markdown_cells_cannot_break_the_table() -> None:
    odd = Finding(id="X|1", kind=FindingKind.SECRET, severity=Severity.HIGH, target="a|b\nc")
    markdown = evaluate(ScanPolicy(), [odd], today=TODAY).to_markdown()
    assert "| X\\|1 |" in markdown
    assert "a\\|b c" in markdown
