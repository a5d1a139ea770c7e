"""Scale-set saturation metrics from what really happened: "Network In Total" / "Network Out Total"
are the bytes the gateway carried to and from each instance, "Available Memory Bytes" is the VM
size's memory less the instance's resident memory."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dataplane_harness import (
    address_block,
    all_running,
    gateway_id,
    pack_artifact,
    running_dataplane,
    scale_set_id,
    specs,
    wait_for,
)

from switchyard_emulator.dataplane.api import (
    BackendSettingsSpec,
    GatewaySpec,
    ListenerSpec,
    PoolSpec,
    ProbeSpec,
    RuleSpec,
)
from switchyard_emulator.dataplane.errors import MetricsQueryError
from switchyard_emulator.dataplane.local import LocalDataPlane
from switchyard_emulator.dataplane.procfs import CLOCK_TICKS, GroupUsageReader, group_usage, read_stat
from switchyard_emulator.dataplane.supervisor import vcpu_percent
from switchyard_emulator.dataplane.timespec import format_instant
from switchyard_emulator.testing import free_port

VMSS = scale_set_id("sample-net-blue")
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
GATEWAY = gateway_id("sample-net-agw")
BODY_BYTES = 200_000
REQUESTS = 40
# Per request: the request and response heads (a few hundred bytes each; the gateway adds its
# X-Forwarded-* headers). Health probes add their own small exchanges.
HEAD_ALLOWANCE = 1024
PROBE_ALLOWANCE = 200_000


def _gateway(listener_port: int, addresses: list[str], service_port: int) -> GatewaySpec:
    return GatewaySpec(
        gateway_id=GATEWAY,
        listeners=[ListenerSpec(name="production", port=listener_port)],
        pools=[PoolSpec(name="blue", addresses=addresses)],
        settings=[BackendSettingsSpec(name="service", port=service_port, request_timeout_s=10.0, probe="health")],
        probes=[ProbeSpec(name="health", path="/health", interval_s=1.0, timeout_s=2.0, unhealthy_threshold=2)],
        rules=[RuleSpec(name="production", listener="production", pool="blue", settings="service", priority=100)],
    )


def _post_bodies(port: int) -> tuple[dict[str, int], int]:
    """POST REQUESTS bodies of BODY_BYTES through the gateway on one keep-alive connection; per
    instance, the requests it answered, and the response body bytes the client got."""
    answered: dict[str, int] = {}
    response_bytes = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    for _ in range(REQUESTS):
        connection.request("POST", "/work/echo", body=b"x" * BODY_BYTES)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        assert json.loads(body)["body_bytes"] == BODY_BYTES
        response_bytes += len(body)
        instance = response.getheader("X-Instance-Id", "?")
        answered[instance] = answered.get(instance, 0) + 1
    connection.close()
    return answered, response_bytes


async def _per_vm(dataplane: LocalDataPlane, metric: str, aggregation: str, timespan: str) -> dict[str, float]:
    body: dict[str, Any] = await dataplane.metrics(
        VMSS,
        VMSS_TYPE,
        {
            "timespan": timespan,
            "interval": "FULL",
            "metricnames": metric,
            "aggregation": aggregation,
            "$filter": "VMName eq '*'",
        },
    )
    value = body["value"][0]
    return {
        series["metadatavalues"][0]["value"]: series["data"][0].get(aggregation.lower(), 0.0)
        for series in value["timeseries"]
    }


def test_network_totals_are_the_bytes_the_gateway_carried_per_instance(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()
    listener_port = free_port()
    instances = specs(block, artifact, 2, vmss="sample-net-blue")
    addresses = [spec.ip for spec in instances]

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            started = time.time()
            await dataplane.sync_scale_set(VMSS, instances)
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "2 instances running")
            await dataplane.apply_gateway(_gateway(listener_port, addresses, block.port))

            async def all_up() -> bool:
                report = await dataplane.backend_health(GATEWAY)
                return all(server.health == "Up" for server in report.get("blue", [])) and bool(report.get("blue"))

            await wait_for(all_up, "every backend Up")
            answered, response_bytes = await asyncio.to_thread(_post_bodies, listener_port)
            await dataplane.fleet.flush()
            timespan = f"{format_instant(started - 1)}/{format_instant(time.time() + 1)}"

            network_in = await _per_vm(dataplane, "Network In Total", "Total", timespan)
            network_out = await _per_vm(dataplane, "Network Out Total", "Total", timespan)
            by_vm = {f"sample-net-blue_{instance_id}": count for instance_id, count in answered.items()}
            assert set(by_vm) == set(network_in) == set(network_out), (by_vm, network_in)
            for vm, count in by_vm.items():
                sent = count * BODY_BYTES
                assert sent <= network_in[vm] <= sent + count * HEAD_ALLOWANCE + PROBE_ALLOWANCE, (vm, network_in)
            # The echo answers are small; what the instances sent is those answers, their heads
            # and the probe answers.
            assert response_bytes <= sum(network_out.values())
            assert sum(network_out.values()) <= response_bytes + REQUESTS * HEAD_ALLOWANCE + 2 * PROBE_ALLOWANCE

    asyncio.run(scenario())


def test_available_memory_is_the_vm_sizes_memory_less_the_instances_resident_memory(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()
    four_gib = 4 << 30  # Standard_B2s
    instances = [spec.model_copy(update={"memory_bytes": four_gib}) for spec in specs(block, artifact, 1)]

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            started = time.time()
            await dataplane.sync_scale_set(VMSS, instances)
            await wait_for(lambda: all_running(dataplane, VMSS, 1), "instance running")
            pid = dataplane.instance_states(VMSS)["0"].pid
            assert pid is not None

            async def sampled() -> bool:
                timespan = f"{format_instant(started - 1)}/{format_instant(time.time() + 1)}"
                return bool(await _per_vm(dataplane, "Available Memory Bytes", "Average", timespan))

            await wait_for(sampled, "memory samples")
            timespan = f"{format_instant(started - 1)}/{format_instant(time.time() + 1)}"
            available = next(iter((await _per_vm(dataplane, "Available Memory Bytes", "Average", timespan)).values()))
            rss = group_usage({pid})[pid].rss_bytes
            assert 0 < four_gib - available < 512 << 20  # the app's resident set, not the host's memory
            assert abs((four_gib - available) - rss) < 64 << 20

            # A new VM size changes what is measured, never the process.
            await dataplane.sync_scale_set(VMSS, [instances[0].model_copy(update={"memory_bytes": 8 << 30})])
            await asyncio.sleep(0.5)
            assert dataplane.instance_states(VMSS)["0"].pid == pid

    asyncio.run(scenario())


def test_an_unknown_scale_set_metric_is_refused_as_azure_refuses_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state") as dataplane:
            try:
                await dataplane.metrics(VMSS, VMSS_TYPE, {"metricnames": "Network In Totals"})
            except MetricsQueryError as error:
                assert error.status == 400
                assert "Failed to find metric configuration" in error.message
                assert "Network In Total," in error.message
            else:
                raise AssertionError("an unknown metric name was accepted")

    asyncio.run(scenario())


def test_a_cpu_bound_instance_reads_near_100_percent_even_when_it_shares_a_cpu(tmp_path: Path) -> None:
    """Two CPU-bound process groups pinned to one CPU each get about half of it. On Azure each
    would be a VM with its own vCPU reading ~100 %, so that is what Percentage CPU must say."""
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            start_new_session=True,  # each leads its own group, as an instance does
        )
        for _ in range(2)
    ]
    try:
        for hog in hogs:
            os.sched_setaffinity(hog.pid, {min(os.sched_getaffinity(0))})
        groups = {hog.pid for hog in hogs}
        time.sleep(0.5)
        before, started = group_usage(groups), time.time()
        time.sleep(2.0)
        after, interval_s = group_usage(groups), time.time() - started
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for pid in groups:
        busy_s = (after[pid].cpu_ticks - before[pid].cpu_ticks) / CLOCK_TICKS
        waited_s = (after[pid].run_queue_wait_ns - before[pid].run_queue_wait_ns) / 1e9
        assert busy_s / interval_s < 0.75, "the two hogs were meant to share one CPU"
        assert waited_s > 0.25 * interval_s
        assert vcpu_percent(busy_s=busy_s, waited_s=waited_s, interval_s=interval_s) > 85


def test_an_idle_or_half_busy_instance_is_not_made_to_look_busy() -> None:
    assert vcpu_percent(busy_s=0.0, waited_s=0.0, interval_s=1.0) == 0.0
    assert vcpu_percent(busy_s=0.5, waited_s=0.0, interval_s=1.0) == 50.0
    # Half busy while a neighbour held the CPU for a quarter of the second: half of what it had.
    assert round(vcpu_percent(busy_s=0.375, waited_s=0.25, interval_s=1.0)) == 50
    # Run-queue wait summed over several threads can exceed the interval: never above 100 %.
    assert vcpu_percent(busy_s=0.4, waited_s=1.5, interval_s=1.0) == 100.0


# An instance whose process forks a worker, starts a daemon (its parent exits, so the daemon leaves
# the leader's tree but stays in the group) and a process that moves to a session of its own.
_FORKING_INSTANCE = """
import os, sys, time
def hold(mib):
    data = b"x" * (mib << 20)  # written, so resident
    time.sleep(3600)
pipe_read, pipe_write = os.pipe()
worker = os.fork()
if worker == 0:
    hold(30)
middle = os.fork()
if middle == 0:
    daemon = os.fork()
    if daemon == 0:
        hold(50)
    os.write(pipe_write, f"{daemon}\\n".encode())
    os._exit(0)
os.waitpid(middle, 0)
daemon = int(os.read(pipe_read, 64).decode())
escaped = os.fork()
if escaped == 0:
    os.setsid()
    hold(40)
print(worker, daemon, escaped, flush=True)
time.sleep(3600)
"""


def test_a_groups_usage_counts_its_forked_workers_and_daemons_but_not_a_process_that_left_it() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", _FORKING_INSTANCE], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout is not None
    worker, daemon, escaped = (int(pid) for pid in leader.stdout.readline().split())
    try:
        time.sleep(0.5)  # all of them hold their memory
        daemon_stat = read_stat(daemon)
        assert daemon_stat is not None and daemon_stat.ppid != leader.pid, "the daemon left the leader's tree"
        reader = GroupUsageReader(full_scan_every_s=3600)
        first = reader.usage({leader.pid})[leader.pid]  # the first look scans all of /proc
        walked = reader.usage({leader.pid})[leader.pid]  # then only the group's own processes
        scanned = group_usage({leader.pid})[leader.pid]
        members = [read_stat(pid) for pid in (leader.pid, worker, daemon)]
        expected = sum(stat.rss_bytes for stat in members if stat is not None)
        for usage in (first, walked, scanned):
            assert abs(usage.rss_bytes - expected) < 2 << 20
        assert expected > 80 << 20  # the worker's 30 MiB and the daemon's 50, not the escapee's 40
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        os.kill(escaped, signal.SIGKILL)
        leader.wait()


# An instance that does its work in short-lived children: each burns a quarter of a CPU second and
# exits, reaped by the leader, between two looks; the leader itself only waits.
_SHORT_LIVED_WORKERS = """
import os, sys, time
sys.stdin.readline()  # the test has taken its first look
for _ in range(4):
    child = os.fork()
    if child == 0:
        start = time.process_time()
        while time.process_time() - start < 0.25:
            pass
        os._exit(0)
    os.waitpid(child, 0)
print("done", flush=True)
time.sleep(3600)
"""


def test_the_cpu_of_workers_that_exited_between_two_looks_counts() -> None:
    """On a VM every process's CPU is the VM's, one that ran for a second and exited too. Here an
    instance's CPU is read from its live processes: a worker gone by the next look must still count
    (through its reaper's cutime/cstime), or an instance busy with short-lived work reads idle."""
    leader = subprocess.Popen(
        [sys.executable, "-c", _SHORT_LIVED_WORKERS],
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert leader.stdin is not None and leader.stdout is not None
    try:
        reader = GroupUsageReader()
        time.sleep(0.3)  # the interpreter has started
        before = reader.usage({leader.pid})[leader.pid]
        leader.stdin.write("go\n")
        leader.stdin.flush()
        assert leader.stdout.readline().strip() == "done"
        after = reader.usage({leader.pid})[leader.pid]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
    busy_s = (after.cpu_ticks - before.cpu_ticks) / CLOCK_TICKS
    # Four workers of 0.25 CPU s each (process_time, so however long they waited for a CPU).
    assert busy_s >= 0.9, f"only {busy_s:.2f} CPU s of the workers' 1.0 counted"
    assert busy_s < 1.5, f"{busy_s:.2f} CPU s: a worker counted twice"
