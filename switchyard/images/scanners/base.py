"""The scanner interface and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from switchyard.core.findings import ScanResult


class ScanError(RuntimeError):
    """A scan that could not give a trustworthy answer.

    Never a clean result: a missing database, a crash, a timeout or an unreadable report all raise
    this (or a subclass), so a gate can never pass on missing data.
    """


@runtime_checkable
class Scanner(Protocol):
    """Scans an unpacked image root and says what it found and what it looked for."""

    name: str

    def scan(self, image_root: Path) -> ScanResult: ...
