"""The Azure image: images/azure.pkr.hcl builds a managed image on a build VM and downloads its scan inputs.

``AzureImageRequest.packer_variables()`` is every variable the template declares, and the image
pipeline passes exactly these (tests/integration/images/test_azure_build_variables.py validates the
template with them). ``build_azure_image()`` runs the build and checks what came back: the managed
image Packer reports and the scan inputs, a tar.gz laid out like the local artifact (manifest.json
at its root, the app, the OS package database, the compliance and patch records), which the same
scanners and the same gate judge before anything is published (docs/decisions/0007).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.core.image_metadata import format_utc
from switchyard.core.topology import check_name
from switchyard.core.versions import BASE_CATALOG, ImageVersion
from switchyard.images.artifact import ArtifactError, FaultProfile, ImageManifest, read_manifest, sha256_file
from switchyard.images.packer import (
    AZURE_TEMPLATE,
    DEFAULT_BUILD_TIMEOUT_SECONDS,
    CancelSignal,
    PackerRunner,
)
from switchyard.images.packer_output import LineCallback, PackerBuildError, PackerTemplateError

# A build VM size the base images support in most regions (Gen2, premium storage).
DEFAULT_BUILD_VM_SIZE = "Standard_D2s_v5"


class AzureImageRequest(BaseModel):
    """What to build on Azure: one service's app (exported from its commit) as one image version."""

    model_config = ConfigDict(frozen=True)

    service: str
    app_dir: Path
    version: ImageVersion
    git_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    fault_profile: FaultProfile = Field(default_factory=lambda: FaultProfile.model_validate({}))
    output_dir: Path
    build_resource_group: str = Field(min_length=1, description="Existing group for the build VM and managed image.")
    vm_size: str = DEFAULT_BUILD_VM_SIZE
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @field_validator("service")
    @classmethod
    def _service_name(cls, service: str) -> str:
        return check_name("service", service)

    @property
    def managed_image_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}"

    @property
    def scan_inputs_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}.scan-inputs.tar.gz"

    @property
    def packer_manifest_path(self) -> Path:
        return self.output_dir.resolve() / f"{self.service}-{self.version.gallery_version}.packer-manifest.json"

    def packer_variables(self) -> dict[str, str]:
        marketplace = BASE_CATALOG[str(self.version.base)].marketplace
        return {
            "vm_size": self.vm_size,
            "build_resource_group": self.build_resource_group,
            "managed_image_name": self.managed_image_name,
            "output_dir": str(self.output_dir.resolve()),
            "service": self.service,
            "app_dir": str(self.app_dir.resolve()),
            "base": str(self.version.base),
            "base_image_publisher": marketplace.publisher,
            "base_image_offer": marketplace.offer,
            "base_image_sku": marketplace.sku,
            "patch_level": str(self.version.patch_level),
            "app_version": str(self.version.app_version),
            "gallery_version": self.version.gallery_version,
            "git_commit": self.git_commit,
            "fault_profile": self.fault_profile.model_dump_json(exclude_none=True),
            "built_at": format_utc(self.built_at),
            "packer_manifest_path": str(self.packer_manifest_path),
        }


class AzureImage(BaseModel):
    """A managed image Packer left in the build group, and the scan inputs downloaded from its VM."""

    model_config = ConfigDict(frozen=True)

    managed_image_id: str
    scan_inputs_path: Path
    sha256: str  # of the scan inputs: verified again between the scan and the publish
    size_bytes: int
    manifest: ImageManifest
    packer_run_uuid: str

    @property
    def scanned_path(self) -> Path:
        """What the scanners read and the digest check re-hashes: the scan inputs from the build VM."""
        return self.scan_inputs_path


def build_azure_image(
    request: AzureImageRequest,
    *,
    runner: PackerRunner | None = None,
    template: Path = AZURE_TEMPLATE,
    on_line: LineCallback | None = None,
    timeout: float | None = DEFAULT_BUILD_TIMEOUT_SECONDS,
    cancel_event: CancelSignal | None = None,
) -> AzureImage:
    """Build images/azure.pkr.hcl for ``request``; check the managed image id and the scan inputs.

    The scan inputs' manifest.json must state exactly the requested service, versions, commit and
    fault profile: the VM installed what was asked for, and the gate will judge those bytes."""
    if not template.is_file():
        raise PackerTemplateError(f"the Azure template {template} does not exist")
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
    managed_image_id = managed_image_of(entry.artifact_id, request)
    scan_inputs = request.output_dir.resolve() / request.scan_inputs_name
    if not scan_inputs.is_file():
        raise PackerBuildError(f"Packer reported success but downloaded no scan inputs ({scan_inputs})")
    manifest = read_manifest(scan_inputs)
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
        raise ArtifactError(f"{scan_inputs.name}: manifest.json differs from the request in {', '.join(differing)}")
    return AzureImage(
        managed_image_id=managed_image_id,
        scan_inputs_path=scan_inputs,
        sha256=sha256_file(scan_inputs),
        size_bytes=scan_inputs.stat().st_size,
        manifest=manifest,
        packer_run_uuid=entry.packer_run_uuid,
    )


def managed_image_of(artifact_id: str, request: AzureImageRequest) -> str:
    """The managed image's resource id from the manifest's artifact_id, which azure-arm writes as the
    image's id; it must be the image this request named, in its build group."""
    group, name = request.build_resource_group, request.managed_image_name
    suffix = f"/resourcegroups/{group}/providers/microsoft.compute/images/{name}"
    if not artifact_id.lower().endswith(suffix.lower()):
        raise PackerBuildError(
            f"Packer's artifact {artifact_id or '(none)'} is not the managed image {request.managed_image_name} "
            f"in {request.build_resource_group}"
        )
    return artifact_id
