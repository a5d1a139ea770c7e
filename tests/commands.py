"""switchyard's commands as a person runs them from a shell: a real process from the repository root,
its output captured, with none of this test process's Prefect settings (each command finds its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` with this process's environment minus PREFECT_*, plus `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a `--json` command prints as its last line."""
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
