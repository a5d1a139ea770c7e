"""The Azure image: images/azure.pkr.hcl builds a managed image on a build VM and downloads its scan inputs.

``AzureImageRequest.packer_variables()`` is every variable the template declares, and the image
pipeline passes exactly these (tests/integration/images/test_azure_build_variables.py validates the
template with them). ``build_azure_image()`` runs the build and checks what came back: the managed
image Packer reports and the scan inputs, a tar.gz laid out like the local artifact (manifest.json
at its root, the app, the OS package database, the compliance and patch records), which the same
scanners and the same gate judge before anything is published (docs/decisions/0007).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.versions import BASE_CATALOG
from switchyard.images.artifact import ImageManifest, sha256_file
from switchyard.images.build_request import ImageBuildRequest
from switchyard.images.packer import (
    AZURE_TEMPLATE,
    DEFAULT_BUILD_TIMEOUT_SECONDS,
    CancelSignal,
    PackerRunner,
)
from switchyard.images.packer_output import LineCallback, PackerBuildError, PackerTemplateError

# A build VM size the base images support in most regions (Gen2, premium storage).
DEFAULT_BUILD_VM_SIZE = "Standard_D2s_v5"


class AzureImageRequest(ImageBuildRequest):
    """What to build on Azure: the azure template's variables add the build VM and where it goes."""

    build_resource_group: str = Field(min_length=1, description="Existing group for the build VM and managed image.")
    vm_size: str = DEFAULT_BUILD_VM_SIZE

    @property
    def managed_image_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}"

    @property
    def scan_inputs_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}.scan-inputs.tar.gz"

    def packer_variables(self) -> dict[str, str]:
        marketplace = BASE_CATALOG[str(self.version.base)].marketplace
        return {
            **self.common_variables(),
            "vm_size": self.vm_size,
            "build_resource_group": self.build_resource_group,
            "managed_image_name": self.managed_image_name,
            "output_dir": str(self.output_dir.resolve()),
            "base_image_publisher": marketplace.publisher,
            "base_image_offer": marketplace.offer,
            "base_image_sku": marketplace.sku,
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
    manifest = request.checked_manifest(scan_inputs)
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
