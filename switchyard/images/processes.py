"""Stopping a child process together with everything it started.

Children are started with ``start_new_session=True`` so each has its own process group; stopping the
group (SIGTERM, a grace period, then SIGKILL) also stops grandchildren such as a provisioning
script's ``sleep`` that would otherwise outlive a cancelled build.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies do not count: they run nothing).

    Reads /proc where it exists, because a zombie that nobody reaps (PID 1 in a container may not)
    still answers ``killpg(pgid, 0)``.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal_number)


def stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace_seconds``; reap the leader."""
    pgid = process.pid  # start_new_session=True made the leader's pid the group id

    def wait_until_gone(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            process.poll()  # reap the leader so it does not linger as a zombie
            if not live_group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    if wait_until_gone(0):
        process.wait()
        return
    _signal_group(pgid, signal.SIGTERM)
    if not wait_until_gone(grace_seconds):
        _signal_group(pgid, signal.SIGKILL)
        wait_until_gone(5.0)
    process.wait()
