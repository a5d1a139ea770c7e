"""Free TCP ports for listeners that bind later: gateway frontends, the stack's servers, test backends.

The obvious way, binding a probe to port 0, hands out a port from the kernel's *ephemeral* range
(net.ipv4.ip_local_port_range, 32768-60999 by default). That is the range every outgoing connection
takes its local port from, so between the probe and the real bind a client connection (an SDK poll,
a traffic generator, a health probe) may take the port, and the listener then fails with
EADDRINUSE. A gateway on this machine sees thousands of such connections a minute.

So ports are chosen below the ephemeral range, where only an explicit bind takes a port: at random,
probed, and *claimed*. A probe only says nothing is bound now; a fleet's frontend ports are chosen
when its configuration is written and bound minutes later, when its gateway is created, and another
process choosing in between would find the port free too (seen in CI: two pytest workers' gateways
on one port). So every pick is written to a registry all processes of this user share, one file per
port under a lock, and a port claimed by a live process, or lately by any, is not handed out again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
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
# A claim holds while the process that made it lives, up to CLAIM_MAX_S (a port chosen and still not
# bound after two hours was abandoned), and for CLAIM_AFTER_EXIT_S after it exits: `switchyard up`
# chooses the server's port and hands it to a process that binds it after up has returned.
CLAIM_MAX_S = 2 * 3600.0
CLAIM_AFTER_EXIT_S = 600.0
# Claims that no longer hold are removed from the registry at most this often (by whichever process
# claims a port next): one file per port ever picked would otherwise pile up, thousands a day on a
# machine that runs the tests.
PRUNE_EVERY_S = 600.0
PRUNED_MARK = ".pruned"

# This process's claims and when it made them: checked before the registry, and all there is when
# the registry cannot be written.
_claimed_here: dict[int, float] = {}
_claimed_here_lock = threading.Lock()
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


def default_registry() -> Path:
    return Path(tempfile.gettempdir()) / f"switchyard-ports-{os.getuid()}"


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


def _process_lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it lives
        return True
    return True


def _claim_holds(claim: Path, now: float) -> bool:
    try:
        pid_text, at_text = claim.read_text().split()
        pid, at = int(pid_text), float(at_text)
    except (OSError, ValueError):
        return False  # none, or unreadable, or half-written by a process that died mid-write
    age = now - at
    if age < CLAIM_AFTER_EXIT_S:
        return True
    return age < CLAIM_MAX_S and _process_lives(pid)


def _prune(registry: Path, now: float) -> None:
    """Remove the claims that no longer hold, when the last sweep is PRUNE_EVERY_S old (caller holds
    the registry's lock)."""
    mark = registry / PRUNED_MARK
    with contextlib.suppress(OSError):
        if now - mark.stat().st_mtime < PRUNE_EVERY_S:
            return
    mark.touch()
    for claim in registry.iterdir():
        if claim.name.isdigit() and not _claim_holds(claim, now):
            claim.unlink(missing_ok=True)


@contextlib.contextmanager
def _registry_locked(registry: Path) -> Iterator[None]:
    registry.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(registry / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _claim(port: int, registry: Path) -> bool:
    """Claim `port` for this process unless this or another process holds a claim on it."""
    with _claimed_here_lock:
        now = time.time()
        claimed_at = _claimed_here.get(port)
        if claimed_at is not None and now - claimed_at < CLAIM_MAX_S:
            return False
        try:
            with _registry_locked(registry):
                claim = registry / str(port)
                if _claim_holds(claim, now):
                    return False
                claim.write_text(f"{os.getpid()} {now:.3f}\n")
                _prune(registry, now)
        except OSError:
            pass  # no shared registry (a read-only temp directory): this process's memory still holds
        _claimed_here[port] = now
        return True


def pick_port(host: str, ranges: list[tuple[int, int]], registry: Path) -> int:
    """A port in `ranges` nothing is bound to and nobody claimed, now claimed; the kernel's choice
    when the ranges are empty or all taken."""
    if ranges:
        first, last = ranges[0]
        for _ in range(ATTEMPTS):
            port = _random.randint(first, last)
            # TIME_WAIT leftovers count as busy: a fresh port is the safer pick.
            if port_is_free(port, host, reuse_address=False) and _claim(port, registry):
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if _claim(port, registry):
            return port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to at `host` now, outside the ephemeral range where possible, and
    not handed out lately by any switchyard process of this user."""
    return pick_port(host, candidate_ranges(), default_registry())
