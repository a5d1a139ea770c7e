"""What the adapter's clients take from an environment and an emulator.json: how often long-running
operations are polled, which workspace the access log goes to, and where a private address is reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.cloud.azure.clients import AzureClients, ConfigurationError, EmulatorEndpoint
from switchyard.cloud.azure.pacing import ArmReadPacing
from switchyard.core.config import AzureEnvironment
from switchyard_emulator.addresses import loopback_alias

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAXsfOsE8trh0NAvE12UTiUqaCx182iU5QpAvgBN1Esf unit-test"
WORKSPACE_ARM_ID = (
    "/subscriptions/sub/resourceGroups/switchyard-monitor/providers/Microsoft.OperationalInsights/workspaces/logs"
)


def emulator_json(tmp_path: Path, **changes: object) -> Path:
    info: dict[str, object] = {
        "endpoint": "https://127.0.0.1:1",
        "ca_bundle": str(tmp_path / "ca.pem"),
        "token": "secret-token",
        "subscription_id": "sub",
        "log_analytics_workspace_id": "customer-id",
        "log_analytics_workspace_resource_id": WORKSPACE_ARM_ID,
        "profile": "fast",
        "pid": 1,
        **changes,
    }
    file = tmp_path / "emulator.json"
    file.write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    return file


def on_emulator(file: Path, **changes: object) -> AzureEnvironment:
    return AzureEnvironment.model_validate(
        {"name": "unit", "emulator_file": str(file), "resource_group": "rg", "ssh_public_key": KEY, **changes}
    )


@pytest.mark.parametrize("private", ["10.20.0.10", "10.0.0.4", "192.168.4.20", "172.16.255.254"])
def test_a_private_address_is_reached_where_the_emulator_says_it_serves_it(private: str) -> None:
    assert EmulatorEndpoint.reachable_address(private) == loopback_alias(private)


def test_on_the_emulator_the_clients_poll_fast_and_know_both_workspace_ids(tmp_path: Path) -> None:
    clients = AzureClients(on_emulator(emulator_json(tmp_path)))

    assert clients.lro_polling_interval_s == 0.05
    assert (clients.log_analytics_workspace_id, clients.log_analytics_workspace_resource_id) == (
        "customer-id",
        WORKSPACE_ARM_ID,
    )
    assert clients.reachable_address("10.21.0.10") == "127.21.0.10"
    assert clients.network._config.polling_interval == 0.05  # what every poller of the client waits


def test_on_an_emulator_with_azure_timing_the_clients_poll_as_on_azure(tmp_path: Path) -> None:
    # Its writes take Azure's time and its Resource Manager throttles reads at Azure's rate.
    clients = AzureClients(on_emulator(emulator_json(tmp_path, profile="azure")))

    assert clients.lro_polling_interval_s == 1.0
    assert clients.compute._config.polling_interval == 1.0


def test_the_environment_sets_the_polling_interval_and_azure_polls_every_second(tmp_path: Path) -> None:
    assert AzureClients(on_emulator(emulator_json(tmp_path), lro_polling_interval_s=2)).lro_polling_interval_s == 2

    on_azure = AzureClients(
        AzureEnvironment(
            name="cloud",
            auth="default",
            subscription_id="00000000-0000-0000-0000-000000000000",
            resource_group="rg",
            ssh_public_key=KEY,
            log_analytics_workspace_resource_id=WORKSPACE_ARM_ID,
        )
    )

    # Azure's slow writes answer without Retry-After: the SDK's own 30 s would be the pace.
    assert on_azure.lro_polling_interval_s == 1.0
    assert on_azure.compute._config.polling_interval == 1.0
    assert on_azure.log_analytics_workspace_resource_id == WORKSPACE_ARM_ID
    assert on_azure.reachable_address("10.20.0.10") == "10.20.0.10"


def test_an_emulator_json_from_before_diagnostic_settings_still_serves(tmp_path: Path) -> None:
    clients = AzureClients(on_emulator(emulator_json(tmp_path, log_analytics_workspace_resource_id=None)))

    assert clients.log_analytics_workspace_resource_id is None
    assert clients.subscription_id == "sub"


def test_an_emulator_json_without_its_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"not a valid emulator\.json"):
        EmulatorEndpoint.read(emulator_json(tmp_path, token=None))


def test_every_resource_manager_client_paces_its_reads_on_one_budget_per_subscription(tmp_path: Path) -> None:
    """Resource Manager counts one principal's reads per subscription, whichever client sends them:
    every ARM client of every environment on that subscription spends the same budget (pacing.py)."""
    file = emulator_json(tmp_path)
    staging, production = AzureClients(on_emulator(file)), AzureClients(on_emulator(file, name="production"))
    elsewhere = AzureClients(on_emulator(file, subscription_id="another-subscription"))

    for client in (staging.compute, staging.network, staging.monitor, staging.resources, staging.storage):
        pacing = [p for p in client._client._pipeline._impl_policies if isinstance(p, ArmReadPacing)]
        assert [p.budget for p in pacing] == [staging.read_budget]
    assert production.read_budget is staging.read_budget
    assert elsewhere.read_budget is not staging.read_budget
