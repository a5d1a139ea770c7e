"""An image version's local artifact: its `storageProfile.osDiskImage.source.uri` (a file:// URI of
a gzip'd tar with manifest.json at its root) checked, the manifest read, and the file copied into
DIR/blobs/ by content hash (as Azure copies a VHD), so deleting the build output later does not matter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from switchyard_emulator.errors import bad_request, unsupported

SOURCE_URI = "properties.storageProfile.osDiskImage.source.uri"


def ingest(blob_dir: Path, storage: dict[str, Any]) -> tuple[Path, dict[str, Any], int]:
    """Check the local artifact and copy it into DIR/blobs by content hash."""
    uri = storage.get("osDiskImage", {}).get("source", {}).get("uri")
    if not uri:
        raise bad_request(
            "An image version needs its artifact: set properties.storageProfile.osDiskImage.source.uri "
            "to file:///absolute/path/of/image.tar.gz.",
            target=SOURCE_URI,
        )
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise unsupported(f"Only file:// URIs of a local image tar.gz are supported, not '{uri}'.", target=SOURCE_URI)
    path = Path(unquote(parsed.path))
    if not path.is_absolute() or not path.is_file():
        raise bad_request(f"The image artifact '{path}' does not exist (or is not a file).", target=SOURCE_URI)
    manifest = read_manifest(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    blob_dir.mkdir(parents=True, exist_ok=True)
    blob = blob_dir / f"{digest.hexdigest()}.tar.gz"
    if not blob.exists():
        partial = blob.with_suffix(f".partial-{os.getpid()}")
        shutil.copyfile(path, partial)
        partial.replace(blob)
    return blob, manifest, blob.stat().st_size


def source_of(storage: dict[str, Any]) -> str:
    return json.dumps(
        {
            "source": storage.get("source"),
            "uri": storage.get("osDiskImage", {}).get("source", {}).get("uri"),
        },
        sort_keys=True,
    )


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            member = None
            for candidate in archive.getmembers():
                if candidate.name in ("manifest.json", "./manifest.json") and candidate.isfile():
                    member = candidate
                    break
            if member is None:
                raise bad_request(f"The image artifact '{path}' has no manifest.json at its root.", target=SOURCE_URI)
            handle = archive.extractfile(member)
            assert handle is not None
            raw = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise bad_request(f"The image artifact '{path}' is not a gzip'd tar file ({exc}).", target=SOURCE_URI) from None
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise bad_request(f"The manifest.json of '{path}' is not valid JSON.", target=SOURCE_URI) from None
    if not isinstance(manifest, dict):
        raise bad_request(f"The manifest.json of '{path}' must be a JSON object.", target=SOURCE_URI)
    entrypoint = manifest.get("entrypoint")
    port = manifest.get("service_port")
    if not isinstance(entrypoint, list) or not entrypoint or not all(isinstance(a, str) for a in entrypoint):
        raise bad_request(f"The manifest.json of '{path}' needs an 'entrypoint' argv list.", target=SOURCE_URI)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise bad_request(f"The manifest.json of '{path}' needs a 'service_port' (1-65535).", target=SOURCE_URI)
    return manifest
