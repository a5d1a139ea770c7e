"""free_port(): the ports a stack gives its listeners. A fleet's gateways need one port each, and
a listener binds its port some time after it was chosen, while this machine opens thousands of
client connections whose local ports come from the kernel's ephemeral range."""

from __future__ import annotations

import socket

from switchyard.stack.processes import free_port
from switchyard_emulator.ports import ephemeral_range


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
