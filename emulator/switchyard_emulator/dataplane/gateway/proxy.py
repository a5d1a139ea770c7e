"""The gateway engine inside the worker process: listeners, routing, proxying, draining, health.

Routing model (Application Gateway v2 basic rules): a listener (frontend address and port) is
served by one rule; the rule sends each request to a backend pool with its backend settings (port,
request timeout, probe, connection draining). Every request is routed on its own, so a keep-alive
client connection follows a configuration change from its next request on. A connection the gateway
subnet's NSG denies is reset at once, before any byte is read (Azure drops its packets): no answer,
no access-log record; rule changes apply to new connections only, as in Azure.

Behaviour worth knowing (Azure's where documented, nginx's proxy defaults where it is not):
* Round robin over the pool members the probes currently call healthy; none healthy -> 502.
* A backend that refuses the connection (nothing was sent) -> the next healthy member is tried.
* A pooled keep-alive connection that turns out closed before any response byte -> the request is
  sent again on a fresh connection only when its method is idempotent and its body was buffered;
  a non-idempotent request is never sent twice.
* No response head within the settings' request timeout, or a body that stalls that long -> 504.
* A backend that closes or resets before the response is complete -> 502; if the head was already
  sent to the client, the client connection is cut (and the access log says 502: the client did
  not get a whole response).
* Connection draining: a member removed from a pool keeps its in-flight requests for up to the
  settings' draining timeout (health shows it "Draining"); then they are cut (502). With draining
  disabled (timeout 0) they are cut at once. Members merely behind a repointed rule are not
  removed from anything: their requests finish normally.
* X-Forwarded-For gets "client-ip:port" appended (Azure's format), plus X-Forwarded-Proto,
  X-Forwarded-Port and X-Original-Host.
* Access log: `client` is "ip:port" of the client connection; `path` is the request target as
  received (with its query); `time_taken_ms` runs from the arrival of the complete request head to
  the last response byte handed to the socket. A client that goes away before its response was
  complete is logged with status 499.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from switchyard_emulator import netsec
from switchyard_emulator.dataplane.api import BackendSettingsSpec, GatewaySpec
from switchyard_emulator.dataplane.gateway.http11 import (
    IDEMPOTENT_METHODS,
    MAX_HEAD_BYTES,
    SMALL_BODY_BYTES,
    BodyKind,
    HttpProtocolError,
    RequestHead,
    ResponseHead,
    copy_chunked,
    copy_length,
    copy_until_close,
    forwardable_lines,
    gateway_error_page,
    parse_request_head,
    parse_response_head,
    read_head,
    simple_response,
)
from switchyard_emulator.dataplane.gateway.probes import GatewayProber
from switchyard_emulator.dataplane.gateway.routing import CompiledGateway, Endpoint, Route, compile_gateway
from switchyard_emulator.dataplane.gateway.telemetry import TelemetryWriter
from switchyard_emulator.dataplane.gateway.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)

LISTEN_HOST = "127.0.0.1"
LISTEN_BACKLOG = 1024
CLIENT_IDLE_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_CAP_S = 10.0
HEALTH_SAMPLE_INTERVAL_S = 1.0
STATUS_CLIENT_CLOSED = 499

_DROP_FROM_CLIENT = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host"})


class PortInUseError(Exception):
    """A listener's frontend port could not be bound; the message names gateway, listener, port."""


class UnknownGatewayError(LookupError):
    pass


class _ClientGone(Exception):
    """The client closed or reset its connection mid-request."""


class _BackendFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BackendTimeout(Exception):
    pass


class _Exchange:
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


@dataclass(slots=True, eq=False)  # identity: kept in sets
class _ClientConnection:
    writer: asyncio.StreamWriter
    idle: bool = True
    idle_since: float = 0.0


@dataclass(slots=True)
class _Listener:
    gateway_id: str
    name: str
    host: str
    port: int
    server: asyncio.Server | None = None
    closed: bool = False
    connections: set[_ClientConnection] = field(default_factory=set)

    def close(self) -> None:
        """Stop accepting; drop idle keep-alive connections now, busy ones after their request."""
        self.closed = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.writer.transport.close()


@dataclass(slots=True)
class _GatewayRuntime:
    gateway_id: str
    compiled: CompiledGateway
    prober: GatewayProber
    listeners: dict[Endpoint, _Listener] = field(default_factory=dict)
    vnet_addresses: frozenset[str] = frozenset()
    round_robin: dict[tuple[str, str], int] = field(default_factory=dict)


class _GuardedReader:
    """A StreamReader whose failures are blamed on one side of the proxy (client or backend), and
    whose reads may time out (the backend's request timeout applies to every stall)."""

    __slots__ = ("_reader", "_side_error", "_timeout")

    def __init__(self, reader: asyncio.StreamReader, *, backend: bool, timeout_s: float | None) -> None:
        self._reader = reader
        self._timeout = timeout_s
        self._side_error = backend

    def _fail(self, error: BaseException) -> Exception:
        if self._side_error:
            return _BackendFailed(f"backend connection failed mid-response ({type(error).__name__})")
        return _ClientGone()

    async def read(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.read(n)
        except TimeoutError:
            raise _BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error

    async def readexactly(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.readexactly(n)
        except TimeoutError:
            raise _BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error

    async def readuntil(self, separator: bytes) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._reader.readuntil(separator)
        except TimeoutError:
            raise _BackendTimeout() from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise self._fail(error) from error


def _guarded_drain(writer: asyncio.StreamWriter, *, backend: bool) -> Callable[[], Awaitable[None]]:
    async def drain() -> None:
        try:
            await writer.drain()
        except OSError as error:
            if backend:
                raise _BackendFailed("backend connection failed while sending the request") from error
            raise _ClientGone() from error

    return drain


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


class GatewayEngine:
    """Every gateway this worker serves. Runs on one event loop; all methods are loop-only."""

    def __init__(self, telemetry: TelemetryWriter) -> None:
        self._telemetry = telemetry
        self._gateways: dict[str, _GatewayRuntime] = {}
        self._port_owner: dict[Endpoint, _Listener] = {}
        self._upstreams = UpstreamPool()
        self._inflight: dict[tuple[str, str, str], set[_Exchange]] = {}
        self._draining: dict[tuple[str, str, str], float] = {}  # key -> drain deadline (monotonic)
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._background = [
            asyncio.create_task(self._sample_health(), name="health samples"),
            asyncio.create_task(self._sweep_idle(), name="idle sweep"),
        ]

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for gateway_id in list(self._gateways):
            runtime = self._gateways.pop(gateway_id)
            runtime.prober.close()
            for listener in runtime.listeners.values():
                listener.close()
                for conn in list(listener.connections):
                    conn.writer.transport.abort()
        for exchanges in self._inflight.values():
            for exchange in exchanges:
                exchange.cut_for_drain()
        self._upstreams.close_all()
        await asyncio.sleep(0)  # let aborted handlers log their last requests

    # ---- configuration -------------------------------------------------------------------------

    async def apply(self, spec: GatewaySpec) -> None:
        """Make `spec` the gateway's configuration. Returns once new requests use it; on error
        (invalid spec, a port that cannot be bound) the previous configuration stays in force."""
        compiled = compile_gateway(spec)
        gateway_id = spec.gateway_id
        runtime = self._gateways.get(gateway_id)
        old_endpoints = set(runtime.listeners) if runtime else set()
        new_endpoints = set(compiled.listeners_by_endpoint)

        bound: dict[Endpoint, socket.socket] = {}
        try:
            for endpoint in sorted(new_endpoints - old_endpoints):
                host, port = endpoint
                listener_name = compiled.listeners_by_endpoint[endpoint].name
                owner = self._port_owner.get(endpoint)
                if owner is not None:
                    raise PortInUseError(
                        f"gateway {gateway_id} listener {listener_name!r}: frontend {host}:{port} is already "
                        f"used by listener {owner.name!r} of gateway {owner.gateway_id}"
                    )
                try:
                    bound[endpoint] = bind_listener_socket(port, host)
                except OSError as error:
                    raise PortInUseError(
                        f"gateway {gateway_id} listener {listener_name!r}: cannot bind frontend port "
                        f"{host}:{port}: {error.strerror or error}"
                    ) from error
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise

        old_compiled = runtime.compiled if runtime else None
        prober = runtime.prober if runtime else GatewayProber(gateway_id)
        try:
            await prober.prime(compiled)  # members a rule starts to use are probed before they get traffic
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        if runtime is None:
            runtime = _GatewayRuntime(gateway_id, compiled, prober)
            self._gateways[gateway_id] = runtime
        # The swap: from here on every new request is routed by the new table.
        runtime.compiled = compiled
        runtime.vnet_addresses = frozenset(spec.vnet_addresses)
        runtime.round_robin = {pair: runtime.round_robin.get(pair, 0) for pair in compiled.probe_plans}
        for endpoint in old_endpoints & new_endpoints:  # a listener renamed on the same frontend and port
            runtime.listeners[endpoint].name = compiled.listeners_by_endpoint[endpoint].name
        for endpoint, sock in bound.items():
            listener = _Listener(gateway_id, compiled.listeners_by_endpoint[endpoint].name, *endpoint)
            listener.server = await asyncio.start_server(
                functools.partial(self._serve_client, runtime, listener),
                sock=sock,
                limit=MAX_HEAD_BYTES,
                backlog=LISTEN_BACKLOG,  # start_server listens again, with its own default of 100
            )
            runtime.listeners[endpoint] = listener
            self._port_owner[endpoint] = listener
        for endpoint in old_endpoints - new_endpoints:
            self._close_listener(runtime.listeners.pop(endpoint))
        runtime.prober.reconcile(compiled)
        self._drain_removed_members(gateway_id, old_compiled, compiled)
        self._forget_unused_endpoints()

    async def remove(self, gateway_id: str) -> None:
        runtime = self._gateways.pop(gateway_id, None)
        if runtime is None:
            return
        for listener in runtime.listeners.values():
            self._close_listener(listener)
        runtime.prober.close()
        self._drain_removed_members(gateway_id, runtime.compiled, None)
        self._forget_unused_endpoints()

    def gateway_ids(self) -> list[str]:
        return list(self._gateways)

    def _close_listener(self, listener: _Listener) -> None:
        listener.close()
        endpoint = (listener.host, listener.port)
        if self._port_owner.get(endpoint) is listener:
            del self._port_owner[endpoint]

    def _drain_removed_members(self, gateway_id: str, old: CompiledGateway | None, new: CompiledGateway | None) -> None:
        loop = asyncio.get_running_loop()
        new_members = new.pool_members if new is not None else {}
        # A member put back into its pool while draining is an ordinary member again.
        for key in [k for k in self._draining if k[0] == gateway_id]:
            if key[2] in new_members.get(key[1], ()):
                del self._draining[key]
                for exchange in self._inflight.get(key, ()):
                    if exchange.drain_timer is not None:
                        exchange.drain_timer.cancel()
                        exchange.drain_timer = None
        if old is None:
            return
        for pool, members in old.pool_members.items():
            kept = new_members.get(pool, ())
            for address in members:
                if address in kept:
                    continue
                key = (gateway_id, pool, address)
                exchanges = self._inflight.get(key)
                if not exchanges:
                    continue
                deadline = 0.0
                for exchange in list(exchanges):
                    timeout = exchange.settings.draining_timeout_s
                    if timeout <= 0:
                        exchange.cut_for_drain()
                    else:
                        exchange.drain_timer = loop.call_later(timeout, exchange.cut_for_drain)
                        deadline = max(deadline, loop.time() + timeout)
                if deadline:
                    self._draining[key] = deadline
                log.info(
                    "gateway %s: %s removed from pool %s with %d request(s) in flight",
                    gateway_id,
                    address,
                    pool,
                    len(exchanges),
                )

    def _forget_unused_endpoints(self) -> None:
        """Close pooled connections to backends no gateway routes to any more."""
        wanted = {
            (address, runtime.compiled.settings[settings].port)
            for runtime in self._gateways.values()
            for (pool, settings) in runtime.compiled.probe_plans
            for address in runtime.compiled.pool_members[pool]
        }
        for endpoint in self._upstreams.endpoints():
            if endpoint not in wanted:
                self._upstreams.close_endpoint(endpoint)

    # ---- health --------------------------------------------------------------------------------

    def health(self, gateway_id: str) -> dict[str, list[dict[str, str]]]:
        runtime = self._gateways.get(gateway_id)
        if runtime is None:
            raise UnknownGatewayError(f"gateway {gateway_id} is not configured in the gateway worker")
        compiled = runtime.compiled
        rank = {"Down": 2, "Unknown": 1, "Up": 0}
        report: dict[str, list[dict[str, str]]] = {}
        now = asyncio.get_running_loop().time()
        for pool, members in compiled.pool_members.items():
            pairs = [settings for (p, settings) in compiled.probe_plans if p == pool]
            entries: list[dict[str, str]] = []
            for address in members:
                if not pairs:
                    entries.append(
                        {
                            "address": address,
                            "health": "Unknown",
                            "log": "not probed: no routing rule uses this backend pool",
                        }
                    )
                    continue
                states = []
                for settings in pairs:
                    for member, health in runtime.prober.pair_health(pool, settings):
                        if member == address:
                            states.append((settings, health))
                worst = max((h.state for _, h in states), key=lambda s: rank[s], default="Unknown")
                if len(states) == 1:
                    line = states[0][1].log
                else:
                    line = "; ".join(f"{settings}: {h.log}" for settings, h in states)
                entries.append({"address": address, "health": worst, "log": line})
            for (gw, drained_pool, address), deadline in self._draining.items():
                if gw == gateway_id and drained_pool == pool and self._inflight.get((gw, pool, address)):
                    count = len(self._inflight[(gw, pool, address)])
                    entries.append(
                        {
                            "address": address,
                            "health": "Draining",
                            "log": f"removed from the pool; {count} request(s) in flight, "
                            f"cut in {max(0.0, deadline - now):.1f}s",
                        }
                    )
            report[pool] = entries
        return report

    async def _sample_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SAMPLE_INTERVAL_S)
            now = time.time()
            for gateway_id, runtime in self._gateways.items():
                for pool, settings in runtime.prober.probed_pairs():
                    members = runtime.compiled.pool_members.get(pool, ())
                    healthy = len(runtime.prober.healthy_members(pool, settings))
                    self._telemetry.record_health((now, gateway_id, pool, settings, healthy, len(members) - healthy))

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._upstreams.sweep()
            cutoff = time.monotonic() - CLIENT_IDLE_TIMEOUT_S
            for runtime in self._gateways.values():
                for listener in runtime.listeners.values():
                    for conn in list(listener.connections):
                        if conn.idle and conn.idle_since < cutoff:
                            conn.writer.transport.close()

    # ---- the proxy -----------------------------------------------------------------------------

    async def _serve_client(
        self,
        runtime: _GatewayRuntime,
        listener: _Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        if not self._admitted(runtime, listener, peer):
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
        conn = _ClientConnection(writer, idle=True, idle_since=time.monotonic())
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

    @staticmethod
    def _admitted(runtime: _GatewayRuntime, listener: _Listener, peer: tuple[Any, ...]) -> bool:
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

    def _reply_error(self, writer: asyncio.StreamWriter, status: int, *, close: bool) -> int:
        data = simple_response(status, gateway_error_page(status), close=close)
        writer.write(data)
        return len(data)

    async def _handle_request(
        self,
        runtime: _GatewayRuntime,
        listener: _Listener,
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
            self._log(
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
            self._log(
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
            self._log(
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

    def _upstream_head(self, request: RequestHead, listener: _Listener, peer: tuple[Any, ...]) -> bytes:
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

    async def _proxy(
        self,
        runtime: _GatewayRuntime,
        listener: _Listener,
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
        upstream_head = self._upstream_head(request, listener, peer)
        small_body: bytes | None = b"" if request.body is BodyKind.NONE else None
        backend: str | None = None
        backend_status: int | None = None
        backend_started: float | None = None
        backend_time_ms: float | None = None
        status = 502
        head_sent = False
        keep_client = False
        exchange = _Exchange(settings)
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
                    raise _BackendFailed("backend removed from its pool (connection draining)")

                if small_body is None:
                    if expects_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if request.body is BodyKind.LENGTH and request.content_length <= SMALL_BODY_BYTES:
                        try:
                            small_body = await reader.readexactly(request.content_length)
                        except (asyncio.IncompleteReadError, OSError) as error:
                            raise _ClientGone() from error
                        bytes_in += len(small_body)
                if small_body is not None:
                    conn.writer.write(upstream_head + small_body if small_body else upstream_head)
                    backend_started = time.perf_counter()
                    try:
                        response = await self._read_response_head(conn, request, settings)
                    except _BackendFailed:
                        if not (reused and idempotent) or exchange.drained:
                            raise
                        # The pooled connection had been closed by the backend: resend once, fresh.
                        conn.abort()
                        conn = None
                        try:
                            conn, _ = await self._upstreams.acquire(
                                endpoint,
                                min(settings.request_timeout_s, CONNECT_TIMEOUT_CAP_S),
                                idempotent=True,
                            )
                        except (OSError, TimeoutError) as error:
                            raise _BackendFailed("backend closed the connection and refused a new one") from error
                        exchange.conn = conn
                        conn.writer.write(upstream_head + small_body)
                        backend_started = time.perf_counter()
                        response = await self._read_response_head(conn, request, settings)
                else:
                    conn.writer.write(upstream_head)
                    client_side = _GuardedReader(reader, backend=False, timeout_s=None)
                    upstream_drain = _guarded_drain(conn.writer, backend=True)
                    if request.body is BodyKind.CHUNKED:
                        bytes_in += await copy_chunked(
                            client_side, conn.writer.write, decode=False, drain=upstream_drain
                        )
                    else:
                        bytes_in += await copy_length(
                            client_side, conn.writer.write, request.content_length, upstream_drain
                        )
                    backend_started = time.perf_counter()
                    response = await self._read_response_head(conn, request, settings)
                break

            if response is None or conn is None:
                raise _BackendFailed("no backend member accepted a connection")

            backend_status = response.status
            status = response.status
            keep_client = request.keep_alive and not listener.closed
            decode_chunks = response.body is BodyKind.CHUNKED and request.version == b"HTTP/1.0"
            if response.body is BodyKind.UNTIL_CLOSE or decode_chunks:
                keep_client = False  # the client learns where the body ends by the close
            response_head = self._client_head(response, request, keep_client, decode_chunks)

            if response.body is BodyKind.NONE:
                writer.write(response_head)
                bytes_out = len(response_head)
            elif response.body is BodyKind.LENGTH and response.content_length <= SMALL_BODY_BYTES:
                try:
                    async with asyncio.timeout(settings.request_timeout_s):
                        body = await conn.reader.readexactly(response.content_length)
                except TimeoutError:
                    raise _BackendTimeout() from None
                except (asyncio.IncompleteReadError, OSError) as error:
                    raise _BackendFailed("backend closed the connection mid-response") from error
                writer.write(response_head + body)
                bytes_out = len(response_head) + len(body)
            else:
                writer.write(response_head)
                head_sent = True
                bytes_out = len(response_head)
                backend_side = _GuardedReader(conn.reader, backend=True, timeout_s=settings.request_timeout_s)
                client_drain = _guarded_drain(writer, backend=False)
                counted = _CountingWriter(writer)
                try:
                    if response.body is BodyKind.CHUNKED:
                        await copy_chunked(backend_side, counted.write, decode=decode_chunks, drain=client_drain)
                    elif response.body is BodyKind.LENGTH:
                        await copy_length(backend_side, counted.write, response.content_length, client_drain)
                    else:
                        await copy_until_close(backend_side, counted.write, client_drain)
                except HttpProtocolError as error:  # the backend's chunk framing, not the client's
                    raise _BackendFailed(f"malformed response body: {error}") from error
                bytes_out += counted.count
            backend_time_ms = (time.perf_counter() - backend_started) * 1000.0 if backend_started else None

            # The exchange completed: the backend connection may serve the next request.
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

        except _ClientGone:
            status = STATUS_CLIENT_CLOSED
            keep_client = False
            return False
        except (_BackendFailed, _BackendTimeout, HttpProtocolError) as error:
            if isinstance(error, HttpProtocolError):
                status = error.status  # 400 for a client's malformed body, 502 for a backend's head
            else:
                status = 504 if isinstance(error, _BackendTimeout) else 502
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
                conn.abort()
            unregister()
            self._log(
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

    async def _read_response_head(
        self, conn: UpstreamConnection, request: RequestHead, settings: BackendSettingsSpec
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
            raise _BackendTimeout() from None
        except asyncio.IncompleteReadError as error:
            raise _BackendFailed("backend closed the connection before responding") from error
        except OSError as error:
            raise _BackendFailed(f"backend connection failed ({error.strerror or error})") from error

    @staticmethod
    def _client_head(response: ResponseHead, request: RequestHead, keep_client: bool, decode_chunks: bool) -> bytes:
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

    def _log(
        self,
        started: float,
        gateway_id: str,
        listener: str | None,
        rule: str | None,
        pool: str | None,
        settings: str | None,
        backend: str | None,
        method: str | None,
        path: str | None,
        client: str | None,
        status: int,
        backend_status: int | None,
        backend_time_ms: float | None,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        now = time.time()
        self._telemetry.record_access(
            (
                now,
                gateway_id,
                listener,
                rule,
                pool,
                settings,
                backend,
                method,
                path,
                client,
                status,
                backend_status,
                (time.perf_counter() - started) * 1000.0,
                backend_time_ms,
                bytes_in,
                bytes_out,
            )
        )


class _CountingWriter:
    __slots__ = ("_writer", "count")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self._writer.write(data)
