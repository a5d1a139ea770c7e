"""Serving a gateway's client connections: each request on a keep-alive connection is parsed,
routed on its own (a listener's rule, round robin over the healthy members of its pool) and proxied
to a backend member, or answered by the gateway itself (400, 404, 502, 504), and recorded in the
access log. The requests in flight per (gateway, pool, member) are kept for connection draining.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from switchyard_emulator.dataplane.gateway.access_log import record_access
from switchyard_emulator.dataplane.gateway.forwarding import (
    BackendFailed,
    BackendTimeout,
    ClientGone,
    CountingWriter,
    Exchange,
    GuardedReader,
    build_client_head,
    build_upstream_head,
    guarded_drain,
    read_response_head,
)
from switchyard_emulator.dataplane.gateway.http11 import (
    IDEMPOTENT_METHODS,
    SMALL_BODY_BYTES,
    BodyKind,
    HttpProtocolError,
    RequestHead,
    ResponseHead,
    copy_chunked,
    copy_length,
    copy_until_close,
    gateway_error_page,
    parse_request_head,
    read_head,
    simple_response,
)
from switchyard_emulator.dataplane.gateway.listeners import ClientConnection, GatewayRuntime, Listener, admitted
from switchyard_emulator.dataplane.gateway.routing import Route
from switchyard_emulator.dataplane.gateway.telemetry import TelemetryWriter
from switchyard_emulator.dataplane.gateway.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger("switchyard_emulator.dataplane.gateway.proxy")  # the engine's: log lines keep their logger

CONNECT_TIMEOUT_CAP_S = 10.0
STATUS_CLIENT_CLOSED = 499


class RequestProxy:
    """The request path of the gateway engine (GatewayEngine, proxy.py, adds configuration,
    draining and health); owns the backend connection pool and the requests in flight."""

    def __init__(self, telemetry: TelemetryWriter) -> None:
        self._telemetry = telemetry
        self._upstreams = UpstreamPool()
        self._inflight: dict[tuple[str, str, str], set[Exchange]] = {}
        self._draining: dict[tuple[str, str, str], float] = {}  # key -> drain deadline (monotonic)

    async def _serve_client(
        self,
        runtime: GatewayRuntime,
        listener: Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        if not admitted(runtime, listener, peer):
            # The subnet's NSG denies this source: Azure drops the packets, so the client gets no
            # HTTP answer and the gateway logs no request. The closest a socket can come: reset it.
            log.info(
                "gateway %s listener %s: connection from %s:%s dropped by the subnet's NSG",
                runtime.gateway_id,
                listener.name,
                peer[0],
                peer[1],
            )
            writer.transport.abort()
            return
        conn = ClientConnection(writer, idle=True, idle_since=time.monotonic())
        listener.connections.add(conn)
        try:
            while not listener.closed:
                conn.idle = True
                conn.idle_since = time.monotonic()
                try:
                    head = await read_head(reader)
                except (asyncio.IncompleteReadError, OSError):
                    return
                except HttpProtocolError as error:
                    self._reply_error(writer, error.status, close=True)
                    return
                conn.idle = False
                keep_alive = await self._handle_request(runtime, listener, head, reader, writer, peer)
                if not keep_alive:
                    return
        except Exception:
            log.exception("gateway %s: unexpected error serving a client", runtime.gateway_id)
        finally:
            listener.connections.discard(conn)
            writer.transport.close()

    def _reply_error(self, writer: asyncio.StreamWriter, status: int, *, close: bool) -> int:
        data = simple_response(status, gateway_error_page(status), close=close)
        writer.write(data)
        return len(data)

    async def _handle_request(
        self,
        runtime: GatewayRuntime,
        listener: Listener,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[Any, ...],
    ) -> bool:
        """Proxy one request. Returns whether the client connection stays open for another."""
        started = time.perf_counter()
        gateway_id = runtime.gateway_id
        client_addr = f"{peer[0]}:{peer[1]}"
        try:
            request = parse_request_head(head)
        except HttpProtocolError as error:
            sent = self._reply_error(writer, error.status, close=True)
            record_access(
                self._telemetry,
                started,
                gateway_id,
                listener.name,
                None,
                None,
                None,
                None,
                None,
                None,
                client_addr,
                error.status,
                None,
                None,
                len(head),
                sent,
            )
            return False

        route = runtime.compiled.routes_by_endpoint.get((listener.host, listener.port))
        method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")[:2048]
        has_body = request.body is not BodyKind.NONE
        if route is None:
            sent = self._reply_error(writer, 404, close=has_body)
            record_access(
                self._telemetry,
                started,
                gateway_id,
                listener.name,
                None,
                None,
                None,
                None,
                method,
                target,
                client_addr,
                404,
                None,
                None,
                len(head),
                sent,
            )
            return not has_body and request.keep_alive

        healthy = runtime.prober.healthy_members(route.pool, route.settings.name)
        if not healthy:
            sent = self._reply_error(writer, 502, close=has_body)
            record_access(
                self._telemetry,
                started,
                gateway_id,
                listener.name,
                route.rule,
                route.pool,
                route.settings.name,
                None,
                method,
                target,
                client_addr,
                502,
                None,
                None,
                len(head),
                sent,
            )
            return not has_body and request.keep_alive

        pair = (route.pool, route.settings.name)
        turn = runtime.round_robin.get(pair, 0)
        runtime.round_robin[pair] = turn + 1
        start = turn % len(healthy)
        candidates = healthy[start:] + healthy[:start]
        return await self._proxy(
            runtime, listener, route, request, head, reader, writer, peer, candidates, started, method, target
        )

    def _account(self, gateway_id: str, conn: UpstreamConnection) -> None:
        """The bytes this exchange moved on `conn`, for the backend's network metrics. Called before
        the connection goes back to the pool, where the next exchange's bytes would mix in."""
        sent, received = conn.counter.take()
        if sent or received:
            self._telemetry.record_traffic((time.time(), gateway_id, conn.endpoint[0], sent, received))

    async def _proxy(
        self,
        runtime: GatewayRuntime,
        listener: Listener,
        route: Route,
        request: RequestHead,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[Any, ...],
        candidates: tuple[str, ...],
        started: float,
        method: str,
        target: str,
    ) -> bool:
        gateway_id = runtime.gateway_id
        settings = route.settings
        client_addr = f"{peer[0]}:{peer[1]}"
        bytes_in = len(head)
        bytes_out = 0
        idempotent = request.method in IDEMPOTENT_METHODS
        expects_continue = (request.headers.get(b"expect") or b"").lower() == b"100-continue"
        upstream_head = build_upstream_head(request, listener, peer)
        small_body: bytes | None = b"" if request.body is BodyKind.NONE else None
        backend: str | None = None
        backend_status: int | None = None
        backend_started: float | None = None
        backend_time_ms: float | None = None
        status = 502
        head_sent = False
        keep_client = False
        exchange = Exchange(settings)
        inflight_key: tuple[str, str, str] | None = None
        conn: UpstreamConnection | None = None

        def unregister() -> None:
            if inflight_key is None:
                return
            exchanges = self._inflight.get(inflight_key)
            if exchanges is not None:
                exchanges.discard(exchange)
                if not exchanges:
                    del self._inflight[inflight_key]
                    self._draining.pop(inflight_key, None)
            if exchange.drain_timer is not None:
                exchange.drain_timer.cancel()

        try:
            response: ResponseHead | None = None
            for address in candidates:
                inflight_key = (gateway_id, route.pool, address)
                self._inflight.setdefault(inflight_key, set()).add(exchange)
                endpoint = (address, settings.port)
                try:
                    conn, reused = await self._upstreams.acquire(
                        endpoint,
                        min(settings.request_timeout_s, CONNECT_TIMEOUT_CAP_S),
                        idempotent=idempotent,
                    )
                except (OSError, TimeoutError):
                    unregister()
                    inflight_key = None
                    continue  # nothing was sent: the next member may take it
                backend = f"{address}:{settings.port}"
                exchange.conn = conn
                if exchange.drained:  # removed from the pool while we were connecting
                    raise BackendFailed("backend removed from its pool (connection draining)")

                if small_body is None:
                    if expects_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if request.body is BodyKind.LENGTH and request.content_length <= SMALL_BODY_BYTES:
                        try:
                            small_body = await reader.readexactly(request.content_length)
                        except (asyncio.IncompleteReadError, OSError) as error:
                            raise ClientGone() from error
                        bytes_in += len(small_body)
                if small_body is not None:
                    conn.writer.write(upstream_head + small_body if small_body else upstream_head)
                    backend_started = time.perf_counter()
                    try:
                        response = await read_response_head(conn, request, settings)
                    except BackendFailed:
                        if not (reused and idempotent) or exchange.drained:
                            raise
                        # The pooled connection had been closed by the backend: resend once, fresh.
                        self._account(gateway_id, conn)
                        conn.abort()
                        conn = None
                        try:
                            conn, _ = await self._upstreams.acquire(
                                endpoint,
                                min(settings.request_timeout_s, CONNECT_TIMEOUT_CAP_S),
                                idempotent=True,
                            )
                        except (OSError, TimeoutError) as error:
                            raise BackendFailed("backend closed the connection and refused a new one") from error
                        exchange.conn = conn
                        conn.writer.write(upstream_head + small_body)
                        backend_started = time.perf_counter()
                        response = await read_response_head(conn, request, settings)
                else:
                    conn.writer.write(upstream_head)
                    client_side = GuardedReader(reader, backend=False, timeout_s=None)
                    upstream_drain = guarded_drain(conn.writer, backend=True)
                    if request.body is BodyKind.CHUNKED:
                        bytes_in += await copy_chunked(
                            client_side, conn.writer.write, decode=False, drain=upstream_drain
                        )
                    else:
                        bytes_in += await copy_length(
                            client_side, conn.writer.write, request.content_length, upstream_drain
                        )
                    backend_started = time.perf_counter()
                    response = await read_response_head(conn, request, settings)
                break

            if response is None or conn is None:
                raise BackendFailed("no backend member accepted a connection")

            backend_status = response.status
            status = response.status
            keep_client = request.keep_alive and not listener.closed
            decode_chunks = response.body is BodyKind.CHUNKED and request.version == b"HTTP/1.0"
            if response.body is BodyKind.UNTIL_CLOSE or decode_chunks:
                keep_client = False  # the client learns where the body ends by the close
            response_head = build_client_head(response, request, keep_client, decode_chunks)

            if response.body is BodyKind.NONE:
                writer.write(response_head)
                bytes_out = len(response_head)
            elif response.body is BodyKind.LENGTH and response.content_length <= SMALL_BODY_BYTES:
                try:
                    async with asyncio.timeout(settings.request_timeout_s):
                        body = await conn.reader.readexactly(response.content_length)
                except TimeoutError:
                    raise BackendTimeout() from None
                except (asyncio.IncompleteReadError, OSError) as error:
                    raise BackendFailed("backend closed the connection mid-response") from error
                writer.write(response_head + body)
                bytes_out = len(response_head) + len(body)
            else:
                writer.write(response_head)
                head_sent = True
                bytes_out = len(response_head)
                backend_side = GuardedReader(conn.reader, backend=True, timeout_s=settings.request_timeout_s)
                client_drain = guarded_drain(writer, backend=False)
                counted = CountingWriter(writer)
                try:
                    if response.body is BodyKind.CHUNKED:
                        await copy_chunked(backend_side, counted.write, decode=decode_chunks, drain=client_drain)
                    elif response.body is BodyKind.LENGTH:
                        await copy_length(backend_side, counted.write, response.content_length, client_drain)
                    else:
                        await copy_until_close(backend_side, counted.write, client_drain)
                except HttpProtocolError as error:  # the backend's chunk framing, not the client's
                    raise BackendFailed(f"malformed response body: {error}") from error
                bytes_out += counted.count
            backend_time_ms = (time.perf_counter() - backend_started) * 1000.0 if backend_started else None

            # The exchange completed: the backend connection may serve the next request.
            self._account(gateway_id, conn)
            if response.keep_alive and response.body is not BodyKind.UNTIL_CLOSE and not exchange.drained:
                self._upstreams.release(conn)
            else:
                conn.close()
            conn = None
            try:
                await writer.drain()
            except OSError:
                keep_client = False
            return keep_client

        except ClientGone:
            status = STATUS_CLIENT_CLOSED
            keep_client = False
            return False
        except (BackendFailed, BackendTimeout, HttpProtocolError) as error:
            if isinstance(error, HttpProtocolError):
                status = error.status  # 400 for a client's malformed body, 502 for a backend's head
            else:
                status = 504 if isinstance(error, BackendTimeout) else 502
            if exchange.drained:
                log.info("gateway %s: request to %s cut by connection draining", gateway_id, backend)
            if backend_started is not None:
                backend_time_ms = (time.perf_counter() - backend_started) * 1000.0
            # The request body may be unread: only a bodiless request leaves the connection usable.
            keep_client = not head_sent and request.keep_alive and request.body is BodyKind.NONE
            if head_sent:
                writer.transport.abort()  # the client must not take a truncated body for a whole one
            else:
                bytes_out += self._reply_error(writer, status, close=not keep_client)
            return keep_client
        finally:
            if conn is not None:
                self._account(gateway_id, conn)
                conn.abort()
            unregister()
            record_access(
                self._telemetry,
                started,
                gateway_id,
                listener.name,
                route.rule,
                route.pool,
                settings.name,
                backend,
                method,
                target,
                client_addr,
                status,
                backend_status,
                backend_time_ms,
                bytes_in,
                bytes_out,
            )
