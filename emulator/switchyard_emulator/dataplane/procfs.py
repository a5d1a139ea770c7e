"""Reading /proc: process groups' CPU and memory, listening sockets, process identity.

Linux only (the emulator's data plane runs real processes on this machine).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class ProcStat:
    pid: int
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
    # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15, starttime 22, rss 24.
    return ProcStat(
        pid=pid,
        pgrp=int(fields[2]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def group_usage(pgids: set[int]) -> dict[int, tuple[int, int]]:
    """For each process group: (cpu ticks, rss bytes) summed over its live members."""
    usage: dict[int, tuple[int, int]] = {}
    if not pgids:
        return usage
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is None or stat.pgrp not in pgids:
            continue
        ticks, rss = usage.get(stat.pgrp, (0, 0))
        usage[stat.pgrp] = (ticks + stat.cpu_ticks, rss + stat.rss_bytes)
    return usage


def host_available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


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
