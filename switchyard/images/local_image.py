"""The local image: one service's app folder built by images/local.pkr.hcl into a checked artifact.

``build_local_image()`` is the entry point of the image pipeline: it builds images/local.pkr.hcl for
one app and image version and returns the checked artifact. Packer runs through
switchyard.images.packer's ``PackerRunner``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.core.image_metadata import format_utc
from switchyard.core.topology import check_name
from switchyard.core.versions import ImageVersion
from switchyard.images.artifact import (
    ArtifactError,
    FaultProfile,
    ImageManifest,
    load_app_config,
    read_manifest,
    sha256_file,
)
from switchyard.images.packer import (
    DEFAULT_BUILD_TIMEOUT_SECONDS,
    LOCAL_TEMPLATE,
    CancelSignal,
    PackerRunner,
    call_cancellable,
)
from switchyard.images.packer_output import LineCallback, PackerBuildError, PackerTemplateError


class LocalImageRequest(BaseModel):
    """What to build: one service's app folder as one image version."""

    model_config = ConfigDict(frozen=True)

    service: str
    app_dir: Path
    version: ImageVersion
    git_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    fault_profile: FaultProfile = Field(default_factory=lambda: FaultProfile.model_validate({}))
    output_dir: Path
    # Part of the manifest and every tar entry's mtime: the same request gives the same digest.
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @field_validator("service")
    @classmethod
    def _service_name(cls, service: str) -> str:
        return check_name("service", service)

    @property
    def artifact_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}.tar.gz"

    @property
    def packer_manifest_path(self) -> Path:
        return self.output_dir.resolve() / f"{self.service}-{self.version.gallery_version}.packer-manifest.json"

    def packer_variables(self) -> dict[str, str]:
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
            "output_dir": str(self.output_dir.resolve()),
            "packer_manifest_path": str(self.packer_manifest_path),
        }


class LocalImage(BaseModel):
    """A built and checked local image artifact."""

    model_config = ConfigDict(frozen=True)

    artifact_path: Path
    sha256: str
    size_bytes: int
    manifest: ImageManifest
    packer_run_uuid: str

    @property
    def scanned_path(self) -> Path:
        """What the scanners read and the digest check re-hashes: the artifact itself."""
        return self.artifact_path


def build_local_image(
    request: LocalImageRequest,
    *,
    runner: PackerRunner | None = None,
    template: Path = LOCAL_TEMPLATE,
    on_line: LineCallback | None = None,
    timeout: float | None = DEFAULT_BUILD_TIMEOUT_SECONDS,
    cancel_event: CancelSignal | None = None,
) -> LocalImage:
    """Build images/local.pkr.hcl for ``request`` and check what came out.

    Checks: the checksum post-processor's sha256 matches the file, and the manifest inside the
    artifact states exactly the requested service, versions, commit and fault profile.
    """
    load_app_config(request.app_dir)  # a clear error before Packer's, when the folder is wrong
    if not template.is_file():
        raise PackerTemplateError(f"the local template {template} does not exist")
    request.output_dir.mkdir(parents=True, exist_ok=True)
    runner = runner or PackerRunner()
    entry = runner.build_template(
        template.resolve(),
        variables=request.packer_variables(),
        manifest_path=request.packer_manifest_path,
        on_line=on_line,
        timeout=timeout,
        cancel_event=cancel_event,
    )
    artifact = request.output_dir.resolve() / request.artifact_name
    if request.artifact_name not in {file.name for file in entry.files} or not artifact.is_file():
        raise PackerBuildError(f"Packer reported success but {artifact} was not produced")
    digest = sha256_file(artifact)
    recorded = _recorded_checksum(Path(f"{artifact}.sha256"), artifact.name)
    if recorded != digest:
        raise PackerBuildError(f"{artifact.name}: sha256 {digest} does not match the checksum file's {recorded}")
    manifest = read_manifest(artifact)
    expected = {
        "name": request.service,
        "base": str(request.version.base),
        "patch_level": str(request.version.patch_level),
        "app_version": str(request.version.app_version),
        "gallery_version": request.version.gallery_version,
        "git_commit": request.git_commit,
        "fault_profile": request.fault_profile,
    }
    differing = [key for key, value in expected.items() if getattr(manifest, key) != value]
    if differing:
        raise ArtifactError(f"{artifact.name}: manifest.json differs from the request in {', '.join(differing)}")
    return LocalImage(
        artifact_path=artifact,
        sha256=digest,
        size_bytes=artifact.stat().st_size,
        manifest=manifest,
        packer_run_uuid=entry.packer_run_uuid,
    )


async def build_local_image_async(request: LocalImageRequest, **kwargs: Any) -> LocalImage:
    """``build_local_image`` for async callers: cancelling the awaiting task stops Packer's group."""
    return await call_cancellable(build_local_image, request, **kwargs)


def _recorded_checksum(checksum_file: Path, artifact_name: str) -> str:
    """The sha256 the checksum post-processor wrote (``<hex>\\t<name>`` lines)."""
    try:
        lines = checksum_file.read_text().splitlines()
    except FileNotFoundError:
        raise PackerBuildError(f"the checksum post-processor wrote no {checksum_file.name}") from None
    for line in lines:
        digest, _, name = line.partition("\t")
        if name.strip() == artifact_name:
            return digest.strip()
    raise PackerBuildError(f"{checksum_file.name} has no line for {artifact_name}")
