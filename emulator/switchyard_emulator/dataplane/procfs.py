"""Processes on this machine: /proc (process identity, process groups' CPU and memory, listening
sockets), signalling process groups, and tying a child's life to its parent's.

The emulator's one home for these: the instance supervisor, the gateway worker, the launcher and
the tests use them. Linux only (the emulator's data plane runs real processes on this machine).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    state: str  # R, S, D, ...; Z for a zombie (exited, not reaped yet)
    pgrp: int
    cpu_ticks: int  # utime + stime
    rss_bytes: int
    start_ticks: int  # since boot; with the pid it identifies a process across pid reuse


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and ')' - split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, pgrp 5, utime 14, stime 15, starttime 22, rss 24.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0],
        pgrp=int(fields[2]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def is_alive(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie has: only its reaping is missing)."""
    stat = read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def _all_stats() -> list[ProcStat]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                found.append(stat)
    return found


def children(pid: int) -> list[int]:
    """The living processes whose parent is `pid`."""
    return sorted(stat.pid for stat in _all_stats() if stat.ppid == pid and stat.state not in ("Z", "X"))


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when it is already gone (or not ours to signal)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits (even by SIGKILL), so that a
    killed parent leaves nothing behind. False where unsupported.

    Linux sends it when the *thread* that started this process exits, not the whole parent."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    return True


@dataclass(frozen=True)
class GroupUsage:
    """A process group's resource use, summed over its live members."""

    cpu_ticks: int  # utime + stime
    rss_bytes: int
    # How long its threads were ready to run but waited for a CPU of this (shared) machine.
    run_queue_wait_ns: int


def run_queue_wait_ns(pid: int) -> int:
    """Nanoseconds the threads of `pid` have spent runnable but waiting for a CPU, summed: field 2
    of /proc/<pid>/task/<tid>/schedstat (kernel Documentation/scheduler/sched-stats.rst). 0 when
    the kernel does not report it or the process is gone."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        if len(fields) >= 2:
            total += int(fields[1])
    return total


def group_usage(pgids: set[int]) -> dict[int, GroupUsage]:
    """For each process group: its CPU ticks, resident memory and run-queue wait."""
    usage: dict[int, GroupUsage] = {}
    if not pgids:
        return usage
    for stat in _all_stats():
        if stat.pgrp not in pgids:
            continue
        so_far = usage.get(stat.pgrp, GroupUsage(0, 0, 0))
        usage[stat.pgrp] = GroupUsage(
            cpu_ticks=so_far.cpu_ticks + stat.cpu_ticks,
            rss_bytes=so_far.rss_bytes + stat.rss_bytes,
            run_queue_wait_ns=so_far.run_queue_wait_ns + run_queue_wait_ns(stat.pid),
        )
    return usage


def _proc_net_address(ip: str, port: int) -> str:
    # /proc/net/tcp prints the IPv4 address as the raw 32-bit value in host byte order.
    (raw,) = struct.unpack("=I", socket.inet_aton(ip))
    return f"{raw:08X}:{port:04X}"


def is_listening(ip: str, port: int) -> bool:
    """True when a socket is in LISTEN on exactly ip:port (a wildcard listener does not count,
    so another program on 0.0.0.0:port can never make an instance look ready)."""
    wanted = _proc_net_address(ip, port)
    try:
        with open("/proc/net/tcp", encoding="ascii") as handle:
            next(handle, None)
            for line in handle:
                fields = line.split(None, 4)
                if len(fields) >= 4 and fields[1] == wanted and fields[3] == _TCP_LISTEN:
                    return True
    except OSError:
        return False
    return False
