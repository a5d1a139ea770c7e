"""Fixtures every test folder may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data sets beside the repository (../shared); SWITCHYARD_SHARED_DIR overrides."""
    directory = Path(os.environ.get("SWITCHYARD_SHARED_DIR", REPO_ROOT.parent / "shared"))
    assert (directory / "trivy-reports").is_dir() and (directory / "osv-pypi").is_dir(), (
        f"the shared data sets are missing at {directory}: set SWITCHYARD_SHARED_DIR"
    )
    return directory
