"""Fixtures every test folder may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shared_data import REPO_ROOT, SHARED_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data sets beside the repository (../shared); SWITCHYARD_SHARED_DIR overrides."""
    directory = SHARED_DIR
    assert (directory / "trivy-reports").is_dir() and (directory / "osv-pypi").is_dir(), (
        f"the shared data sets are missing at {directory}: set SWITCHYARD_SHARED_DIR"
    )
    return directory
