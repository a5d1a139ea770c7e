"""What scanners report: findings, their severities and kinds, the SBOM, and a scan's result.

Pure models shared by the scanners (switchyard.images.scanners), the scan policy gate
(switchyard.core.scan_policy) and the gallery tags (switchyard.core.image_metadata).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


def normalize_package_name(name: str) -> str:
    """PEP 503: runs of -, _ and . become one -, lower case ("Werkzeug" and "werkzeug" are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    UNKNOWN = "UNKNOWN"

    @property
    def rank(self) -> int:
        """Higher is worse; UNKNOWN ranks lowest here, the policy decides how it counts."""
        return _SEVERITY_RANK[self]

    @classmethod
    def parse(cls, text: str | None) -> Severity:
        """A scanner's severity word; anything unrecognised or absent is UNKNOWN, never LOW."""
        if not text:
            return cls.UNKNOWN
        try:
            return cls(text.strip().upper())
        except ValueError:
            return cls.UNKNOWN


_SEVERITY_RANK = {
    Severity.UNKNOWN: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}
SEVERITIES_WORST_FIRST: tuple[Severity, ...] = (
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.UNKNOWN,
)


class FindingKind(StrEnum):
    VULNERABILITY = "vulnerability"
    MISCONFIGURATION = "misconfiguration"
    SECRET = "secret"


FindingKey = tuple[str, str, str]


class Finding(BaseModel):
    """One problem a scanner found in an image.

    ``id`` is the advisory (CVE-..., PYSEC-..., GHSA-...), the check (DS-0002) or the secret rule
    (aws-access-key-id). ``package`` is empty for misconfigurations and secrets; ``target`` is the
    file or lock file it was found in, relative to the image root. A secret finding never carries
    the secret itself.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    kind: FindingKind
    severity: Severity
    package: str = ""
    installed_version: str = ""
    fixed_version: str = ""
    title: str = ""
    target: str = ""
    aliases: tuple[str, ...] = ()
    scanner: str = ""

    @property
    def key(self) -> FindingKey:
        """Identity across images: the same advisory in the same package is the same finding."""
        return (self.kind.value, self.id, self.package)


class Sbom(BaseModel):
    """A software bill of materials the scanner wrote next to the artifact."""

    model_config = ConfigDict(frozen=True)

    format: str  # e.g. "cyclonedx"
    spec_version: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    component_count: int = Field(ge=0)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


class ScanSummary(BaseModel):
    """Counts by kind and severity: {"vulnerability": {"HIGH": 2}, ...} (zero counts omitted)."""

    model_config = ConfigDict(frozen=True)

    counts: dict[FindingKind, dict[Severity, int]] = Field(default_factory=dict)

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> ScanSummary:
        tally = Counter((finding.kind, finding.severity) for finding in findings)
        counts: dict[FindingKind, dict[Severity, int]] = {}
        for kind in FindingKind:
            per_severity = {
                severity: tally[(kind, severity)] for severity in SEVERITIES_WORST_FIRST if tally[(kind, severity)]
            }
            if per_severity:
                counts[kind] = per_severity
        return cls(counts=counts)

    @property
    def total(self) -> int:
        return sum(sum(per.values()) for per in self.counts.values())

    def count(self, kind: FindingKind, severity: Severity | None = None) -> int:
        per = self.counts.get(kind, {})
        return sum(per.values()) if severity is None else per.get(severity, 0)


class ScanResult(BaseModel):
    """What one scanner found in one image root."""

    model_config = ConfigDict(frozen=True)

    scanner: str
    scanner_version: str
    findings: tuple[Finding, ...] = ()
    # Which kinds this scan really looked for: a kind that was not scanned has no findings, which
    # must not be read as "clean".
    scanned_kinds: tuple[FindingKind, ...]
    # What the scanner matched against (advisory database, its size and age), for the audit trail.
    database: str = ""
    # The date the advisory data is from (a snapshot's date), for the gate's age limit; None: unknown.
    database_as_of: date | None = None
    sbom: Sbom | None = None

    @property
    def summary(self) -> ScanSummary:
        return ScanSummary.of(self.findings)


def merge_findings(results: Iterable[ScanResult]) -> tuple[Finding, ...]:
    """All findings of several scanners, one per (key, target): the first scanner to report it wins."""
    seen: set[tuple[FindingKey, str]] = set()
    merged: list[Finding] = []
    for result in results:
        for finding in result.findings:
            identity = (finding.key, finding.target)
            if identity not in seen:
                seen.add(identity)
                merged.append(finding)
    return tuple(merged)
