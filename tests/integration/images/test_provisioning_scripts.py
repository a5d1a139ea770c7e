"""The shared provisioning scripts refuse what they must not do, before any Packer is involved."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from images_support import REPO_ROOT, VULNERABLE_APP

SCRIPTS = REPO_ROOT / "images" / "scripts"


def run_script(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / name)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_local_mode_refuses_to_act_on_the_real_root() -> None:
    result = run_script("deprovision.sh", SWITCHYARD_BUILD_MODE="local", TARGET_ROOT="/")
    assert result.returncode == 2
    assert "refusing to run in local mode against /" in result.stderr


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    result = run_script("patch.sh", SWITCHYARD_BUILD_MODE="laptop", TARGET_ROOT=str(tmp_path))
    assert result.returncode == 2
    assert "must be 'vm' or 'local', not 'laptop'" in result.stderr


def test_patch_level_is_checked(tmp_path: Path) -> None:
    result = run_script(
        "patch.sh",
        SWITCHYARD_BUILD_MODE="local",
        TARGET_ROOT=str(tmp_path),
        PATCH_LEVEL="2026.13",
        BASE="debian-12",
    )
    assert result.returncode == 2
    assert "PATCH_LEVEL '2026.13' is not YYYY.MM or YYYY.MM.R" in result.stderr
    assert not (tmp_path / "etc" / "switchyard" / "patch-level").exists()


def install(tmp_path: Path, lock: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "server.py").write_text((VULNERABLE_APP / "app" / "server.py").read_text())
    (source / "requirements.txt").write_text(lock)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return run_script(
        "install-app.sh",
        SWITCHYARD_BUILD_MODE="local",
        TARGET_ROOT=str(root),
        PROVISIONING_LOG_DIR=str(root / "provisioning"),
        APP_SOURCE=str(source),
        APP_INSTALL_DIR=str(root / "app"),
        SERVICE="demo",
    )


def test_a_hash_pinned_lock_is_accepted(tmp_path: Path) -> None:
    lock = (
        "# pip-compile --generate-hashes\n"
        "requests==2.19.1 \\\n"
        "    --hash=sha256:63b52e3c866428a224f97cab011de738c36aec0185aa91cfacd418b5d58911d1 \\\n"
        "    --hash=sha256:ec22d826a36ed72a7358ff3fe56cbd4ba69dd7a6718ffd450ff0e9df7a47ce6a\n"
        'idna[all]==2.7 ; python_version >= "3.8"\n'
    )
    result = install(tmp_path, lock)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "root" / "provisioning" / "install-app.log").read_text()
    assert "installed demo app: 2 files, 2 pinned dependencies" in log
    assert (tmp_path / "root" / "app" / "requirements.txt").read_text() == lock


def test_option_lines_and_ranges_are_refused_and_named(tmp_path: Path) -> None:
    result = install(tmp_path, "requests==2.19.1\n-e .\nidna>=2\n")
    assert result.returncode == 2
    assert "do not pin name==version" in result.stderr
    assert "  -e .\n  idna>=2\n" in result.stderr
    assert not (tmp_path / "root" / "app").exists()
