"""Keep-alive connections from the gateway to its backends, pooled per backend endpoint, each
counting the bytes it carries both ways (the backends' network metrics)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from switchyard_emulator.dataplane.gateway.http11 import MAX_HEAD_BYTES

Endpoint = tuple[str, int]  # (ip, port)

# Idle connections kept per backend; more concurrent requests open more, returned ones beyond
# this are closed.
MAX_IDLE_PER_ENDPOINT = 256
# An idle connection older than this is closed rather than reused: backends (and Azure's own
# backend keep-alive) drop idle connections after a while, and a reuse racing that close fails.
IDLE_TTL_S = 30.0
# A non-idempotent request cannot be retried if its pooled connection turns out to be closed, so
# it only takes a connection that was in use very recently; otherwise it opens a fresh one.
FRESH_ENOUGH_FOR_UNSAFE_S = 1.0


class ByteCounter:
    """Payload bytes a connection sent and received on its socket (TCP/IP headers not counted)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def take(self) -> tuple[int, int]:
        """(sent, received) since the last take."""
        counts = (self.sent, self.received)
        self.sent = self.received = 0
        return counts


class _CountingProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, reader: asyncio.StreamReader, counter: ByteCounter) -> None:
        super().__init__(reader)
        self._counter = counter

    def data_received(self, data: bytes) -> None:
        self._counter.received += len(data)
        super().data_received(data)


class _CountingWriter(asyncio.StreamWriter):
    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        counter: ByteCounter,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._counter = counter

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._counter.sent += len(data)
        super().write(data)

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in data:
            self.write(chunk)


async def open_counted_connection(
    host: str, port: int, *, limit: int = 2**16, counter: ByteCounter | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ByteCounter]:
    """asyncio.open_connection, with every byte the socket carries counted into `counter` (a new
    one by default): the construction open_connection makes, with a counting protocol and writer."""
    loop = asyncio.get_running_loop()
    counter = counter if counter is not None else ByteCounter()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = _CountingProtocol(reader, counter)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, _CountingWriter(transport, protocol, reader, loop, counter), counter


class UpstreamConnection:
    __slots__ = ("counter", "endpoint", "idle_since", "reader", "writer")

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: ByteCounter | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
        self.counter = counter or ByteCounter()
        self.idle_since = 0.0

    def usable(self) -> bool:
        return not (self.writer.transport.is_closing() or self.reader.at_eof() or self.reader.exception() is not None)

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.transport.close()


class UpstreamPool:
    def __init__(self) -> None:
        self._idle: dict[Endpoint, list[UpstreamConnection]] = {}

    async def acquire(
        self, endpoint: Endpoint, connect_timeout_s: float, *, idempotent: bool
    ) -> tuple[UpstreamConnection, bool]:
        """A connection to `endpoint` and whether it was reused from the pool. Raises OSError or
        TimeoutError when a new connection cannot be made (nothing was sent: safe to try another
        backend)."""
        idle = self._idle.get(endpoint)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()  # most recently used first: the least likely to be stale
                if conn.usable() and (idempotent or now - conn.idle_since < FRESH_ENOUGH_FOR_UNSAFE_S):
                    conn.counter.take()  # an exchange counts its own bytes only
                    return conn, True
                if conn.usable():
                    idle.append(conn)  # fine for the next idempotent request
                    break
                conn.close()
        async with asyncio.timeout(connect_timeout_s):
            reader, writer, counter = await open_counted_connection(endpoint[0], endpoint[1], limit=MAX_HEAD_BYTES)
        return UpstreamConnection(endpoint, reader, writer, counter), False

    def release(self, conn: UpstreamConnection) -> None:
        if not conn.usable():
            conn.close()
            return
        idle = self._idle.setdefault(conn.endpoint, [])
        if len(idle) >= MAX_IDLE_PER_ENDPOINT:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def sweep(self) -> None:
        """Close idle connections past their TTL or already closed by the backend."""
        cutoff = time.monotonic() - IDLE_TTL_S
        for endpoint, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.idle_since >= cutoff and conn.usable():
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[endpoint] = keep
            else:
                del self._idle[endpoint]

    def close_endpoint(self, endpoint: Endpoint) -> None:
        for conn in self._idle.pop(endpoint, []):
            conn.close()

    def endpoints(self) -> list[Endpoint]:
        return list(self._idle)

    def close_all(self) -> None:
        for endpoint in list(self._idle):
            self.close_endpoint(endpoint)
