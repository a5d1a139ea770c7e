"""Where the read-only data sets live: ../shared beside the repository, or $SWITCHYARD_SHARED_DIR."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SWITCHYARD_SHARED_DIR", REPO_ROOT.parent / "shared"))
