"""Fixtures for the image pipeline's integration tests: real Packer, real Trivy, real data."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def app_copy(tmp_path: Path) -> Callable[..., Path]:
    """Copy an app folder into tmp_path, so a test can change it."""

    def copy(source: Path, name: str = "app-under-test") -> Path:
        destination = tmp_path / "apps" / name
        shutil.copytree(source, destination)
        return destination

    return copy
