"""An image version's history, kept as Azure tags on the gallery image version.

Images carry their history (docs/decisions/0006-images-carry-their-history.md): base, patch
level, app version, git commit, scan summary and gate verdict, SBOM digest, when it was built,
whether it ever held full traffic (released) and whether it was rolled back.
``ImageMetadata.to_tags()`` and ``from_tags()`` convert both ways, exactly: a value that does not
fit Azure's tag limits is an error, never silently cut.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.core.config import FaultProfile
from switchyard.core.findings import SEVERITIES_WORST_FIRST, FindingKind, ScanSummary, Severity
from switchyard.core.topology import check_name
from switchyard.core.versions import AppVersion, Base, ImageVersion, PatchLevel, VersionError

# Azure Resource Manager tag limits (per resource): 50 tags, names up to 512 characters, values up
# to 256 characters.
MAX_TAGS = 50
MAX_TAG_NAME_LENGTH = 512
MAX_TAG_VALUE_LENGTH = 256

TAG_PREFIX = "switchyard."
TAG_SERVICE = "switchyard.service"
TAG_BASE = "switchyard.base"
TAG_PATCH = "switchyard.patch"
TAG_APP = "switchyard.app"
TAG_GALLERY_VERSION = "switchyard.version"
TAG_COMMIT = "switchyard.commit"
TAG_SCAN = "switchyard.scan"
TAG_SCAN_GATE = "switchyard.scanGate"
TAG_SBOM = "switchyard.sbom"
TAG_BUILT_AT = "switchyard.builtAt"
TAG_RELEASED_AT = "switchyard.releasedAt"
TAG_ROLLED_BACK = "switchyard.rolledBack"
TAG_FAULT = "switchyard.fault"  # a fault profile built in on purpose (demos); "none" for a clean image

_REQUIRED_TAGS = (
    TAG_SERVICE,
    TAG_BASE,
    TAG_PATCH,
    TAG_APP,
    TAG_GALLERY_VERSION,
    TAG_COMMIT,
    TAG_SCAN,
    TAG_SCAN_GATE,
    TAG_SBOM,
    TAG_BUILT_AT,
    TAG_ROLLED_BACK,
)

_SCAN_KIND_LABELS: dict[FindingKind, str] = {
    FindingKind.VULNERABILITY: "vuln",
    FindingKind.MISCONFIGURATION: "misconfig",
    FindingKind.SECRET: "secret",
}
_SEVERITY_LETTERS: dict[Severity, str] = {severity: severity.value[0] for severity in SEVERITIES_WORST_FIRST}
_SCAN_PART_RE = re.compile(
    r"(?P<kind>[a-z]+) " + " ".join(f"{letter}(?P<{letter}>0|[1-9]\\d*)" for letter in _SEVERITY_LETTERS.values())
)
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class ImageMetadataError(ValueError):
    """Tags that do not describe a switchyard image, or metadata that does not fit in tags."""


def format_scan_summary(summary: ScanSummary) -> str:
    """Compact form: ``vuln C0 H2 M1 L0 U3 | misconfig C0 H0 M0 L1 U0 | secret C0 H0 M0 L0 U0``."""
    parts = []
    for kind, label in _SCAN_KIND_LABELS.items():
        counts = " ".join(f"{letter}{summary.count(kind, severity)}" for severity, letter in _SEVERITY_LETTERS.items())
        parts.append(f"{label} {counts}")
    return " | ".join(parts)


def parse_scan_summary(text: str) -> ScanSummary:
    kinds_by_label = {label: kind for kind, label in _SCAN_KIND_LABELS.items()}
    counts: dict[FindingKind, dict[Severity, int]] = {}
    parts = text.split(" | ")
    for part in parts:
        match = _SCAN_PART_RE.fullmatch(part.strip())
        if match is None or match["kind"] not in kinds_by_label:
            raise ImageMetadataError(
                f"{TAG_SCAN} value {text!r} is not like 'vuln C0 H2 M1 L0 U3 | misconfig ... | secret ...'"
            )
        per_severity = {
            severity: int(match[letter]) for severity, letter in _SEVERITY_LETTERS.items() if int(match[letter])
        }
        if per_severity:
            counts[kinds_by_label[match["kind"]]] = per_severity
    if len(parts) != len(_SCAN_KIND_LABELS):
        raise ImageMetadataError(f"{TAG_SCAN} value {text!r} must hold one part per kind: vuln, misconfig, secret")
    return ScanSummary(counts=counts)


def format_utc(moment: datetime) -> str:
    """RFC 3339 UTC with whole seconds (2026-11-26T10:00:00Z): the form tags and manifests use."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def _parse_time(key: str, text: str) -> datetime:
    try:
        return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ImageMetadataError(f"tag {key} value {text!r} is not a UTC time like 2026-11-26T10:00:00Z") from None


def _parse_bool(key: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise ImageMetadataError(f"tag {key} value {text!r} must be 'true' or 'false'")
    return text == "true"


class ImageMetadata(BaseModel):
    """Everything switchyard records about one image version."""

    model_config = ConfigDict(frozen=True)

    service: str
    version: ImageVersion
    git_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    scan_summary: ScanSummary
    scan_gate_passed: bool
    sbom_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    built_at: datetime
    released_at: datetime | None = None  # set once the version has held full traffic
    rolled_back: bool = False
    fault_profile: FaultProfile = Field(default_factory=FaultProfile)

    @field_validator("service")
    @classmethod
    def _service_name(cls, service: str) -> str:
        return check_name("service", service)

    @field_validator("built_at", "released_at")
    @classmethod
    def _aware_utc_seconds(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        if moment.tzinfo is None:
            raise ValueError("times must be timezone-aware (UTC)")
        # Tags hold whole seconds; keep the model equal to what a round trip through tags gives.
        return moment.astimezone(UTC).replace(microsecond=0)

    @property
    def gallery_version(self) -> str:
        return self.version.gallery_version

    @property
    def base(self) -> Base:
        return self.version.base

    @property
    def patch_level(self) -> PatchLevel:
        return self.version.patch_level

    @property
    def app_version(self) -> AppVersion:
        return self.version.app_version

    @property
    def sbom_digest(self) -> str:
        return f"sha256:{self.sbom_sha256}"

    def scan_summary_text(self) -> str:
        """The compact scan summary, as in the tag (``vuln C0 H2 M1 L0 U3 | ...``)."""
        return format_scan_summary(self.scan_summary)

    @property
    def released(self) -> bool:
        return self.released_at is not None

    def with_released(self, at: datetime) -> Self:
        return self.model_validate({**self.model_dump(), "released_at": at})

    def with_rolled_back(self) -> Self:
        return self.model_validate({**self.model_dump(), "rolled_back": True})

    def to_tags(self) -> dict[str, str]:
        tags = {
            TAG_SERVICE: self.service,
            TAG_BASE: str(self.base),
            TAG_PATCH: str(self.patch_level),
            TAG_APP: str(self.app_version),
            TAG_GALLERY_VERSION: self.gallery_version,
            TAG_COMMIT: self.git_commit,
            TAG_SCAN: self.scan_summary_text(),
            TAG_SCAN_GATE: "passed" if self.scan_gate_passed else "failed",
            TAG_SBOM: self.sbom_digest,
            TAG_BUILT_AT: format_utc(self.built_at),
            TAG_ROLLED_BACK: "true" if self.rolled_back else "false",
        }
        tags[TAG_FAULT] = "none" if self.fault_profile.is_clean else self.fault_profile.model_dump_json()
        if self.released_at is not None:
            tags[TAG_RELEASED_AT] = format_utc(self.released_at)
        check_tag_limits(tags)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ImageMetadata:
        """Read the switchyard tags of a gallery image version (other tags are ignored)."""
        missing = [key for key in _REQUIRED_TAGS if key not in tags]
        if missing:
            raise ImageMetadataError(f"not a switchyard image version: tags {', '.join(missing)} are missing")
        try:
            version = ImageVersion.of(tags[TAG_BASE], tags[TAG_PATCH], tags[TAG_APP])
        except VersionError as error:
            raise ImageMetadataError(f"switchyard version tags are invalid: {error}") from None
        if version.gallery_version != tags[TAG_GALLERY_VERSION]:
            raise ImageMetadataError(
                f"tags disagree: base/patch/app give gallery version {version.gallery_version} but "
                f"{TAG_GALLERY_VERSION} is {tags[TAG_GALLERY_VERSION]!r}"
            )
        gate = tags[TAG_SCAN_GATE]
        if gate not in ("passed", "failed"):
            raise ImageMetadataError(f"tag {TAG_SCAN_GATE} value {gate!r} must be 'passed' or 'failed'")
        sbom = tags[TAG_SBOM]
        if not sbom.startswith("sha256:"):
            raise ImageMetadataError(f"tag {TAG_SBOM} value {sbom!r} must be 'sha256:<64 hex digits>'")
        released = tags.get(TAG_RELEASED_AT)
        fault = tags.get(TAG_FAULT, "none")
        try:
            fault_profile = FaultProfile() if fault == "none" else FaultProfile.model_validate_json(fault)
        except ValidationError:
            raise ImageMetadataError(f"tag {TAG_FAULT} value {fault!r} is not a fault profile") from None
        try:
            return cls(
                service=tags[TAG_SERVICE],
                version=version,
                git_commit=tags[TAG_COMMIT],
                scan_summary=parse_scan_summary(tags[TAG_SCAN]),
                scan_gate_passed=gate == "passed",
                sbom_sha256=sbom.removeprefix("sha256:"),
                built_at=_parse_time(TAG_BUILT_AT, tags[TAG_BUILT_AT]),
                released_at=_parse_time(TAG_RELEASED_AT, released) if released is not None else None,
                rolled_back=_parse_bool(TAG_ROLLED_BACK, tags[TAG_ROLLED_BACK]),
                fault_profile=fault_profile,
            )
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
            raise ImageMetadataError(f"switchyard tags are invalid: {problems}") from None

    @model_validator(mode="after")
    def _fits_in_tags(self) -> Self:
        # Fail when the metadata is made, not later when it is published.
        self.to_tags()
        return self


def check_tag_limits(tags: Mapping[str, str]) -> None:
    """Raise ImageMetadataError when ``tags`` would be rejected (or cut) by Azure."""
    if len(tags) > MAX_TAGS:
        raise ImageMetadataError(f"{len(tags)} tags is more than Azure's limit of {MAX_TAGS} per resource")
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_NAME_LENGTH:
            raise ImageMetadataError(
                f"tag name {key[:40]!r}... is {len(key)} characters: Azure allows 1..{MAX_TAG_NAME_LENGTH}"
            )
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise ImageMetadataError(
                f"tag {key} value is {len(value)} characters: Azure allows at most {MAX_TAG_VALUE_LENGTH}"
            )


def merge_tags(existing: Mapping[str, str], metadata: ImageMetadata) -> dict[str, str]:
    """The image version's tags with switchyard's replaced and everyone else's kept."""
    merged = {key: value for key, value in existing.items() if not key.startswith(TAG_PREFIX)}
    merged.update(metadata.to_tags())
    check_tag_limits(merged)
    return merged
