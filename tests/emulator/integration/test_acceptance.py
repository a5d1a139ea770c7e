"""The issue's acceptance script, with only azure-mgmt SDK calls and the emulator's defaults:
publish a gallery image version, create two scale sets and a gateway, repoint a routing rule
with If-Match, be refused with a stale ETag, restart the emulator and read everything back."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import ResourceModifiedError

from switchyard_emulator.testing import SampleTopology, free_port, pack_sample_image, run_emulator


def test_acceptance_script(tmp_path: Path) -> None:
    artifact = pack_sample_image(tmp_path / "build", app_version="1.4.2", gallery_version="1004002.20261100.1")
    with run_emulator(tmp_path / "emulator") as emulator:
        clients = emulator.clients()  # SDK defaults: the emulator's Retry-After paces the polling
        topo = SampleTopology(clients, emulator.subscription_id, "sample-production")
        topo.network()
        topo.gallery(image="sample")
        version = topo.publish(
            "1004002.20261100.1",
            artifact,
            exclude_from_latest=True,
            tags={"app_version": "1.4.2", "patch_level": "2026.11"},
        )
        assert version.provisioning_state == "Succeeded"
        port = free_port()
        gateways = clients.network.application_gateways
        gateways.begin_create_or_update(
            topo.rg, "sample-production-agw", topo.gateway_body(port, name="sample-production-agw")
        ).result()
        scale_sets = clients.compute.virtual_machine_scale_sets
        for color in ("blue", "green"):
            created = scale_sets.begin_create_or_update(
                topo.rg,
                f"sample-production-{color}",
                topo.scale_set_body(version.id, 2, pool=color, gateway="sample-production-agw"),
            ).result()
            assert created.provisioning_state == "Succeeded"

        gateway = gateways.get(topo.rg, "sample-production-agw")
        stale_etag = gateway.etag
        gateway.request_routing_rules[0].backend_address_pool.id = topo.pool_id("green", "sample-production-agw")
        switched = gateways.begin_create_or_update(
            topo.rg, "sample-production-agw", gateway, headers={"If-Match": stale_etag}
        ).result()
        assert switched.etag != stale_etag
        with pytest.raises(ResourceModifiedError):
            gateways.begin_create_or_update(
                topo.rg,
                "sample-production-agw",
                gateway,
                headers={"If-Match": stale_etag},
                error_map={412: ResourceModifiedError},
            ).result()
        clients.close()

        emulator.restart()

        clients = emulator.clients()
        back = clients.network.application_gateways.get(topo.rg, "sample-production-agw")
        assert back.etag == switched.etag
        assert back.request_routing_rules[0].backend_address_pool.id.endswith("/backendAddressPools/green")
        assert {p.name: len(p.backend_ip_configurations or []) for p in back.backend_address_pools} == {
            "blue": 2,
            "green": 2,
        }
        read = clients.compute.gallery_image_versions.get(topo.rg, "gallery", "sample", "1004002.20261100.1")
        assert read.tags == {"app_version": "1.4.2", "patch_level": "2026.11"}
        assert read.publishing_profile.exclude_from_latest is True
        for color in ("blue", "green"):
            vmss = clients.compute.virtual_machine_scale_sets.get(topo.rg, f"sample-production-{color}")
            assert vmss.sku.capacity == 2 and vmss.provisioning_state == "Succeeded"
            vms = list(clients.compute.virtual_machine_scale_set_vms.list(topo.rg, vmss.name, expand="instanceView"))
            assert [vm.instance_id for vm in vms] == ["0", "1"]
        clients.close()
