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

Here: GatewayEngine, the configuration (apply/remove, listeners bound and closed), connection
draining and health. The request path: request_proxy.py (forwarding.py for one exchange's I/O,
access_log.py for its record); listeners and the NSG check: listeners.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time

from switchyard_emulator.dataplane.api import GatewaySpec
from switchyard_emulator.dataplane.gateway.http11 import MAX_HEAD_BYTES
from switchyard_emulator.dataplane.gateway.listeners import (
    LISTEN_BACKLOG,
    GatewayRuntime,
    Listener,
    bind_listener_socket,
)
from switchyard_emulator.dataplane.gateway.probes import GatewayProber, TrafficSink
from switchyard_emulator.dataplane.gateway.request_proxy import RequestProxy
from switchyard_emulator.dataplane.gateway.routing import CompiledGateway, Endpoint, compile_gateway
from switchyard_emulator.dataplane.gateway.telemetry import TelemetryWriter

log = logging.getLogger(__name__)

CLIENT_IDLE_TIMEOUT_S = 120.0
HEALTH_SAMPLE_INTERVAL_S = 1.0


class PortInUseError(Exception):
    """A listener's frontend port could not be bound; the message names gateway, listener, port."""


class UnknownGatewayError(LookupError):
    pass


class GatewayEngine(RequestProxy):
    """Every gateway this worker serves. Runs on one event loop; all methods are loop-only."""

    def __init__(self, telemetry: TelemetryWriter) -> None:
        super().__init__(telemetry)
        self._gateways: dict[str, GatewayRuntime] = {}
        self._port_owner: dict[Endpoint, Listener] = {}
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

    def _probe_traffic(self, gateway_id: str) -> TrafficSink:
        def record(address: str, sent: int, received: int) -> None:
            self._telemetry.record_traffic((time.time(), gateway_id, address, sent, received))

        return record

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
        prober = runtime.prober if runtime else GatewayProber(gateway_id, self._probe_traffic(gateway_id))
        try:
            await prober.prime(compiled)  # members a rule starts to use are probed before they get traffic
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        if runtime is None:
            runtime = GatewayRuntime(gateway_id, compiled, prober)
            self._gateways[gateway_id] = runtime
        # The swap: from here on every new request is routed by the new table.
        runtime.compiled = compiled
        runtime.vnet_addresses = frozenset(spec.vnet_addresses)
        runtime.round_robin = {pair: runtime.round_robin.get(pair, 0) for pair in compiled.probe_plans}
        for endpoint in old_endpoints & new_endpoints:  # a listener renamed on the same frontend and port
            runtime.listeners[endpoint].name = compiled.listeners_by_endpoint[endpoint].name
        for endpoint, sock in bound.items():
            listener = Listener(gateway_id, compiled.listeners_by_endpoint[endpoint].name, *endpoint)
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

    def _close_listener(self, listener: Listener) -> None:
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
