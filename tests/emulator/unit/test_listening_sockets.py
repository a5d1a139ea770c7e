"""The emulator's listening sockets (its ARM API and each gateway listener) hand asyncio connections
with Nagle off. Otherwise a response written in two parts (headers, then body) waits for the
client's delayed ACK: about 40 ms on every ARM call and every proxied request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from switchyard_emulator.dataplane.gateway.listeners import bind_listener_socket
from switchyard_emulator.server import _bind


def nagle_is_off_on_accepted_connections(listener: socket.socket) -> bool:
    async def main() -> bool:
        accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
            try:
                return await asyncio.wait_for(accepted, timeout=10)
            finally:
                writer.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "make_listener",
    [lambda: _bind("127.0.0.1", 0), lambda: bind_listener_socket(0)],
    ids=["arm-api", "gateway-listener"],
)
def test_connections_accepted_by_the_emulator_send_without_nagle(make_listener: Callable[[], socket.socket]) -> None:
    assert nagle_is_off_on_accepted_connections(make_listener())
