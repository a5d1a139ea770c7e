"""A gateway's listeners in the worker: the listening sockets, the client connections each keeps,
the per-gateway runtime state (compiled routing table, prober, listeners, round-robin turns), and
whether the gateway subnet's NSG admits a new connection.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from switchyard_emulator import netsec
from switchyard_emulator.dataplane.gateway.probes import GatewayProber
from switchyard_emulator.dataplane.gateway.routing import CompiledGateway, Endpoint

LISTEN_HOST = "127.0.0.1"
LISTEN_BACKLOG = 1024


@dataclass(slots=True, eq=False)  # identity: kept in sets
class ClientConnection:
    writer: asyncio.StreamWriter
    idle: bool = True
    idle_since: float = 0.0


@dataclass(slots=True)
class Listener:
    gateway_id: str
    name: str
    host: str
    port: int
    server: asyncio.Server | None = None
    closed: bool = False
    connections: set[ClientConnection] = field(default_factory=set)

    def close(self) -> None:
        """Stop accepting; drop idle keep-alive connections now, busy ones after their request."""
        self.closed = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.writer.transport.close()


@dataclass(slots=True)
class GatewayRuntime:
    gateway_id: str
    compiled: CompiledGateway
    prober: GatewayProber
    listeners: dict[Endpoint, Listener] = field(default_factory=dict)
    vnet_addresses: frozenset[str] = frozenset()
    round_robin: dict[tuple[str, str], int] = field(default_factory=dict)


def bind_listener_socket(port: int, host: str = LISTEN_HOST) -> socket.socket:
    # IPPROTO_TCP, so that asyncio sets TCP_NODELAY on the accepted connections (see emulator/server.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR only skips TIME_WAIT leftovers; a live listener on the port still conflicts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def admitted(runtime: GatewayRuntime, listener: Listener, peer: tuple[Any, ...]) -> bool:
    """Does the gateway subnet's NSG let this connection in? Its rules for the listener were
    narrowed by the ARM layer to those matching the flow's protocol, destination and port; the
    first (by priority) whose source and source port match decides, as in Azure. A rule set
    is always closed by Azure's DenyAllInBound. No NSG: everything is let in."""
    spec = runtime.compiled.listeners_by_endpoint.get((listener.host, listener.port))
    if spec is None or spec.inbound_rules is None:
        return True
    try:
        source = netsec.client_source(str(peer[0]), runtime.vnet_addresses)
    except ValueError:
        return False
    port = int(peer[1])
    for rule in spec.inbound_rules:
        if not netsec.covers(tuple(rule.source_ports), port):
            continue
        if any(netsec.source_matches(prefix, source) for prefix in rule.sources):
            return rule.allow
    return False
