"""free_port(): the ports a stack gives its listeners. A fleet's gateways need one port each, and
a listener binds its port some time after it was chosen, while this machine opens thousands of
client connections whose local ports come from the kernel's ephemeral range."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from switchyard.stack.processes import free_port
from switchyard_emulator.ports import (
    CLAIM_AFTER_EXIT_S,
    LOWEST_PORT,
    PRUNE_EVERY_S,
    PRUNED_MARK,
    ephemeral_range,
    port_is_free,
)


def test_a_fleet_worth_of_ports_are_all_different_and_free() -> None:
    # 400 ports: random picks among ~22,000 candidates would repeat one with odds near 97 %.
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))  # nothing holds it


def test_ports_come_from_outside_the_range_client_connections_take_theirs_from() -> None:
    # Inside it, a client connection opened between the choice and the bind takes the port, and the
    # gateway's listener then fails with "Address already in use" (seen in CI).
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert [port for port in ports if low <= port <= high] == []


# `count` picks among the ports first..last, by a process of its own.
PICKER = """
import sys
from pathlib import Path
from switchyard_emulator.ports import pick_port

first, last, count, registry = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
print(" ".join(str(pick_port("127.0.0.1", [(first, last)], registry)) for _ in range(count)))
"""


def _unused_block_of_60() -> int:
    """The start of 60 consecutive ports nothing is bound to, below the ephemeral range."""
    for first in range(LOWEST_PORT + 5000, ephemeral_range()[0] - 60, 60):
        if all(port_is_free(port, reuse_address=False) for port in range(first, first + 60)):
            return first
    raise AssertionError("no 60 free ports in a row on this machine")


def test_two_processes_choosing_ports_they_bind_later_never_get_the_same_one(tmp_path: Path) -> None:
    # A fleet's frontend ports are chosen when its configuration is written and bound when its gateway
    # is created, minutes later; meanwhile another pytest worker (or `switchyard up`) chooses too, and
    # a probe alone finds the port free for both (two gateways on one port, seen in CI). Two processes
    # take 25 each of 60 ports: without claims they would share some with near certainty.
    first = _unused_block_of_60()
    pickers = [
        subprocess.Popen(
            [sys.executable, "-c", PICKER, str(first), str(first + 59), "25", str(tmp_path / "registry")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    picked = [[int(port) for port in picker.communicate(timeout=60)[0].split()] for picker in pickers]
    assert all(len(ports) == 25 for ports in picked)
    assert set(picked[0]) & set(picked[1]) == set()
    assert all(first <= port < first + 60 for ports in picked for port in ports)


def _pick_in_a_fresh_process(port: int, registry: Path) -> int:
    """pick_port offered `port` alone, by a process that has picked nothing before: this one remembers
    its own picks (this test file's free_port calls among them), and would refuse a port it picked
    earlier whatever the registry says."""
    picker = subprocess.run(
        [sys.executable, "-c", PICKER, str(port), str(port), "1", str(registry)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert picker.returncode == 0, picker.stderr
    return int(picker.stdout)


def _block_registry_and_dead_pid(tmp_path: Path) -> tuple[int, Path, int]:
    """60 unused ports, an empty registry, and the pid of a process that has exited."""
    registry = tmp_path / "registry"
    registry.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return _unused_block_of_60(), registry, int(ended.stdout)


def _an_abandoned_claim_is_handed_out(registry: Path, dead_pid: int, port: int) -> bool:
    """Whether pick_port hands out `port` when only an abandoned claim holds it. On a busy machine
    another process may bind the port between the check that it is free and the pick: then the pick
    rightly refuses it, and another port is tried (a refused port that is still free is a failure)."""
    for _ in range(5):
        (registry / str(port)).write_text(f"{dead_pid} {time.time() - CLAIM_AFTER_EXIT_S - 60}\n")
        if _pick_in_a_fresh_process(port, registry) == port:
            return True
        if port_is_free(port, reuse_address=False):
            return False
        port = _unused_block_of_60()
    raise AssertionError("five ports in a row were bound by others between the check and the pick")


def test_a_claim_outlives_its_process_for_a_while_and_then_the_port_is_free_again(tmp_path: Path) -> None:
    first, registry, dead_pid = _block_registry_and_dead_pid(tmp_path)
    # Claimed a minute ago by a process that has exited since: `switchyard up` chose it for a server
    # that binds it later, so it stays claimed, and the pick falls back to a port the kernel chooses.
    (registry / str(first)).write_text(f"{dead_pid} {time.time() - 60}\n")
    assert _pick_in_a_fresh_process(first, registry) != first
    # Claimed long ago by that process, and never bound: abandoned, so it is handed out again.
    assert _an_abandoned_claim_is_handed_out(registry, dead_pid, first + 1)
    # The same age, but its process still runs (a pytest worker whose fleet has not bound it yet).
    (registry / str(first + 2)).write_text(f"{os.getpid()} {time.time() - CLAIM_AFTER_EXIT_S - 60}\n")
    assert _pick_in_a_fresh_process(first + 2, registry) != first + 2


def test_claims_that_no_longer_hold_are_swept_from_the_registry_now_and_then(tmp_path: Path) -> None:
    # One file per port ever picked: a machine running the tests collects thousands a day.
    first, registry, dead_pid = _block_registry_and_dead_pid(tmp_path)
    long_ago = time.time() - CLAIM_AFTER_EXIT_S - 60
    abandoned = [registry / str(port) for port in (first + 10, first + 11)]
    for claim in abandoned:
        claim.write_text(f"{dead_pid} {long_ago}\n")
    still_held = [registry / str(first + 12), registry / str(first + 13)]
    still_held[0].write_text(f"{os.getpid()} {long_ago}\n")  # its process runs
    still_held[1].write_text(f"{dead_pid} {time.time() - 60}\n")  # chosen a minute ago
    mark = registry / PRUNED_MARK
    mark.touch()
    os.utime(mark, (time.time() - PRUNE_EVERY_S - 1,) * 2)

    picked = _pick_in_a_fresh_process(first + 30, registry)

    assert picked == first + 30
    assert [claim.exists() for claim in abandoned] == [False, False]
    assert [claim.exists() for claim in still_held] == [True, True]
    assert (registry / str(first + 30)).exists()
    # Swept a moment ago: the next pick does not look again.
    abandoned[0].write_text(f"{dead_pid} {long_ago}\n")
    assert _pick_in_a_fresh_process(first + 31, registry) == first + 31
    assert abandoned[0].exists()
