"""The offline OSV matcher on the real PyPA snapshot and on small records that pin down the rules."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.checkout import checkout_fleet
from switchyard.core.findings import FindingKind, Severity
from switchyard.images.scanners.base import ScanError
from switchyard.images.scanners.osv import OsvDatabase, OsvDatabaseError, OsvScanner, load_database
from switchyard.images.scanners.requirements import RequirementsError, parse_requirements
from switchyard.images.vulndb import PYPA_OSV, pypa_snapshot_manifest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "images"
CRITICAL_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
CVSS4_VECTOR = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
UNQUOTED_FLOAT_VERSION = "id: X-2\naffected:\n- package: {ecosystem: PyPI, name: a}\n  versions: [1.10]\n"
BROKEN_CVSS = {"type": "CVSS_V3", "score": "CVSS:3.1/AV:Q"}


@pytest.fixture(scope="module")
def pypa() -> OsvDatabase:
    return OsvDatabase(PYPA_OSV)


def test_the_shipped_snapshot_is_the_one_its_manifest_describes() -> None:
    manifest = pypa_snapshot_manifest()
    on_disk = {folder.name: len(list(folder.glob("*.yaml"))) for folder in PYPA_OSV.iterdir()}
    assert on_disk == manifest["advisories"]
    assert manifest["licence"] == "CC-BY-4.0"
    assert (PYPA_OSV.parent / "LICENSE").read_text().startswith("Attribution 4.0 International")


def test_the_default_scan_policy_reads_the_shipped_snapshot() -> None:
    assert checkout_fleet().scan_policies["default"].osv_databases == (str(PYPA_OSV),)


# The known-vulnerable pins listed in switchyard/images/vulndb/osv-pypi/README.md, with their advisory counts.
@pytest.mark.parametrize(
    ("pin", "count"),
    [
        ("requests==2.19.1", 2),
        ("urllib3==1.24.1", 7),
        ("jinja2==2.10", 2),
        ("flask==0.12", 3),
        ("pyyaml==5.3", 2),
        ("django==3.2.0", 25),
        ("werkzeug==3.0.6", 0),
    ],
)
def test_known_vulnerable_pins(pypa: OsvDatabase, pin: str, count: int) -> None:
    assert len(pypa.match(parse_requirements(pin))) == count


def test_the_snapshot_is_read_whole_including_unquoted_timestamps(pypa: OsvDatabase) -> None:
    assert pypa.record_count == 151
    # PYSEC-2023-192 has unquoted YAML timestamps (datetime objects once loaded).
    assert pypa.newest_modified == "2024-10-08T19:19:01Z"


def test_findings_carry_fix_severity_and_aliases(pypa: OsvDatabase) -> None:
    findings = {finding.id: finding for finding in pypa.match(parse_requirements("urllib3==1.24.1"))}
    cookie_leak = findings["PYSEC-2023-192"]  # CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N = 8.1
    assert cookie_leak.severity is Severity.HIGH
    assert cookie_leak.fixed_version == "1.26.17"  # the lowest fix above 1.24.1 of its two ranges
    assert cookie_leak.kind is FindingKind.VULNERABILITY
    assert cookie_leak.package == "urllib3"
    assert cookie_leak.target == "app/requirements.txt"
    assert "CVE-2023-43804" in cookie_leak.aliases
    assert findings["PYSEC-2023-212"].severity is Severity.MEDIUM  # 4.2
    assert findings["PYSEC-2019-132"].severity is Severity.UNKNOWN  # no severity in the record


def test_names_are_matched_after_pep503_normalisation(pypa: OsvDatabase) -> None:
    assert len(pypa.match(parse_requirements("PyYAML==5.3"))) == 2
    assert len(pypa.match(parse_requirements("Django==3.2.0"))) == 25


def test_fixed_versions_are_not_affected(pypa: OsvDatabase) -> None:
    assert pypa.match(parse_requirements("requests==2.31.0")) == []


def test_the_labelled_test_advisory_is_critical() -> None:
    database = OsvDatabase([PYPA_OSV, FIXTURES / "osv-extra"])
    findings = database.match(parse_requirements("switchyard-fixture-critical==1.0.0\nrequests==2.19.1"))
    critical = [finding for finding in findings if finding.severity is Severity.CRITICAL]
    assert [finding.id for finding in critical] == ["SWITCHYARD-TEST-2026-0001"]
    assert critical[0].fixed_version == "1.0.1"
    assert len(findings) == 3


def test_the_test_advisory_is_not_in_the_default_database(pypa: OsvDatabase) -> None:
    assert pypa.match(parse_requirements("switchyard-fixture-critical==1.0.0")) == []


# --- the rules, on small records ---------------------------------------------------------------


def record(advisory_id: str, events: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    affected = {
        "package": {"ecosystem": "PyPI", "name": "demo-lib"},
        "ranges": [{"type": "ECOSYSTEM", "events": events}],
        **extra.pop("affected_extra", {}),
    }
    return {"id": advisory_id, "modified": "2026-01-01T00:00:00Z", "affected": [affected], **extra}


def database(tmp_path: Path, *records: dict[str, Any]) -> OsvDatabase:
    directory = tmp_path / "db"
    directory.mkdir(exist_ok=True)
    for item in records:
        (directory / f"{item['id']}.json").write_text(json.dumps(item))
    return OsvDatabase(directory)


def ids(db: OsvDatabase, version: str) -> list[str]:
    return [finding.id for finding in db.match(parse_requirements(f"demo-lib=={version}"))]


def test_introduced_fixed_and_last_affected(tmp_path: Path) -> None:
    db = database(
        tmp_path,
        record("R-1", [{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "2.0"}, {"fixed": "2.0.5"}]),
        record("R-2", [{"introduced": "0"}, {"last_affected": "1.5"}]),
    )
    assert ids(db, "0.9") == ["R-2"]
    assert ids(db, "1.0") == ["R-1", "R-2"]
    assert ids(db, "1.1.9") == ["R-1", "R-2"]
    assert ids(db, "1.2") == ["R-2"]
    assert ids(db, "1.5") == ["R-2"]
    assert ids(db, "1.5.1") == []
    assert ids(db, "2.0.4") == ["R-1"]
    assert ids(db, "2.0.5") == []


def test_a_scanner_parses_a_database_once_and_again_after_it_changes(tmp_path: Path) -> None:
    database(tmp_path, record("R-1", [{"introduced": "1.0"}]))
    first = OsvScanner(tmp_path / "db").database
    assert OsvScanner(tmp_path / "db").database is first  # unchanged files: the parse is reused
    assert ids(first, "1.1") == ["R-1"]
    database(tmp_path, record("R-2", [{"introduced": "1.1"}]))  # an update adds an advisory
    updated = load_database(tmp_path / "db")
    assert updated is not first
    assert ids(updated, "1.1") == ["R-1", "R-2"]
    (tmp_path / "db" / "R-1.json").unlink()
    assert ids(load_database(tmp_path / "db"), "1.1") == ["R-2"]


def test_scanners_started_side_by_side_share_one_parse(tmp_path: Path) -> None:
    # A patch run's services scan at the same time: each would parse the database if the first
    # parse were not waited for.
    database(tmp_path, *(record(f"R-{n}", [{"introduced": "1.0"}]) for n in range(200)))
    start = threading.Barrier(8)

    def load() -> OsvDatabase:
        start.wait()
        return load_database(tmp_path / "db")

    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda _: load(), range(8)))
    assert all(db is loaded[0] for db in loaded)


def test_pep440_ordering_not_text_ordering(tmp_path: Path) -> None:
    db = database(tmp_path, record("R-1", [{"introduced": "1.9"}, {"fixed": "1.10"}]))
    assert ids(db, "1.9.5") == ["R-1"]
    assert ids(db, "1.10") == []
    assert ids(db, "1.10rc1") == ["R-1"]  # a pre-release of the fix is still before it


def test_fixed_version_is_the_lowest_fix_above_the_installed_one(tmp_path: Path) -> None:
    db = database(
        tmp_path,
        record("R-1", [{"introduced": "0"}, {"fixed": "1.2"}, {"introduced": "1.5"}, {"fixed": "1.7"}],
               affected_extra={}),
    )  # fmt: skip
    [finding] = db.match(parse_requirements("demo-lib==1.5.3"))
    assert finding.fixed_version == "1.7"


def test_explicit_versions_list_matches_without_ranges(tmp_path: Path) -> None:
    item = record("R-1", [], affected_extra={"versions": ["0.5", "0.6.1"]})
    item["affected"][0]["ranges"] = [
        {"type": "GIT", "repo": "https://example.invalid/x", "events": [{"introduced": "0"}]}
    ]
    db = database(tmp_path, item)
    assert ids(db, "0.6.1") == ["R-1"]
    assert ids(db, "0.6.0") == []  # GIT ranges name commits and are not evaluated
    assert ids(db, "0.5.0") == ["R-1"]  # PEP 440: 0.5 == 0.5.0


def test_withdrawn_advisories_do_not_apply(tmp_path: Path) -> None:
    db = database(tmp_path, record("R-1", [{"introduced": "0"}], withdrawn="2026-02-01T00:00:00Z"))
    assert ids(db, "1.0") == []


def test_other_ecosystems_are_ignored_and_not_counted(tmp_path: Path) -> None:
    item = record("R-1", [{"introduced": "0"}])
    item["affected"][0]["package"]["ecosystem"] = "npm"
    db = database(tmp_path, item, record("R-2", [{"introduced": "9.0"}]))
    assert ids(db, "1.0") == []
    assert db.record_count == 1  # only the PyPI record: an npm folder is no PyPI database


def test_a_database_of_another_ecosystem_only_is_refused_as_empty(tmp_path: Path) -> None:
    item = record("R-1", [{"introduced": "0"}])
    item["affected"][0]["package"]["ecosystem"] = "npm"
    with pytest.raises(OsvDatabaseError, match="holds no PyPI advisories"):
        database(tmp_path, item)


def test_the_data_is_dated_by_its_snapshot_json_else_by_its_newest_record(tmp_path: Path) -> None:
    db = database(tmp_path, record("R-1", [{"introduced": "0"}]))
    assert db.as_of == date(2026, 1, 1)
    (tmp_path / "snapshot.json").write_text(json.dumps({"snapshot_date": "2026-11-20"}))
    assert OsvDatabase(tmp_path / "db").as_of == date(2026, 11, 20)
    assert OsvScanner(OsvDatabase(tmp_path / "db")).database.as_of == date(2026, 11, 20)


def test_the_shipped_snapshot_is_dated_by_its_commit() -> None:
    assert OsvDatabase(PYPA_OSV).as_of == date(2024, 10, 10)


@pytest.mark.parametrize(
    ("extra", "severity"),
    [
        ({"severity": [{"type": "CVSS_V3", "score": CRITICAL_VECTOR}]}, Severity.CRITICAL),
        ({"database_specific": {"severity": "MODERATE"}}, Severity.MEDIUM),
        ({"affected_extra": {"database_specific": {"severity": "HIGH"}}}, Severity.HIGH),
        ({"severity": [{"type": "CVSS_V4", "score": CVSS4_VECTOR}]}, Severity.UNKNOWN),
        ({}, Severity.UNKNOWN),
    ],
)  # fmt: skip
def test_severity_sources(tmp_path: Path, extra: dict[str, Any], severity: Severity) -> None:
    db = database(tmp_path, record("R-1", [{"introduced": "0"}], **extra))
    [finding] = db.match(parse_requirements("demo-lib==1.0"))
    assert finding.severity is severity


def test_aliased_advisories_are_one_finding(tmp_path: Path) -> None:
    db = database(
        tmp_path,
        record("PYSEC-1", [{"introduced": "0"}], aliases=["GHSA-aaaa", "CVE-1"]),
        record("GHSA-aaaa", [{"introduced": "0"}], aliases=["PYSEC-1", "CVE-1"]),
    )
    assert ids(db, "1.0") == ["GHSA-aaaa"]


def test_yaml_records_are_read(tmp_path: Path) -> None:
    directory = tmp_path / "yaml-db"
    directory.mkdir()
    text = yaml.safe_dump(record("Y-1", [{"introduced": "0"}, {"fixed": "2.0"}]))
    (directory / "Y-1.yaml").write_text(text.replace("'2026-01-01T00:00:00Z'", "2026-01-01T00:00:00Z"))
    assert ids(OsvDatabase(directory), "1.0") == ["Y-1"]


# --- errors: never a clean result on missing data -------------------------------------------------


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OsvDatabaseError, match="does not exist"):
        OsvDatabase(tmp_path / "nowhere")


def test_an_empty_database_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no advisories here")
    with pytest.raises(OsvDatabaseError, match="holds no PyPI advisories"):
        OsvDatabase(tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "id: [unclosed", "cannot read OSV record"),
        ("bad.json", "{", "cannot read OSV record"),
        ("bad.json", json.dumps({"affected": []}), "has no id"),
        ("bad.json", json.dumps({"id": "X-1"}), "has no 'affected' list"),
        ("bad.yaml", UNQUOTED_FLOAT_VERSION, "non-text version 1.1"),
        ("bad.json", json.dumps(record("X-3", [{"introduced": "x.y"}])), "'x.y' is not a PEP 440"),
        ("bad.json", json.dumps(record("X-4", [{"introduced": "0"}], severity=[BROKEN_CVSS])), "X-4"),
    ],
)  # fmt: skip
def test_unreadable_records_are_errors_naming_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / name).write_text(content)
    with pytest.raises(OsvDatabaseError, match=message):
        OsvDatabase(tmp_path / "db")


def test_scanner_reads_the_image_lock(tmp_path: Path, pypa: OsvDatabase) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "requirements.txt").write_text("flask==0.12\nwerkzeug==3.0.6\n")
    result = OsvScanner(pypa).scan(tmp_path)
    assert result.scanner == "osv-offline"
    assert result.scanned_kinds == (FindingKind.VULNERABILITY,)
    assert {finding.package for finding in result.findings} == {"flask"}
    assert "151 advisories" in result.database


def test_scanner_errors_without_a_lock_or_on_an_unpinned_one(tmp_path: Path, pypa: OsvDatabase) -> None:
    with pytest.raises(ScanError, match=r"has no app/requirements\.txt"):
        OsvScanner(pypa).scan(tmp_path)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "requirements.txt").write_text("flask==0.12\nrequests\n")
    with pytest.raises(RequirementsError, match=r"app/requirements\.txt line 2: 'requests' is not pinned"):
        OsvScanner(pypa).scan(tmp_path)
