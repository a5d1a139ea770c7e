"""Image artifacts: unpack a local image (.tar.gz) once per content digest, safely.

An instance runs from the unpacked tree of its image (working directory = the tree's root, as
docs/architecture.md says). Trees are cached under `<cache_dir>/<sha256>/` so 20 instances of
one image cost one unpack; a tree is published by an atomic rename, so a crash mid-unpack never
leaves a half tree behind that a later start would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_SCHEMA = "switchyard.image/v1"


class ArtifactError(Exception):
    """The artifact cannot be used: missing, not a gzip'd tar, unsafe member, bad manifest."""


class FaultProfile(BaseModel):
    model_config = ConfigDict(extra="allow")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    extra_latency_ms: float = Field(default=0, ge=0)
    fail_health: bool = False


class ImageManifest(BaseModel):
    """The part of manifest.json the data plane relies on (other fields pass through)."""

    model_config = ConfigDict(extra="allow")

    schema_: str = Field(alias="schema")
    name: str
    entrypoint: list[str] = Field(min_length=1)
    service_port: int = Field(gt=0, lt=65536)
    health_path: str = "/health"
    fault_profile: FaultProfile = Field(default_factory=FaultProfile)


class UnpackedImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: str
    root: Path
    manifest_path: Path
    manifest: ImageManifest


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _check_member(artifact: Path, member: tarfile.TarInfo) -> None:
    """Refuse anything that could write outside the tree or create device files."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise ArtifactError(f"artifact {artifact}: member {member.name!r} escapes the image root")
    if member.isdev() or member.isfifo():
        raise ArtifactError(f"artifact {artifact}: member {member.name!r} is a device or fifo")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        resolved = target if member.islnk() else name.parent / target
        if target.is_absolute() or ".." in PurePosixPath(os.path.normpath(str(resolved))).parts:
            raise ArtifactError(
                f"artifact {artifact}: link {member.name!r} -> {member.linkname!r} points outside the image"
            )


def load_manifest(path: Path) -> ImageManifest:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"manifest {path}: unreadable: {exc}") from exc
    try:
        manifest = ImageManifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"manifest {path}: invalid: {exc}") from exc
    if manifest.schema_ != MANIFEST_SCHEMA:
        raise ArtifactError(f"manifest {path}: schema is {manifest.schema_!r}, expected {MANIFEST_SCHEMA!r}")
    return manifest


class ArtifactCache:
    """Thread-safe: unpacking runs in worker threads (asyncio.to_thread)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        # (path, size, mtime_ns) -> digest, so a re-sync does not re-hash every artifact.
        self._digests: dict[tuple[str, int, int], str] = {}

    def digest_of(self, artifact: Path) -> str:
        try:
            stat = artifact.stat()
        except OSError as exc:
            raise ArtifactError(f"artifact {artifact}: {exc.strerror or exc}") from exc
        key = (str(artifact), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._digests.get(key)
        if cached is None:
            cached = file_digest(artifact)
            with self._lock:
                self._digests[key] = cached
        return cached

    def unpack(self, artifact: Path) -> UnpackedImage:
        digest = self.digest_of(artifact)
        root = self.cache_dir / digest
        with self._lock:
            if not root.is_dir():
                self._unpack_into(artifact, root)
        manifest_path = root / "manifest.json"
        return UnpackedImage(
            digest=digest, root=root, manifest_path=manifest_path, manifest=load_manifest(manifest_path)
        )

    def _unpack_into(self, artifact: Path, root: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = self.cache_dir / f".{root.name}.{os.getpid()}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            try:
                with tarfile.open(artifact, "r:gz") as archive:
                    members = archive.getmembers()
                    for member in members:
                        _check_member(artifact, member)
                    # The 'data' filter re-checks what _check_member refused and also drops
                    # setuid bits and ownership, as an image unpacked onto a VM disk would.
                    archive.extractall(staging, members=members, filter="data")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ArtifactError(f"artifact {artifact}: not a readable gzip'd tar: {exc}") from exc
            if not (staging / "manifest.json").is_file():
                raise ArtifactError(f"artifact {artifact}: no manifest.json at the archive root")
            load_manifest(staging / "manifest.json")
            staging.rename(root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
