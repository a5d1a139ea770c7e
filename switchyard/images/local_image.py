"""The local image: one service's app folder built by images/local.pkr.hcl into a checked artifact.

``build_local_image()`` is the entry point of the image pipeline: it builds images/local.pkr.hcl for
one app and image version and returns the checked artifact. Packer runs through
switchyard.images.packer's ``PackerRunner``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from switchyard.images.artifact import (
    ImageManifest,
    load_app_config,
    sha256_file,
)
from switchyard.images.build_request import ImageBuildRequest
from switchyard.images.packer import (
    DEFAULT_BUILD_TIMEOUT_SECONDS,
    LOCAL_TEMPLATE,
    CancelSignal,
    PackerRunner,
    call_cancellable,
)
from switchyard.images.packer_output import LineCallback, PackerBuildError, PackerTemplateError


class LocalImageRequest(ImageBuildRequest):
    """What to build on this machine: the local template's variables add where the artifact goes."""

    @property
    def artifact_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}.tar.gz"

    def packer_variables(self) -> dict[str, str]:
        return {**self.common_variables(), "output_dir": str(self.output_dir.resolve())}


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
    manifest = request.checked_manifest(artifact)
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
