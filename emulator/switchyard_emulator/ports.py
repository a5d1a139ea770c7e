"""Free TCP ports for listeners that bind later: gateway frontends, the stack's servers, test backends.

The obvious way, binding a probe to port 0, hands out a port from the kernel's *ephemeral* range
(net.ipv4.ip_local_port_range, 32768-60999 by default). That is the range every outgoing connection
takes its local port from, so between the probe and the real bind a client connection (an SDK poll,
a traffic generator, a health probe) may take the port, and the listener then fails with
EADDRINUSE. A gateway on this machine sees thousands of such connections a minute.

So ports are chosen below the ephemeral range, where only an explicit bind takes a port: at random
(two processes handing out ports at once rarely meet), probed, and remembered by this process so
that it never hands out the same port twice before the caller binds it.
"""

from __future__ import annotations

import random
import socket
import threading
from collections import deque
from pathlib import Path

# Below this, ports are for well-known and registered services a machine may run (and for
# privileged binds); the picks stay above it.
LOWEST_PORT = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default when the file cannot be read (not Linux, or a restricted /proc).
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
# Fewer candidates than this below the ephemeral range (a machine tuned to a wide ephemeral range):
# pick above it instead, which is as safe, or, failing both, let the kernel choose.
MIN_CANDIDATES = 2000
ATTEMPTS = 200

_handed_out: deque[int] = deque(maxlen=4096)  # bounded: a long-lived process never runs out
_handed_out_lock = threading.Lock()
_random = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def candidate_ranges() -> list[tuple[int, int]]:
    """Inclusive ranges outside the ephemeral range, the roomier first."""
    low, high = ephemeral_range()
    ranges = [(LOWEST_PORT, low - 1), (high + 1, 65535)]
    roomy = [(first, last) for first, last in ranges if last - first + 1 >= MIN_CANDIDATES]
    return sorted(roomy, key=lambda bounds: bounds[0] - bounds[1])


def port_is_free(port: int, host: str = "127.0.0.1", *, reuse_address: bool = True) -> bool:
    """Nothing is bound to it. With `reuse_address` (SO_REUSEADDR, as servers set it), connections of
    a stopped server lingering in TIME_WAIT do not make a port busy; without, they do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if reuse_address:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    with _handed_out_lock:
        if port in _handed_out:
            return False
        _handed_out.append(port)
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to at `host` now, outside the ephemeral range where possible,
    and not handed out by this process lately."""
    ranges = candidate_ranges()
    if ranges:
        first, last = ranges[0]
        for _ in range(ATTEMPTS):
            port = _random.randint(first, last)
            # TIME_WAIT leftovers count as busy: a fresh port is the safer pick.
            if port_is_free(port, host, reuse_address=False) and _claim(port):
                return port
    while True:  # no room outside the ephemeral range, or all of it busy: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if _claim(port):
            return port
