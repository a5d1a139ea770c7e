"""What an image says about itself: its hardening controls' results and the packages its patch step changed.

The provisioning scripts write both into the image (images/scripts/hardening.sh:
/etc/switchyard/compliance.jsonl, one JSON record per control; images/scripts/patch.sh:
/etc/switchyard/patch-changes.json); switchyard.images.records reads them from the artifact, and the
scan gate (switchyard.core.scan_policy) judges the controls like findings. Pure models, no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

COMPLIANCE_FILE = "etc/switchyard/compliance.jsonl"
PATCH_CHANGES_FILE = "etc/switchyard/patch-changes.json"


class ControlOutcome(StrEnum):
    PASS = "pass"  # the image met the control as built
    FAIL = "fail"  # it does not, and the build did not fix it (report-only, or nothing could)
    FIXED = "fixed"  # it did not, and hardening fixed it: the image meets the control


class ControlResult(BaseModel):
    """One hardening control's result, as hardening.sh recorded it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    title: str = Field(min_length=1)
    result: ControlOutcome
    detail: str = ""


class ComplianceResults(BaseModel):
    """Every control's result from one image; ``problem`` says why there are none (missing, unreadable)."""

    model_config = ConfigDict(frozen=True)

    controls: tuple[ControlResult, ...] = ()
    problem: str = ""

    @classmethod
    def missing(cls, problem: str) -> ComplianceResults:
        return cls(controls=(), problem=problem)

    @property
    def present(self) -> bool:
        return not self.problem and bool(self.controls)

    def count(self, outcome: ControlOutcome) -> int:
        return sum(1 for control in self.controls if control.result is outcome)


class PatchChange(BaseModel):
    """One package the patch step changed: ``before`` is empty when it was installed, ``after`` when removed."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    package: str = Field(min_length=1)
    before: str = Field("", alias="from")
    after: str = Field("", alias="to")


class PatchRecord(BaseModel):
    """What patch.sh did to the image's packages (/etc/switchyard/patch-changes.json)."""

    model_config = ConfigDict(frozen=True)

    patch_level: str
    # The package archive's snapshot the image was patched from (snapshot.debian.org), when pinned.
    snapshot: str = ""
    changes: tuple[PatchChange, ...] = ()
    # Why there are no changes to show when that is not "nothing needed patching" (local mode has
    # no package manager), or why the record could not be read.
    reason: str = ""
