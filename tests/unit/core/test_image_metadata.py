"""Gallery tags <-> image metadata: exact round trips, Azure's limits, clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from switchyard.core.findings import Finding, FindingKind, ScanSummary, Severity
from switchyard.core.image_metadata import (
    MAX_TAG_VALUE_LENGTH,
    ImageMetadata,
    ImageMetadataError,
    check_tag_limits,
    format_scan_summary,
    merge_tags,
    parse_scan_summary,
)
from switchyard.core.versions import ImageVersion

SBOM = "ab" * 32


def summary() -> ScanSummary:
    return ScanSummary.of(
        [
            Finding(id="A", kind=FindingKind.VULNERABILITY, severity=Severity.HIGH, package="p"),
            Finding(id="B", kind=FindingKind.VULNERABILITY, severity=Severity.HIGH, package="q"),
            Finding(id="C", kind=FindingKind.VULNERABILITY, severity=Severity.UNKNOWN, package="q"),
            Finding(id="DS-0005", kind=FindingKind.MISCONFIGURATION, severity=Severity.LOW),
        ]
    )


def metadata(**changes: object) -> ImageMetadata:
    values: dict[str, object] = {
        "service": "sample",
        "version": ImageVersion.of("debian-12", "2026.11.2", "1.4.2"),
        "git_commit": "0123abcd0123abcd0123abcd0123abcd0123abcd",
        "scan_summary": summary(),
        "scan_gate_passed": True,
        "sbom_sha256": SBOM,
        "built_at": datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC),
    }
    values.update(changes)
    return ImageMetadata.model_validate(values)


def test_tags_hold_the_whole_history_in_readable_form() -> None:
    tags = metadata().to_tags()
    assert tags == {
        "switchyard.service": "sample",
        "switchyard.base": "debian-12",
        "switchyard.patch": "2026.11.2",
        "switchyard.app": "1.4.2",
        "switchyard.version": "1004002.20261102.1",
        "switchyard.commit": "0123abcd0123abcd0123abcd0123abcd0123abcd",
        "switchyard.scan": "vuln C0 H2 M0 L0 U1 | misconfig C0 H0 M0 L1 U0 | secret C0 H0 M0 L0 U0",
        "switchyard.scanGate": "passed",
        "switchyard.sbom": f"sha256:{SBOM}",
        "switchyard.builtAt": "2026-11-26T10:00:00Z",
        "switchyard.rolledBack": "false",
        "switchyard.fault": "none",
    }


def test_round_trip_through_tags_is_exact() -> None:
    released = metadata().with_released(datetime(2026, 11, 27, 8, 30, tzinfo=UTC))
    for original in (metadata(), metadata(scan_gate_passed=False), released, released.with_rolled_back()):
        assert ImageMetadata.from_tags(original.to_tags()) == original


def test_released_and_rolled_back_markers() -> None:
    released = metadata().with_released(datetime(2026, 11, 27, 8, 30, 15, 999, tzinfo=UTC))
    assert released.released
    assert released.to_tags()["switchyard.releasedAt"] == "2026-11-27T08:30:15Z"
    rolled_back = released.with_rolled_back()
    assert rolled_back.rolled_back
    assert rolled_back.to_tags()["switchyard.rolledBack"] == "true"
    assert "switchyard.releasedAt" not in metadata().to_tags()


def test_times_are_stored_in_utc() -> None:
    local = datetime(2026, 11, 26, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    assert metadata(built_at=local).to_tags()["switchyard.builtAt"] == "2026-11-26T10:00:00Z"
    with pytest.raises(ValidationError, match="timezone-aware"):
        metadata(built_at=datetime(2026, 11, 26, 10, 0))


def test_other_tags_are_ignored_when_reading_and_kept_when_merging() -> None:
    tags = {**metadata().to_tags(), "costCenter": "42", "switchyard.stale": "old"}
    assert ImageMetadata.from_tags(tags) == metadata()
    merged = merge_tags(tags, metadata(rolled_back=True))
    assert merged["costCenter"] == "42"
    assert "switchyard.stale" not in merged
    assert merged["switchyard.rolledBack"] == "true"


def test_missing_tags_are_listed() -> None:
    tags = metadata().to_tags()
    del tags["switchyard.commit"]
    del tags["switchyard.sbom"]
    with pytest.raises(ImageMetadataError, match=r"tags switchyard\.commit, switchyard\.sbom are missing"):
        ImageMetadata.from_tags(tags)


def test_tags_that_disagree_with_the_gallery_version_are_rejected() -> None:
    tags = {**metadata().to_tags(), "switchyard.version": "1004002.20261100.1"}
    with pytest.raises(
        ImageMetadataError, match=r"tags disagree: base/patch/app give gallery version 1004002\.20261102\.1"
    ):
        ImageMetadata.from_tags(tags)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("switchyard.patch", "2026.13", "month 13 is out of range"),
        ("switchyard.scanGate", "maybe", "must be 'passed' or 'failed'"),
        ("switchyard.rolledBack", "yes", "must be 'true' or 'false'"),
        ("switchyard.builtAt", "yesterday", "is not a UTC time"),
        ("switchyard.sbom", "md5:00", "must be 'sha256:<64 hex digits>'"),
        ("switchyard.sbom", "sha256:xyz", "sbom_sha256"),
        ("switchyard.scan", "vuln 3", "is not like 'vuln C0 H2"),
        ("switchyard.commit", "not-a-commit", "git_commit"),
    ],
)
def test_invalid_tag_values_are_named(key: str, value: str, message: str) -> None:
    tags = {**metadata().to_tags(), key: value}
    with pytest.raises(ImageMetadataError, match=message):
        ImageMetadata.from_tags(tags)


def test_scan_summary_text_round_trips() -> None:
    for original in (ScanSummary(), summary()):
        assert parse_scan_summary(format_scan_summary(original)) == original


def test_a_value_over_azures_limit_is_an_error_not_cut() -> None:
    # model_copy skips validation, so to_tags() itself must refuse what Azure would cut.
    oversized = metadata().model_copy(update={"git_commit": "a" * 300})
    with pytest.raises(
        ImageMetadataError,
        match=f"tag switchyard.commit value is 300 characters: Azure allows at most {MAX_TAG_VALUE_LENGTH}",
    ):
        oversized.to_tags()


def test_service_names_follow_the_topology_rules() -> None:
    with pytest.raises(ValidationError, match="service name 'Sample_App' is not valid"):
        metadata(service="Sample_App")


def test_scan_summary_text_is_the_tag_value() -> None:
    assert metadata().scan_summary_text() == metadata().to_tags()["switchyard.scan"]


def test_tag_limits() -> None:
    check_tag_limits({f"k{index}": "v" for index in range(50)})
    with pytest.raises(ImageMetadataError, match="51 tags is more than Azure's limit of 50"):
        check_tag_limits({f"k{index}": "v" for index in range(51)})
    with pytest.raises(ImageMetadataError, match=r"Azure allows 1\.\.512"):
        check_tag_limits({"k" * 513: "v"})
    with pytest.raises(ImageMetadataError, match="tag k value is 257 characters"):
        check_tag_limits({"k": "v" * 257})


def test_merging_cannot_push_past_fifty_tags() -> None:
    crowded = {f"team{index}": "x" for index in range(45)}
    with pytest.raises(ImageMetadataError, match="57 tags is more than Azure's limit of 50"):
        merge_tags(crowded, metadata())


def test_the_image_core_modules_import_neither_prefect_nor_azure() -> None:
    code = (
        "import sys\n"
        "import switchyard.core.versions, switchyard.core.findings\n"
        "import switchyard.core.scan_policy, switchyard.core.image_metadata\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'azure'}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert completed.stdout.strip() == "[]"


def test_a_fault_profile_built_in_on_purpose_is_recorded_and_read_back() -> None:
    from switchyard.core.config import FaultProfile

    faulty = metadata().model_copy(update={"fault_profile": FaultProfile(error_rate=0.2)})
    tags = faulty.to_tags()
    assert '"error_rate":0.2' in tags["switchyard.fault"]
    assert ImageMetadata.from_tags(tags).fault_profile == FaultProfile(error_rate=0.2)
