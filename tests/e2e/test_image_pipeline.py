"""The image pipeline end to end: real Packer, real Trivy, the OSV matcher, the emulator's gallery
through the real SDK, and the real Prefect engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from flows.image_pipeline import image_pipeline
from switchyard.core.fleet import Fleet
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import GateFailed
from switchyard.core.versions import ImageVersion, VersionError
from switchyard.images.packer_output import PackerTemplateError
from switchyard_emulator.testing import EmulatorHandle

pytestmark = pytest.mark.e2e

GALLERY_GROUP = "switchyard-images"
GALLERY = "switchyard_gallery"
COMMIT = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


def gallery_versions(emulator: EmulatorHandle, service: str) -> list[str]:
    clients = emulator.clients()
    try:
        return sorted(
            v.name
            for v in clients.compute.gallery_image_versions.list_by_gallery_image(GALLERY_GROUP, GALLERY, service)
        )
    except ResourceNotFoundError:
        return []
    finally:
        clients.close()


def test_the_sample_app_is_built_scanned_and_published_with_its_history(fleet: Fleet, emulator: EmulatorHandle) -> None:
    published = image_pipeline(service="sample", app_version="1.0.0", git_commit=COMMIT)

    assert not published.reused
    version = ImageVersion.from_gallery_version(published.gallery_version)
    assert (str(version.base), str(version.app_version)) == ("debian-12", "1.0.0")
    clients = emulator.clients()
    try:
        stored = clients.compute.gallery_image_versions.get(
            GALLERY_GROUP, GALLERY, "sample", published.gallery_version, expand="ReplicationStatus"
        )
    finally:
        clients.close()
    body = stored.as_dict()
    # Excluded from "latest" until a release has held full traffic; replicated everywhere.
    assert body["properties"]["publishingProfile"]["excludeFromLatest"] is True
    regions = {
        s["region"].replace(" ", "").lower(): s["state"] for s in body["properties"]["replicationStatus"]["summary"]
    }
    assert regions == {"westeurope": "Completed"}
    metadata = ImageMetadata.from_tags(body["tags"])
    assert metadata.git_commit == COMMIT and metadata.scan_gate_passed and not metadata.rolled_back
    assert metadata.scan_summary_text() == "vuln C0 H0 M0 L0 U0 | misconfig C0 H0 M0 L0 U0 | secret C0 H0 M0 L0 U0"
    assert len(metadata.sbom_sha256) == 64
    # Published from a page blob of the environment's storage account, as Azure requires; never a path.
    source = body["properties"]["storageProfile"]["osDiskImage"]["source"]
    assert source["uri"].startswith("https://") and source["uri"].endswith(".vhd")
    assert source["storageAccountId"].endswith(
        f"/providers/Microsoft.Storage/storageAccounts/{emulator.storage_account}"
    )
    assert published.source is not None
    assert (published.source.uri, published.source.storage_account_id) == (source["uri"], source["storageAccountId"])


def test_the_same_inputs_reuse_the_published_version_and_force_rebuilds_a_new_revision(fleet: Fleet) -> None:
    first = image_pipeline(service="sample", app_version="1.1.0", git_commit=COMMIT)
    again = image_pipeline(service="sample", app_version="1.1.0", git_commit=COMMIT)
    forced = image_pipeline(service="sample", app_version="1.1.0", git_commit=COMMIT, force=True)

    assert again.reused and again.gallery_version == first.gallery_version
    assert again.source == first.source and first.source is not None  # the reused version's own blob
    assert not forced.reused
    first_level = ImageVersion.from_gallery_version(first.gallery_version).patch_level
    forced_level = ImageVersion.from_gallery_version(forced.gallery_version).patch_level
    assert forced_level.same_month(first_level) and forced_level.revision == first_level.revision + 1


def test_a_dependency_with_a_critical_advisory_is_stopped_at_the_gate_and_named(
    fleet: Fleet, emulator: EmulatorHandle
) -> None:
    with pytest.raises(GateFailed) as failure:
        image_pipeline(service="vulnerable", app_version="1.0.0", git_commit=COMMIT, scan_policy="critical-only")

    message = str(failure.value)
    assert "SWITCHYARD-TEST-2026-0001" in message and "switchyard-fixture-critical 1.0.0" in message
    assert "CRITICAL" in message
    assert gallery_versions(emulator, "vulnerable") == []


def test_an_allowlist_entry_that_expired_does_not_let_the_finding_through(
    fleet: Fleet, emulator: EmulatorHandle
) -> None:
    with pytest.raises(GateFailed, match="SWITCHYARD-TEST-2026-0001"):
        image_pipeline(service="vulnerable", app_version="1.0.1", git_commit=COMMIT, scan_policy="allow-expired")
    assert gallery_versions(emulator, "vulnerable") == []

    # The same entry, still valid, lets it through: it is the expiry that stopped it.
    published = image_pipeline(service="vulnerable", app_version="1.0.2", git_commit=COMMIT, scan_policy="allow-valid")
    assert gallery_versions(emulator, "vulnerable") == [published.gallery_version]


def test_unknown_base_and_malformed_versions_fail_before_anything_runs(fleet: Fleet, emulator: EmulatorHandle) -> None:
    with pytest.raises(VersionError, match="unknown base"):
        image_pipeline(service="cart", app_version="1.0.0", base="windows-95", git_commit=COMMIT)
    with pytest.raises(VersionError, match=r"1\.2"):
        image_pipeline(service="cart", app_version="1.2", git_commit=COMMIT)
    with pytest.raises(ValueError, match="unknown service 'nosuch'"):
        image_pipeline(service="nosuch", app_version="1.0.0", git_commit=COMMIT)
    assert gallery_versions(emulator, "cart") == []


def test_a_template_packer_rejects_fails_with_packers_message_and_publishes_nothing(
    fleet: Fleet, emulator: EmulatorHandle
) -> None:
    with pytest.raises(PackerTemplateError) as failure:
        image_pipeline(service="broken", app_version="1.0.0", git_commit=COMMIT)
    assert "bogus_field" in str(failure.value) or "bogus_field" in " ".join(failure.value.packer_errors)
    assert gallery_versions(emulator, "broken") == []


def test_the_cli_prints_what_it_published_as_json(fleet: Fleet, prefect_api: str, repo_root: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "image", "build", "sample", "--app-version", "1.2.0",
         "--git-commit", COMMIT, "--json"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["app_version"] == "1.2.0" and payload["reused"] is False
    assert payload["scan"]["vulnerability"] == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "LOW": 0, "UNKNOWN": 0}
    # the blob the version was made from and its storage account
    assert payload["source"]["uri"].startswith("https://") and "/switchyard-images/sample/" in payload["source"]["uri"]
    assert "/providers/Microsoft.Storage/storageAccounts/" in payload["source"]["storage_account_id"]
    ImageVersion.from_gallery_version(payload["gallery_version"])


def test_the_cli_exits_non_zero_and_names_the_findings_when_the_gate_fails(
    fleet: Fleet, prefect_api: str, repo_root: Path
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "image", "build", "vulnerable", "--app-version", "2.0.0",
         "--git-commit", COMMIT],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3  # refused before any change: nothing was published
    assert "refused, nothing was changed" in result.stderr
    assert "PYSEC-2018-28" in result.stderr  # requests 2.19.1, unknown severity counts as HIGH by default
