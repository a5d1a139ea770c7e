"""Autoscale end to end: real CPU load on a real instance makes the data plane ask the control
plane (ArmFacade) for more capacity, which then runs as a new instance."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from dataplane_harness import (
    MiniArm,
    address_block,
    all_running,
    http_get,
    pack_artifact,
    running_dataplane,
    scale_set_id,
    specs,
    wait_for,
)

VMSS = scale_set_id("sample-scale-blue")
SETTING_ID = VMSS.rsplit("/providers/", 1)[0] + "/providers/microsoft.insights/autoscalesettings/sample-scale-autoscale"


def autoscale_setting(enabled: bool = True) -> dict[str, object]:
    return {
        "id": SETTING_ID,
        "name": "sample-scale-autoscale",
        "location": "westeurope",
        "properties": {
            "enabled": enabled,
            "targetResourceUri": VMSS,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": "1", "maximum": "2", "default": "1"},
                    "rules": [
                        {
                            "metricTrigger": {
                                "metricName": "Percentage CPU",
                                "metricResourceUri": VMSS,
                                "timeGrain": "PT1S",
                                "statistic": "Average",
                                "timeWindow": "PT3S",
                                "timeAggregation": "Average",
                                "operator": "GreaterThan",
                                "threshold": 40,
                            },
                            "scaleAction": {
                                "direction": "Increase",
                                "type": "ChangeCount",
                                "value": "1",
                                "cooldown": "PT1M",
                            },
                        }
                    ],
                }
            ],
        },
    }


def test_sustained_cpu_load_scales_the_set_out_through_the_control_plane(tmp_path: Path) -> None:
    artifact = pack_artifact(tmp_path / "images")
    block = address_block()
    arm = MiniArm(
        resources={
            "microsoft.compute/virtualmachinescalesets": [
                {"id": VMSS, "location": "westeurope", "sku": {"capacity": 1}}
            ],
            "microsoft.insights/autoscalesettings": [autoscale_setting()],
        }
    )

    async def scenario() -> None:
        async with running_dataplane(tmp_path / "state", arm, autoscale_interval_s=0.5) as dataplane:

            async def resync(scale_set: str, capacity: int) -> None:
                # What the control plane does on a capacity change: new instance records, re-sync.
                await dataplane.sync_scale_set(scale_set, specs(block, artifact, capacity, vmss="sample-scale-blue"))

            arm.on_capacity = resync
            await dataplane.sync_scale_set(VMSS, specs(block, artifact, 1, vmss="sample-scale-blue"))
            await wait_for(lambda: all_running(dataplane, VMSS, 1), "instance 0 running")
            await asyncio.sleep(2)
            assert arm.capacity_changes == [], "an idle instance must not trigger a scale-out"

            stop = threading.Event()

            def burn() -> None:
                while not stop.is_set():
                    http_get(block.ip(0), block.port, "/work/compute?n=200000")

            burner = threading.Thread(target=burn, daemon=True)
            burner.start()
            try:
                await wait_for(lambda: bool(arm.capacity_changes), "a scale-out", timeout_s=40)
            finally:
                stop.set()
                await asyncio.to_thread(burner.join)
            ((target, capacity, reason),) = arm.capacity_changes
            assert (target, capacity) == (VMSS, 2)
            assert "Percentage CPU average over 3s" in reason and "1 -> 2" in reason
            await wait_for(lambda: all_running(dataplane, VMSS, 2), "instance 1 running")
            # At the maximum and within the cooldown, nothing more happens.
            await asyncio.sleep(1.5)
            assert len(arm.capacity_changes) == 1

    asyncio.run(scenario())
