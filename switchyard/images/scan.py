"""Scanning a built artifact: unpack it once, run every scanner on the root, make the SBOM.

``scan_artifact()`` is what the image pipeline's scan task calls; the gate
(``switchyard.core.scan_policy.evaluate``) then judges ``ImageScan.findings``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from switchyard.core.findings import Finding, FindingKind, Sbom, ScanResult, ScanSummary, merge_findings
from switchyard.images.artifact import unpack_artifact
from switchyard.images.scanners.base import ScanError, Scanner
from switchyard.images.scanners.trivy import TrivyScanner


class ImageScan(BaseModel):
    """Every scanner's result for one artifact, and its SBOM."""

    model_config = ConfigDict(frozen=True)

    artifact: str
    results: tuple[ScanResult, ...]
    sbom: Sbom

    @property
    def findings(self) -> tuple[Finding, ...]:
        return merge_findings(self.results)

    @property
    def scanned_kinds(self) -> frozenset[FindingKind]:
        return frozenset(kind for result in self.results for kind in result.scanned_kinds)

    @property
    def summary(self) -> ScanSummary:
        return ScanSummary.of(self.findings)


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
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-scan-", dir=work_dir))
    try:
        root = unpack_artifact(artifact, scratch / "root")
        results = tuple(scanner.scan(root) for scanner in scanners)
        sbom = sbom_scanner.sbom(root, sbom_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ImageScan(artifact=str(artifact), results=results, sbom=sbom)
