"""The local image artifact: ``<service>-<galleryVersion>.tar.gz`` with manifest.json at its root.

Models for manifest.json (schema ``switchyard.image/v1``, docs/architecture.md) and the source app's
switchyard-app.json, plus reading and safely unpacking an artifact.

The fault profile model is switchyard.core.config.FaultProfile (re-exported here), the one the image
recipe block carries.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from switchyard.core.config import FaultProfile
from switchyard.core.image_metadata import format_utc
from switchyard.core.topology import check_name

MANIFEST_SCHEMA = "switchyard.image/v1"
APP_CONFIG_FILE = "switchyard-app.json"

__all__ = ["AppConfig", "ArtifactError", "FaultProfile", "ImageManifest", "read_manifest", "unpack_artifact"]


class ArtifactError(ValueError):
    """An artifact or app folder that does not have the shape docs/architecture.md describes."""


class AppConfig(BaseModel):
    """apps/<service>/switchyard-app.json."""

    model_config = ConfigDict(frozen=True)

    entrypoint: list[str] = Field(min_length=1)
    service_port: int = Field(ge=1, le=65535)
    health_path: str = Field(pattern=r"^/")


class ImageManifest(BaseModel):
    """manifest.json at the root of an image."""

    model_config = ConfigDict(frozen=True)

    schema_: Literal["switchyard.image/v1"] = Field(alias="schema")
    name: str
    base: str
    patch_level: str
    app_version: str
    gallery_version: str
    git_commit: str
    entrypoint: list[str] = Field(min_length=1)
    service_port: int = Field(ge=1, le=65535)
    health_path: str
    fault_profile: FaultProfile
    built_at: datetime

    @field_validator("name")
    @classmethod
    def _service_name(cls, name: str) -> str:
        return check_name("service", name)

    @field_validator("built_at")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("built_at must carry a timezone (UTC, 'Z')")
        return moment.astimezone(UTC)

    @field_serializer("built_at")
    def _format_built_at(self, moment: datetime) -> str:
        return format_utc(moment)


def load_app_config(app_dir: Path) -> AppConfig:
    """Read and check apps/<service>/switchyard-app.json and the app/ folder beside it."""
    config_path = app_dir / APP_CONFIG_FILE
    if not config_path.is_file():
        raise ArtifactError(f"{app_dir} is not an app folder: {APP_CONFIG_FILE} is missing")
    if not (app_dir / "app").is_dir():
        raise ArtifactError(f"{app_dir} is not an app folder: app/ is missing")
    if not (app_dir / "app" / "requirements.txt").is_file():
        raise ArtifactError(f"{app_dir}/app/requirements.txt (the dependency lock) is missing")
    try:
        return AppConfig.model_validate_json(config_path.read_bytes())
    except ValidationError as error:
        raise ArtifactError(f"{config_path} is invalid: {error}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(artifact: Path) -> ImageManifest:
    """manifest.json of an artifact, without unpacking the rest."""
    try:
        with tarfile.open(artifact, "r:gz") as archive:
            member = archive.getmember("manifest.json")
            stream = archive.extractfile(member)
            if stream is None:
                raise ArtifactError(f"{artifact}: manifest.json is not a regular file")
            data = json.loads(stream.read())
    except KeyError:
        raise ArtifactError(f"{artifact} has no manifest.json at its root") from None
    except (tarfile.TarError, OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{artifact} is not a readable image artifact: {error}") from None
    try:
        return ImageManifest.model_validate(data)
    except ValidationError as error:
        raise ArtifactError(f"{artifact}: manifest.json is invalid: {error}") from None


def unpack_artifact(artifact: Path, destination: Path) -> Path:
    """Unpack into ``destination`` (created, must be empty) and return it.

    Uses tarfile's "data" filter: absolute paths, ``..``, links leaving the tree and device files are
    refused, so a hostile artifact cannot write outside the destination.
    """
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise ArtifactError(f"cannot unpack {artifact.name} into {destination}: it is not empty")
    try:
        with tarfile.open(artifact, "r:gz") as archive:
            archive.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ArtifactError(f"cannot unpack {artifact}: {error}") from None
    if not (destination / "manifest.json").is_file():
        raise ArtifactError(f"{artifact} has no manifest.json at its root")
    return destination
