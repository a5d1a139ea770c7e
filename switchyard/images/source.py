"""The app's source for a build: exactly one commit's files, never the working tree.

``resolve_app_source(app_dir, commit)`` finds the git repository the app folder lives in, resolves
the commit (a full id, a short one, or None for HEAD) and checks the app folder exists at that
commit, before anything is built. ``export_app(source, destination)`` then writes that commit's
app folder with ``git archive`` into the build's own folder: the bytes Packer packs, the scanners
read and the SBOM describes are the commit's, whatever the working tree holds (uncommitted edits,
untracked files, a checkout of another branch).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict

from switchyard.core.outcomes import Refused
from switchyard.images.artifact import APP_CONFIG_FILE

GIT_TIMEOUT_S = 60.0


class AppSourceError(Refused, ValueError):
    """The commit or the app folder at that commit cannot be built from; nothing was built."""


class AppSource(BaseModel):
    """An app folder at one commit of its repository."""

    model_config = ConfigDict(frozen=True)

    repository: Path  # the working tree's top level (its objects are what is read)
    app_path: str  # the app folder relative to the repository, POSIX, "" for the top level
    commit: str  # the full commit id
    # Paths under the app folder that differ from the commit in the working tree: they do NOT ship.
    uncommitted: tuple[str, ...] = ()

    @property
    def tree(self) -> str:
        """The tree-ish of the app folder at the commit, for git archive / git cat-file."""
        return f"{self.commit}:{self.app_path}" if self.app_path else f"{self.commit}:"


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(repository), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise AppSourceError("git is not installed: builds take the app from a commit, which needs git") from None
    except subprocess.TimeoutExpired:
        raise AppSourceError(f"git {args[0]} in {repository} took longer than {GIT_TIMEOUT_S:.0f} s") from None


def _text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode("utf-8", errors="replace").strip()


def resolve_app_source(app_dir: Path, commit: str | None) -> AppSource:
    """The app folder at ``commit`` (None: HEAD), checked to exist there with its switchyard-app.json."""
    app_dir = app_dir.resolve()
    if not app_dir.is_dir():
        raise AppSourceError(f"the app folder {app_dir} does not exist, so its repository cannot be found")
    top = _git(app_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise AppSourceError(
            f"{app_dir} is not in a git repository: a build takes the app from a commit (git archive), "
            "never from a folder"
        )
    repository = Path(_text(top)).resolve()
    app_path = app_dir.relative_to(repository).as_posix()
    app_path = "" if app_path == "." else app_path
    wanted = commit or "HEAD"
    resolved = _git(repository, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{wanted}^{{commit}}")
    if resolved.returncode != 0:
        raise AppSourceError(
            f"commit {wanted} does not exist in {repository} (fetch it first, or check the id); nothing was built"
        )
    full = _text(resolved)
    source = AppSource(repository=repository, app_path=app_path, commit=full)
    for required in ("", APP_CONFIG_FILE):
        path = f"{source.tree}{'/' if app_path and required else ''}{required}"
        if _git(repository, "cat-file", "-e", path).returncode != 0:
            where = f"{app_path or '.'}/{required}".rstrip("/")
            raise AppSourceError(
                f"{where} does not exist at commit {full[:12]} of {repository}: that commit has no such app "
                "(was it added later, or moved?); nothing was built"
            )
    status = _git(repository, "status", "--porcelain", "--untracked-files=all", "--", app_path or ".")
    # Porcelain lines are "XY path": the leading status column may be a space, so no strip here.
    lines = status.stdout.decode("utf-8", errors="replace").splitlines() if status.returncode == 0 else []
    uncommitted = tuple(line[3:] for line in lines if len(line) > 3)
    return source.model_copy(update={"uncommitted": uncommitted})


def export_app(source: AppSource, destination: Path) -> Path:
    """Write the app folder as it is at the commit into ``destination`` (created, must be empty)."""
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise AppSourceError(f"cannot export {source.tree} into {destination}: it is not empty")
    archive = _git(source.repository, "archive", "--format=tar", source.tree)
    if archive.returncode != 0:
        message = archive.stderr.decode("utf-8", errors="replace").strip()
        raise AppSourceError(f"git archive of {source.tree} failed: {message}")
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
            # The "data" filter refuses absolute paths, "..", links leaving the tree and devices: a
            # commit is input like any other.
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise AppSourceError(f"cannot unpack git archive of {source.tree}: {error}") from None
    return destination


def describe(source: AppSource) -> str:
    """One log line: what is built, and that uncommitted changes are not."""
    where = PurePosixPath(source.app_path or ".")
    text = f"building {where} at commit {source.commit} (git archive of the commit, not the working tree)"
    if source.uncommitted:
        shown = ", ".join(source.uncommitted[:5]) + (" ..." if len(source.uncommitted) > 5 else "")
        text += f"; {len(source.uncommitted)} uncommitted change(s) there do NOT ship: {shown}"
    return text
