"""The image's dependency lock: app/requirements.txt with one ``name==version`` pin per dependency."""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from switchyard.core.findings import normalize_package_name as normalize_name
from switchyard.images.scanners.base import ScanError


class RequirementsError(ScanError):
    """A lock line that is not an exact pin, or that cannot be parsed."""


class PinnedRequirement(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # as written
    normalized_name: str  # PEP 503
    version: str
    line_number: int

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


_HASH_OPTION = re.compile(r"(?:^|\s)--hash[=\s]\S+")
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def parse_requirements(text: str, source: str = "requirements.txt") -> list[PinnedRequirement]:
    """Every pin in a lock file; RequirementsError naming the line for anything else.

    Accepted: comments, blank lines, ``\\`` continuations and ``--hash`` options (pip-compile's
    --generate-hashes output), extras and environment markers. Not accepted: unpinned or ranged
    requirements, URLs, wildcards, and option lines such as ``-r`` or ``-e`` (a lock must be complete
    on its own).
    """
    pins: list[PinnedRequirement] = []
    seen: dict[str, int] = {}
    for line_number, logical in _logical_lines(text):
        content = _HASH_OPTION.sub(" ", _COMMENT.sub("", logical)).strip()
        if not content:
            continue
        where = f"{source} line {line_number}: {logical.strip()!r}"
        if content.startswith("-"):
            raise RequirementsError(f"{where}: options are not allowed in the image lock, only name==version")
        try:
            requirement = Requirement(content)
        except InvalidRequirement as error:
            raise RequirementsError(f"{where} is not a requirement: {error}") from None
        specifiers = list(requirement.specifier)
        if (
            requirement.url
            or len(specifiers) != 1
            or specifiers[0].operator not in ("==", "===")
            or specifiers[0].version.endswith(".*")
        ):
            raise RequirementsError(f"{where} is not pinned: write exactly name==version")
        version = specifiers[0].version
        try:
            Version(version)
        except InvalidVersion:
            raise RequirementsError(f"{where}: {version!r} is not a PEP 440 version") from None
        normalized = normalize_name(requirement.name)
        if normalized in seen:
            first = seen[normalized]
            raise RequirementsError(f"{where} pins {requirement.name} again (first on line {first})")
        seen[normalized] = line_number
        pins.append(
            PinnedRequirement(
                name=requirement.name, normalized_name=normalized, version=version, line_number=line_number
            )
        )
    return pins


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Physical lines joined at trailing backslashes, each with the number of its first line."""
    logical: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\") and not stripped.lstrip().startswith("#"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(line)
        logical.append((start, " ".join(buffer)))
        buffer = []
    if buffer:
        logical.append((start, " ".join(buffer)))
    return logical
