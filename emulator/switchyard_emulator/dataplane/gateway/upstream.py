"""Keep-alive connections from the gateway to its backends, pooled per backend endpoint."""

from __future__ import annotations

import asyncio
import time

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


class UpstreamConnection:
    __slots__ = ("endpoint", "idle_since", "reader", "writer")

    def __init__(self, endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
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
                    return conn, True
                if conn.usable():
                    idle.append(conn)  # fine for the next idempotent request
                    break
                conn.close()
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(endpoint[0], endpoint[1], limit=MAX_HEAD_BYTES)
        return UpstreamConnection(endpoint, reader, writer), False

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
