"""The scan gate: does an image's scan allow it to be published?

Pure: ``evaluate(policy, findings, baseline=..., today=..., compliance=..., vulndb=...)`` decides
from what it is given alone, so the same inputs always give the same verdict, and the verdict explains
itself (each failing finding or control carries the reason it fails) in a Markdown report that the
Prefect UI shows as an artifact. Three things gate: the scanners' findings, the image's hardening
controls (a failed required control is like a finding: an allowlist entry waives it until it
expires), and the age of the advisory data the vulnerabilities were matched against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard.core.findings import (
    SEVERITIES_WORST_FIRST,
    Finding,
    FindingKind,
    ScanSummary,
    Severity,
    normalize_package_name,
)
from switchyard.core.image_records import ComplianceResults, ControlOutcome, ControlResult

# On Azure, vulnerability data older than this fails the gate unless the policy says otherwise:
# a week-old snapshot misses what was published since, and images there serve real users.
AZURE_MAX_VULNDB_AGE_DAYS = 7
REFRESH_VULNDB = (
    "refresh it with `switchyard vulndb update` (the OSV PyPI data, or `--from PATH` for a local copy), "
    "or point the scan policy's osv_databases at a current copy"
)


class GateMode(StrEnum):
    ALL = "all"  # every finding at or above its threshold fails the gate
    NEW_ONLY = "new_only"  # only findings the production image does not already have fail it


class AllowlistEntry(BaseModel):
    """An accepted risk: a finding id (optionally only in one package) with a reason and an end date."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    package: str | None = None
    reason: str
    expires: date

    @field_validator("reason")
    @classmethod
    def _reason_given(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("an allowlist entry needs a reason: say why the risk is accepted")
        return reason.strip()

    def matches_control(self, control: ControlResult) -> bool:
        """A compliance control is waived by its id alone (an entry scoped to a package never waives one)."""
        return self.package is None and self.id == control.id

    def matches(self, finding: Finding) -> bool:
        if self.id != finding.id and self.id not in finding.aliases:
            return False
        return self.package is None or normalize_package_name(self.package) == normalize_package_name(finding.package)

    def expired_on(self, today: date) -> bool:
        """An entry is valid through its ``expires`` day and stops applying the day after."""
        return today > self.expires

    def describe(self) -> str:
        scope = f" in {self.package}" if self.package else ""
        return f"{self.id}{scope} (expires {self.expires.isoformat()}): {self.reason}"


_DEFAULT_THRESHOLDS: dict[FindingKind, Severity] = {
    FindingKind.VULNERABILITY: Severity.HIGH,
    FindingKind.MISCONFIGURATION: Severity.HIGH,
    FindingKind.SECRET: Severity.LOW,  # any secret fails, whatever its severity
}


class ScanPolicy(BaseModel):
    """How strict the gate is."""

    model_config = ConfigDict(frozen=True)

    # A finding fails the gate when its severity is at or above the threshold of its kind.
    thresholds: dict[FindingKind, Severity] = Field(default_factory=lambda: dict(_DEFAULT_THRESHOLDS))
    # A scanner that cannot tell the severity must not make a finding harmless: by default UNKNOWN
    # counts as HIGH, so no scan passes on missing data.
    unknown_counts_as: Severity = Severity.HIGH
    allowlist: tuple[AllowlistEntry, ...] = ()
    mode: GateMode = GateMode.ALL
    # Kinds that must have been scanned (when the caller says which were): a kind nobody looked at is
    # missing data, not a clean result.
    required_kinds: frozenset[FindingKind] = frozenset(FindingKind)
    # The image's hardening results must be there (a build without them is missing data, not clean).
    compliance_required: bool = True
    # Controls whose failure is reported but never gates (every other control is required).
    report_only_controls: frozenset[str] = frozenset()
    # Advisory data older than this (days, from the snapshot's date) fails the gate. None: the
    # environment decides (AZURE_MAX_VULNDB_AGE_DAYS on Azure, no limit on the local emulator,
    # where the report says how old the data is).
    max_vulndb_age_days: int | None = Field(None, gt=0, le=3650)

    @field_validator("thresholds")
    @classmethod
    def _complete_thresholds(cls, thresholds: dict[FindingKind, Severity]) -> dict[FindingKind, Severity]:
        if Severity.UNKNOWN in thresholds.values():
            raise ValueError("a threshold must be a known severity (CRITICAL, HIGH, MEDIUM or LOW)")
        return {**_DEFAULT_THRESHOLDS, **thresholds}

    @model_validator(mode="after")
    def _unknown_is_a_real_severity(self) -> Self:
        if self.unknown_counts_as is Severity.UNKNOWN:
            raise ValueError("unknown_counts_as must be a known severity (CRITICAL, HIGH, MEDIUM or LOW)")
        return self

    def for_environment(self, *, on_azure: bool) -> Self:
        """The policy as an environment applies it: Azure gets a vulnerability data age limit by default."""
        if self.max_vulndb_age_days is None and on_azure:
            return self.model_copy(update={"max_vulndb_age_days": AZURE_MAX_VULNDB_AGE_DAYS})
        return self

    def effective_severity(self, finding: Finding) -> Severity:
        return self.unknown_counts_as if finding.severity is Severity.UNKNOWN else finding.severity

    def at_or_above_threshold(self, finding: Finding) -> bool:
        return self.effective_severity(finding).rank >= self.thresholds[finding.kind].rank


class FailingFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    finding: Finding
    reason: str


class AllowlistedFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    finding: Finding
    entry: AllowlistEntry


class ExpiredAllowlistHit(BaseModel):
    """An allowlist entry that would have covered a finding had it not expired."""

    model_config = ConfigDict(frozen=True)

    entry: AllowlistEntry
    finding: Finding


class FailingControl(BaseModel):
    model_config = ConfigDict(frozen=True)

    control: ControlResult
    reason: str


class WaivedControl(BaseModel):
    model_config = ConfigDict(frozen=True)

    control: ControlResult
    entry: AllowlistEntry


class VulnDatabase(BaseModel):
    """An advisory database a scan matched against, and the date its data is from (None: unknown)."""

    model_config = ConfigDict(frozen=True)

    name: str
    as_of: date | None = None


class VulnDatabaseAge(BaseModel):
    """How old one database's data was at the gate, against the policy's limit; ``problem`` fails it."""

    model_config = ConfigDict(frozen=True)

    database: VulnDatabase
    age_days: int | None
    max_age_days: int | None
    problem: str = ""


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    mode: GateMode
    failing: tuple[FailingFinding, ...] = ()
    allowlisted: tuple[AllowlistedFinding, ...] = ()
    expired_allowlist_hits: tuple[ExpiredAllowlistHit, ...] = ()
    accepted_from_baseline: tuple[Finding, ...] = ()
    below_threshold: tuple[Finding, ...] = ()
    missing_kinds: tuple[FindingKind, ...] = ()
    # None: the caller did not hand in compliance results (the gate then judged findings only).
    compliance: ComplianceResults | None = None
    failing_controls: tuple[FailingControl, ...] = ()
    waived_controls: tuple[WaivedControl, ...] = ()
    compliance_problem: str = ""
    vulndb: tuple[VulnDatabaseAge, ...] = ()
    summary: ScanSummary
    policy: ScanPolicy

    def to_markdown(self) -> str:
        return _render_markdown(self)


def evaluate(
    policy: ScanPolicy,
    findings: Iterable[Finding],
    *,
    baseline: Iterable[Finding] | None = None,
    today: date,
    scanned_kinds: Iterable[FindingKind] | None = None,
    compliance: ComplianceResults | None = None,
    vulndb: Sequence[VulnDatabase] | None = None,
) -> GateResult:
    """Judge ``findings`` against ``policy``.

    ``baseline`` is the findings of the image serving production now (None or empty when there is
    none yet: then, in ``new_only`` mode, every finding is new). ``scanned_kinds``, when given, is
    what the scanners really looked for; a required kind missing from it fails the gate.
    ``compliance``, when given, is the image's hardening results; ``vulndb``, when given, the advisory
    databases the vulnerabilities were matched against, whose age the policy limits.
    """
    all_findings = tuple(findings)
    # A secret is never accepted from the baseline: a credential in an image is a leak whether or
    # not production leaks it too, so it always counts as new.
    baseline_keys: set[tuple[str, ...]] = {
        baseline_key(finding) for finding in baseline or () if finding.kind is not FindingKind.SECRET
    }
    failing: list[FailingFinding] = []
    allowlisted: list[AllowlistedFinding] = []
    expired_hits: list[ExpiredAllowlistHit] = []
    from_baseline: list[Finding] = []
    below: list[Finding] = []

    for finding in all_findings:
        if not policy.at_or_above_threshold(finding):
            below.append(finding)
            continue
        matching = [entry for entry in policy.allowlist if entry.matches(finding)]
        valid = [entry for entry in matching if not entry.expired_on(today)]
        expired = [entry for entry in matching if entry.expired_on(today)]
        expired_hits.extend(ExpiredAllowlistHit(entry=entry, finding=finding) for entry in expired)
        if valid:
            allowlisted.append(AllowlistedFinding(finding=finding, entry=valid[0]))
            continue
        # An expired entry fails even a finding production has: the accepted risk was reviewed to
        # end on that date, and new-only mode must not quietly extend it.
        if policy.mode is GateMode.NEW_ONLY and not expired and baseline_key(finding) in baseline_keys:
            from_baseline.append(finding)
            continue
        failing.append(FailingFinding(finding=finding, reason=_why_it_fails(policy, finding, expired)))

    missing: tuple[FindingKind, ...] = ()
    if scanned_kinds is not None:
        scanned = set(scanned_kinds)
        missing = tuple(kind for kind in FindingKind if kind in policy.required_kinds and kind not in scanned)

    failing_controls: list[FailingControl] = []
    waived: list[WaivedControl] = []
    compliance_problem = ""
    if compliance is not None:
        compliance_problem = _compliance_problem(policy, compliance)
        failing_controls, waived, expired_controls = _judge_controls(policy, compliance, today)
        expired_hits.extend(expired_controls)

    ages = tuple(_vulndb_age(policy, database, today) for database in vulndb or ())

    return GateResult(
        passed=not failing
        and not missing
        and not failing_controls
        and not compliance_problem
        and not any(age.problem for age in ages),
        mode=policy.mode,
        failing=tuple(failing),
        allowlisted=tuple(allowlisted),
        expired_allowlist_hits=tuple(expired_hits),
        accepted_from_baseline=tuple(from_baseline),
        below_threshold=tuple(below),
        missing_kinds=missing,
        compliance=compliance,
        failing_controls=tuple(failing_controls),
        waived_controls=tuple(waived),
        compliance_problem=compliance_problem,
        vulndb=ages,
        summary=ScanSummary.of(all_findings),
        policy=policy,
    )


def baseline_key(finding: Finding) -> tuple[str, ...]:
    """What makes a finding "the same" as production's in new-only mode.

    A vulnerability is its advisory in its package, wherever the lock file sits. A misconfiguration
    or a secret has no package: the file it is in is part of its identity, so the same check failing
    in a new file is a new finding.
    """
    if finding.kind is FindingKind.VULNERABILITY:
        return finding.key
    return (*finding.key, finding.target)


def _judge_controls(
    policy: ScanPolicy, compliance: ComplianceResults, today: date
) -> tuple[list[FailingControl], list[WaivedControl], list[ExpiredAllowlistHit]]:
    """Failed controls gate like findings: waived by a valid allowlist entry, never by an expired one."""
    failing: list[FailingControl] = []
    waived: list[WaivedControl] = []
    expired_hits: list[ExpiredAllowlistHit] = []
    for control in compliance.controls:
        if control.result is not ControlOutcome.FAIL:
            continue
        entries = [entry for entry in policy.allowlist if entry.matches_control(control)]
        valid = [entry for entry in entries if not entry.expired_on(today)]
        expired = [entry for entry in entries if entry.expired_on(today)]
        expired_hits.extend(ExpiredAllowlistHit(entry=entry, finding=_control_as_finding(control)) for entry in expired)
        if control.id in policy.report_only_controls:
            continue
        if valid:
            waived.append(WaivedControl(control=control, entry=valid[0]))
        else:
            failing.append(FailingControl(control=control, reason=_why_control_fails(control, expired)))
    return failing, waived, expired_hits


def _compliance_problem(policy: ScanPolicy, compliance: ComplianceResults) -> str:
    if not policy.compliance_required or compliance.present:
        return ""
    return compliance.problem or "the image recorded no compliance results"


def _control_as_finding(control: ControlResult) -> Finding:
    """A control in the shape the expired-allowlist report lists (it names what the entry would cover)."""
    return Finding(id=control.id, kind=FindingKind.MISCONFIGURATION, severity=Severity.HIGH, title=control.title)


def _why_control_fails(control: ControlResult, expired: list[AllowlistEntry]) -> str:
    reason = "required control failed" + (f": {control.detail}" if control.detail else "")
    if expired:
        reason += f"; its allowlist entry expired ({', '.join(entry.expires.isoformat() for entry in expired)})"
    return reason


def _vulndb_age(policy: ScanPolicy, database: VulnDatabase, today: date) -> VulnDatabaseAge:
    limit = policy.max_vulndb_age_days
    if database.as_of is None:
        problem = (
            f"{database.name}: the date of its data is unknown, so its age cannot be checked; " + REFRESH_VULNDB
            if limit is not None
            else ""
        )
        return VulnDatabaseAge(database=database, age_days=None, max_age_days=limit, problem=problem)
    age = (today - database.as_of).days
    problem = ""
    if limit is not None and age > limit:
        problem = (
            f"{database.name}: its data is from {database.as_of.isoformat()}, {age} days old, older than the "
            f"policy's {limit} days; " + REFRESH_VULNDB
        )
    return VulnDatabaseAge(database=database, age_days=age, max_age_days=limit, problem=problem)


def _why_it_fails(policy: ScanPolicy, finding: Finding, expired: list[AllowlistEntry]) -> str:
    threshold = policy.thresholds[finding.kind]
    if finding.severity is Severity.UNKNOWN:
        reason = (
            f"severity UNKNOWN counts as {policy.unknown_counts_as.value}, "
            f"at or above the {finding.kind.value} threshold {threshold.value}"
        )
    else:
        reason = f"{finding.severity.value} is at or above the {finding.kind.value} threshold {threshold.value}"
    if policy.mode is GateMode.NEW_ONLY:
        reason += "; new: the production image does not have it"
    if expired:
        dates = ", ".join(entry.expires.isoformat() for entry in expired)
        reason += f"; its allowlist entry expired ({dates})"
    return reason


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def _finding_row(finding: Finding, extra: str) -> str:
    cells = [
        finding.severity.value,
        finding.kind.value,
        finding.id,
        finding.package,
        finding.installed_version,
        finding.fixed_version,
        finding.target,
        extra,
    ]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


_FINDING_HEADER = (
    "| severity | kind | id | package | installed | fixed in | where | {last} |\n|---|---|---|---|---|---|---|---|"
)


def _threshold_text(threshold: Severity) -> str:
    return "any severity" if threshold is Severity.LOW else f"{threshold.value} or worse"


def _render_markdown(result: GateResult) -> str:
    policy = result.policy
    verdict = "PASSED" if result.passed else "FAILED"
    thresholds = ", ".join(f"{kind.value} at {_threshold_text(policy.thresholds[kind])}" for kind in FindingKind)
    lines = [
        f"## Scan gate: {verdict}",
        "",
        f"Mode `{result.mode.value}`. Fails on: {thresholds}; UNKNOWN severity counts as "
        f"{policy.unknown_counts_as.value}.",
        "",
        "| kind | " + " | ".join(severity.value for severity in SEVERITIES_WORST_FIRST) + " |",
        "|---|" + "---|" * len(SEVERITIES_WORST_FIRST),
    ]
    for kind in FindingKind:
        counts = [str(result.summary.count(kind, severity)) for severity in SEVERITIES_WORST_FIRST]
        lines.append(f"| {kind.value} | " + " | ".join(counts) + " |")
    if result.missing_kinds:
        lines += [
            "",
            "### Not scanned (missing data fails the gate)",
            "",
            *[f"- {kind.value}" for kind in result.missing_kinds],
        ]
    if result.failing:
        lines += ["", f"### Failing ({len(result.failing)})", "", _FINDING_HEADER.format(last="why")]
        lines += [_finding_row(item.finding, item.reason) for item in result.failing]
    if result.expired_allowlist_hits:
        lines += ["", f"### Expired allowlist entries hit ({len(result.expired_allowlist_hits)})", ""]
        lines += [
            f"- {_cell(hit.entry.describe())}, would cover {_cell(hit.finding.id)}"
            for hit in result.expired_allowlist_hits
        ]
    if result.allowlisted:
        lines += [
            "",
            f"### Allowlisted ({len(result.allowlisted)})",
            "",
            _FINDING_HEADER.format(last="entry"),
        ]
        lines += [_finding_row(item.finding, item.entry.describe()) for item in result.allowlisted]
    if result.accepted_from_baseline:
        lines += [
            "",
            f"### Already in production, not new ({len(result.accepted_from_baseline)})",
            "",
            _FINDING_HEADER.format(last="note"),
        ]
        lines += [_finding_row(finding, "present in the baseline") for finding in result.accepted_from_baseline]
    if result.below_threshold:
        lines += ["", f"Below threshold and not gating: {len(result.below_threshold)} finding(s)."]
    lines += _compliance_markdown(result)
    lines += _vulndb_markdown(result)
    return "\n".join(lines) + "\n"


def _compliance_markdown(result: GateResult) -> list[str]:
    compliance = result.compliance
    if compliance is None:
        return []
    lines = ["", "### Compliance (hardening controls)", ""]
    if result.compliance_problem:
        lines.append(f"**Missing results fail the gate:** {_cell(result.compliance_problem)}")
    elif not compliance.present:
        lines.append(f"No results ({_cell(compliance.problem or 'none recorded')}); not required by this policy.")
    if not compliance.controls:
        return lines
    counts = ", ".join(f"{compliance.count(outcome)} {outcome.value}" for outcome in ControlOutcome)
    lines += [f"{len(compliance.controls)} control(s): {counts}.", ""]
    failing = {item.control.id: item.reason for item in result.failing_controls}
    waived = {item.control.id: item.entry.describe() for item in result.waived_controls}
    lines += ["| control | title | result | detail | gate |", "|---|---|---|---|---|"]
    for control in compliance.controls:
        if control.id in failing:
            gate = f"FAILS: {failing[control.id]}"
        elif control.id in waived:
            gate = f"waived: {waived[control.id]}"
        elif control.result is ControlOutcome.FAIL:
            gate = "report only"
        else:
            gate = "ok"
        cells = [control.id, control.title, control.result.value, control.detail, gate]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def _vulndb_markdown(result: GateResult) -> list[str]:
    if not result.vulndb:
        return []
    lines = ["", "### Vulnerability data", ""]
    for age in result.vulndb:
        as_of = age.database.as_of.isoformat() if age.database.as_of else "an unknown date"
        days = f", {age.age_days} days old" if age.age_days is not None else ""
        if age.problem:
            lines.append(f"- **FAILS:** {_cell(age.problem)}")
        elif age.max_age_days is None:
            # Said plainly, so nobody reads a pass on old data as "no known advisories today".
            lines.append(
                f"- {_cell(age.database.name)}: data from {as_of}{days}. No age limit in this environment: "
                "an old snapshot (the local profile's) misses advisories published since."
            )
        else:
            lines.append(f"- {_cell(age.database.name)}: data from {as_of}{days} (limit {age.max_age_days} days).")
    return lines


class ScanConfiguration(ScanPolicy):
    """The scan gate's policy plus where the scanners find their data (the scan policy block)."""

    osv_databases: tuple[str, ...] = Field(
        default=(),
        description="Folders of OSV advisories (YAML or JSON) the offline matcher reads; at least one.",
    )
    trivy_cache_dir: str | None = Field(
        default=None, description="Trivy's cache dir; vulnerability scanning reads <dir>/db/trivy.db."
    )
    trivy_vulnerabilities: bool = Field(
        default=False, description="Let Trivy scan vulnerabilities too (needs its database in trivy_cache_dir)."
    )
    scanner_timeout_s: float = Field(default=300.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _has_vulnerability_source(self) -> Self:
        if not self.osv_databases and not self.trivy_vulnerabilities:
            raise ValueError(
                "no vulnerability source: give osv_databases (OSV advisory folders) or enable "
                "trivy_vulnerabilities with a trivy_cache_dir holding Trivy's database"
            )
        if self.trivy_vulnerabilities and not self.trivy_cache_dir:
            raise ValueError("trivy_vulnerabilities needs trivy_cache_dir (where Trivy's database lives)")
        return self

    @property
    def policy(self) -> ScanPolicy:
        return ScanPolicy.model_validate({name: getattr(self, name) for name in ScanPolicy.model_fields})
