"""Real commits for the end-to-end tests: a build takes the app from a commit (git archive), so a
made-up commit id is refused before anything is built.

``labelled_commit(label)`` is a commit of the same tree as HEAD made with ``git commit-tree``: it
changes no branch, index or working tree (it is an unreferenced object that git gc prunes), its
content is HEAD's committed apps, and the same label on the same tree gives the same id every run.
Each test file takes its own label, so its images stay apart from other files' images as the
distinct made-up ids kept them before.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
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


def _git(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
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


@functools.cache
def commit_replacing(label: str, replacements: tuple[tuple[str, str], ...]) -> str:
    """A commit of HEAD's tree with the files at the given paths replaced by the given files'
    contents (e.g. an older version of one module), made like `labelled_commit`: in a temporary
    index, changing no branch, index or working tree."""
    with tempfile.TemporaryDirectory() as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git("read-tree", "HEAD", env=index)
        for path, source in replacements:
            blob = _git("hash-object", "-w", source)
            _git("update-index", "--cacheinfo", f"100644,{blob},{path}", env=index)
        tree = _git("write-tree", env=index)
    return _git("commit-tree", tree, "-m", f"switchyard e2e: {label}", env=_FIXED_IDENTITY)
