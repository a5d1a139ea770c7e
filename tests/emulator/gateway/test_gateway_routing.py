"""The gateway as a client sees it: round robin, rule switches under load, probes, draining,
configuration errors. Real backend processes, a real worker process, real HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gateway_harness import (
    GATEWAY_ID,
    BackendSet,
    make_spec,
    running_fleet,
    wait_for_health,
    wait_for_inflight,
)

from switchyard_emulator.dataplane.api import GatewaySpec
from switchyard_emulator.dataplane.gateway import GatewayConfigError, GatewayPortInUseError
from switchyard_emulator.testing import free_port

StartBackends = Callable[[int], BackendSet]


def test_round_robin_spreads_requests_evenly_over_three_backends(tmp_path: Path, start_backends: StartBackends) -> None:
    backends = start_backends(3)
    port = free_port()

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            spec = make_spec(
                {"blue": [b.ip for b in backends.backends]},
                {"production": port},
                {"production": ("production", "blue")},
                backends.port,
            )
            await fleet.apply(spec)
            await wait_for_health(fleet, GATEWAY_ID, {b.ip: "Up" for b in backends.backends})
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                served = [(await client.get("/whoami")).text for _ in range(30)]
            assert Counter(served) == {"b0": 10, "b1": 10, "b2": 10}
            # Strict rotation, not just an even total.
            assert all(served[i] != served[i + 1] for i in range(len(served) - 1))
            assert served[0:3] == served[3:6]

    asyncio.run(scenario())


def test_repointing_a_rule_under_steady_load_fails_no_request(tmp_path: Path, start_backends: StartBackends) -> None:
    backends = start_backends(4)
    blue, green = [backends[0].ip, backends[1].ip], [backends[2].ip, backends[3].ip]
    color_of = {"b0": "blue", "b1": "blue", "b2": "green", "b3": "green"}
    production, test_port = free_port(), free_port()

    def spec_for(live: str) -> GatewaySpec:
        idle = "green" if live == "blue" else "blue"
        return make_spec(
            {"blue": blue, "green": green},
            {"production": production, "test": test_port},
            {"production": ("production", live), "test": ("test", idle)},
            backends.port,
        )

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            await fleet.apply(spec_for("blue"))
            await wait_for_health(fleet, GATEWAY_ID, {ip: "Up" for ip in blue + green})

            # (started, finished, status, backend) of every request the load made
            results: list[tuple[float, float, int, str]] = []
            failures: list[str] = []
            stop = asyncio.Event()

            async def load(client: httpx.AsyncClient, worker: int) -> None:
                # ~8 workers x ~40 requests/s; every 4th request stays in flight for 30 ms so that
                # switches happen with requests in flight on the old pool.
                n = 0
                while not stop.is_set():
                    path = "/sleep?ms=30" if (n + worker) % 4 == 0 else "/whoami"
                    started = time.monotonic()
                    try:
                        response = await client.get(path)
                        results.append(
                            (
                                started,
                                time.monotonic(),
                                response.status_code,
                                response.headers.get("x-backend", ""),
                            )
                        )
                        if response.status_code != 200:
                            failures.append(f"{path}: {response.status_code}")
                    except httpx.HTTPError as error:
                        failures.append(f"{path}: {error!r}")
                    n += 1
                    await asyncio.sleep(0.02)

            switches: list[tuple[float, float, str]] = []  # (apply called, apply returned, live color)
            limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{production}", limits=limits) as client:
                workers = [asyncio.create_task(load(client, w)) for w in range(8)]
                await asyncio.sleep(0.5)
                for live in ["green", "blue", "green", "blue", "green", "blue"]:
                    called = time.monotonic()
                    await fleet.apply(spec_for(live))
                    switches.append((called, time.monotonic(), live))
                    await asyncio.sleep(0.4)
                stop.set()
                await asyncio.gather(*workers)

            duration = results[-1][1] - results[0][0]
            print(f"load: {len(results)} requests in {duration:.1f}s = {len(results) / duration:.0f}/s")
            assert failures == []
            # Every request that started after a switch returned, and before the next switch began,
            # was served by the pool the switch made live.
            for index, (_, returned, live) in enumerate(switches):
                next_call = switches[index + 1][0] if index + 1 < len(switches) else float("inf")
                window = [r for r in results if returned <= r[0] and r[1] < next_call]
                assert window, f"no requests observed after switch {index}"
                assert {color_of[backend] for _, _, _, backend in window} == {live}
            # And requests in flight across a switch finished where they started (status 200 above).
            spanning = [r for r in results for s in switches if r[0] < s[0] and r[1] > s[1]]
            print(f"{len(spanning)} requests were in flight across a switch")

    asyncio.run(scenario())


def test_killed_backend_is_marked_down_by_probes_and_avoided(tmp_path: Path, start_backends: StartBackends) -> None:
    backends = start_backends(3)
    port = free_port()

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            spec = make_spec(
                {"blue": [b.ip for b in backends.backends]},
                {"production": port},
                {"production": ("production", "blue")},
                backends.port,
            )
            await fleet.apply(spec)
            await wait_for_health(fleet, GATEWAY_ID, {b.ip: "Up" for b in backends.backends})

            backends[1].kill()
            logs = await wait_for_health(fleet, GATEWAY_ID, {backends[1].ip: "Down"})
            assert "connection refused" in logs[backends[1].ip]

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                responses = [await client.get("/whoami") for _ in range(20)]
            assert {r.status_code for r in responses} == {200}
            assert Counter(r.text for r in responses) == {"b0": 10, "b2": 10}

            # A probe answer outside the healthy status range marks a server down too, and one good
            # answer brings it back.
            async with httpx.AsyncClient() as direct:
                await direct.post(f"http://{backends[2].address}/admin/health?status=503")
                logs = await wait_for_health(fleet, GATEWAY_ID, {backends[2].ip: "Down"})
                assert "-> 503" in logs[backends[2].ip]
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    assert {(await client.get("/whoami")).text for _ in range(6)} == {"b0"}
                await direct.post(f"http://{backends[2].address}/admin/health?status=200")
                await wait_for_health(fleet, GATEWAY_ID, {backends[2].ip: "Up"})

            # No healthy member at all: the gateway itself answers 502.
            backends[0].kill()
            backends[2].kill()
            await wait_for_health(fleet, GATEWAY_ID, {backends[0].ip: "Down", backends[2].ip: "Down"})
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.get("/whoami")
            assert response.status_code == 502
            assert "Microsoft-Azure-Application-Gateway" in response.text

    asyncio.run(scenario())


def test_a_new_member_gets_traffic_only_after_its_first_successful_probe(
    tmp_path: Path, start_backends: StartBackends
) -> None:
    backends = start_backends(2)
    port = free_port()

    def spec(members: list[str]) -> GatewaySpec:
        return make_spec(
            {"blue": members}, {"production": port}, {"production": ("production", "blue")}, backends.port,
            probe_timeout_s=10.0,
        )  # fmt: skip

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            await fleet.apply(spec([backends[0].ip]))
            await wait_for_health(fleet, GATEWAY_ID, {backends[0].ip: "Up"})
            # b1 is healthy, but its first probe answer takes 3 s. A configuration that adds it
            # takes traffic only once that probe has answered (Azure: unhealthy until the first
            # successful probe; the gateway probes new members before it routes to them), so
            # meanwhile every request still goes to b0.
            async with httpx.AsyncClient() as direct:
                await direct.post(f"http://{backends[1].address}/admin/health?status=200&delay_ms=3000")
            applying = asyncio.create_task(fleet.apply(spec([backends[0].ip, backends[1].ip])))
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                before = [(await client.get("/whoami")).text for _ in range(10)]
                assert not applying.done()  # so all 10 requests ran before its first probe answered
                assert set(before) == {"b0"}
                await applying
                report = {s.address: s.health for s in (await fleet.health(GATEWAY_ID))["blue"]}
                assert report[backends[1].ip] == "Up"
                after = [(await client.get("/whoami")).text for _ in range(10)]
            assert Counter(after) == {"b0": 5, "b1": 5}

    asyncio.run(scenario())


def test_connection_draining_keeps_an_in_flight_request_on_a_removed_member(
    tmp_path: Path, start_backends: StartBackends
) -> None:
    backends = start_backends(2)
    port = free_port()
    b0, b1 = backends[0].ip, backends[1].ip

    def spec(members: list[str], draining_s: float) -> GatewaySpec:
        return make_spec(
            {"blue": members}, {"production": port}, {"production": ("production", "blue")}, backends.port,
            draining_timeout_s=draining_s,
        )  # fmt: skip

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            await fleet.apply(spec([b0], draining_s=10))
            await wait_for_health(fleet, GATEWAY_ID, {b0: "Up"})
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                slow = asyncio.create_task(client.get("/sleep?ms=1500"))
                await wait_for_inflight(backends[0], 1)
                await fleet.apply(spec([b1], draining_s=10))  # b0 leaves the pool
                report = await fleet.health(GATEWAY_ID)
                draining = [s for s in report["blue"] if s.health == "Draining"]
                assert [s.address for s in draining] == [b0]
                await wait_for_health(fleet, GATEWAY_ID, {b1: "Up"})
                assert (await client.get("/whoami")).text == "b1"  # new requests avoid b0
                response = await slow
                assert (response.status_code, response.text) == (200, "b0")
                # Drained: b0 is gone from the report.
                assert [s.address for s in (await fleet.health(GATEWAY_ID))["blue"]] == [b1]

                # A draining timeout shorter than the request cuts it: the client gets a 502.
                await fleet.apply(spec([b0], draining_s=0.3))
                await wait_for_health(fleet, GATEWAY_ID, {b0: "Up"})
                slow = asyncio.create_task(client.get("/sleep?ms=5000"))
                await wait_for_inflight(backends[0], 1)
                await fleet.apply(spec([b1], draining_s=0.3))
                response = await slow
                assert response.status_code == 502

    asyncio.run(scenario())


def test_a_port_conflict_is_reported_clearly_and_the_old_config_keeps_serving(
    tmp_path: Path, start_backends: StartBackends
) -> None:
    backends = start_backends(2)
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            first = make_spec(
                {"blue": [backends[0].ip], "green": [backends[1].ip]}, {"production": port},
                {"production": ("production", "blue")}, backends.port,
            )  # fmt: skip
            await fleet.apply(first)
            await wait_for_health(fleet, GATEWAY_ID, {backends[0].ip: "Up"})

            # The new config repoints the rule to green AND adds a listener on a taken port.
            conflicting = make_spec(
                {"blue": [backends[0].ip], "green": [backends[1].ip]}, {"production": port, "test": taken},
                {"production": ("production", "green"), "test": ("test", "blue")}, backends.port,
            )  # fmt: skip
            with pytest.raises(GatewayPortInUseError) as raised:
                await fleet.apply(conflicting)
            message = str(raised.value)
            assert GATEWAY_ID in message and "'test'" in message and str(taken) in message
            assert "in use" in message

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert {(await client.get("/whoami")).text for _ in range(4)} == {"b0"}  # still blue

            # An invalid spec is refused with the name of what is missing; blue still serves.
            broken = make_spec(
                {"blue": [backends[0].ip]}, {"production": port}, {"production": ("production", "purple")},
                backends.port,
            )  # fmt: skip
            with pytest.raises(GatewayConfigError, match="backend pool 'purple' does not exist"):
                await fleet.apply(broken)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/whoami")).text == "b0"

            # Once the port is free the same spec applies.
            blocker.close()
            await fleet.apply(conflicting)
            await wait_for_health(fleet, GATEWAY_ID, {backends[1].ip: "Up"})
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/whoami")).text == "b1"
                assert (await client.get(f"http://127.0.0.1:{taken}/whoami")).text == "b0"

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()


def test_remove_closes_the_gateway_listeners(tmp_path: Path, start_backends: StartBackends) -> None:
    backends = start_backends(1)
    port = free_port()

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            spec = make_spec(
                {"blue": [backends[0].ip]}, {"production": port}, {"production": ("production", "blue")},
                backends.port,
            )  # fmt: skip
            await fleet.apply(spec)
            await wait_for_health(fleet, GATEWAY_ID, {backends[0].ip: "Up"})
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/whoami")).status_code == 200
            await fleet.remove(GATEWAY_ID)
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as client:
                    await client.get(f"http://127.0.0.1:{port}/whoami")
            await fleet.remove(GATEWAY_ID)  # removing twice is fine, like an ARM DELETE

    asyncio.run(scenario())
