"""What every image build is asked for, whichever builder makes it (local_image.py, azure_image.py),
and the check that what came back states exactly that."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.core.config import FaultProfile
from switchyard.core.image_metadata import format_utc
from switchyard.core.topology import check_name
from switchyard.core.versions import ImageVersion
from switchyard.images.artifact import ArtifactError, ImageManifest, read_manifest


class ImageBuildRequest(BaseModel):
    """One service's app folder (exported from its commit) as one image version."""

    model_config = ConfigDict(frozen=True)

    service: str
    app_dir: Path
    version: ImageVersion
    git_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    fault_profile: FaultProfile = Field(default_factory=lambda: FaultProfile.model_validate({}))
    output_dir: Path
    # Part of the manifest (and of every tar entry's mtime locally): the same request, the same bytes.
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @field_validator("service")
    @classmethod
    def _service_name(cls, service: str) -> str:
        return check_name("service", service)

    @property
    def packer_manifest_path(self) -> Path:
        return self.output_dir.resolve() / f"{self.service}-{self.version.gallery_version}.packer-manifest.json"

    def common_variables(self) -> dict[str, str]:
        """The template variables both templates declare."""
        return {
            "service": self.service,
            "app_dir": str(self.app_dir.resolve()),
            "base": str(self.version.base),
            "patch_level": str(self.version.patch_level),
            "app_version": str(self.version.app_version),
            "gallery_version": self.version.gallery_version,
            "git_commit": self.git_commit,
            "fault_profile": self.fault_profile.model_dump_json(exclude_none=True),  # unset faults stay out
            "built_at": format_utc(self.built_at),
            "packer_manifest_path": str(self.packer_manifest_path),
        }

    def checked_manifest(self, image_root_archive: Path) -> ImageManifest:
        """The archive's manifest.json, which must state exactly this request's service, versions,
        commit and fault profile: the build installed what was asked for."""
        manifest = read_manifest(image_root_archive)
        expected = {
            "name": self.service,
            "base": str(self.version.base),
            "patch_level": str(self.version.patch_level),
            "app_version": str(self.version.app_version),
            "gallery_version": self.version.gallery_version,
            "git_commit": self.git_commit,
            "fault_profile": self.fault_profile,
        }
        differing = [key for key, value in expected.items() if getattr(manifest, key) != value]
        if differing:
            raise ArtifactError(
                f"{image_root_archive.name}: manifest.json differs from the request in {', '.join(differing)}"
            )
        return manifest
