"""Build -> scan (Trivy + OSV) -> gate -> gallery tags, the way the image pipeline chains them."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from images_support import COMMIT, FIXTURES, SAMPLE_APP, VULNERABLE_APP, request_for

from switchyard.core.findings import FindingKind, Severity
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.scan_policy import AllowlistEntry, GateMode, ScanPolicy, evaluate
from switchyard.images.local_image import build_local_image
from switchyard.images.scan import ImageScan, scan_artifact
from switchyard.images.scanners.base import ScanError
from switchyard.images.scanners.osv import OsvScanner
from switchyard.images.scanners.trivy import TrivyScanner
from switchyard.images.vulndb import PYPA_OSV

TODAY = date(2026, 11, 26)


def scan(artifact: Path, tmp_path: Path, osv_dirs: list[Path]) -> ImageScan:
    trivy = TrivyScanner()
    return scan_artifact(
        artifact,
        scanners=[trivy, OsvScanner(osv_dirs)],
        sbom_scanner=trivy,
        sbom_path=tmp_path / "sbom.cdx.json",
        work_dir=tmp_path,
    )


@pytest.fixture(scope="module")
def vulnerable_scan(tmp_path_factory: pytest.TempPathFactory) -> ImageScan:
    """The vulnerable fixture app with a planted fake GitHub token, built and scanned once."""
    work = tmp_path_factory.mktemp("vulnerable-scan")
    app_dir = work / "apps" / "vulnerable"
    shutil.copytree(VULNERABLE_APP, app_dir)
    (app_dir / "app" / "settings.py").write_text('TOKEN = "ghp_' + "0123456789abcdefghijklmnopqrstuvwxyzAB" + '"\n')
    image = build_local_image(request_for(app_dir, work / "out", service="vulnerable"))
    return scan(image.artifact_path, work, [PYPA_OSV, FIXTURES / "osv-extra"])


def test_a_dependency_with_a_critical_advisory_and_a_secret_stop_the_gate(vulnerable_scan: ImageScan) -> None:
    assert vulnerable_scan.scanned_kinds == frozenset(FindingKind)
    result = evaluate(ScanPolicy(), vulnerable_scan.findings, today=TODAY, scanned_kinds=vulnerable_scan.scanned_kinds)
    assert not result.passed
    failing = {(item.finding.kind, item.finding.id, item.finding.severity) for item in result.failing}
    assert (FindingKind.VULNERABILITY, "SWITCHYARD-TEST-2026-0001", Severity.CRITICAL) in failing
    assert (FindingKind.SECRET, "github-pat", Severity.CRITICAL) in failing
    # requests==2.19.1: two PyPA advisories without severity, which count as HIGH.
    assert {(FindingKind.VULNERABILITY, "PYSEC-2018-28", Severity.UNKNOWN),
            (FindingKind.VULNERABILITY, "PYSEC-2023-74", Severity.UNKNOWN)} <= failing  # fmt: skip
    markdown = result.to_markdown()
    assert "SWITCHYARD-TEST-2026-0001" in markdown
    assert "ghp_" not in markdown


def test_the_scan_goes_into_the_gallery_tags(vulnerable_scan: ImageScan) -> None:
    result = evaluate(ScanPolicy(), vulnerable_scan.findings, today=TODAY)
    metadata = ImageMetadata(
        service="vulnerable",
        version=request_for(VULNERABLE_APP, Path("/unused")).version,
        git_commit=COMMIT,
        scan_summary=vulnerable_scan.summary,
        scan_gate_passed=result.passed,
        sbom_sha256=vulnerable_scan.sbom.sha256,
        built_at=request_for(VULNERABLE_APP, Path("/unused")).built_at,
    )
    tags = metadata.to_tags()
    assert tags["switchyard.scan"] == "vuln C1 H0 M0 L0 U2 | misconfig C0 H0 M0 L0 U0 | secret C1 H0 M0 L0 U0"
    assert tags["switchyard.scanGate"] == "failed"
    assert tags["switchyard.sbom"] == vulnerable_scan.sbom.digest
    assert ImageMetadata.from_tags(tags) == metadata


def test_new_only_passes_what_production_already_has_except_a_secret(vulnerable_scan: ImageScan) -> None:
    policy = ScanPolicy(mode=GateMode.NEW_ONLY)
    result = evaluate(policy, vulnerable_scan.findings, baseline=vulnerable_scan.findings, today=TODAY)
    # A secret is always new: that production leaks the same token is no reason to ship it again.
    assert [item.finding.id for item in result.failing] == ["github-pat"]
    without_secret = [finding for finding in vulnerable_scan.findings if finding.kind is not FindingKind.SECRET]
    assert evaluate(policy, without_secret, baseline=vulnerable_scan.findings, today=TODAY).passed


def test_an_expired_allowlist_entry_does_not_release_the_critical_advisory(
    vulnerable_scan: ImageScan,
) -> None:
    expired = AllowlistEntry(
        id="SWITCHYARD-TEST-CVE-0001", reason="fix scheduled", expires=date(2026, 10, 31)
    )  # the advisory's alias
    policy = ScanPolicy(mode=GateMode.NEW_ONLY, allowlist=(expired,))
    # Even with production having it: an expired entry fails the finding in new-only mode too.
    result = evaluate(policy, vulnerable_scan.findings, baseline=vulnerable_scan.findings, today=TODAY)
    assert not result.passed
    assert [item.finding.id for item in result.failing] == ["github-pat", "SWITCHYARD-TEST-2026-0001"]
    assert [hit.entry for hit in result.expired_allowlist_hits] == [expired]


def test_the_sample_image_passes_the_default_gate(tmp_path: Path) -> None:
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out"))
    sample_scan = scan(image.artifact_path, tmp_path, [PYPA_OSV])
    result = evaluate(ScanPolicy(), sample_scan.findings, today=TODAY, scanned_kinds=sample_scan.scanned_kinds)
    assert result.passed, result.to_markdown()
    assert not list(tmp_path.glob("switchyard-scan-*")), "the scratch unpack directory is removed"


def test_no_scanners_is_an_error(tmp_path: Path) -> None:
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out"))
    with pytest.raises(ScanError, match="no scanners configured"):
        scan_artifact(image.artifact_path, scanners=[], sbom_scanner=TrivyScanner(), sbom_path=tmp_path / "s.json")
