"""Real Packer builds of images/local.pkr.hcl: the artifact, its manifest, its stable digest."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from images_support import BUILT_AT, COMMIT, SAMPLE_APP, VULNERABLE_APP, request_for

from switchyard.core.versions import ImageVersion
from switchyard.images.artifact import ArtifactError, FaultProfile, read_manifest
from switchyard.images.local_image import build_local_image
from switchyard.images.packer_output import PackerBuildError, PackerLine, read_packer_manifest


def test_sample_app_builds_into_an_artifact_whose_manifest_matches_the_inputs(tmp_path: Path) -> None:
    lines: list[PackerLine] = []
    request = request_for(
        SAMPLE_APP,
        tmp_path / "out",
        version=ImageVersion.of("ubuntu-24.04", "2026.11.3", "2.0.7"),
        fault_profile=FaultProfile(error_rate=0.25, extra_latency_ms=40),
    )
    image = build_local_image(request, on_line=lines.append)

    assert image.artifact_path == (tmp_path / "out" / "sample-2000007.20261103.3.tar.gz").resolve()
    app_config = json.loads((SAMPLE_APP / "switchyard-app.json").read_text())
    with tarfile.open(image.artifact_path) as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest == {
        "schema": "switchyard.image/v1",
        "name": "sample",
        "base": "ubuntu-24.04",
        "patch_level": "2026.11.3",
        "app_version": "2.0.7",
        "gallery_version": "2000007.20261103.3",
        "git_commit": COMMIT,
        "entrypoint": app_config["entrypoint"],
        "service_port": app_config["service_port"],
        "health_path": app_config["health_path"],
        "fault_profile": {"error_rate": 0.25, "extra_latency_ms": 40, "fail_health": False, "ssh_password_auth": False},
        "built_at": "2026-11-26T10:00:00Z",
    }
    assert image.manifest == read_manifest(image.artifact_path)
    # The root holds the contract's parts, without a ./ prefix, in byte order.
    assert names == sorted(names)
    for required in ("manifest.json", "app/server.py", "app/requirements.txt"):
        assert required in names
    source_files = {str(path.relative_to(SAMPLE_APP)) for path in (SAMPLE_APP / "app").rglob("*") if path.is_file()}
    assert {name for name in names if name.startswith("app/") and "." in name} >= {
        name for name in source_files if "__pycache__" not in name
    }
    for step in ("patch", "faults", "hardening", "install-app", "deprovision"):
        assert f"provisioning/{step}.log" in names
    # Lines were streamed as Packer printed them, unescaped.
    texts = [line.text for line in lines]
    assert any("installed sample app:" in text and "," in text for text in texts)
    assert not any("PACKER_COMMA" in text for text in texts)


def test_provisioning_logs_say_what_the_scripts_did(tmp_path: Path) -> None:
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out"))
    with tarfile.open(image.artifact_path) as archive:
        patch_log = archive.extractfile("provisioning/patch.log").read().decode()  # type: ignore[union-attr]
        hardening_log = archive.extractfile("provisioning/hardening.log").read().decode()  # type: ignore[union-attr]
        patch_record = archive.extractfile("etc/switchyard/patch-level").read().decode()  # type: ignore[union-attr]
        server = archive.getmember("app/server.py")
    assert "patch level 2026.11 of base debian-12 recorded" in patch_log
    assert patch_record == "PATCH_LEVEL=2026.11\nBASE=debian-12\n"
    assert "WROTE /etc/ssh/sshd_config.d/60-switchyard-hardening.conf" in hardening_log
    assert server.mode & 0o222 == 0, "installed app files are locked read-only"
    assert (server.uid, server.gid, server.mtime) == (0, 0, int(BUILT_AT.timestamp()))


def test_the_same_inputs_give_the_same_digest(tmp_path: Path) -> None:
    first = build_local_image(request_for(VULNERABLE_APP, tmp_path / "first", service="vulnerable"))
    second = build_local_image(request_for(VULNERABLE_APP, tmp_path / "second", service="vulnerable"))
    assert first.sha256 == second.sha256
    assert first.artifact_path.read_bytes() == second.artifact_path.read_bytes()
    assert first.packer_run_uuid != second.packer_run_uuid
    other_commit = build_local_image(
        request_for(VULNERABLE_APP, tmp_path / "third", service="vulnerable", git_commit="fedcba9")
    )
    assert other_commit.sha256 != first.sha256


def test_the_manifest_entry_of_this_run_is_returned_after_a_rebuild(tmp_path: Path) -> None:
    request = request_for(VULNERABLE_APP, tmp_path / "out", service="vulnerable")
    first = build_local_image(request)
    second = build_local_image(request)
    recorded = json.loads(request.packer_manifest_path.read_text())
    assert [build["packer_run_uuid"] for build in recorded["builds"]] == [
        first.packer_run_uuid,
        second.packer_run_uuid,
    ]
    entry = read_packer_manifest(request.packer_manifest_path)
    assert entry.packer_run_uuid == second.packer_run_uuid
    assert entry.custom_data == {
        "service": "vulnerable",
        "base": "debian-12",
        "patch_level": "2026.11",
        "app_version": "1.4.2",
        "gallery_version": "1004002.20261100.1",
        "git_commit": COMMIT,
        "artifact": "vulnerable-1004002.20261100.1.tar.gz",
    }
    # The checksum post-processor's file is what the artifact hashes to.
    checksum_line = (tmp_path / "out" / "vulnerable-1004002.20261100.1.tar.gz.sha256").read_text()
    assert checksum_line.split("\t")[0] == second.sha256
    assert not (tmp_path / "out" / ".staging").exists()


def test_caches_in_the_source_app_are_pruned(tmp_path: Path, app_copy) -> None:
    app_dir = app_copy(VULNERABLE_APP)
    (app_dir / "app" / "__pycache__").mkdir()
    (app_dir / "app" / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"\0")
    (app_dir / "app" / "lib").mkdir()
    (app_dir / "app" / "lib" / "__pycache__").mkdir()
    (app_dir / "app" / "lib" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (app_dir / "app" / "notes.txt~").write_text("editor backup")
    image = build_local_image(request_for(app_dir, tmp_path / "out", service="vulnerable"))
    with tarfile.open(image.artifact_path) as archive:
        names = archive.getnames()
        deprovision_log = archive.extractfile("provisioning/deprovision.log").read().decode()  # type: ignore[union-attr]
    assert not [name for name in names if "__pycache__" in name or name.endswith("~")]
    assert "PRUNED Python bytecode caches: 1" in deprovision_log  # lib/__pycache__ (app/ was skipped on copy)
    assert "PRUNED editor and OS droppings: 1" in deprovision_log


def test_an_unpinned_lock_fails_the_build_with_the_scripts_message(tmp_path: Path, app_copy) -> None:
    app_dir = app_copy(VULNERABLE_APP)
    (app_dir / "app" / "requirements.txt").write_text("requests==2.19.1\nflask>=2\n")
    with pytest.raises(PackerBuildError) as raised:
        build_local_image(request_for(app_dir, tmp_path / "out", service="vulnerable"))
    error = raised.value
    assert error.exit_code != 0
    assert any("non-zero exit status" in message for message in error.packer_errors)
    assert any("flask>=2" in line for line in error.output_tail)
    assert not list((tmp_path / "out").glob("*.tar.gz")), "a failed build leaves no artifact"


def test_an_app_folder_without_its_config_is_rejected_before_packer_runs(tmp_path: Path, app_copy) -> None:
    app_dir = app_copy(VULNERABLE_APP)
    (app_dir / "switchyard-app.json").unlink()
    with pytest.raises(ArtifactError, match=r"switchyard-app\.json is missing"):
        build_local_image(request_for(app_dir, tmp_path / "out"))
