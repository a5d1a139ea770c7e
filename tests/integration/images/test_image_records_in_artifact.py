"""A real local build records its hardening results and patch changes inside the image, and
switchyard reads them back from the artifact; a build-time fault makes a control fail."""

from __future__ import annotations

import json
from pathlib import Path

from images_support import SAMPLE_APP, request_for

from switchyard.core.config import FaultProfile
from switchyard.core.image_records import COMPLIANCE_FILE, PATCH_CHANGES_FILE, ControlOutcome
from switchyard.images.local_image import build_local_image
from switchyard.images.records import compliance_of_artifact, read_artifact_member

CONTROLS = ["SWY-SYSCTL-1", "SWY-MOD-1", "SWY-SSH-1", "SWY-SSH-2", "SWY-FS-1", "SWY-FS-2"]


def test_a_clean_build_records_every_control_and_an_honest_empty_patch_list(tmp_path: Path) -> None:
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out"))

    compliance = compliance_of_artifact(image.artifact_path)
    assert compliance.present
    assert [control.id for control in compliance.controls] == CONTROLS
    assert compliance.count(ControlOutcome.FAIL) == 0
    patches = json.loads(read_artifact_member(image.artifact_path, PATCH_CHANGES_FILE) or b"{}")
    assert patches["patch_level"] == "2026.11" and patches["changes"] == []
    assert "no package manager" in patches["reason"]
    log = (read_artifact_member(image.artifact_path, "provisioning/hardening.log") or b"").decode()
    assert "compliance results: /etc/switchyard/compliance.jsonl (6 controls)" in log


def test_cloud_inits_password_login_fault_fails_the_ssh_control(tmp_path: Path) -> None:
    faulty = FaultProfile(ssh_password_auth=True)
    image = build_local_image(request_for(SAMPLE_APP, tmp_path / "out", fault_profile=faulty))

    compliance = compliance_of_artifact(image.artifact_path)
    failed = [control for control in compliance.controls if control.result is ControlOutcome.FAIL]
    assert [control.id for control in failed] == ["SWY-SSH-2"]
    assert "passwordauthentication yes, set by /etc/ssh/sshd_config.d/50-cloud-init.conf" in failed[0].detail
    assert read_artifact_member(image.artifact_path, COMPLIANCE_FILE) is not None
    assert image.manifest.fault_profile == faulty
