"""Reading what the provisioning scripts recorded inside an image: compliance results and patch changes.

hardening.sh writes /etc/switchyard/compliance.jsonl (one JSON object a line: id, title, result
pass/fail/fixed, detail); patch.sh writes /etc/switchyard/patch-changes.json (patch_level, snapshot,
changes [{package, from, to}], reason). Both are read from an unpacked image root (the scan unpacks
it once) or straight from an artifact. A record that is missing or unreadable is never read as "all
well": compliance comes back with a ``problem`` (the gate fails on it), patches with a ``reason``.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from pydantic import ValidationError

from switchyard.core.image_records import (
    COMPLIANCE_FILE,
    PATCH_CHANGES_FILE,
    ComplianceResults,
    ControlResult,
    PatchRecord,
)

# A record file bigger than this is not what the scripts write (a few KiB): refuse rather than read it.
MAX_RECORD_BYTES = 4 << 20


def read_compliance(root: Path) -> ComplianceResults:
    """The hardening controls' results from an unpacked image root."""
    path = root / COMPLIANCE_FILE
    if not path.is_file():
        return ComplianceResults.missing(f"the image has no /{COMPLIANCE_FILE} (hardening.sh did not record results)")
    if path.stat().st_size > MAX_RECORD_BYTES:
        return ComplianceResults.missing(f"/{COMPLIANCE_FILE} is larger than {MAX_RECORD_BYTES} bytes")
    return parse_compliance(path.read_bytes())


def parse_compliance(data: bytes) -> ComplianceResults:
    controls: list[ControlResult] = []
    seen: set[str] = set()
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            control = ControlResult.model_validate_json(line)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "record"
            return ComplianceResults.missing(
                f"/{COMPLIANCE_FILE} line {number} is not a control result: {where}: {problem['msg']}"
            )
        if control.id in seen:
            # Two results for one control: which one holds? Neither can be trusted.
            return ComplianceResults.missing(f"/{COMPLIANCE_FILE} line {number} repeats control {control.id}")
        seen.add(control.id)
        controls.append(control)
    if not controls:
        return ComplianceResults.missing(f"/{COMPLIANCE_FILE} holds no control results")
    return ComplianceResults(controls=tuple(controls))


def read_patch_record(root: Path, patch_level: str) -> PatchRecord:
    """What patch.sh changed, from an unpacked image root."""
    path = root / PATCH_CHANGES_FILE
    if not path.is_file():
        return PatchRecord(patch_level=patch_level, reason=f"the image has no /{PATCH_CHANGES_FILE}")
    if path.stat().st_size > MAX_RECORD_BYTES:
        too_big = f"/{PATCH_CHANGES_FILE} is larger than {MAX_RECORD_BYTES} bytes"
        return PatchRecord(patch_level=patch_level, reason=too_big)
    return parse_patch_record(path.read_bytes(), patch_level)


def parse_patch_record(data: bytes, patch_level: str) -> PatchRecord:
    try:
        return PatchRecord.model_validate(json.loads(data))
    except (ValueError, ValidationError) as error:
        return PatchRecord(patch_level=patch_level, reason=f"/{PATCH_CHANGES_FILE} is unreadable: {error}")


def read_artifact_member(artifact: Path, member: str) -> bytes | None:
    """One file of an artifact (tar.gz), without unpacking the rest; None when it is not there."""
    with tarfile.open(artifact, "r:gz") as archive:
        try:
            info = archive.getmember(member)
        except KeyError:
            return None
        if not info.isfile() or info.size > MAX_RECORD_BYTES:
            return None
        stream = archive.extractfile(info)
        return stream.read() if stream is not None else None


def compliance_of_artifact(artifact: Path) -> ComplianceResults:
    data = read_artifact_member(artifact, COMPLIANCE_FILE)
    if data is None:
        return ComplianceResults.missing(f"{artifact.name} has no /{COMPLIANCE_FILE}")
    return parse_compliance(data)
