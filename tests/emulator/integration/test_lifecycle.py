"""The emulator process: emulator.json, refusal of non-loopback hosts, clean stop on SIGTERM (no
process left behind), and a restart that keeps the CA, the identity, the port and the state —
and brings the data plane back (instances answer again, the gateway serves again)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from emulator_helpers import eventually, gateway_get, instance_version, processes_using

from switchyard_emulator.testing import SampleTopology, free_port, run_emulator


def test_a_non_loopback_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchyard_emulator",
            "start",
            "--state-dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
    assert not (tmp_path / "emulator.json").exists()


def test_stop_leaves_nothing_behind_and_restart_brings_everything_back(tmp_path: Path) -> None:
    from switchyard_emulator.testing import pack_sample_image

    artifact = pack_sample_image(tmp_path / "artifacts")
    state = tmp_path / "state"
    port = free_port()
    with run_emulator(state, extra_args=["--lro-retry-after", "0"]) as emulator:
        info_path = state / "emulator.json"
        info = json.loads(info_path.read_text())
        assert set(info) == {
            "endpoint",
            "ca_bundle",
            "token",
            "subscription_id",
            "log_analytics_workspace_id",
            "log_analytics_workspace_resource_id",
            "profile",
            "storage_accounts",  # names only: the key is in Azurite's storage.json (0600) and listKeys
            "pid",
        }
        assert info["storage_accounts"] == [emulator.storage_account]
        assert stat.S_IMODE(info_path.stat().st_mode) == 0o600  # it holds the token
        assert info["pid"] == emulator.pid
        ca_before = Path(info["ca_bundle"]).read_bytes()

        clients = emulator.clients(polling_interval=0.05)
        topo = SampleTopology(clients, emulator.subscription_id, "rg")
        topo.network()
        topo.gallery()
        version = topo.publish("1.0.0", artifact)
        clients.network.application_gateways.begin_create_or_update("rg", "agw", topo.gateway_body(port)).result()
        clients.compute.virtual_machine_scale_sets.begin_create_or_update(
            "rg", "blue", topo.scale_set_body(version.id, 2, pool="blue")
        ).result()
        ips = [
            n.ip_configurations[0].private_ip_address
            for n in clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces("rg", "blue")
        ]
        eventually(lambda: gateway_get(port)[0] == 200)
        clients.close()
        assert processes_using(state), "instances run from the state dir"

        endpoint_before = emulator.endpoint
        assert emulator.stop() == 0  # SIGTERM: a clean exit
        assert not info_path.exists()
        assert processes_using(state) == []  # no instance, no gateway worker left
        for ip in ips:
            try:
                instance_version(ip)
            except OSError:
                continue
            raise AssertionError(f"instance {ip} still answers after the emulator stopped")

        emulator.start()  # same state dir, same port
        assert emulator.endpoint == endpoint_before
        assert Path(emulator.ca_bundle).read_bytes() == ca_before
        assert emulator.subscription_id == info["subscription_id"] and emulator.token == info["token"]
        clients = emulator.clients(polling_interval=0.05)
        assert clients.compute.virtual_machine_scale_sets.get("rg", "blue").sku.capacity == 2
        # the data plane was replayed: the same instances answer on the same IPs, the gateway serves
        assert eventually(lambda: _answers(ips))
        assert eventually(lambda: gateway_get(port)[0] == 200)
        clients.close()
    assert processes_using(state) == []


def _answers(ips: list[str]) -> bool:
    try:
        return all(instance_version(ip)["app_version"] == "1.0.0" for ip in ips)
    except OSError:
        return False
