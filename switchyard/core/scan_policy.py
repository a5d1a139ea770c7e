"""The scan gate: does an image's scan allow it to be published?

Pure: ``evaluate(policy, findings, baseline=..., today=...)`` decides from the findings alone, so the
same inputs always give the same verdict, and the verdict explains itself (each failing finding
carries the reason it fails) in a Markdown report that the Prefect UI shows as an artifact.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard.core.findings import (
    SEVERITIES_WORST_FIRST,
    Finding,
    FindingKey,
    FindingKind,
    ScanSummary,
    Severity,
    normalize_package_name,
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
) -> GateResult:
    """Judge ``findings`` against ``policy``.

    ``baseline`` is the findings of the image serving production now (None or empty when there is
    none yet: then, in ``new_only`` mode, every finding is new). ``scanned_kinds``, when given, is
    what the scanners really looked for; a required kind missing from it fails the gate.
    """
    all_findings = tuple(findings)
    baseline_keys: set[FindingKey] = {finding.key for finding in baseline or ()}
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
        if policy.mode is GateMode.NEW_ONLY and finding.key in baseline_keys:
            from_baseline.append(finding)
            continue
        failing.append(FailingFinding(finding=finding, reason=_why_it_fails(policy, finding, expired)))

    missing: tuple[FindingKind, ...] = ()
    if scanned_kinds is not None:
        scanned = set(scanned_kinds)
        missing = tuple(kind for kind in FindingKind if kind in policy.required_kinds and kind not in scanned)

    return GateResult(
        passed=not failing and not missing,
        mode=policy.mode,
        failing=tuple(failing),
        allowlisted=tuple(allowlisted),
        expired_allowlist_hits=tuple(expired_hits),
        accepted_from_baseline=tuple(from_baseline),
        below_threshold=tuple(below),
        missing_kinds=missing,
        summary=ScanSummary.of(all_findings),
        policy=policy,
    )


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
    return "\n".join(lines) + "\n"


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
