"""How an operation ends when it does not do what was asked: outcomes people act on, not crashes.

Flows raise these; the command line, the demo and the routine flows read them. A refusal changed
nothing; a failed release says in its summary what it did (rolled back, or stopped before users).
The command line turns each class into one outcome line and its own exit code.
"""

from __future__ import annotations

from switchyard.core.release_report import ReleaseSummary
from switchyard.core.routine import ServicePatch


class Refused(Exception):
    """Refused before any change: nothing was changed. The message says why and what to do."""


class ReleaseRefused(Refused):
    """The release cannot start; nothing was changed."""


class GateFailed(Refused):
    """The image has findings its scan policy does not let through; nothing was published."""


class MergeRefused(Refused, ValueError):
    """The merge would not move every environment forward; nothing was built or released."""


class ReleaseFailed(Exception):
    """The release did not reach production; what happened is in `summary` (and its artifact)."""

    def __init__(self, message: str, summary: ReleaseSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary

    @property
    def rolled_back(self) -> bool:
        """Users met the new version and it was taken back (by this release or by a person)."""
        return self.summary is not None and self.summary.outcome == "rolled-back"


class MonthlyPatchFailed(Exception):
    """The monthly patch left services unpatched (failed, or held back behind a wave that failed).
    `results` holds every service's outcome, the patched ones too: a partly failed patch still
    moved the rest of the fleet, and whoever started it needs to know which."""

    def __init__(self, message: str, results: list[ServicePatch] | None = None) -> None:
        super().__init__(message)
        self.results = list(results or [])


class FlagRefused(Refused):
    """A flag cannot be set where it was asked (no database there, or one the flag store does not
    implement); nothing was changed."""
