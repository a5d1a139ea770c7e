"""Fixtures every test folder may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datasets import REPO_ROOT


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
