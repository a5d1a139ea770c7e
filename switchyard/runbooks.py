"""Start switchyard's flows by name, the way a Prefect worker does: from their entrypoints in prefect.yaml.

The library (core, cloud, images) never imports flows or tasks; flows import it. The entry points
that start flows in this process (the command line, the demo) find each flow as Prefect's workers
do, by the entrypoint its deployment names, so prefect.yaml stays the one list of the flows and of
where they live, and nothing in switchyard/ depends on flows/ at import time.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from typing import Any

import yaml

from switchyard.checkout import PREFECT_FILE, REPO_ROOT


class UnknownRunbook(LookupError):
    """No deployment of that name in prefect.yaml."""


@cache
def entrypoints() -> dict[str, str]:
    """Deployment name -> entrypoint (`flows/release.py:release`), from prefect.yaml."""
    spec = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    return {str(d["name"]): str(d["entrypoint"]) for d in spec.get("deployments", [])}


def load_flow(deployment: str) -> Any:
    """The flow object of `deployment` (a Prefect Flow; call it to run it in this process)."""
    try:
        entrypoint = entrypoints()[deployment]
    except KeyError:
        raise UnknownRunbook(
            f"prefect.yaml has no deployment {deployment!r} (it has: {', '.join(sorted(entrypoints()))})"
        ) from None
    path, _, name = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    if str(REPO_ROOT) not in sys.path:  # the flows are modules of this checkout
        sys.path.insert(0, str(REPO_ROOT))
    return getattr(importlib.import_module(module), name)
