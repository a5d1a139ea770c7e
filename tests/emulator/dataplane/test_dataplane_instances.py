"""LocalDataPlane instances: real processes of the sample image, each on its own loopback IP."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from dataplane_harness import (
    REPO,
    MiniArm,
    address_block,
    all_running,
    http_get,
    pack_artifact,
    process_alive,
    running_dataplane,
    scale_set_id,
    specs,
    wait_for,
)

from switchyard_emulator.dataplane.supervisor import SupervisorSettings

VMSS = scale_set_id("sample-test-blue")


def test_scale_to_three_runs_three_processes_answering_on_their_own_ips(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images", app_version="1.4.2")
    block = address_block()

    async def scenario() -> list[int]:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 1))
            await wait_for(lambda: all_running(dataplane, VMSS, 1), "instance 0 running")
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 3))
            states = dataplane.instance_states(VMSS)
            assert {iid: s.state for iid, s in states.items()}["0"] == "running"
            await wait_for(lambda: all_running(dataplane, VMSS, 3), "3 instances running")
            states = dataplane.instance_states(VMSS)
            pids = [states[str(i)].pid for i in range(3)]
            assert all(pid is not None for pid in pids) and len(set(pids)) == 3
            for index in range(3):
                status, version = await asyncio.to_thread(http_get, block.ip(index), block.port, "/version")
                assert status == 200
                assert version == {
                    "name": "sample",
                    "app_version": "1.4.2",
                    "gallery_version": "1000000.20261100.1",
                    "git_commit": "0123abcd",
                    "instance_id": str(index),
                }
            # Scale in to one: instances 1 and 2 stop, 0 keeps its process.
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 1))
            await wait_for(
                lambda: (
                    [s.state for s in dataplane.instance_states(VMSS).values()] == ["running", "stopped", "stopped"]
                ),
                "instances 1 and 2 stopped",
            )
            assert dataplane.instance_states(VMSS)["0"].pid == pids[0]
            assert not process_alive(pids[1]) and not process_alive(pids[2])
            return [pid for pid in pids if pid is not None]

    pids = asyncio.run(scenario())
    assert not any(process_alive(pid) for pid in pids), "stop() left an instance process behind"


def test_a_new_generation_replaces_the_process(tmp_path: Path) -> None:
    first = pack_artifact(tmp_path / "images", app_version="1.0.0")
    second = pack_artifact(tmp_path / "images", app_version="2.0.0")
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, first, 1, generation=1))
            await wait_for(lambda: all_running(dataplane, VMSS, 1, generation=1), "generation 1 running")
            old_pid = dataplane.instance_states(VMSS)["0"].pid
            assert old_pid is not None
            await dataplane.sync_scale_set(VMSS, specs(block, second, 1, generation=2))
            # At once, the instance reports the new generation as not running yet.
            runtime = dataplane.instance_states(VMSS)["0"]
            assert (runtime.state, runtime.generation) == ("creating", 2)
            await wait_for(lambda: all_running(dataplane, VMSS, 1, generation=2), "generation 2 running")
            new_pid = dataplane.instance_states(VMSS)["0"].pid
            assert new_pid != old_pid and not process_alive(old_pid)
            status, version = await asyncio.to_thread(http_get, block.ip(0), block.port, "/version")
            assert (status, version["app_version"]) == (200, "2.0.0")

    asyncio.run(scenario())


def test_a_killed_instance_stays_failed_with_exit_code_and_log_tail(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 2))
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "2 instances running")
            victim = dataplane.instance_states(VMSS)["1"].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: dataplane.instance_states(VMSS)["1"].state == "failed", "instance 1 failed")
            failed = dataplane.instance_states(VMSS)["1"]
            assert failed.exit_code == -signal.SIGKILL
            assert failed.pid is None
            assert any(f"listening on {block.ip(1)}:{block.port}" in line for line in failed.log_tail)
            assert failed.log_tail[-1] == "process killed by signal 9"
            # Azure does not restart a crashed app: the same model keeps it failed.
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 2))
            await asyncio.sleep(0.5)
            assert dataplane.instance_states(VMSS)["1"].state == "failed"
            assert dataplane.instance_states(VMSS)["0"].state == "running"
            # A reimage (new generation) brings it back.
            reimaged = specs(block, artifact, 2)
            reimaged[1] = reimaged[1].model_copy(update={"generation": 2})
            await dataplane.sync_scale_set(VMSS, reimaged)
            await wait_for(lambda: dataplane.instance_states(VMSS)["1"].state == "running", "instance 1 reimaged")

    asyncio.run(scenario())


def test_an_app_that_exits_reports_its_exit_code_and_output(tmp_path: Path) -> None:
    crashing = pack_artifact(
        tmp_path / "images",
        entrypoint=[
            "python3",
            "-c",
            "import sys; print('config error: DATABASE_URL is not set'); sys.exit(3)",
        ],
    )
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, crashing, 1))
            await wait_for(lambda: dataplane.instance_states(VMSS)["0"].state == "failed", "instance 0 failed")
            failed = dataplane.instance_states(VMSS)["0"]
            assert failed.exit_code == 3
            assert "config error: DATABASE_URL is not set" in failed.log_tail
            assert failed.log_tail[-1] == "process exited with code 3"

    asyncio.run(scenario())


def test_an_app_that_never_listens_fails_after_the_start_timeout(tmp_path: Path) -> None:
    silent = pack_artifact(
        tmp_path / "images",
        entrypoint=["python3", "-c", "import time; print('warming up', flush=True); time.sleep(60)"],
    )
    block = address_block()

    async def scenario() -> None:
        settings = SupervisorSettings(start_timeout_s=1.5, stop_grace_s=2.0)
        async with running_dataplane(tmp_path / "state", supervisor_settings=settings) as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, silent, 1))
            await wait_for(lambda: dataplane.instance_states(VMSS)["0"].pid is not None, "instance process started")
            runtime = dataplane.instance_states(VMSS)["0"]
            assert runtime.state == "creating"
            pid = runtime.pid
            assert pid is not None
            await wait_for(lambda: dataplane.instance_states(VMSS)["0"].state == "failed", "instance failed")
            failed = dataplane.instance_states(VMSS)["0"]
            assert "warming up" in failed.log_tail
            assert (
                failed.log_tail[-1] == f"instance did not listen on {block.ip(0)}:{block.port} within 1.5 s; stopped it"
            )
            assert not process_alive(pid)

    asyncio.run(scenario())


def test_an_unsafe_artifact_fails_the_instance_with_the_reason(tmp_path: Path) -> None:
    import io
    import tarfile

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        for name, data in (("manifest.json", b"{}"), ("../../outside.txt", b"gotcha")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, evil, 1))
            await wait_for(lambda: dataplane.instance_states(VMSS)["0"].state == "failed", "instance failed")
            (reason,) = dataplane.instance_states(VMSS)["0"].log_tail
            assert "member '../../outside.txt' escapes the image root" in reason

    asyncio.run(scenario())
    assert not (tmp_path / "outside.txt").exists()


def test_fault_profile_gives_about_the_stated_error_share_and_failing_health(tmp_path: Path) -> None:
    faulty = pack_artifact(tmp_path / "images", fault_profile={"error_rate": 0.2, "fail_health": True})
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, faulty, 1))
            await wait_for(lambda: all_running(dataplane, VMSS, 1), "instance running")

            def drive() -> list[int]:
                import http.client

                connection = http.client.HTTPConnection(block.ip(0), block.port, timeout=10)
                statuses = []
                for _ in range(1000):
                    connection.request("GET", "/work/echo")
                    response = connection.getresponse()
                    response.read()
                    statuses.append(response.status)
                connection.close()
                return statuses

            statuses = await asyncio.to_thread(drive)
            assert set(statuses) == {200, 500}
            share = statuses.count(500) / len(statuses)
            # Binomial(1000, 0.2): the standard deviation is 1.3 points; +-5 points is ~4 sigma.
            assert 0.15 <= share <= 0.25, share
            status, body = await asyncio.to_thread(http_get, block.ip(0), block.port, "/health")
            assert status == 503 and body["status"] == "unhealthy"

    asyncio.run(scenario())


def test_cpu_and_memory_samples_appear_for_busy_instances(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()
    db = tmp_path / "state" / "telemetry.sqlite"

    def samples_for(vm_name: str) -> list[tuple[float, float]]:
        with sqlite3.connect(db) as connection:
            return connection.execute(
                "SELECT cpu_percent, available_memory_bytes FROM instance_samples WHERE vm_name = ?",
                (vm_name,),
            ).fetchall()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 2))
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "instances running")
            stop = threading.Event()

            def burn() -> None:
                while not stop.is_set():
                    http_get(block.ip(0), block.port, "/work/compute?n=200000")

            burner = threading.Thread(target=burn, daemon=True)
            burner.start()
            try:
                await wait_for(
                    lambda: any(cpu > 25 for cpu, _ in samples_for("sample-test-blue_0")),
                    "a busy CPU sample for instance 0",
                    timeout_s=30,
                )
            finally:
                stop.set()
                await asyncio.to_thread(burner.join)
            idle = samples_for("sample-test-blue_1")
            assert idle and all(0 <= cpu <= 100 for cpu, _ in idle)
            assert all(0 < memory <= 1 << 30 for _, memory in idle)
            # The same samples answer Azure Monitor's "Percentage CPU" split by VMName.
            now = time.time()
            body = await dataplane.metrics(
                VMSS,
                "Microsoft.Compute/virtualMachineScaleSets",
                {
                    "timespan": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now - 120))}/"
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now + 1))}",
                    "interval": "FULL",
                    "metricnames": "Percentage CPU",
                    "aggregation": "Maximum",
                    "$filter": "VMName eq '*'",
                },
            )
            by_vm = {
                series["metadatavalues"][0]["value"]: series["data"][0]["maximum"]
                for series in body["value"][0]["timeseries"]
            }
            assert set(by_vm) == {"sample-test-blue_0", "sample-test-blue_1"}
            assert by_vm["sample-test-blue_0"] > 25

    asyncio.run(scenario())


def test_a_fresh_data_plane_on_the_same_state_dir_runs_the_instances_again(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()

    async def run_once() -> int:
        async with running_dataplane(tmp_path / "state") as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 2))
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "instances running")
            status, _ = await asyncio.to_thread(http_get, block.ip(1), block.port, "/health")
            assert status == 200
            pid = dataplane.instance_states(VMSS)["1"].pid
            assert pid is not None
            return pid

    first = asyncio.run(run_once())
    second = asyncio.run(run_once())  # the control plane re-syncs every scale set at startup
    assert first != second
    assert not process_alive(first) and not process_alive(second)


def test_instances_die_with_a_killed_emulator_process(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed emulator takes its instances (and gateway worker) with it."""
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from dataplane_harness import MiniArm, all_running, specs, AddressBlock, wait_for
        from switchyard_emulator.dataplane.local import LocalDataPlane
        from pathlib import Path

        async def main():
            dataplane = LocalDataPlane(Path({str(tmp_path / "state")!r}))
            await dataplane.start(MiniArm())
            block = AddressBlock({block.prefix!r}, {block.port})
            await dataplane.sync_scale_set("/vmss/x", specs(block, Path({str(artifact)!r}), 2))
            await wait_for(lambda: all_running(dataplane, "/vmss/x", 2), "running")
            pids = [s.pid for s in dataplane.instance_states("/vmss/x").values()]
            print(json.dumps({{"instances": pids, "gateway": dataplane.fleet.worker_pid}}), flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    emulator = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        assert line, "the emulator script exited before starting its instances"
        import json

        started = json.loads(line)
        pids = [*started["instances"], started["gateway"]]
        assert all(process_alive(pid) for pid in pids)
        emulator.kill()
        emulator.wait(timeout=10)

        async def gone() -> None:
            await wait_for(lambda: not any(process_alive(pid) for pid in pids), "instances to die", timeout_s=10)

        asyncio.run(gone())
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.wait(timeout=10)


def test_remove_scale_set_stops_every_instance(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state", MiniArm()) as dataplane:
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 2))
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "instances running")
            pids = [s.pid for s in dataplane.instance_states(VMSS).values() if s.pid]
            await dataplane.remove_scale_set(VMSS)
            assert dataplane.instance_states(VMSS) == {}
            assert not any(process_alive(pid) for pid in pids)

    asyncio.run(scenario())
