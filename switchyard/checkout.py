"""Where this checkout keeps what switchyard reads at run time: the fleet file, prefect.yaml, the apps.

switchyard runs from a checkout of its repository (the deployments' pull step sets the working
directory to it, and the local stack runs in it), so these paths are relative to the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

from switchyard.core.fleet import Fleet, load_fleet

REPO_ROOT = Path(__file__).resolve().parents[1]
FLEET_FILE = REPO_ROOT / "deployments" / "fleet.yaml"
PREFECT_FILE = REPO_ROOT / "prefect.yaml"


def default_state_dir() -> Path:
    """Where this checkout's local state lives (the stack, builds, scan outputs): $SWITCHYARD_STATE_DIR,
    or .state in the repository, where fleet.yaml expects the local emulator."""
    configured = os.environ.get("SWITCHYARD_STATE_DIR")
    return Path(configured).resolve() if configured else REPO_ROOT / ".state"


def checkout_fleet(path: Path = FLEET_FILE) -> Fleet:
    """The fleet file of this checkout (paths in it are relative to the repository root)."""
    return load_fleet(path, root=REPO_ROOT)
