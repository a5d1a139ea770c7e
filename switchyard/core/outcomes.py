"""How a release ends when it does not go live: outcomes people act on, not crashes.

Flows raise these; the command line, the demo and the routine flows read them. A refusal changed
nothing; a failed release says in its summary what it did (rolled back, or stopped before users).
"""

from __future__ import annotations

from switchyard.core.release_report import ReleaseSummary


class ReleaseRefused(Exception):
    """The release cannot start; nothing was changed."""


class ReleaseFailed(Exception):
    """The release did not reach production; what happened is in `summary` (and its artifact)."""

    def __init__(self, message: str, summary: ReleaseSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary
