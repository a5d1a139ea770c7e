"""Refreshing the OSV snapshot: ``switchyard vulndb update [--from PATH_OR_URL]``.

The source is OSV's export of the PyPI ecosystem (a zip of one JSON record per advisory, published
by OSV at PYPI_ZIP_URL and refreshed continuously), or a local copy: that zip, or a folder of OSV
records (JSON or YAML, nested as in the PyPA advisory database's vulns/). Only records of the PyPI
ecosystem count. By default only the packages the snapshot already covers are kept (it is a small
snapshot for the demo and the tests); ``all_packages`` keeps every one. The snapshot's vulns/
folder is replaced as a whole (written beside it, then swapped), and snapshot.json says where the
data came from and the date it is from, which the scan gate's age limit reads.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from switchyard.images.scanners.requirements import normalize_name
from switchyard.images.vulndb import PYPA_OSV_SNAPSHOT

PYPI_ZIP_URL = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
ECOSYSTEM = "PyPI"
DOWNLOAD_TIMEOUT_S = 120.0
# The PyPI export is tens of MiB; anything far bigger is not it.
MAX_DOWNLOAD_BYTES = 512 << 20


class VulnDbUpdateError(ValueError):
    """The source cannot be read or holds nothing to update from; the snapshot was left unchanged."""


class VulnDbUpdate(BaseModel):
    """What an update did."""

    model_config = ConfigDict(frozen=True)

    source: str
    snapshot_date: date
    advisories: dict[str, int]  # package -> advisories kept
    skipped_packages: int  # PyPI packages in the source that the snapshot does not cover
    other_ecosystems: int  # records of other ecosystems, never counted

    @property
    def total(self) -> int:
        return sum(self.advisories.values())


def update_snapshot(
    source: str | None = None,
    *,
    snapshot_dir: Path = PYPA_OSV_SNAPSHOT,
    all_packages: bool = False,
    today: date | None = None,
) -> VulnDbUpdate:
    """Replace ``snapshot_dir``/vulns with the source's PyPI advisories and rewrite snapshot.json."""
    today = today or datetime.now(UTC).date()
    manifest_path = snapshot_dir / "snapshot.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    covered = {normalize_name(name) for name in (manifest.get("advisories") or {})}
    if not covered and not all_packages:
        raise VulnDbUpdateError(
            f"{manifest_path} names no packages to keep: pass --all-packages to take every PyPI advisory"
        )
    where = source or PYPI_ZIP_URL
    downloaded = where.startswith(("https://", "http://"))
    kept: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    skipped: set[str] = set()
    other = 0
    newest = ""
    for record in _records(where):
        packages = _pypi_packages(record)
        if not packages:
            other += 1
            continue
        newest = max(newest, str(record.get("modified") or ""))
        for package in packages:
            if all_packages or package in covered:
                kept.setdefault(package, []).append((str(record["id"]), record))
            else:
                skipped.add(package)
    if not kept:
        raise VulnDbUpdateError(f"{where} holds no PyPI advisories for the snapshot's packages; nothing was changed")
    # Downloaded now: the data is today's. A local copy is as recent as its newest record.
    as_of = today if downloaded else _day(newest) or today
    _replace_vulns(snapshot_dir, kept)
    counts = {package: len(records) for package, records in sorted(kept.items())}
    manifest.update(
        {
            "name": manifest.get("name") or "OSV PyPI advisories",
            "upstream": where if downloaded else f"local copy: {where}",
            "snapshot_date": as_of.isoformat(),
            "advisories": counts,
            "format": "OSV JSON, one file per advisory: vulns/<package>/<id>.json",
        }
    )
    for stale in ("commit", "commit_date", "upstream_path", "local_changes"):
        manifest.pop(stale, None)  # they described the copy that was replaced
    if downloaded:
        manifest["licence"] = manifest.get("licence") or "CC-BY-4.0"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return VulnDbUpdate(
        source=where,
        snapshot_date=as_of,
        advisories=counts,
        skipped_packages=len(skipped - set(kept)),
        other_ecosystems=other,
    )


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _pypi_packages(record: dict[str, Any]) -> set[str]:
    advisory_id = str(record.get("id") or "")
    if advisory_id and not _SAFE_ID.fullmatch(advisory_id):
        # It becomes a file name: an id with a slash or ".." must not write outside vulns/.
        raise VulnDbUpdateError(f"OSV record id {advisory_id!r} is not an advisory id; nothing was changed")
    packages: set[str] = set()
    for entry in record.get("affected") or ():
        package = (entry or {}).get("package") or {}
        if package.get("ecosystem") == ECOSYSTEM and package.get("name"):
            packages.add(normalize_name(str(package["name"])))
    return packages if record.get("id") else set()


def _day(timestamp: str) -> date | None:
    try:
        return date.fromisoformat(timestamp[:10])
    except ValueError:
        return None


def _records(where: str) -> Iterator[dict[str, Any]]:
    if where.startswith(("https://", "http://")):
        yield from _zip_records(_download(where), where)
        return
    path = Path(where)
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix.lower() in (".json", ".yaml", ".yml"):
                yield from _parse(file.read_bytes(), file.suffix.lower(), str(file))
    elif path.is_file() and zipfile.is_zipfile(path):
        yield from _zip_records(path.read_bytes(), where)
    else:
        raise VulnDbUpdateError(f"{where} is neither a folder of OSV records, a zip of them, nor an http(s) URL")


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as error:
        raise VulnDbUpdateError(
            f"cannot download {url}: {error}. Offline? Give a local copy with --from PATH (a zip or a folder)"
        ) from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise VulnDbUpdateError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes: not the OSV PyPI export")
    return data


def _zip_records(data: bytes, where: str) -> Iterator[dict[str, Any]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise VulnDbUpdateError(f"{where} is not a zip: {error}") from None
    with archive:
        for name in sorted(archive.namelist()):
            suffix = Path(name).suffix.lower()
            if suffix in (".json", ".yaml", ".yml") and not name.endswith("/"):
                yield from _parse(archive.read(name), suffix, f"{where}!{name}")


def _parse(data: bytes, suffix: str, where: str) -> Iterator[dict[str, Any]]:
    try:
        loaded = json.loads(data) if suffix == ".json" else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError) as error:
        raise VulnDbUpdateError(f"cannot read OSV record {where}: {error}") from None
    for record in loaded if isinstance(loaded, list) else [loaded]:
        if isinstance(record, dict):
            yield json.loads(json.dumps(record, default=_json_default))  # YAML timestamps as text


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _replace_vulns(snapshot_dir: Path, kept: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    """Write the new vulns/ beside the old one, then swap: a failure half-way leaves the old one."""
    vulns = snapshot_dir / "vulns"
    fresh = Path(tempfile.mkdtemp(prefix=".vulns-new-", dir=snapshot_dir))
    try:
        for package, records in kept.items():
            folder = fresh / package
            folder.mkdir()
            for advisory_id, record in records:
                (folder / f"{advisory_id}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        old = snapshot_dir / ".vulns-old"
        shutil.rmtree(old, ignore_errors=True)
        if vulns.exists():
            vulns.rename(old)
        fresh.rename(vulns)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
