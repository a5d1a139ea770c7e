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
import time
from collections.abc import Callable, KeysView
from dataclasses import dataclass
from functools import partial

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
    # cutime + cstime: the CPU of its children that exited and that it reaped (and of theirs)
    reaped_children_ticks: int
    rss_bytes: int
    start_ticks: int  # since boot; with the pid it identifies a process across pid reuse


def _read_proc_file(path: str) -> str:
    """A small /proc file in one read (the emulator reads thousands a second: no pathlib, no buffering)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode("ascii", errors="replace")
    finally:
        os.close(fd)


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = _read_proc_file(f"/proc/{pid}/stat")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')' - split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, pgrp 5, utime 14, stime 15, cutime 16, cstime 17,
    # starttime 22, rss 24 (proc(5)).
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0],
        pgrp=int(fields[2]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        reaped_children_ticks=int(fields[13]) + int(fields[14]),
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
    """A process group's resource use, summed over its live members.

    Its CPU counts, beside each live member's own, the children each member reaped (cutime and
    cstime): a worker that ran between two looks and exited is part of the instance's CPU, as every
    process on a VM is part of the VM's. The sum goes on smoothly when a member exits: what leaves
    with it arrives in its parent's count once the parent reaps it. Lost are only members reaped by
    a process outside the group (a daemon's CPU, once it exits: init reaps it)."""

    cpu_ticks: int  # utime + stime of each live member, and cutime + cstime
    rss_bytes: int
    # How long its threads were ready to run but waited for a CPU of this (shared) machine.
    run_queue_wait_ns: int


def _threads(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def run_queue_wait_ns(pid: int, threads: list[str]) -> int:
    """Nanoseconds the given threads of `pid` have spent runnable but waiting for a CPU, summed:
    field 2 of /proc/<pid>/task/<tid>/schedstat (kernel Documentation/scheduler/sched-stats.rst).
    0 when the kernel does not report it or the process is gone."""
    total = 0
    for tid in threads:
        try:
            fields = _read_proc_file(f"/proc/{pid}/task/{tid}/schedstat").split()
        except OSError:
            continue
        if len(fields) >= 2:
            total += int(fields[1])
    return total


class GroupUsageReader:
    """Reads process groups' CPU ticks, resident memory and run-queue wait, summed over members.

    A group's members are found from its leader down, through the kernel's per-thread `children`
    lists (a few small files per instance), rather than by reading every process on the machine
    each second: on a busy machine that scan was most of the emulator's own CPU. A member that
    left its leader's tree (a daemon whose parent exited) is found by a full scan every
    `full_scan_every_s` and read from then on; the full scan is also the fallback on a kernel
    without `children` lists (CONFIG_PROC_CHILDREN)."""

    def __init__(self, full_scan_every_s: float = 10.0) -> None:
        self.full_scan_every_s = full_scan_every_s
        self._last_full_scan: float | None = None
        self._strays: dict[int, set[int]] = {}  # group -> members outside its leader's tree

    def usage(self, pgids: set[int]) -> dict[int, GroupUsage]:
        if not pgids:
            return {}
        now = time.monotonic()
        if (
            not _HAS_CHILDREN_LISTS
            or self._last_full_scan is None
            or now - self._last_full_scan >= self.full_scan_every_s
        ):
            self._last_full_scan = now
            members = self._scan_all(pgids)
        else:
            members = self._walk(pgids)
        return {pgid: _summed(stats) for pgid, stats in members.items() if stats}

    def _scan_all(self, pgids: set[int]) -> dict[int, list[tuple[ProcStat, list[str]]]]:
        stats = [stat for stat in _all_stats() if stat.pgrp in pgids]
        by_parent: dict[int, list[int]] = {}
        for stat in stats:
            by_parent.setdefault(stat.ppid, []).append(stat.pid)
        members: dict[int, list[tuple[ProcStat, list[str]]]] = {}
        self._strays = {}
        for pgid in pgids:
            group = {stat.pid: stat for stat in stats if stat.pgrp == pgid}
            tree = set(_tree_members([pgid], partial(_children_among, by_parent=by_parent, members=group.keys())))
            members[pgid] = [(stat, _threads(stat.pid)) for stat in group.values()]
            strays = group.keys() - tree
            if strays:
                self._strays[pgid] = strays
        return members

    def _walk(self, pgids: set[int]) -> dict[int, list[tuple[ProcStat, list[str]]]]:
        return {pgid: _walk_group(pgid, [pgid, *self._strays.get(pgid, ())]) for pgid in pgids}


def _children_among(pid: int, *, by_parent: dict[int, list[int]], members: KeysView[int]) -> list[int] | None:
    """A full scan's children of `pid`, or None when `pid` is not one of the group's `members`."""
    return by_parent.get(pid, []) if pid in members else None


def _walk_group(pgid: int, roots: list[int]) -> list[tuple[ProcStat, list[str]]]:
    """Group `pgid`'s members found from `roots` down through the kernel's children lists."""
    group: list[tuple[ProcStat, list[str]]] = []

    def read_member(pid: int) -> list[int] | None:
        stat = read_stat(pid)
        if stat is None or stat.pgrp != pgid:
            return None  # gone, or moved to a group of its own (it is no longer this instance's)
        threads = _threads(pid)
        group.append((stat, threads))
        return _children_of(pid, threads)

    _tree_members(roots, read_member)
    return group


def _tree_members(roots: list[int], children_of: Callable[[int], list[int] | None]) -> list[int]:
    """The processes found from `roots` down through `children_of`, each once: the one walk of both
    ways to find a group (from a full scan's parent map, or from the kernel's children lists).
    `children_of` returns None for a process that is not a member (gone, or in another group): it is
    left out, and nothing is looked for below it."""
    seen: set[int] = set()
    found: list[int] = []
    frontier = list(roots)
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        below = children_of(pid)
        if below is None:
            continue
        found.append(pid)
        frontier.extend(below)
    return found


def _children_of(pid: int, threads: list[str]) -> list[int]:
    """The children of the given threads of `pid`: /proc/<pid>/task/<tid>/children (proc(5))."""
    found: list[int] = []
    for tid in threads:
        try:
            found.extend(int(child) for child in _read_proc_file(f"/proc/{pid}/task/{tid}/children").split())
        except OSError:
            continue
    return found


def _summed(members: list[tuple[ProcStat, list[str]]]) -> GroupUsage:
    return GroupUsage(
        cpu_ticks=sum(stat.cpu_ticks + stat.reaped_children_ticks for stat, _ in members),
        rss_bytes=sum(stat.rss_bytes for stat, _ in members),
        run_queue_wait_ns=sum(run_queue_wait_ns(stat.pid, threads) for stat, threads in members),
    )


_HAS_CHILDREN_LISTS = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def group_usage(pgids: set[int]) -> dict[int, GroupUsage]:
    """For each process group: its CPU ticks, resident memory and run-queue wait, from one full
    scan (a sampler that asks every second keeps a GroupUsageReader instead)."""
    return GroupUsageReader().usage(pgids)


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
