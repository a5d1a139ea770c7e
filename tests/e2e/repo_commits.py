"""Real commits for the end-to-end tests: a build takes the app from a commit (git archive), so a
made-up commit id is refused before anything is built.

``labelled_commit(label)`` is a commit of the same tree as HEAD made with ``git commit-tree``: it
changes no branch, index or working tree (it is an unreferenced object that git gc prunes), its
content is HEAD's committed apps, and the same label on the same tree gives the same id every run.
Each test file takes its own label, so its images stay apart from other files' images as the
distinct made-up ids kept them before.

``changed_commit(label, parent, files)`` and ``merge_commit(label, first_parent, merged)`` make
commits that do change something (a version bump, a merge of a feature into the branch), the same
way: objects only, built in a temporary index, with the same ids for the same inputs every run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_FIXED_IDENTITY = {
    "GIT_AUTHOR_NAME": "switchyard tests",
    "GIT_AUTHOR_EMAIL": "tests@switchyard.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "switchyard tests",
    "GIT_COMMITTER_EMAIL": "tests@switchyard.invalid",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}
# When the commits made here were committed (their committer date).
COMMITTED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _git(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return result.stdout.strip()


@functools.cache
def head_commit() -> str:
    return _git("rev-parse", "HEAD")


@functools.cache
def labelled_commit(label: str) -> str:
    tree = _git("rev-parse", "HEAD^{tree}")
    return _git("commit-tree", tree, "-m", f"switchyard e2e: {label}", env=_FIXED_IDENTITY)


def changed_commit(label: str, parent: str, files: dict[str, str]) -> str:
    """A commit on top of `parent` whose tree is the parent's with `files` (path -> content) written
    as regular files: the parent's apps with, say, a bumped VERSION."""
    with tempfile.TemporaryDirectory(prefix="switchyard-e2e-index-") as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}  # never the checkout's own index
        _git("read-tree", f"{parent}^{{tree}}", env=index)
        for path, content in files.items():
            blob = _git("hash-object", "-w", "--stdin", stdin=content)
            _git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
        tree = _git("write-tree", env=index)
    return _git("commit-tree", tree, "-p", parent, "-m", f"switchyard e2e: {label}", env=_FIXED_IDENTITY)


def merge_commit(label: str, first_parent: str, merged: str) -> str:
    """The merge commit a Git host makes when it merges `merged`, a branch started from `first_parent`,
    into the branch at `first_parent` without fast-forwarding (its tree is `merged`'s)."""
    tree = _git("rev-parse", f"{merged}^{{tree}}")
    return _git(
        "commit-tree", tree, "-p", first_parent, "-p", merged, "-m", f"switchyard e2e: {label}", env=_FIXED_IDENTITY
    )
