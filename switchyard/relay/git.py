"""The app version at a commit: `<folder>/VERSION`, read from a local clone of the repository."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from switchyard.core.versions import AppVersion, VersionError
from switchyard.relay.config import RepositoryRoute

_GIT_TIMEOUT_S = 60.0


class VersionUnavailable(Exception):
    """The app version cannot be read at that commit (the relay answers 422)."""


class GitVersions:
    """`<folder>/VERSION` at a commit, from a local clone (fetching once when the commit is missing)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def _git(self, checkout: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", checkout, *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )

    def _has_commit(self, checkout: str, commit: str) -> bool:
        return self._git(checkout, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    def _read(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        checkout = route.checkout
        assert checkout is not None
        if not Path(checkout).is_dir():
            raise VersionUnavailable(f"the relay's clone {checkout} does not exist")
        if not self._has_commit(checkout, commit):
            if not route.fetch:
                raise VersionUnavailable(f"commit {commit} is not in the relay's clone {checkout} (fetching is off)")
            fetched = self._git(checkout, "fetch", "--quiet", "origin")
            if fetched.returncode != 0:
                raise VersionUnavailable(
                    f"commit {commit} is not in the relay's clone {checkout}, and fetching failed: "
                    f"{fetched.stderr.strip()[-300:]}"
                )
            if not self._has_commit(checkout, commit):
                raise VersionUnavailable(f"commit {commit} is not in {checkout}, even after fetching from origin")
        file = f"{folder}/{route.version_file}" if folder not in ("", ".") else route.version_file
        shown = self._git(checkout, "show", f"{commit}:{file}")
        if shown.returncode != 0:
            raise VersionUnavailable(f"{file} does not exist at commit {commit[:12]}: it must hold the app version")
        text = shown.stdout.strip()
        try:
            return str(AppVersion.parse(text))
        except VersionError as error:
            raise VersionUnavailable(f"{file} at commit {commit[:12]} holds {text[:40]!r}: {error}") from None

    async def version(self, route: RepositoryRoute, commit: str, folder: str) -> str:
        if route.checkout is None:
            raise VersionUnavailable(
                "the repository's route has no checkout to read versions from: configure one, or send the "
                "generic /webhooks/merge shape with app_version"
            )
        lock = self._locks.setdefault(route.checkout, asyncio.Lock())
        async with lock:  # one git at a time per clone: concurrent fetches fight over ref locks
            return await asyncio.to_thread(self._read, route, commit, folder)
