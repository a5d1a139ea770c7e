"""Starting the emulator as a process: the one place that knows its command line and when it is ready.

Two callers with different lifetimes use it: `switchyard_emulator.testing.run_emulator` (a child
that dies with the test run that started it) and the local stack's `switchyard up` (a process that
outlives the command that started it). Both get the same command, the same log file and the same
readiness check: DIR/emulator.json written by *this* process (its pid), not one a previous run
left behind.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane.procfs import set_parent_death_signal, signal_group

START_TIMEOUT_S = 60.0
INFO_FILE = "emulator.json"
LOG_FILE = "emulator.log"


class EmulatorStartError(RuntimeError):
    """The emulator exited before it was ready, or was not ready in time (the log's end says why)."""


def emulator_command(state_dir: Path, *, port: int | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """`python -m switchyard_emulator start` on `state_dir`; port None or 0: a free one."""
    return [
        sys.executable,
        "-m",
        "switchyard_emulator",
        "start",
        "--state-dir",
        str(state_dir),
        "--port",
        str(port or 0),
        *extra_args,
    ]


def log_tail(state_dir: Path, lines: int = 40) -> str:
    try:
        text = (Path(state_dir) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: an error here would fail the start, and a
    # platform without PR_SET_PDEATHSIG simply does without.
    with contextlib.suppress(OSError, AttributeError):
        set_parent_death_signal(signal.SIGTERM)


def read_info(state_dir: Path) -> dict[str, Any] | None:
    """DIR/emulator.json, or None while it is missing or half written."""
    try:
        return dict(json.loads((Path(state_dir) / INFO_FILE).read_text()))
    except (OSError, ValueError):
        return None


def start_emulator(
    state_dir: Path,
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = False,
    timeout_s: float = START_TIMEOUT_S,
    on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the emulator on `state_dir` and wait until it is ready; return the process and what
    its emulator.json says (endpoint, ca_bundle, token, subscription_id, ..., pid).

    The process runs in its own session (process group), output appended to DIR/emulator.log.
    `die_with_parent` SIGTERMs it when the *thread* that started it exits (tests: a killed test
    run must not leave emulators behind); without it, it outlives its starter (the local stack).
    `on_spawn` is called with the process as soon as it exists, so that a caller can stop a start
    that is still waiting. A failed start raises EmulatorStartError and leaves nothing running.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / INFO_FILE).unlink(missing_ok=True)
    with (state_dir / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            emulator_command(state_dir, port=port, extra_args=extra_args),
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it stops all of it
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    if on_spawn is not None:
        on_spawn(process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = read_info(state_dir)
        if info is not None and info.get("pid") == process.pid:
            return process, info
        code = process.poll()
        if code is not None:
            raise EmulatorStartError(
                f"the emulator exited with code {code} before it was ready "
                f"(log {state_dir / LOG_FILE}):\n{log_tail(state_dir)}"
            )
        time.sleep(0.05)
    signal_group(process.pid, signal.SIGKILL)
    process.wait()
    raise EmulatorStartError(f"the emulator was not ready within {timeout_s:.0f} s:\n{log_tail(state_dir)}")
