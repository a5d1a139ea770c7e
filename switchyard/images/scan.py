"""Scanning a built artifact: unpack it once, run every scanner on the root, make the SBOM, and
read what the image recorded about itself (hardening results, patch changes).

``scan_artifact()`` is what the image pipeline's scan task calls; the gate
(``switchyard.core.scan_policy.evaluate``) then judges ``ImageScan.findings``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.findings import Finding, FindingKind, Sbom, ScanResult, ScanSummary, merge_findings
from switchyard.core.image_records import ComplianceResults, PatchRecord
from switchyard.core.outcomes import GateFailed
from switchyard.core.scan_policy import VulnDatabase
from switchyard.images.artifact import ArtifactError, read_manifest, sha256_file, unpack_artifact
from switchyard.images.records import read_compliance, read_patch_record
from switchyard.images.scanners.base import ScanError, Scanner
from switchyard.images.scanners.trivy import TrivyScanner


class ImageScan(BaseModel):
    """Every scanner's result for one artifact, and its SBOM."""

    model_config = ConfigDict(frozen=True)

    artifact: str
    # The sha256 of exactly the bytes that were scanned: publish re-hashes the artifact and refuses
    # anything else (tasks/images.py, verify_scanned_artifact).
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    results: tuple[ScanResult, ...]
    sbom: Sbom
    compliance: ComplianceResults
    patches: PatchRecord

    @property
    def findings(self) -> tuple[Finding, ...]:
        return merge_findings(self.results)

    @property
    def scanned_kinds(self) -> frozenset[FindingKind]:
        return frozenset(kind for result in self.results for kind in result.scanned_kinds)

    @property
    def summary(self) -> ScanSummary:
        return ScanSummary.of(self.findings)

    @property
    def vulnerability_databases(self) -> tuple[VulnDatabase, ...]:
        """The advisory data each vulnerability scan matched against, with its date (for the age limit)."""
        return tuple(
            VulnDatabase(name=result.database or result.scanner, as_of=result.database_as_of)
            for result in self.results
            if FindingKind.VULNERABILITY in result.scanned_kinds
        )


class ArtifactChanged(GateFailed):
    """The artifact about to be published is not the one that was scanned; nothing was published."""


def verify_scanned(artifact: Path, scan: ImageScan, built_sha256: str) -> str:
    """Re-hash ``artifact`` and refuse it unless it is byte for byte what was built and scanned.

    Between the scan and the publish the file sits on a worker's disk: anything that changes it
    (a second build writing the same path, a person, an attacker) would otherwise ship bytes nothing
    looked at, under tags that describe other bytes.
    """
    try:
        digest = sha256_file(artifact)
    except OSError as error:
        raise ArtifactChanged(
            f"{artifact.name} cannot be read for its digest check: {error}; nothing was published"
        ) from None
    if digest != scan.artifact_sha256 or digest != built_sha256:
        raise ArtifactChanged(
            f"{artifact.name} changed after it was scanned: sha256 {digest} now, {scan.artifact_sha256} when "
            f"scanned (built as {built_sha256}). Nothing was published; build again"
        )
    return digest


def scan_artifact(
    artifact: Path,
    *,
    scanners: Sequence[Scanner],
    sbom_scanner: TrivyScanner,
    sbom_path: Path,
    work_dir: Path | None = None,
) -> ImageScan:
    """Unpack ``artifact`` into a scratch directory, scan it with each scanner, write its SBOM.

    Any scanner error propagates (ScanError): a scan with a missing part is no scan.
    """
    if not scanners:
        raise ScanError("no scanners configured: an image that nothing looked at is not clean")
    digest = sha256_file(artifact)
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-scan-", dir=work_dir))
    try:
        root = unpack_artifact(artifact, scratch / "root")
        # Hashed before and after unpacking: a file that changed meanwhile is not the one scanned.
        if sha256_file(artifact) != digest:
            raise ArtifactError(f"{artifact.name} changed while it was being unpacked for the scan")
        results = tuple(scanner.scan(root) for scanner in scanners)
        sbom = sbom_scanner.sbom(root, sbom_path)
        compliance = read_compliance(root)
        patches = read_patch_record(root, read_manifest(artifact).patch_level)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ImageScan(
        artifact=str(artifact),
        artifact_sha256=digest,
        results=results,
        sbom=sbom,
        compliance=compliance,
        patches=patches,
    )
