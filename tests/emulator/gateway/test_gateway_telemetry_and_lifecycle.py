"""What the gateway records (access log, health samples) and how its worker process lives and dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from gateway_harness import (
    GATEWAY_ID,
    BackendSet,
    make_spec,
    pid_alive,
    running_fleet,
    wait_for_health,
    wait_until,
    worker_children,
)

from switchyard_emulator.dataplane.gateway import GatewayFleet
from switchyard_emulator.testing import free_port

StartBackends = Callable[[int], BackendSet]


def test_access_log_matches_what_the_client_observed(tmp_path: Path, start_backends: StartBackends) -> None:
    backends = start_backends(3)
    port = free_port()
    db_path = tmp_path / "telemetry.sqlite"

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            spec = make_spec(
                {"blue": [b.ip for b in backends.backends]}, {"production": port},
                {"production": ("production", "blue")}, backends.port, request_timeout_s=1.0,
            )  # fmt: skip
            await fleet.apply(spec)
            await wait_for_health(fleet, GATEWAY_ID, {b.ip: "Up" for b in backends.backends})

            observed: Counter[tuple[str | None, int]] = Counter()
            paths = ["/whoami"] * 40 + ["/no-such-path"] * 5 + ["/sleep?ms=2000"] * 2 + ["/hangup"] * 2
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                for path in paths:
                    response = await client.get(path)
                    observed[(response.headers.get("x-backend"), response.status_code)] += 1
                posted = await client.post("/echo", content=b"z" * 5000)
                assert posted.content == b"z" * 5000
                observed[(posted.headers.get("x-backend"), 200)] += 1
            await fleet.flush()

            with sqlite3.connect(db_path) as db:
                rows = db.execute(
                    "SELECT backend, status, backend_status, method, path, listener, rule, pool, settings,"
                    " client, bytes_in, bytes_out, time_taken_ms, backend_time_ms FROM access_log"
                    " WHERE gateway_id = ?",
                    (GATEWAY_ID,),
                ).fetchall()
            assert len(rows) == len(paths) + 1
            name_of = {b.address: b.name for b in backends.backends}
            # Requests the backend answered: the logged backend and status are what the client saw.
            logged = Counter((name_of.get(r[0]), r[1]) for r in rows if r[2] is not None)
            answered = Counter({key: n for key, n in observed.items() if key[0] is not None})
            assert logged == answered
            # 504 (backend too slow) and 502 (backend hung up) carry no backend status.
            failed = Counter(r[1] for r in rows if r[2] is None)
            assert failed == Counter({504: 2, 502: 2})
            assert observed[(None, 504)] == 2 and observed[(None, 502)] == 2
            for backend, _, _, method, path, listener, rule, pool, settings, client, *_ in rows:
                assert (listener, rule, pool, settings) == ("production", "production", "blue", "service")
                assert client.startswith("127.0.0.1:") and client.split(":")[1].isdigit()
                assert backend in name_of
                assert method in {"GET", "POST"} and path in set(paths) | {"/echo"}
            post = next(r for r in rows if r[3] == "POST")
            assert post[10] > 5000 and post[11] > 5000  # bytes in / out include the body
            assert all(r[12] >= (r[13] or 0) for r in rows)  # gateway time covers backend time

            # Health samples: one per second per probed (pool, settings) pair.
            def samples() -> list[tuple[int, int]]:
                with sqlite3.connect(db_path) as db:
                    return db.execute(
                        "SELECT healthy, unhealthy FROM backend_health_samples"
                        " WHERE gateway_id = ? AND pool = 'blue' AND settings = 'service'",
                        (GATEWAY_ID,),
                    ).fetchall()

            while not samples():
                await asyncio.sleep(0.2)
                await fleet.flush()
            assert samples()[-1] == (3, 0)

    asyncio.run(scenario())


def test_stop_leaves_no_process_behind(tmp_path: Path, start_backends: StartBackends) -> None:
    before = set(worker_children(os.getpid()))  # other tests' session fixtures may have children too
    backends = start_backends(1)
    port = free_port()

    async def scenario() -> int:
        fleet = GatewayFleet(tmp_path, tmp_path / "telemetry.sqlite")
        await fleet.start()
        pid = fleet.worker_pid
        assert pid is not None and pid_alive(pid)
        spec = make_spec(
            {"blue": [backends[0].ip]}, {"production": port}, {"production": ("production", "blue")},
            backends.port,
        )  # fmt: skip
        await fleet.apply(spec)
        await wait_for_health(fleet, GATEWAY_ID, {backends[0].ip: "Up"})
        assert worker_children(pid) == []  # the worker spawns nothing of its own
        await fleet.stop()
        return pid

    pid = asyncio.run(scenario())
    assert not pid_alive(pid)
    left = [child for child in worker_children(os.getpid()) if child not in before]
    assert left == [backends[0].process.pid]  # only the test's own backend
    assert "stopped" in (tmp_path / "gateway" / "worker.log").read_text()  # a clean exit, not a kill
    with httpx.Client() as client:
        try:
            client.get(f"http://127.0.0.1:{port}/whoami")
            raise AssertionError("the listener still answers after stop()")
        except httpx.ConnectError:
            pass


def test_the_worker_dies_with_the_emulator_process(tmp_path: Path, start_backends: StartBackends) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the process that owns the fleet; its worker must go too."""
    backends = start_backends(1)
    port = free_port()
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from gateway_harness import make_spec
        from switchyard_emulator.dataplane.gateway import GatewayFleet

        async def main():
            fleet = GatewayFleet(Path({str(tmp_path)!r}), Path({str(tmp_path / "t.sqlite")!r}))
            await fleet.start()
            await fleet.apply(make_spec({{"blue": [{backends[0].ip!r}]}}, {{"production": {port}}},
                                        {{"production": ("production", "blue")}}, {backends.port}))
            print(fleet.worker_pid, flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        worker_pid = int(owner.stdout.readline())
        assert pid_alive(worker_pid)
        wait_until(lambda: _answers(port), what="the gateway to answer")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        wait_until(lambda: not pid_alive(worker_pid), what="the orphaned worker to exit")
        assert not _answers(port)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_a_crashed_worker_is_restarted_with_the_last_configuration(
    tmp_path: Path, start_backends: StartBackends
) -> None:
    backends = start_backends(2)
    port = free_port()

    async def scenario() -> None:
        async with running_fleet(tmp_path) as fleet:
            spec = make_spec(
                {"blue": [backends[0].ip], "green": [backends[1].ip]}, {"production": port},
                {"production": ("production", "green")}, backends.port,
            )  # fmt: skip
            await fleet.apply(spec)
            await wait_for_health(fleet, GATEWAY_ID, {backends[1].ip: "Up"})
            first = fleet.worker_pid
            assert first is not None
            os.kill(first, signal.SIGKILL)

            # The next call waits for the restarted worker and is answered by it.
            report = await fleet.health(GATEWAY_ID)
            assert set(report) == {"blue", "green"}
            assert fleet.worker_pid not in (None, first)
            await wait_for_health(fleet, GATEWAY_ID, {backends[1].ip: "Up"})
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/whoami")).text == "b1"

    asyncio.run(scenario())


def _answers(port: int) -> bool:
    try:
        with httpx.Client(timeout=2) as client:
            return client.get(f"http://127.0.0.1:{port}/whoami").status_code == 200
    except httpx.HTTPError:
        return False
