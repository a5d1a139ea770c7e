"""`switchyard vulndb update` refreshes a copy of the OSV snapshot from local OSV records, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import pytest
from images_support import REPO_ROOT

from switchyard.images.scanners.osv import OsvDatabase
from switchyard.images.scanners.requirements import parse_requirements
from switchyard.images.vulndb import PYPA_OSV, PYPA_OSV_SNAPSHOT
from switchyard.images.vulndb.update import VulnDbUpdateError, update_snapshot


def advisory(advisory_id: str, ecosystem: str, package: str, modified: str) -> dict[str, object]:
    return {
        "id": advisory_id,
        "modified": modified,
        "summary": "fixture advisory, not real",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": package},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}],
            }
        ],
    }


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A copy of the snapshot switchyard ships (the real one is package data: never changed here)."""
    copy = tmp_path / "osv-pypi"
    shutil.copytree(PYPA_OSV_SNAPSHOT, copy)
    return copy


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A local OSV copy: the shipped advisories, a newer flask one, an uncovered package, npm."""
    folder = tmp_path / "osv-source"
    shutil.copytree(PYPA_OSV, folder / "vulns")
    extra = {
        "flask/FIXTURE-2026-1.json": advisory("FIXTURE-2026-1", "PyPI", "Flask", "2026-11-20T08:00:00Z"),
        "leftpad-py/FIXTURE-2026-2.json": advisory("FIXTURE-2026-2", "PyPI", "leftpad-py", "2026-11-21T08:00:00Z"),
        "npm/FIXTURE-NPM-1.json": advisory("FIXTURE-NPM-1", "npm", "flask", "2026-11-22T08:00:00Z"),
    }
    for name, record in extra.items():
        path = folder / "extra" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    return folder


def test_a_local_folder_refreshes_the_covered_packages_only(snapshot: Path, source: Path) -> None:
    before = json.loads((snapshot / "snapshot.json").read_text())
    done = update_snapshot(str(source), snapshot_dir=snapshot, today=date(2026, 11, 26))

    assert done.advisories["flask"] == before["advisories"]["flask"] + 1
    assert set(done.advisories) == set(before["advisories"])  # leftpad-py is not covered
    assert done.skipped_packages == 1 and done.other_ecosystems == 1  # npm never counts
    manifest = json.loads((snapshot / "snapshot.json").read_text())
    # a local copy is as recent as its newest PyPI record (the npm one is newer and does not count)
    assert manifest["snapshot_date"] == "2026-11-21" == done.snapshot_date.isoformat()
    assert manifest["upstream"] == f"local copy: {source}" and "commit" not in manifest
    database = OsvDatabase(snapshot / "vulns")
    assert database.as_of == date(2026, 11, 21)
    assert database.record_count == done.total
    ids = {finding.id for finding in database.match(parse_requirements("flask==0.12"))}
    assert "FIXTURE-2026-1" in ids and "PYSEC-2018-66" in ids


def test_all_packages_keeps_every_pypi_package_from_a_zip(snapshot: Path, source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "PyPI-all.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((source / "extra").rglob("*.json")):
            zipped.write(path, path.name)
    done = update_snapshot(str(archive), snapshot_dir=snapshot, all_packages=True, today=date(2026, 11, 26))
    assert done.advisories == {"flask": 1, "leftpad-py": 1}
    assert sorted(path.name for path in (snapshot / "vulns").iterdir()) == ["flask", "leftpad-py"]


def test_a_source_without_the_packages_changes_nothing(snapshot: Path, tmp_path: Path) -> None:
    empty = tmp_path / "npm-only"
    empty.mkdir()
    (empty / "a.json").write_text(json.dumps(advisory("NPM-1", "npm", "flask", "2026-11-22T08:00:00Z")))
    before = (snapshot / "snapshot.json").read_text()
    with pytest.raises(VulnDbUpdateError, match="holds no PyPI advisories for the snapshot's packages"):
        update_snapshot(str(empty), snapshot_dir=snapshot)
    assert (snapshot / "snapshot.json").read_text() == before
    assert OsvDatabase(snapshot / "vulns").record_count == 151


def test_an_advisory_id_that_is_not_a_file_name_is_refused(snapshot: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "a.json").write_text(json.dumps(advisory("../../etc/x", "PyPI", "flask", "2026-11-22T08:00:00Z")))
    with pytest.raises(VulnDbUpdateError, match="is not an advisory id"):
        update_snapshot(str(hostile), snapshot_dir=snapshot)


def test_the_command_updates_and_prints_what_it_did(snapshot: Path, source: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "vulndb", "update", "--from", str(source),
         "--snapshot-dir", str(snapshot), "--json"],
        cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vulndb updated: 152 PyPI advisories for 7 package(s), data of 2026-11-21" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["advisories"]["flask"] == 4

    missing = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "vulndb", "update", "--from", str(source / "nowhere"),
         "--snapshot-dir", str(snapshot)],
        cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "is neither a folder of OSV records, a zip of them, nor an http(s) URL" in missing.stderr
