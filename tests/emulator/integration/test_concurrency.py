"""Many clients writing at once: every write lands or is refused cleanly, nothing is lost or
half-written (one writer lock, atomic read-validate-write, ETags for optimistic concurrency)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import ResourceModifiedError

from switchyard_emulator.testing import EmulatorClients, EmulatorHandle, SampleTopology


def test_parallel_creates_all_land(emulator: EmulatorHandle, clients: EmulatorClients, topo: SampleTopology) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": "westus"})
    names = [f"g{i:02d}" for i in range(16)]

    def create(name: str) -> str:
        own = emulator.clients(polling_interval=0.05)  # a client per thread, like separate workers
        try:
            return (
                own.compute.galleries.begin_create_or_update(
                    topo.rg, name, {"location": "westus", "tags": {"by": name}}
                )
                .result()
                .name
            )
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(create, names))
    assert created == names
    listed = {g.name: g.tags for g in clients.compute.galleries.list_by_resource_group(topo.rg)}
    assert listed == {name: {"by": name} for name in names}


def test_optimistic_concurrency_loses_no_update(
    emulator: EmulatorHandle, clients: EmulatorClients, topo: SampleTopology
) -> None:
    topo.network()
    writers = [f"w{i}" for i in range(10)]
    conflicts: list[str] = []
    all_have_read = threading.Barrier(len(writers))

    def add_tag(writer: str) -> None:
        own = emulator.clients()
        first = True
        try:
            while True:
                pip = own.network.public_ip_addresses.get(topo.rg, "pip")
                if first:  # everyone holds the same ETag before anyone writes
                    all_have_read.wait(timeout=30)
                    first = False
                pip.tags = {**(pip.tags or {}), writer: "done"}
                try:
                    own.network.public_ip_addresses.begin_create_or_update(
                        topo.rg,
                        "pip",
                        pip,
                        headers={"If-Match": pip.etag},
                        error_map={412: ResourceModifiedError},
                    ).result()
                    return
                except ResourceModifiedError:
                    conflicts.append(writer)  # someone else won the race: read again and retry
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(add_tag, writers))
    final = clients.network.public_ip_addresses.get(topo.rg, "pip")
    assert final.tags == {w: "done" for w in writers}
    assert len(conflicts) >= len(writers) - 1  # all but the first writer of the round had a stale ETag


def test_parallel_scaling_keeps_instance_records_consistent(
    emulator: EmulatorHandle, clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> None:
    topo.network()
    topo.gallery()
    version = topo.publish("1.0.0", artifacts["1.0.0"])
    clients.compute.virtual_machine_scale_sets.begin_create_or_update(
        topo.rg, "web", topo.scale_set_body(version.id, 1)
    ).result()

    def scale(capacity: int) -> None:
        own = emulator.clients(polling_interval=0.05)
        try:
            own.compute.virtual_machine_scale_sets.begin_update(
                topo.rg, "web", {"sku": {"capacity": capacity}}
            ).result()
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(scale, [3, 1, 4, 2, 5, 2]))
    final = clients.compute.virtual_machine_scale_sets.get(topo.rg, "web")
    vms = list(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, "web"))
    nics = list(clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(topo.rg, "web"))
    assert len(vms) == final.sku.capacity
    ids = [int(vm.instance_id) for vm in vms]
    assert len(set(ids)) == len(ids)
    ips = [n.ip_configurations[0].private_ip_address for n in nics]
    assert len(set(ips)) == len(ips) == final.sku.capacity
