"""Offline OSV matcher: the image's pinned PyPI dependencies against a directory of OSV advisories.

The database is a directory of OSV records (JSON or YAML, e.g. a checkout of the PyPA advisory
database's ``vulns/``). A dependency is affected by an advisory when its version is listed in
``affected[].versions`` or falls in an ``ECOSYSTEM`` range (events ``introduced`` / ``fixed`` /
``last_affected``, compared as PEP 440 versions, per the OSV schema's evaluation rules). ``GIT`` ranges
name commits, not releases, and are not evaluated (the explicit versions list covers them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

from switchyard.core.findings import Finding, FindingKind, ScanResult, Severity
from switchyard.images.scanners.base import ScanError
from switchyard.images.scanners.cvss import CvssError, cvss3_base_score, severity_from_score
from switchyard.images.scanners.requirements import PinnedRequirement, normalize_name, parse_requirements

SCANNER_NAME = "osv-offline"
SCANNER_VERSION = "1"
ECOSYSTEM = "PyPI"  # the only ecosystem an image's lock file (app/requirements.txt) holds
SNAPSHOT_FILE = "snapshot.json"  # beside a snapshot's vulns/ folder: where and when it was taken
LOCK_FILE = "app/requirements.txt"
_ADVISORY_SUFFIXES = (".json", ".yaml", ".yml")
# GitHub's database_specific severities.
_WORD_SEVERITIES = {
    "CRITICAL": Severity.CRITICAL,
    "HIGH": Severity.HIGH,
    "MODERATE": Severity.MEDIUM,
    "MEDIUM": Severity.MEDIUM,
    "LOW": Severity.LOW,
}


class OsvDatabaseError(ScanError):
    """The advisory directory is missing, empty or holds a record that cannot be read."""


@dataclass(frozen=True)
class _Range:
    events: tuple[tuple[str, Version | None], ...]  # ("introduced", None) is version "0"


@dataclass(frozen=True)
class _Affected:
    advisory_id: str
    aliases: tuple[str, ...]
    title: str
    severity: Severity
    versions: frozenset[str]
    parsed_versions: frozenset[Version]
    ranges: tuple[_Range, ...]
    source: str

    def matches(self, version: Version, text: str) -> bool:
        if text in self.versions or version in self.parsed_versions:
            return True
        return any(_in_range(version, affected_range) for affected_range in self.ranges)

    def lowest_fix_above(self, version: Version) -> Version | None:
        fixes = [
            event_version
            for affected_range in self.ranges
            for kind, event_version in affected_range.events
            if kind == "fixed" and event_version is not None and event_version > version
        ]
        return min(fixes, default=None)


def _in_range(version: Version, affected_range: _Range) -> bool:
    """The OSV schema's evaluation: walk the events in version order, toggling "affected"."""
    affected = False
    for kind, event_version in affected_range.events:
        if kind == "introduced":
            if event_version is None or version >= event_version:
                affected = True
        elif kind == "fixed":
            if event_version is not None and version >= event_version:
                affected = False
        elif kind == "last_affected" and event_version is not None and version > event_version:
            affected = False
    return affected


_VERSION_ZERO = Version("0")


def _event_order(event: tuple[str, Version | None]) -> tuple[int, Version, int]:
    kind, event_version = event
    # "introduced: 0" comes first; at equal versions, introduced before fixed/last_affected.
    if event_version is None:
        return (0, _VERSION_ZERO, 0)
    return (1, event_version, 0 if kind == "introduced" else 1)


class OsvDatabase:
    """Advisories for the PyPI ecosystem, indexed by PEP 503 package name."""

    def __init__(self, directories: Path | Sequence[Path]) -> None:
        self.directories = [directories] if isinstance(directories, Path) else list(directories)
        if not self.directories:
            raise OsvDatabaseError("no OSV database directory given")
        self._by_package: dict[str, list[_Affected]] = {}
        # Records of the PyPI ecosystem only: a folder of npm advisories would otherwise count as a
        # database of thousands and still match nothing here.
        self.record_count = 0
        self.newest_modified = ""
        for directory in self.directories:
            if not directory.is_dir():
                raise OsvDatabaseError(f"OSV database {directory} does not exist or is not a directory")
            for path in sorted(_advisory_files(directory)):
                for record in _load_records(path):
                    self._add(record, str(path.relative_to(directory)))
        if self.record_count == 0:
            raise OsvDatabaseError(
                f"OSV database {', '.join(map(str, self.directories))} holds no PyPI advisories (*.json, *.yaml): "
                "an empty database would make every dependency look clean"
            )
        self.as_of = _snapshot_date(self.directories, self.newest_modified)

    @property
    def description(self) -> str:
        return (
            f"OSV {', '.join(map(str, self.directories))}: {self.record_count} advisories, "
            f"newest modified {self.newest_modified or 'unknown'}"
        )

    def _add(self, record: dict[str, Any], where: str) -> None:
        advisory_id = record.get("id")
        if not isinstance(advisory_id, str) or not advisory_id:
            raise OsvDatabaseError(f"OSV record in {where} has no id")
        affected_entries = record.get("affected")
        if not isinstance(affected_entries, list):
            raise OsvDatabaseError(f"OSV record {advisory_id} ({where}) has no 'affected' list")
        if not any(((entry or {}).get("package") or {}).get("ecosystem") == ECOSYSTEM for entry in affected_entries):
            return  # another ecosystem's advisory: not part of this database
        self.record_count += 1
        modified = _timestamp(record.get("modified"))
        self.newest_modified = max(self.newest_modified, modified)
        if record.get("withdrawn"):
            return  # a withdrawn advisory no longer applies
        aliases = tuple(str(alias) for alias in record.get("aliases") or ())
        title = _title(record)
        for entry in affected_entries:
            package = (entry or {}).get("package") or {}
            if package.get("ecosystem") != ECOSYSTEM or not package.get("name"):
                continue
            severity = _severity(record, entry, advisory_id, where)
            versions = [_version_text(value, advisory_id, where) for value in entry.get("versions") or ()]
            self._by_package.setdefault(normalize_name(package["name"]), []).append(
                _Affected(
                    advisory_id=advisory_id,
                    aliases=aliases,
                    title=title,
                    severity=severity,
                    versions=frozenset(versions),
                    parsed_versions=frozenset(
                        parsed for parsed in map(_pep440_or_none, versions) if parsed is not None
                    ),
                    ranges=tuple(_ranges(entry.get("ranges") or (), advisory_id, where)),
                    source=where,
                )
            )

    def advisories_for(self, pin: PinnedRequirement) -> list[_Affected]:
        version = pin.parsed_version
        return [
            affected
            for affected in self._by_package.get(pin.normalized_name, ())
            if affected.matches(version, pin.version)
        ]

    def match(self, pins: Iterable[PinnedRequirement], target: str = LOCK_FILE) -> list[Finding]:
        findings: list[Finding] = []
        for pin in pins:
            reported: set[str] = set()
            for affected in sorted(self.advisories_for(pin), key=lambda item: item.advisory_id):
                # One finding per vulnerability: an advisory that is an alias of one already reported
                # (PYSEC-... and GHSA-... for the same CVE) is the same problem.
                names = {affected.advisory_id, *affected.aliases}
                if affected.advisory_id in reported or names & reported:
                    reported |= names
                    continue
                reported |= names
                fix = affected.lowest_fix_above(pin.parsed_version)
                findings.append(
                    Finding(
                        id=affected.advisory_id,
                        kind=FindingKind.VULNERABILITY,
                        severity=affected.severity,
                        package=pin.normalized_name,
                        installed_version=pin.version,
                        fixed_version=str(fix) if fix is not None else "",
                        title=affected.title,
                        target=target,
                        aliases=affected.aliases,
                        scanner=SCANNER_NAME,
                    )
                )
        return findings


class OsvScanner:
    """Scanner over an image root: reads app/requirements.txt and matches it against the database."""

    name = SCANNER_NAME

    def __init__(self, database: OsvDatabase | Path | Sequence[Path]) -> None:
        self.database = database if isinstance(database, OsvDatabase) else load_database(database)

    def scan(self, image_root: Path) -> ScanResult:
        lock = image_root / LOCK_FILE
        if not lock.is_file():
            raise ScanError(f"{image_root} has no {LOCK_FILE}: the image's dependencies cannot be checked")
        pins = parse_requirements(lock.read_text(encoding="utf-8"), source=LOCK_FILE)
        return ScanResult(
            scanner=SCANNER_NAME,
            scanner_version=SCANNER_VERSION,
            findings=tuple(self.database.match(pins)),
            scanned_kinds=(FindingKind.VULNERABILITY,),
            database=self.database.description,
            database_as_of=self.database.as_of,
        )


# Parsed databases of this process: directories -> (their files' fingerprint, the database).
_parsed: dict[tuple[Path, ...], tuple[tuple[tuple[str, int, int], ...], OsvDatabase]] = {}
_parsed_lock = threading.Lock()


def load_database(directories: Path | Sequence[Path]) -> OsvDatabase:
    """The database of `directories`, parsed once per process for as long as its files stay as they
    are (name, size, modification time): every image scan asks, and a fleet's patch scans many
    images in one process, each parse costing a tenth of a second or more of CPU."""
    key = (directories,) if isinstance(directories, Path) else tuple(directories)
    fingerprint = _fingerprint(key)
    # Held while parsing: the services of a patch run scan side by side, and would otherwise all
    # parse the same files at once, each finding the cache still empty.
    with _parsed_lock:
        cached = _parsed.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        database = OsvDatabase(list(key))
        _parsed[key] = (fingerprint, database)
    return database


def _fingerprint(directories: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """Every file the database reads (advisories and snapshot.json), with its size and mtime."""
    found = []
    for directory in directories:
        if not directory.is_dir():
            continue  # OsvDatabase says what is wrong with it
        paths = {*_advisory_files(directory), *_snapshot_candidates(directory)}
        for path in sorted(paths):
            try:
                status = path.stat()
            except OSError:
                continue
            found.append((str(path), status.st_size, status.st_mtime_ns))
    return tuple(found)


def _snapshot_candidates(directory: Path) -> tuple[Path, Path]:
    """Where a folder's snapshot.json may be: in it, or beside it (a snapshot's vulns/ folder)."""
    return directory / SNAPSHOT_FILE, directory.parent / SNAPSHOT_FILE


def _snapshot_date(directories: Sequence[Path], newest_modified: str) -> date | None:
    """The date the data is from: the oldest of the folders' snapshot.json dates (the data is as old
    as its oldest part), else the newest record's ``modified`` day (a copy without snapshot.json is at
    least that recent, and no more is known)."""
    dates: list[date] = []
    for directory in directories:
        for candidate in _snapshot_candidates(directory):
            if candidate.is_file():
                try:
                    manifest = json.loads(candidate.read_text(encoding="utf-8"))
                    dates.append(date.fromisoformat(str(manifest.get("snapshot_date") or manifest["commit_date"])))
                except (OSError, ValueError, KeyError, TypeError) as error:
                    raise OsvDatabaseError(f"{candidate} does not say the snapshot's date: {error}") from None
                break
        else:
            if not newest_modified:
                return None
            try:
                dates.append(date.fromisoformat(newest_modified[:10]))
            except ValueError:
                return None
    return min(dates, default=None)


# --- reading records ---------------------------------------------------------------------------


# libyaml's safe loader when PyYAML was built with it: a database of thousands of records loads ~10x faster.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _advisory_files(directory: Path) -> Iterator[Path]:
    for path in directory.rglob("*"):
        if path.is_file() and path.suffix.lower() in _ADVISORY_SUFFIXES:
            yield path


def _load_records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_YAML_LOADER)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise OsvDatabaseError(f"cannot read OSV record {path}: {error}") from None
    records = data if isinstance(data, list) else [data]
    if not all(isinstance(record, dict) for record in records):
        raise OsvDatabaseError(f"{path} is not an OSV record (a mapping with id and affected)")
    return records


def _timestamp(value: object) -> str:
    """OSV timestamps as RFC 3339 text; YAML turns unquoted ones into datetime objects."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value) if value is not None else ""


def _version_text(value: object, advisory_id: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # An unquoted YAML version such as 1.10 arrives as the float 1.1: guessing would be wrong.
    raise OsvDatabaseError(f"OSV record {advisory_id} ({where}) has a non-text version {value!r}; quote it")


def _pep440_or_none(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _ranges(ranges: Iterable[dict[str, Any]], advisory_id: str, where: str) -> Iterator[_Range]:
    for affected_range in ranges:
        if affected_range.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue  # GIT ranges name commits
        events: list[tuple[str, Version | None]] = []
        for event in affected_range.get("events") or ():
            for kind in ("introduced", "fixed", "last_affected"):
                if kind not in event:
                    continue
                text = _version_text(event[kind], advisory_id, where)
                if kind == "introduced" and text == "0":
                    events.append((kind, None))
                    continue
                parsed = _pep440_or_none(text)
                if parsed is None:
                    raise OsvDatabaseError(
                        f"OSV record {advisory_id} ({where}): {kind} {text!r} is not a PEP 440 version"
                    )
                events.append((kind, parsed))
        yield _Range(events=tuple(sorted(events, key=_event_order)))


def _severity(record: dict[str, Any], entry: dict[str, Any], advisory_id: str, where: str) -> Severity:
    """From a CVSS v3 vector (computed), else GitHub's severity word, else UNKNOWN."""
    for item in [*(entry.get("severity") or ()), *(record.get("severity") or ())]:
        if item.get("type") == "CVSS_V3" and item.get("score"):
            try:
                return severity_from_score(cvss3_base_score(str(item["score"])))
            except CvssError as error:
                raise OsvDatabaseError(f"OSV record {advisory_id} ({where}): {error}") from None
    specifics = (
        entry.get("database_specific"),
        entry.get("ecosystem_specific"),
        record.get("database_specific"),
    )
    for specific in specifics:
        word = str((specific or {}).get("severity", "")).upper()
        if word in _WORD_SEVERITIES:
            return _WORD_SEVERITIES[word]
    return Severity.UNKNOWN


def _title(record: dict[str, Any]) -> str:
    summary = str(record.get("summary") or "").strip()
    if summary:
        return summary
    details = " ".join(str(record.get("details") or "").split())
    return details if len(details) <= 200 else details[:197] + "..."
