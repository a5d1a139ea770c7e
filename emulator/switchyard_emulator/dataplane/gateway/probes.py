"""Health probes, per (backend pool, backend settings) pair, as Application Gateway v2 runs them.

Azure's behaviour, which this follows (learn.microsoft.com, "Application Gateway health probes
overview"): probes start as soon as a rule associates a pool with backend settings; each server is
probed separately for every such pair; a server counts as *unhealthy until its first successful
probe* (so a new member gets no traffic before it answered one probe); a healthy server is marked
down after `unhealthy_threshold` consecutive failed probes and up again after one success; a
response is healthy when its status matches the probe's codes (default 200-399). A pool that no
rule uses is not probed.

What the health API reports per server: "Up" (probe succeeded), "Down", or "Unknown" (no probe
answer yet, or the pool is not probed). The first probe of a new server fires at once, not after
one interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from switchyard_emulator.dataplane.gateway.routing import CompiledGateway, ProbePlan
from switchyard_emulator.dataplane.gateway.upstream import ByteCounter, open_counted_connection

log = logging.getLogger(__name__)

ProbeState = Literal["Up", "Down", "Unknown"]
PairKey = tuple[str, str]  # (pool, settings)
MemberKey = tuple[str, str, str]  # (pool, settings, address)
# (address, bytes sent to it, bytes received from it): a probe's traffic, for the network metrics
TrafficSink = Callable[[str, int, int], None]


@dataclass(slots=True)
class MemberHealth:
    state: ProbeState = "Unknown"
    consecutive_failures: int = 0
    log: str = "not probed yet"


async def probe_once(address: str, plan: ProbePlan, counter: ByteCounter | None = None) -> tuple[bool, str]:
    """One probe: GET plan.path on a fresh connection. Returns (healthy, one-line log); the bytes it
    moved are added to `counter` (probes are traffic on the backend's network interface too).

    The Host header is the plan's host for this backend (the probe's host, the backend settings'
    host name, the backend's address, or Azure's default 127.0.0.1: see routing._probe_host),
    without a port, as Azure documents the default probe's host header ("appears as
    http://127.0.0.1/")."""
    request = (
        f"GET {plan.path} HTTP/1.1\r\nHost: {plan.host_for(address)}\r\n"
        "User-Agent: switchyard-appgw-probe/1.0\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(plan.timeout_s):
            reader, writer, _ = await open_counted_connection(address, plan.port, counter=counter)
            try:
                writer.write(request)
                status_line = await reader.readline()
            finally:
                writer.close()
    except ConnectionRefusedError:
        return False, f"probe GET {plan.path}: connection refused"
    except TimeoutError:
        return False, f"probe GET {plan.path}: no response within {plan.timeout_s:g}s"
    except OSError as error:
        return False, f"probe GET {plan.path}: connection failed ({error.strerror or error})"
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        reason = "connection closed before a response" if not status_line else "malformed response"
        return False, f"probe GET {plan.path}: {reason}"
    status = int(parts[1])
    if plan.accepts(status):
        return True, f"probe GET {plan.path} -> {status}"
    return False, f"probe GET {plan.path} -> {status} (healthy: {plan.status_text})"


class GatewayProber:
    """Runs the probes of one gateway and answers "which members may take traffic?" quickly."""

    def __init__(self, gateway_id: str, on_traffic: TrafficSink | None = None) -> None:
        self.gateway_id = gateway_id
        self._on_traffic = on_traffic
        self._plans: dict[PairKey, ProbePlan] = {}
        self._members: dict[PairKey, tuple[str, ...]] = {}
        self._health: dict[MemberKey, MemberHealth] = {}
        self._tasks: dict[MemberKey, asyncio.Task[None]] = {}
        # The routing hot path reads these tuples; they are rebuilt only when a state changes.
        self._healthy: dict[PairKey, tuple[str, ...]] = {}
        self._primed: dict[MemberKey, MemberHealth] = {}

    def healthy_members(self, pool: str, settings: str) -> tuple[str, ...]:
        return self._healthy.get((pool, settings), ())

    async def prime(self, compiled: CompiledGateway) -> None:
        """Probe, once and at once, every member `compiled` uses that has no health yet.

        Called before a new configuration takes traffic: a pool that a rule starts to use again
        (a switch back to the previous color) must not spend its first probe interval with no
        healthy member, which would answer users 502 in the middle of a switch."""
        unknown = [
            ((pool, settings, address), plan)
            for (pool, settings), plan in compiled.probe_plans.items()
            for address in compiled.pool_members[pool]
            if (pool, settings, address) not in self._health
        ]
        results = await asyncio.gather(*(probe_once(key[2], plan) for key, plan in unknown), return_exceptions=True)
        for (key, _plan), result in zip(unknown, results, strict=True):
            if isinstance(result, BaseException):
                continue  # the probe loop will find out
            healthy, line = result
            self._primed[key] = MemberHealth(
                state="Up" if healthy else "Down", consecutive_failures=0 if healthy else 1, log=line
            )

    def reconcile(self, compiled: CompiledGateway) -> None:
        """Probe exactly the pairs and members `compiled` uses. A member whose probe plan is
        unchanged keeps its state (re-applying a config must not make servers unhealthy); one
        whose port, path or status match changed starts over as Unknown."""
        wanted: dict[MemberKey, ProbePlan] = {}
        members: dict[PairKey, tuple[str, ...]] = {}
        for (pool, settings), plan in compiled.probe_plans.items():
            members[(pool, settings)] = compiled.pool_members[pool]
            for address in compiled.pool_members[pool]:
                wanted[(pool, settings, address)] = plan

        for key in list(self._tasks):
            old_plan = self._plans.get((key[0], key[1]))
            new_plan = wanted.get(key)
            if new_plan is None or new_plan != old_plan:
                self._tasks.pop(key).cancel()
                if new_plan is None or _resets_state(old_plan, new_plan):
                    self._health.pop(key, None)

        self._plans = {pair: compiled.probe_plans[pair] for pair in members}
        self._members = members
        primed, self._primed = self._primed, {}
        for key, plan in wanted.items():
            if key not in self._health:
                self._health[key] = primed.get(key) or MemberHealth()
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(
                    self._probe_loop(key, plan), name=f"probe {self.gateway_id} {key}"
                )
        for key in list(self._health):
            if key not in wanted:
                del self._health[key]
        self._rebuild_healthy()

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._healthy.clear()

    def pair_health(self, pool: str, settings: str) -> list[tuple[str, MemberHealth]]:
        return [
            (address, self._health.get((pool, settings, address), MemberHealth()))
            for address in self._members.get((pool, settings), ())
        ]

    def probed_pairs(self) -> list[PairKey]:
        return list(self._members)

    def _rebuild_healthy(self) -> None:
        self._healthy = {
            pair: tuple(
                address
                for address in addresses
                if self._health.get((pair[0], pair[1], address), MemberHealth()).state == "Up"
            )
            for pair, addresses in self._members.items()
        }

    async def _probe_loop(self, key: MemberKey, plan: ProbePlan) -> None:
        loop = asyncio.get_running_loop()
        address = key[2]
        while True:
            started = loop.time()
            counter = ByteCounter()
            try:
                healthy, line = await probe_once(address, plan, counter)
            except Exception as error:  # a probe bug must never stop probing
                log.exception("probe of %s failed unexpectedly", address)
                healthy, line = False, f"probe GET {plan.path}: internal error {type(error).__name__}"
            if self._on_traffic is not None and (counter.sent or counter.received):
                self._on_traffic(address, counter.sent, counter.received)
            self._record(key, plan, healthy, line)
            await asyncio.sleep(max(0.0, plan.interval_s - (loop.time() - started)))

    def _record(self, key: MemberKey, plan: ProbePlan, healthy: bool, line: str) -> None:
        health = self._health.get(key)
        if health is None:  # reconciled away while the probe was running
            return
        before = health.state
        if healthy:
            health.state = "Up"
            health.consecutive_failures = 0
            health.log = line
        else:
            health.consecutive_failures += 1
            failures = health.consecutive_failures
            if before == "Up" and failures < plan.unhealthy_threshold:
                health.log = f"{line} ({failures} of {plan.unhealthy_threshold} failures to mark down)"
            else:
                # A server that never answered is already unhealthy (Azure's default); one that was
                # Up goes Down at the threshold.
                health.state = "Down"
                health.log = f"{line} ({failures} consecutive failures)" if failures > 1 else line
        if health.state != before:
            log.info("gateway %s: %s %s -> %s (%s)", self.gateway_id, key, before, health.state, health.log)
            self._rebuild_healthy()


def _resets_state(old: ProbePlan | None, new: ProbePlan) -> bool:
    if old is None:
        return True
    return (old.port, old.path, old.status_ranges) != (new.port, new.path, new.status_ranges)
