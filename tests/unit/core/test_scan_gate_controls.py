"""The scan gate beyond findings: hardening controls, the advisory data's age, and the new-only
baseline's identity rules for misconfigurations and secrets."""

from __future__ import annotations

from datetime import date

from switchyard.core.findings import Finding, FindingKind, Severity
from switchyard.core.image_records import ComplianceResults, ControlOutcome, ControlResult
from switchyard.core.scan_policy import (
    AZURE_MAX_VULNDB_AGE_DAYS,
    AllowlistEntry,
    GateMode,
    ScanPolicy,
    VulnDatabase,
    evaluate,
)

TODAY = date(2026, 11, 26)
PASSING = ControlResult(id="SWY-SSH-1", title="SSH root login is disabled", result=ControlOutcome.PASS)
FIXED = ControlResult(id="SWY-FS-1", title="No world-writable files", result=ControlOutcome.FIXED, detail="2 fixed")
FAILED = ControlResult(
    id="SWY-SSH-2",
    title="SSH password authentication is disabled",
    result=ControlOutcome.FAIL,
    detail="sshd uses passwordauthentication yes",
)
CLEAN = ComplianceResults(controls=(PASSING, FIXED))
ONE_FAILED = ComplianceResults(controls=(PASSING, FIXED, FAILED))


def waiver(expires: date, package: str | None = None) -> AllowlistEntry:
    return AllowlistEntry(id="SWY-SSH-2", package=package, reason="break-glass until the bastion", expires=expires)


# --- compliance ---------------------------------------------------------------------------------


def test_passed_and_fixed_controls_pass_the_gate_and_are_listed() -> None:
    result = evaluate(ScanPolicy(), [], today=TODAY, compliance=CLEAN)
    assert result.passed
    markdown = result.to_markdown()
    assert "2 control(s): 1 pass, 0 fail, 1 fixed." in markdown
    assert "| SWY-FS-1 | No world-writable files | fixed | 2 fixed | ok |" in markdown


def test_a_failed_required_control_fails_the_gate_and_says_why() -> None:
    result = evaluate(ScanPolicy(), [], today=TODAY, compliance=ONE_FAILED)
    assert not result.passed
    [failing] = result.failing_controls
    assert failing.control == FAILED
    assert failing.reason == "required control failed: sshd uses passwordauthentication yes"
    assert "| SWY-SSH-2 | SSH password authentication is disabled | fail |" in result.to_markdown()


def test_a_valid_allowlist_entry_waives_a_failed_control_until_it_expires() -> None:
    policy = ScanPolicy(allowlist=(waiver(TODAY),))
    result = evaluate(policy, [], today=TODAY, compliance=ONE_FAILED)
    assert result.passed
    assert [item.control.id for item in result.waived_controls] == ["SWY-SSH-2"]
    assert "waived: SWY-SSH-2 (expires 2026-11-26)" in result.to_markdown()


def test_an_expired_allowlist_entry_does_not_waive_a_control() -> None:
    policy = ScanPolicy(allowlist=(waiver(date(2026, 11, 25)),))
    result = evaluate(policy, [], today=TODAY, compliance=ONE_FAILED)
    assert not result.passed
    assert "its allowlist entry expired (2026-11-25)" in result.failing_controls[0].reason
    assert [hit.entry.id for hit in result.expired_allowlist_hits] == ["SWY-SSH-2"]


def test_an_entry_scoped_to_a_package_never_waives_a_control() -> None:
    policy = ScanPolicy(allowlist=(waiver(date(2099, 1, 1), package="openssh-server"),))
    assert not evaluate(policy, [], today=TODAY, compliance=ONE_FAILED).passed


def test_missing_compliance_results_fail_the_gate() -> None:
    missing = ComplianceResults.missing("the image has no /etc/switchyard/compliance.jsonl")
    result = evaluate(ScanPolicy(), [], today=TODAY, compliance=missing)
    assert not result.passed
    assert result.compliance_problem == "the image has no /etc/switchyard/compliance.jsonl"
    assert "**Missing results fail the gate:**" in result.to_markdown()
    # an empty list is no more a result than a missing file
    assert not evaluate(ScanPolicy(), [], today=TODAY, compliance=ComplianceResults()).passed


def test_a_report_only_control_is_shown_but_never_gates() -> None:
    policy = ScanPolicy(report_only_controls=frozenset({"SWY-SSH-2"}))
    result = evaluate(policy, [], today=TODAY, compliance=ONE_FAILED)
    assert result.passed
    assert "| fail | sshd uses passwordauthentication yes | report only |" in result.to_markdown()


def test_compliance_is_not_judged_when_the_caller_hands_in_none() -> None:
    result = evaluate(ScanPolicy(), [], today=TODAY)
    assert result.passed and result.compliance is None
    assert "Compliance" not in result.to_markdown()


# --- vulnerability data age -----------------------------------------------------------------------

SNAPSHOT = VulnDatabase(name="OSV pypa snapshot", as_of=date(2026, 11, 16))


def test_azure_gets_a_seven_day_limit_by_default_and_the_local_emulator_none() -> None:
    assert ScanPolicy().for_environment(on_azure=True).max_vulndb_age_days == AZURE_MAX_VULNDB_AGE_DAYS == 7
    assert ScanPolicy().for_environment(on_azure=False).max_vulndb_age_days is None
    assert ScanPolicy(max_vulndb_age_days=30).for_environment(on_azure=True).max_vulndb_age_days == 30


def test_data_older_than_the_limit_fails_and_says_how_to_refresh() -> None:
    result = evaluate(ScanPolicy(max_vulndb_age_days=7), [], today=TODAY, vulndb=[SNAPSHOT])
    assert not result.passed
    [age] = result.vulndb
    assert age.age_days == 10
    assert "from 2026-11-16, 10 days old, older than the policy's 7 days" in age.problem
    assert "switchyard vulndb update" in age.problem


def test_data_within_the_limit_passes_on_its_last_day() -> None:
    result = evaluate(ScanPolicy(max_vulndb_age_days=10), [], today=TODAY, vulndb=[SNAPSHOT])
    assert result.passed
    assert "data from 2026-11-16, 10 days old (limit 10 days)" in result.to_markdown()


def test_data_of_unknown_date_fails_where_there_is_a_limit() -> None:
    undated = VulnDatabase(name="a copy", as_of=None)
    assert not evaluate(ScanPolicy(max_vulndb_age_days=7), [], today=TODAY, vulndb=[undated]).passed
    assert evaluate(ScanPolicy(), [], today=TODAY, vulndb=[undated]).passed


def test_without_a_limit_old_data_passes_and_the_report_says_it_is_old() -> None:
    old = VulnDatabase(name="OSV pypa snapshot", as_of=date(2024, 10, 10))
    result = evaluate(ScanPolicy(), [], today=TODAY, vulndb=[old])
    assert result.passed
    markdown = result.to_markdown()
    assert "data from 2024-10-10, 777 days old. No age limit in this environment" in markdown
    assert "misses advisories published since" in markdown


# --- the new-only baseline ----------------------------------------------------------------------

SECRET = Finding(id="aws-access-key-id", kind=FindingKind.SECRET, severity=Severity.CRITICAL, target="app/conf.py")
MISCONFIG = Finding(id="DS-0002", kind=FindingKind.MISCONFIGURATION, severity=Severity.HIGH, target="Dockerfile")
ADVISORY = Finding(
    id="PYSEC-2023-74", kind=FindingKind.VULNERABILITY, severity=Severity.HIGH, package="requests", target="a.txt"
)
NEW_ONLY = ScanPolicy(mode=GateMode.NEW_ONLY)


def test_a_secret_is_always_new_even_when_production_has_it() -> None:
    result = evaluate(NEW_ONLY, [SECRET], baseline=[SECRET], today=TODAY)
    assert not result.passed
    assert result.accepted_from_baseline == ()
    assert [item.finding for item in result.failing] == [SECRET]


def test_a_misconfiguration_is_the_same_only_in_the_same_file() -> None:
    same_file = evaluate(NEW_ONLY, [MISCONFIG], baseline=[MISCONFIG], today=TODAY)
    assert same_file.passed and same_file.accepted_from_baseline == (MISCONFIG,)
    elsewhere = MISCONFIG.model_copy(update={"target": "deploy/Dockerfile"})
    new_file = evaluate(NEW_ONLY, [elsewhere], baseline=[MISCONFIG], today=TODAY)
    assert not new_file.passed
    assert [item.finding.target for item in new_file.failing] == ["deploy/Dockerfile"]


def test_a_vulnerability_is_the_same_in_its_package_wherever_the_lock_file_is() -> None:
    moved = ADVISORY.model_copy(update={"target": "app/requirements.txt"})
    assert evaluate(NEW_ONLY, [moved], baseline=[ADVISORY], today=TODAY).passed


def test_an_expired_allowlist_entry_fails_even_a_finding_production_has() -> None:
    expired = AllowlistEntry(id="PYSEC-2023-74", reason="waiting for a fix", expires=date(2026, 11, 1))
    policy = ScanPolicy(mode=GateMode.NEW_ONLY, allowlist=(expired,))
    result = evaluate(policy, [ADVISORY], baseline=[ADVISORY], today=TODAY)
    assert not result.passed
    assert result.accepted_from_baseline == ()
    assert "its allowlist entry expired (2026-11-01)" in result.failing[0].reason
