"""What the relay reads from a local clone of the repository: `<folder>/VERSION` at a commit, and the
paths a commit (or a range of commits) changed.

git runs as a child process with a scrubbed environment (the relay's secret, Prefect's API key and
anything else not needed to fetch stay out of git, its hooks and its credential helpers), in its own
session (a timed-out git is killed together with whatever it started: ssh, a credential helper, a
hook), and with a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from switchyard.core.versions import AppVersion, VersionError
from switchyard.relay.config import RepositoryRoute

T = TypeVar("T")

# What git may see of the relay's environment: enough to find itself, its configuration and the
# user's credentials (HOME, ssh agent, GIT_* such as GIT_SSH_COMMAND or GIT_CONFIG_*), to reach the
# remote (proxies, CA bundles) and to speak the locale. Nothing else: the webhook secret
# (SWITCHYARD_RELAY_SECRET), PREFECT_API_KEY and the like must not reach git or the hooks and
# credential helpers it runs.
_PASSED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "XDG_CONFIG_HOME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
    }
)
_PASSED_PREFIXES = ("GIT_", "SSH_", "LC_")


def git_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    kept = {name: value for name, value in source.items() if name in _PASSED_NAMES or name.startswith(_PASSED_PREFIXES)}
    kept["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password nobody will type
    return kept


class CommitUnreadable(Exception):
    """What the relay needs cannot be read from its clone (the relay answers `status`)."""

    status = 422


class GitTimedOut(CommitUnreadable):
    """git did not finish in time: a slow remote or a stuck credential helper. Worth retrying."""

    status = 503


@dataclass(frozen=True)
class MergeCommit:
    paths: list[str]
    committed_at: datetime


class GitVersions:
    """Reads from local clones, fetching once when the commit is missing; one git at a time per clone."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    def _git(self, checkout: str, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            process = subprocess.Popen(
                ["git", "-C", checkout, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=git_environment(),
                # Its own session: on a timeout the whole group goes (git's ssh, credential helper,
                # hooks), not only git; and no controlling terminal to prompt on.
                start_new_session=True,
            )
        except OSError as error:
            raise CommitUnreadable(
                f"the relay cannot run git ({error.strerror or error}): install git or put it on the relay's PATH"
            ) from None
        try:
            stdout, stderr = process.communicate(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise GitTimedOut(
                f"git {args[0]} in {checkout} did not finish within {self._timeout_s:g} s and was stopped; "
                "retry later (redeliver the webhook)"
            ) from None
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def _has_commit(self, checkout: str, commit: str) -> bool:
        return self._git(checkout, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    def _checkout(self, route: RepositoryRoute) -> str:
        checkout = route.checkout
        if checkout is None:
            raise CommitUnreadable(
                "the repository's route has no checkout to read from: configure one, or send the generic "
                "/webhooks/merge shape with app_version"
            )
        if not Path(checkout).is_dir():
            raise CommitUnreadable(f"the relay's clone {checkout} does not exist")
        return checkout

    def _ensure(self, route: RepositoryRoute, checkout: str, commit: str) -> None:
        if self._has_commit(checkout, commit):
            return
        if not route.fetch:
            raise CommitUnreadable(f"commit {commit} is not in the relay's clone {checkout} (fetching is off)")
        fetched = self._git(checkout, "fetch", "--quiet", "origin")
        # Whether the commit arrived is what counts: two relay processes sharing a clone fetch at the
        # same time, and the one that loses the race for the ref locks fails with the objects in place.
        if self._has_commit(checkout, commit):
            return
        if fetched.returncode != 0:
            raise CommitUnreadable(
                f"commit {commit} is not in the relay's clone {checkout}, and fetching failed: "
                f"{fetched.stderr.strip()[-300:]}"
            )
        raise CommitUnreadable(f"commit {commit} is not in {checkout}, even after fetching from origin")

    def _read_version(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        checkout = self._checkout(route)
        self._ensure(route, checkout, commit)
        file = f"{folder}/{route.version_file}" if folder not in ("", ".") else route.version_file
        shown = self._git(checkout, "show", f"{commit}:{file}")
        if shown.returncode != 0:
            raise CommitUnreadable(f"{file} does not exist at commit {commit[:12]}: it must hold the app version")
        text = shown.stdout.strip()
        try:
            return str(AppVersion.parse(text))
        except VersionError as error:
            raise CommitUnreadable(f"{file} at commit {commit[:12]} holds {text[:40]!r}: {error}") from None

    def _diff(self, checkout: str, old: str, new: str) -> list[str]:
        # -z: paths as they are (no quoting of unusual names); --no-renames: a file moved out of a
        # service's folder changes that folder too, so both names count.
        diffed = self._git(checkout, "diff", "--name-only", "-z", "--no-renames", old, new, "--")
        if diffed.returncode != 0:
            raise CommitUnreadable(
                f"cannot list the paths changed from {old[:12]} to {new[:12]}: {diffed.stderr.strip()[-300:]}"
            )
        return [path for path in diffed.stdout.split("\0") if path]

    def _read_range(self, route: RepositoryRoute, before: str, after: str) -> list[str]:
        checkout = self._checkout(route)
        self._ensure(route, checkout, after)
        self._ensure(route, checkout, before)
        return self._diff(checkout, before, after)

    def _read_merge(self, route: RepositoryRoute, commit: str) -> MergeCommit:
        checkout = self._checkout(route)
        self._ensure(route, checkout, commit)
        if self._git(checkout, "cat-file", "-e", f"{commit}^1").returncode != 0:
            raise CommitUnreadable(f"commit {commit[:12]} has no parent: it is not a merge into the branch")
        paths = self._diff(checkout, f"{commit}^1", commit)
        shown = self._git(checkout, "show", "-s", "--format=%cI", commit)
        try:
            committed_at = datetime.fromisoformat(shown.stdout.strip())
        except ValueError:
            raise CommitUnreadable(f"cannot read the commit time of {commit[:12]}: {shown.stderr[-300:]}") from None
        return MergeCommit(paths, committed_at)

    async def _locked(self, route: RepositoryRoute, read: Callable[[], T]) -> T:
        lock = self._locks.setdefault(route.checkout or "", asyncio.Lock())
        async with lock:  # one git at a time per clone: concurrent fetches fight over ref locks
            return await asyncio.to_thread(read)

    async def version(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        """The app version in `<folder>/<version_file>` at `commit`."""
        return await self._locked(route, lambda: self._read_version(route, commit, folder))

    async def changed_between(self, route: RepositoryRoute, before: str, after: str) -> list[str]:
        """The paths that differ between two commits (a push whose payload does not list every commit)."""
        return await self._locked(route, lambda: self._read_range(route, before, after))

    async def merge(self, route: RepositoryRoute, commit: str) -> MergeCommit:
        """What a merge commit brought into its branch: the paths changed against its first parent (the
        branch before the merge), and when it was committed. Proves the commit exists, too."""
        return await self._locked(route, lambda: self._read_merge(route, commit))


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Not communicate(): a grandchild that left the group could hold the pipes open forever.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
