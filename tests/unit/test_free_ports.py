"""free_port(): the ports a stack gives its listeners. A fleet's gateways need one port each, and
the OS picks a probe's port at random, so two probes in a row could get the same one."""

from __future__ import annotations

import socket

from switchyard.stack.processes import free_port


def test_a_fleet_worth_of_ports_are_all_different_and_free() -> None:
    # 400 ports: random picks among ~28,000 ephemeral ports would repeat one with odds near 94 %.
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))  # nothing holds it
