"""Processes switchyard starts and stops: spawned in their own session, recognised by their start
time (so a pid the system reused is never mistaken for ours), stopped with everything they started
(SIGTERM, a grace period, SIGKILL). Linux: /proc.

The one home of these helpers in switchyard: the local stack's long-running processes, the Prefect
server, and the image pipeline's Packer and Trivy children all stop through here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from switchyard.checkout import REPO_ROOT
from switchyard_emulator.ports import free_port as free_port  # the one port picker (see there why)
from switchyard_emulator.ports import port_is_free as port_is_free


class ProcessRecord(BaseModel):
    """A process `up` started. `start_ticks` (/proc/PID/stat field 22) tells it from a reused pid."""

    pid: int
    start_ticks: int
    argv: list[str]
    log: str


class ProcStat(BaseModel):
    pid: int
    ppid: int
    pgrp: int
    state: str
    start_ticks: int
    # CPU clock ticks used: its own (user, system) and its reaped children's (bench/fleet_patch.py).
    cpu_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and ')': split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        start_ticks=int(fields[19]),
        cpu_ticks=sum(int(field) for field in fields[11:15]),  # utime stime cutime cstime
    )


def is_running(record: ProcessRecord) -> bool:
    """The very process that was recorded is alive (not a zombie, not a reused pid)."""
    stat = proc_stat(record.pid)
    return stat is not None and stat.state not in ("Z", "X") and stat.start_ticks == record.start_ticks


def _all_processes() -> list[ProcStat]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None:
                found.append(stat)
    return found


def process_tree(root: ProcessRecord) -> list[ProcStat]:
    """The recorded process and all its living descendants, found through parent pids."""
    if not is_running(root):
        return []
    processes = _all_processes()
    children: dict[int, list[ProcStat]] = {}
    for stat in processes:
        children.setdefault(stat.ppid, []).append(stat)
    tree: list[ProcStat] = []
    pending = [stat for stat in processes if stat.pid == root.pid]
    while pending:
        stat = pending.pop()
        if stat.state in ("Z", "X"):
            continue
        tree.append(stat)
        pending.extend(children.get(stat.pid, []))
    return tree


def _alive(stat: ProcStat) -> bool:
    now = proc_stat(stat.pid)
    return now is not None and now.state not in ("Z", "X") and now.start_ticks == stat.start_ticks


def _signal_tree(tree: list[ProcStat], sig: signal.Signals) -> None:
    """Signal each process group of the tree (each was started as its own session), and each
    process on its own too (a descendant may have left its parent's group)."""
    for pgid in {stat.pgrp for stat in tree if stat.pgrp in {s.pid for s in tree}}:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for stat in tree:
        if _alive(stat):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(stat.pid, sig)


def stop_processes(trees: list[list[ProcStat]], grace_s: float) -> list[ProcStat]:
    """SIGTERM every process of the trees, SIGKILL what is left after `grace_s`; return survivors."""
    everything = [stat for tree in trees for stat in tree]
    for tree in trees:
        _signal_tree(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(stat) for stat in everything):
        time.sleep(0.1)
    left = [stat for stat in everything if _alive(stat)]
    if left:
        _signal_tree(left, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_alive(stat) for stat in left):
            time.sleep(0.05)
    return [stat for stat in everything if _alive(stat)]


def spawn(
    argv: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO_ROOT
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start a long-running process in its own session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = proc_stat(process.pid)
    return process, ProcessRecord(
        pid=process.pid, start_ticks=stat.start_ticks if stat else -1, argv=argv, log=str(log)
    )


def log_tail(path: Path | str, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# One child and its process group (Packer, Trivy, the Prefect server) ------------------------------


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies do not count: they run nothing).

    ``killpg(pgid, 0)`` first: a group with no process left, not even a zombie, is the usual answer
    once a hook, a build or a scan has ended, and reading all of /proc to learn it cost more the more
    processes the machine runs (a fleet's instances). Only when the group still has a process is
    /proc read, because a zombie that nobody reaps (PID 1 in a container may not) still answers
    ``killpg(pgid, 0)``.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's process holds the group id: it is there
    if not Path("/proc").is_dir():
        return [pgid]
    return [stat.pid for stat in _all_processes() if stat.pgrp == pgid and stat.state not in ("Z", "X")]


def kill_process_group(pgid: int) -> None:
    """SIGKILL a process group at once, if it still exists (a start that must be abandoned)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_process_group(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the group `process` leads, SIGKILL what is left after `grace_s`; reap the leader.

    The child must have been started with ``start_new_session=True`` (its pid is then the group's
    id). Stopping the group, not the child alone, also stops what it started, such as a
    provisioning script's ``sleep`` that would otherwise outlive a cancelled build, or the
    Prefect server's own subprocesses, some of which ignore the first SIGTERM.
    """
    pgid = process.pid

    def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            process.poll()  # reap the leader so it does not linger as a zombie
            if not live_group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    if not gone_within(0):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        if not gone_within(grace_s):
            kill_process_group(pgid)
            gone_within(5.0)
    process.wait()
