"""The app a build takes comes from a commit (git archive), never from the working tree: real git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from images_support import SAMPLE_APP

from switchyard.core.outcomes import Refused
from switchyard.images.artifact import load_app_config
from switchyard.images.source import AppSourceError, describe, export_app, resolve_app_source


def git(repository: Path, *args: str) -> str:
    identity = ["-c", "user.name=switchyard tests", "-c", "user.email=tests@switchyard.invalid"]
    command = ["git", "-C", str(repository), *identity, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A repository holding apps/sample (a copy of the real one), one commit."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_APP, repo / "apps" / "sample", ignore=shutil.ignore_patterns("__pycache__"))
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sample app")
    return repo


def test_the_export_holds_the_commits_files_not_the_working_trees(repository: Path, tmp_path: Path) -> None:
    app = repository / "apps" / "sample"
    committed = git(repository, "rev-parse", "HEAD")
    server = app / "app" / "server.py"
    original = server.read_text()
    server.write_text(original + "\n# an uncommitted edit\n")
    (app / "app" / "scratch.py").write_text("print('untracked')\n")

    source = resolve_app_source(app, None)  # HEAD
    assert source.commit == committed and source.app_path == "apps/sample"
    assert set(source.uncommitted) == {"apps/sample/app/server.py", "apps/sample/app/scratch.py"}
    assert "2 uncommitted change(s) there do NOT ship" in describe(source)

    exported = export_app(source, tmp_path / "build" / "source")
    assert (exported / "app" / "server.py").read_text() == original
    assert not (exported / "app" / "scratch.py").exists()
    assert load_app_config(exported).service_port > 0


def test_an_older_commit_is_built_as_it_was(repository: Path, tmp_path: Path) -> None:
    app = repository / "apps" / "sample"
    first = git(repository, "rev-parse", "HEAD")
    (app / "app" / "server.py").write_text("# version two\n")
    git(repository, "commit", "-q", "-am", "two")

    source = resolve_app_source(app, first[:10])  # a short id resolves to the full one
    assert source.commit == first and source.uncommitted == ()
    exported = export_app(source, tmp_path / "out")
    assert (exported / "app" / "server.py").read_text() == (SAMPLE_APP / "app" / "server.py").read_text()


def test_a_commit_that_does_not_exist_is_refused_by_name(repository: Path) -> None:
    with pytest.raises(AppSourceError, match="commit 0a1b2c3d4e5f60718293a4b5c6d7e8f901234567 does not exist") as error:
        resolve_app_source(repository / "apps" / "sample", "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567")
    assert isinstance(error.value, Refused)  # the command line says "refused, nothing was changed"


def test_an_app_folder_missing_at_the_commit_is_refused(repository: Path) -> None:
    first = git(repository, "rev-parse", "HEAD")
    later = repository / "apps" / "later"
    shutil.copytree(repository / "apps" / "sample", later)
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "a second app")
    with pytest.raises(AppSourceError, match=rf"apps/later does not exist at commit {first[:12]}"):
        resolve_app_source(later, first)


def test_an_app_without_its_config_at_the_commit_is_refused(repository: Path) -> None:
    git(repository, "rm", "-q", "apps/sample/switchyard-app.json")
    git(repository, "commit", "-q", "-m", "drop the config")
    with pytest.raises(AppSourceError, match=r"apps/sample/switchyard-app\.json does not exist at commit"):
        resolve_app_source(repository / "apps" / "sample", None)


def test_a_folder_outside_any_repository_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    shutil.copytree(SAMPLE_APP, loose)
    with pytest.raises(AppSourceError, match="is not in a git repository"):
        resolve_app_source(loose, None)


def test_exporting_into_a_folder_that_is_not_empty_is_refused(repository: Path, tmp_path: Path) -> None:
    source = resolve_app_source(repository / "apps" / "sample", None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "left-over").write_text("x")
    with pytest.raises(AppSourceError, match="it is not empty"):
        export_app(source, tmp_path / "busy")
