"""Building the Azure SDK clients: the only place that knows whether it talks to Azure or the emulator.

Real Azure: DefaultAzureCredential (or a service principal) and the public endpoints. The emulator:
its emulator.json names the endpoint, a static bearer token and the CA that signed its HTTPS
certificate. Everything after client construction is the same code
(docs/decisions/0001-one-cloud-code-path.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.monitor.query import LogsQueryClient

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


@dataclass(frozen=True)
class EmulatorEndpoint:
    endpoint: str
    ca_bundle: str
    token: str
    subscription_id: str
    log_analytics_workspace_id: str

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
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(f"emulator file {file} is not a valid emulator.json: {error}") from None

    def __repr__(self) -> str:
        return f"EmulatorEndpoint(endpoint={self.endpoint!r}, subscription_id={self.subscription_id!r})"


class AzureClients:
    """Lazily built SDK clients for one environment."""

    def __init__(self, environment: AzureEnvironment) -> None:
        self.environment = environment
        self._options: dict[str, Any] = {}
        if environment.auth == "emulator":
            assert environment.emulator_file is not None  # guaranteed by AzureEnvironment
            emulator = EmulatorEndpoint.read(environment.emulator_file)
            self.credential: TokenCredential = StaticTokenCredential(emulator.token)
            self.subscription_id = environment.subscription_id or emulator.subscription_id
            self.log_analytics_workspace_id: str | None = (
                environment.log_analytics_workspace_id or emulator.log_analytics_workspace_id
            )
            self._arm_endpoint: str | None = emulator.endpoint
            self._logs_endpoint: str | None = emulator.endpoint
            # The emulator answers long-running operations in well under a second.
            self._options = {"connection_verify": emulator.ca_bundle, "polling_interval": 0.05}
            # The emulator's metrics have one-second grains, so analysis windows can be seconds long.
            self.metrics_grain = "PT1S"
        else:
            self.credential = _azure_credential(environment)
            assert environment.subscription_id is not None  # guaranteed by AzureEnvironment
            self.subscription_id = environment.subscription_id
            self.log_analytics_workspace_id = environment.log_analytics_workspace_id
            self._arm_endpoint = None
            self._logs_endpoint = None
            self.metrics_grain = "PT1M"

    def _arm_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._options)
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
    def logs(self) -> LogsQueryClient:
        kwargs: dict[str, Any] = {}
        if self._logs_endpoint:
            kwargs = {
                "endpoint": self._logs_endpoint,
                "credential_scopes": ["https://api.loganalytics.io/.default"],
                "connection_verify": self._options["connection_verify"],
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
