"""Building the Azure SDK clients: the only place that knows whether it talks to Azure or the emulator.

Real Azure: DefaultAzureCredential (or a service principal) and the public endpoints. The emulator:
its emulator.json names the endpoint, a static bearer token and the CA that signed its HTTPS
certificate. Everything after client construction is the same code
(docs/decisions/0001-one-cloud-code-path.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.monitor.query import LogsQueryClient

from switchyard.cloud.azure.pacing import (
    ArmReadPacing,
    LogQueryPacing,
    QueryGate,
    QueryRate,
    ReadBudget,
    query_rate,
    read_budget,
)
from switchyard.core.config import AzureEnvironment

ARM_SCOPE = "https://management.azure.com/.default"


class ConfigurationError(Exception):
    """The environment's configuration cannot produce working clients."""


class StaticTokenCredential(TokenCredential):
    """The emulator's fixed bearer token; never printed (repr hides it)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenCredential(<hidden>)"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + 3600)


# The SDK's default wait between two polls of a long-running operation whose answer has no
# Retry-After. Azure's slow writes (gateways, scale sets) send none (Azure/azure-cli#2134,
# Azure/azure-sdk-for-net#3439), so a rollback's one gateway write would be seen done up to 30 s late.
AZURE_LRO_POLLING_INTERVAL_S = 1.0
EMULATOR_LRO_POLLING_INTERVAL_S = 0.05  # the emulator's fast profile answers in milliseconds


@dataclass(frozen=True)
class EmulatorEndpoint:
    """What the emulator's emulator.json says (emulator/README.md, "Clients")."""

    endpoint: str
    ca_bundle: str
    token: str
    subscription_id: str
    log_analytics_workspace_id: str
    # The workspace's ARM id, what a diagnostic setting names. Emulators from before diagnostic
    # settings do not write it; such a file still serves every other port.
    log_analytics_workspace_resource_id: str | None = None
    # The storage accounts its blob storage (Azurite) serves, by name; emulators without one write none.
    storage_accounts: tuple[str, ...] = ()
    # Its timing profile: "fast", or "azure" (Azure's write durations and Resource Manager's throttling).
    profile: str = "fast"

    @classmethod
    def read(cls, path: str | Path) -> EmulatorEndpoint:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigurationError(
                f"emulator file {file} does not exist: start the emulator "
                "(`switchyard emulator start --state-dir DIR` or `switchyard up`) or fix emulator_file"
            )
        try:
            data = json.loads(file.read_text())
            known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            if "storage_accounts" in known:
                known["storage_accounts"] = tuple(known["storage_accounts"])
            return cls(**known)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"emulator file {file} is not a valid emulator.json: {error}") from None

    @staticmethod
    def reachable_address(private_ip: str) -> str:
        """Where this machine reaches a gateway's private frontend address: the emulator listens on
        the loopback alias 127.b.c.d of a.b.c.d, a fixed rule it documents (emulator/README.md,
        "Where the listeners are"; switchyard_emulator.addresses.loopback_alias), because an Azure
        subnet address cannot be bound here and a loopback one cannot be in an Azure subnet."""
        address = ipaddress.IPv4Address(private_ip)
        return str(ipaddress.IPv4Address((127 << 24) | (int(address) & 0x00FFFFFF)))

    def __repr__(self) -> str:
        return f"EmulatorEndpoint(endpoint={self.endpoint!r}, subscription_id={self.subscription_id!r})"


class AzureClients:
    """Lazily built SDK clients for one environment, and what differs between Azure and the
    emulator beyond them (workspace ids, where a private address is reached)."""

    def __init__(
        self, environment: AzureEnvironment, *, shared_query_gate: Callable[[str], QueryGate] | None = None
    ) -> None:
        """`shared_query_gate`: the Log Analytics query budget this environment's user shares with
        other processes, by a key naming the endpoint and the user (the factory gives Prefect's);
        None: this process paces its queries by its own count alone."""
        self.environment = environment
        self._emulator: EmulatorEndpoint | None = None
        if environment.auth == "emulator":
            assert environment.emulator_file is not None  # guaranteed by AzureEnvironment
            emulator = self._emulator = EmulatorEndpoint.read(environment.emulator_file)
            self.credential: TokenCredential = StaticTokenCredential(emulator.token)
            self.subscription_id = environment.subscription_id or emulator.subscription_id
            self.log_analytics_workspace_id: str | None = (
                environment.log_analytics_workspace_id or emulator.log_analytics_workspace_id
            )
            self.log_analytics_workspace_resource_id: str | None = (
                environment.log_analytics_workspace_resource_id or emulator.log_analytics_workspace_resource_id
            )
            self._arm_endpoint: str | None = emulator.endpoint
            self._logs_endpoint: str | None = emulator.endpoint
            self._connection_verify: str | None = emulator.ca_bundle
            # On the azure profile writes take Azure's time and Resource Manager throttles reads as on
            # Azure (250, then 25 a second): polling every 50 ms would spend that budget on waiting.
            default_polling = (
                AZURE_LRO_POLLING_INTERVAL_S if emulator.profile == "azure" else EMULATOR_LRO_POLLING_INTERVAL_S
            )
        else:
            self.credential = _azure_credential(environment)
            assert environment.subscription_id is not None  # guaranteed by AzureEnvironment
            self.subscription_id = environment.subscription_id
            self.log_analytics_workspace_id = environment.log_analytics_workspace_id
            self.log_analytics_workspace_resource_id = environment.log_analytics_workspace_resource_id
            self._arm_endpoint = None
            self._logs_endpoint = None
            self._connection_verify = None
            default_polling = AZURE_LRO_POLLING_INTERVAL_S
        # Every mgmt client reads `polling_interval` from its configuration for each poller it makes
        # (compute, network and monitor alike; tests/integration/cloud/test_timing.py times it).
        self.lro_polling_interval_s = environment.lro_polling_interval_s or default_polling
        self._options: dict[str, Any] = {"polling_interval": self.lro_polling_interval_s}
        if self._connection_verify:
            self._options["connection_verify"] = self._connection_verify
        # Resource Manager's read budget is one principal's in one subscription: every client of this
        # process that reads it as that principal shares one (pacing.py).
        principal = environment.client_id or environment.auth
        self.read_budget: ReadBudget = read_budget(self._arm_endpoint or "azure", self.subscription_id, principal)
        # Log Analytics limits a user's queries to all workspaces together (pacing.py).
        logs_user = (self._logs_endpoint or "azure", principal)
        self.log_query_rate: QueryRate = query_rate(*logs_user)
        self.shared_log_query_gate: QueryGate | None = (
            shared_query_gate(" ".join(logs_user)) if shared_query_gate else None
        )

    def reachable_address(self, private_ip: str) -> str:
        """Where this process reaches a private address Azure reports (a gateway's private
        frontend): itself on Azure (the runner is in the network, or routed into it), the address
        the emulator serves it on locally."""
        return self._emulator.reachable_address(private_ip) if self._emulator else private_ip

    @cached_property
    def storage_account(self) -> str:
        """The environment's storage account for images built outside Azure (AzureEnvironment.storage_account)."""
        named = self.environment.storage_account
        if named:
            return named
        if self._emulator is not None:
            if not self._emulator.storage_accounts:
                raise ConfigurationError(
                    "the emulator runs without blob storage (its emulator.json names no storage_accounts): start "
                    "it with `switchyard up`, which starts Azurite beside it, or name storage_account"
                )
            return self._emulator.storage_accounts[0]
        # Account names are global on Azure: one derived from where it lives, stable for this environment.
        where = f"{self.subscription_id}/{self.environment.gallery_group}/{self.environment.location}".lower()
        return "sy" + hashlib.sha256(where.encode()).hexdigest()[:22]

    @property
    def connection_verify(self) -> str | None:
        """The CA bundle to trust (the emulator's, which also signs its Azurite's certificate), or None."""
        return self._connection_verify

    def _arm_kwargs(self) -> dict[str, Any]:
        # A policy instance per client (a pipeline links its policies), the budget shared.
        kwargs = dict(self._options, per_retry_policies=[ArmReadPacing(self.read_budget)])
        if self._arm_endpoint:
            kwargs.update(base_url=self._arm_endpoint, credential_scopes=[ARM_SCOPE])
        return kwargs

    @cached_property
    def compute(self) -> ComputeManagementClient:
        return ComputeManagementClient(self.credential, self.subscription_id, **self._arm_kwargs())

    @cached_property
    def network(self) -> NetworkManagementClient:
        return NetworkManagementClient(self.credential, self.subscription_id, **self._arm_kwargs())

    @cached_property
    def monitor(self) -> MonitorManagementClient:
        return MonitorManagementClient(self.credential, self.subscription_id, **self._arm_kwargs())

    @cached_property
    def resources(self) -> ResourceManagementClient:
        return ResourceManagementClient(self.credential, self.subscription_id, **self._arm_kwargs())

    @cached_property
    def storage(self) -> StorageManagementClient:
        return StorageManagementClient(self.credential, self.subscription_id, **self._arm_kwargs())

    @cached_property
    def logs(self) -> LogsQueryClient:
        kwargs: dict[str, Any] = {
            "per_retry_policies": [LogQueryPacing(self.log_query_rate, self.shared_log_query_gate)]
        }
        if self._logs_endpoint:
            kwargs |= {
                "endpoint": self._logs_endpoint,
                "credential_scopes": ["https://api.loganalytics.io/.default"],
                "connection_verify": self._connection_verify,
            }
        return LogsQueryClient(self.credential, **kwargs)


def _azure_credential(environment: AzureEnvironment) -> TokenCredential:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if environment.auth == "service_principal":
        assert environment.tenant_id and environment.client_id and environment.client_secret
        return ClientSecretCredential(
            environment.tenant_id, environment.client_id, environment.client_secret.get_secret_value()
        )
    return DefaultAzureCredential()
