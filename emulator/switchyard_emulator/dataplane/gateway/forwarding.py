"""Forwarding one request between a client and a backend member: the request head sent upstream
(with X-Forwarded-* added), the response head read back and the one relayed to the client, stream
wrappers that blame a failure on the side it came from (client gone vs backend failed or timed out),
and the in-flight exchange connection draining may cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard_emulator.dataplane.api import BackendSettingsSpec
from switchyard_emulator.dataplane.gateway.http11 import (
    BodyKind,
    HttpProtocolError,
    RequestHead,
    ResponseHead,
    forwardable_lines,
    parse_response_head,
    read_head,
)
from switchyard_emulator.dataplane.gateway.listeners import Listener
from switchyard_emulator.dataplane.gateway.upstream import UpstreamConnection

_DROP_FROM_CLIENT = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host"})


class ClientGone(Exception):
    """The client closed or reset its connection mid-request."""


class BackendFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackendTimeout(Exception):
    pass


class Exchange:
    """One request in flight to one backend member; connection draining may cut it."""

    __slots__ = ("conn", "drain_timer", "drained", "settings")

    def __init__(self, settings: BackendSettingsSpec) -> None:
        self.settings = settings
        self.conn: UpstreamConnection | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.drained = False

    def cut_for_drain(self) -> None:
        self.drained = True
        if self.conn is not None:
            self.conn.abort()


class GuardedReader:
    """A StreamReader whose failures are blamed on one side of the proxy (client or backend), and
    whose reads may time out (the backend's request timeout applies to every stall)."""

    __slots__ = ("_reader", "_side_error", "_timeout")

    def __init__(self, reader: asyncio.StreamReader, *, backend: bool, timeout_s: float | None) -> None:
        self._reader = reader
        self._timeout = timeout_s
        self._side_error = backend

    def _fail(self, error: BaseException) -> Exception:
        if self._side_error:
            return BackendFailed(f"backend connection failed mid-response ({type(error).__name__})")
        return ClientGone()

    async def read(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.read(n)
        except TimeoutError:
            raise BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error

    async def readexactly(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.readexactly(n)
        except TimeoutError:
            raise BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error

    async def readuntil(self, separator: bytes) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.readuntil(separator)
        except TimeoutError:
            raise BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error


def guarded_drain(writer: asyncio.StreamWriter, *, backend: bool) -> Callable[[], Awaitable[None]]:
    async def drain() -> None:
        try:
            await writer.drain()
        except OSError as error:
            if backend:
                raise BackendFailed("backend connection failed while sending the request") from error
            raise ClientGone() from error

    return drain


def build_upstream_head(request: RequestHead, listener: Listener, peer: tuple[Any, ...]) -> bytes:
    lines = forwardable_lines(request.headers, drop=_DROP_FROM_CLIENT | {b"expect"})
    client = f"{peer[0]}:{peer[1]}".encode()
    previous = request.headers.get(b"x-forwarded-for")
    forwarded_for = previous + b", " + client if previous else client
    host = request.headers.get(b"host") or f"{listener.host}:{listener.port}".encode()
    parts = [b"%s %s HTTP/1.1\r\n" % (request.method, request.target)]
    parts.extend(line + b"\r\n" for line in lines)
    if request.headers.get(b"host") is None:
        parts.append(b"Host: " + host + b"\r\n")
    if request.body is BodyKind.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(
        b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: %d\r\n"
        b"X-Original-Host: %s\r\nConnection: keep-alive\r\n\r\n" % (forwarded_for, listener.port, host)
    )
    return b"".join(parts)


async def read_response_head(
    conn: UpstreamConnection, request: RequestHead, settings: BackendSettingsSpec
) -> ResponseHead:
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            while True:
                raw = await read_head(conn.reader)
                response = parse_response_head(raw, request.method)
                if response.status == 101:
                    raise HttpProtocolError("backend switched protocols without being asked", status=502)
                if response.status >= 200:
                    return response
                # Interim 1xx responses (100 Continue, 103 Early Hints) are not relayed.
    except TimeoutError:
        raise BackendTimeout() from None
    except asyncio.IncompleteReadError as error:
        raise BackendFailed("backend closed the connection before responding") from error
    except OSError as error:
        raise BackendFailed(f"backend connection failed ({error.strerror or error})") from error


def build_client_head(response: ResponseHead, request: RequestHead, keep_client: bool, decode_chunks: bool) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason)]
    parts.extend(line + b"\r\n" for line in forwardable_lines(response.headers))
    if response.body is BodyKind.CHUNKED and not decode_chunks:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_client:
        parts.append(b"Connection: close\r\n")
    elif request.version == b"HTTP/1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class CountingWriter:
    __slots__ = ("_writer", "count")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self._writer.write(data)
