"""Unpacking image artifacts: cached per digest, and unsafe archives refused with a clear reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from switchyard_emulator.dataplane.artifacts import ArtifactCache, ArtifactError

MANIFEST = {
    "schema": "switchyard.image/v1",
    "name": "sample",
    "entrypoint": ["python3", "app/server.py"],
    "service_port": 8000,
    "health_path": "/health",
    "fault_profile": {"error_rate": 0.25, "extra_latency_ms": 0, "fail_health": False},
}


def build(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def good_members(manifest: dict[str, object] = MANIFEST) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        file_member("manifest.json", json.dumps(manifest).encode()),
        file_member("app/server.py", b"print('hello')\n"),
        file_member("app/requirements.txt", b"# nothing\n"),
    ]


def test_unpacks_once_per_content_digest(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    first = build(tmp_path / "one.tar.gz", good_members())
    image = cache.unpack(first)
    assert (image.root / "app" / "server.py").read_text() == "print('hello')\n"
    assert image.manifest.fault_profile.error_rate == 0.25
    assert image.manifest_path == image.root / "manifest.json"
    # The same bytes under another name reuse the unpacked tree.
    copy = tmp_path / "copy.tar.gz"
    copy.write_bytes(first.read_bytes())
    assert cache.unpack(copy).root == image.root
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [image.digest]


@pytest.mark.parametrize(
    ("member", "message_part"),
    [
        (file_member("../escape.txt", b"x"), "escapes the image root"),
        (file_member("/etc/evil", b"x"), "escapes the image root"),
        (link_member("app/link", "../../../../etc/passwd"), "points outside the image"),
        (link_member("app/abs", "/etc/passwd"), "points outside the image"),
        (link_member("app/hard", "../outside", hard=True), "points outside the image"),
    ],
)
def test_refuses_members_that_would_escape(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None],
                                           message_part: str) -> None:  # fmt: skip
    artifact = build(tmp_path / "evil.tar.gz", [*good_members(), member])
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(ArtifactError) as caught:
        cache.unpack(artifact)
    assert message_part in str(caught.value)
    assert not (tmp_path / "escape.txt").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no half-unpacked tree is kept


def test_refuses_an_archive_without_manifest(tmp_path: Path) -> None:
    artifact = build(tmp_path / "no-manifest.tar.gz", [file_member("app/server.py", b"")])
    with pytest.raises(ArtifactError, match=r"no manifest\.json at the archive root"):
        ArtifactCache(tmp_path / "cache").unpack(artifact)


def test_refuses_a_manifest_without_entrypoint(tmp_path: Path) -> None:
    manifest = {key: value for key, value in MANIFEST.items() if key != "entrypoint"}
    artifact = build(tmp_path / "bad.tar.gz", good_members(manifest))
    with pytest.raises(ArtifactError, match="entrypoint"):
        ArtifactCache(tmp_path / "cache").unpack(artifact)


def test_refuses_a_file_that_is_not_a_gzip_tar(tmp_path: Path) -> None:
    artifact = tmp_path / "junk.tar.gz"
    artifact.write_bytes(b"this is not an image")
    with pytest.raises(ArtifactError, match="not a readable gzip'd tar"):
        ArtifactCache(tmp_path / "cache").unpack(artifact)


def test_missing_artifact_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"gone\.tar\.gz"):
        ArtifactCache(tmp_path / "cache").unpack(tmp_path / "gone.tar.gz")
