"""Configuration models: what an environment and a service are.

These are plain pydantic models; the Prefect blocks in blocks/ are these same models with a
Block base, so what a user edits in the UI is validated by exactly this code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from switchyard.core.bad_input import BadInput
from switchyard.core.hooks import CommandHook, ReleaseHooks
from switchyard.core.topology import Topology, check_name

AuthMode = Literal["emulator", "default", "service_principal"]
ImageBuilder = Literal["local", "azure"]

_AZURE_RG = re.compile(r"^[-\w._()]{1,90}$")
_GALLERY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,78}[A-Za-z0-9]$")
_LOCATION = re.compile(r"^[a-z0-9]+$")


class AzureEnvironment(BaseModel):
    """Where an environment lives in Azure, and how switchyard authenticates there."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Environment name, e.g. staging or production.")
    auth: AuthMode = Field(
        "emulator",
        description="emulator: the local emulator's emulator.json; default: DefaultAzureCredential; "
        "service_principal: tenant, client id and secret below.",
    )
    emulator_file: str | None = Field(None, description="Path of the emulator's emulator.json (auth = emulator).")
    subscription_id: str | None = Field(
        None, description="Azure subscription id (from emulator.json when auth = emulator)."
    )
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = Field(None, description="Service principal secret.")
    resource_group: str = Field(description="Resource group holding this environment's topology.")
    location: str = Field("westeurope", description="Azure region, e.g. westeurope.")
    gallery: str = Field("switchyard_gallery", description="Azure Compute Gallery name.")
    gallery_resource_group: str | None = Field(
        None,
        description="Resource group of the gallery, when environments share one (default: resource_group).",
    )
    target_regions: list[str] = Field(
        default_factory=list, description="Regions image versions replicate to (the location always)."
    )
    storage_account: str | None = Field(
        None,
        description="Storage account (in the gallery's resource group) that a locally built image is "
        "uploaded to as a page blob before it is published from there, as Azure requires. Default: the "
        "emulator's own account (emulator.json) when auth = emulator; on Azure, where account names are "
        "global, 'sy' plus a hash of the subscription, gallery resource group and location.",
    )
    image_builder: ImageBuilder | None = Field(
        None,
        description="How images for this environment are built. local: Packer's null builder makes the image "
        "on the worker, uploaded as a page blob (the default with the emulator); azure: Packer's azure-arm "
        "builder makes a managed image on a build VM (the default on Azure). Either way switchyard scans and "
        "gates before it publishes.",
    )
    build_resource_group: str | None = Field(
        None,
        description="Existing resource group for the azure builder's VM and managed image (its region is the "
        "build region); the build's identity needs rights on it only. Required by image_builder azure.",
    )
    build_vm_size: str = Field("Standard_D2s_v5", description="VM size of the azure builder's build VM.")
    soak_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="Soak time: when a chain (a merge, the monthly patch) has released here and a later "
        "environment is next, how long the new version must stay live and healthy here before that one starts.",
    )
    vnet_address_space: str = Field("10.20.0.0/16", description="Address space of the topology's VNet.")
    admin_username: str = Field("switchyard", description="Admin user on the instances.")
    ssh_public_key: str = Field(description="SSH public key for the instances' admin user.")
    log_analytics_workspace_id: str | None = Field(
        None,
        description="Log Analytics workspace (customer) id receiving the gateway access log; "
        "from emulator.json when auth = emulator.",
    )
    log_analytics_workspace_resource_id: str | None = Field(
        None,
        description="ARM id of that workspace (/subscriptions/.../providers/Microsoft.OperationalInsights/"
        "workspaces/NAME): provisioning points the gateway's diagnostic setting at it; from emulator.json "
        "when auth = emulator.",
    )
    test_source_prefixes: list[str] = Field(
        default_factory=list,
        description="Address prefixes (CIDR) besides the virtual network that may reach the test listener "
        "(where smoke tests run from). The test listener is on a private frontend, never public.",
    )
    release_policy: str = Field(
        "default",
        description="The release policy releases here use unless one is named: staging without user "
        "traffic and production with it rarely want the same canary.",
    )
    lro_polling_interval_s: float | None = Field(
        None,
        gt=0,
        le=30,
        description="Seconds between polls of a long-running operation (default: 1 on Azure and on the emulator's "
        "azure profile, 0.05 on its fast profile). The SDK's own default, 30 s, would stretch a rollback's one "
        "gateway write.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name("environment", value)

    @field_validator("resource_group", "gallery_resource_group", "build_resource_group")
    @classmethod
    def _resource_group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _AZURE_RG.fullmatch(value) or value.endswith("."):
            raise ValueError(f"resource group name {value!r} is not a valid Azure resource group name")
        return value

    @field_validator("storage_account")
    @classmethod
    def _storage_account(cls, value: str | None) -> str | None:
        # Azure's rule: 3-24 digits and lower-case letters (Microsoft.Storage AccountNameInvalid)
        if value is not None and not re.fullmatch(r"[a-z0-9]{3,24}", value):
            raise ValueError(f"storage account name {value!r} is not valid: 3-24 digits and lower-case letters only")
        return value

    @field_validator("gallery")
    @classmethod
    def _gallery(cls, value: str) -> str:
        if not _GALLERY.fullmatch(value):
            raise ValueError(f"gallery name {value!r} is not valid: letters, digits, '_' and '.', 2-80 characters")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not _LOCATION.fullmatch(value):
            raise ValueError(f"location {value!r} is not an Azure region name like 'westeurope'")
        return value

    @field_validator("target_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        for region in value:
            cls._location(region)
        return value

    @field_validator("vnet_address_space")
    @classmethod
    def _address_space(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=True)
        if network.prefixlen > 22:
            raise ValueError(f"vnet_address_space {value} is too small: use /22 or larger")
        return value

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: str) -> str:
        if not value.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
            raise ValueError("ssh_public_key must be an OpenSSH public key (ssh-ed25519 ..., ssh-rsa ...)")
        return value

    @field_validator("test_source_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            try:
                ipaddress.ip_network(prefix, strict=True)
            except ValueError as error:
                raise ValueError(f"test source prefix {prefix!r} is not a CIDR prefix: {error}") from None
        return value

    @model_validator(mode="after")
    def _auth_complete(self) -> Self:
        if self.auth == "emulator" and not self.emulator_file:
            raise ValueError("auth = emulator needs emulator_file (the emulator's emulator.json)")
        if self.auth != "emulator" and not self.subscription_id:
            raise ValueError(f"auth = {self.auth} needs subscription_id")
        if self.auth == "service_principal" and not (self.tenant_id and self.client_id and self.client_secret):
            raise ValueError("auth = service_principal needs tenant_id, client_id and client_secret")
        return self

    @property
    def builder(self) -> ImageBuilder:
        """The image builder: as configured, else local with the emulator and azure on Azure."""
        if self.image_builder is not None:
            return self.image_builder
        return "local" if self.auth == "emulator" else "azure"

    @property
    def gallery_group(self) -> str:
        return self.gallery_resource_group or self.resource_group

    @property
    def regions(self) -> list[str]:
        """Replication regions: the environment's own location first."""
        return [self.location, *(r for r in self.target_regions if r != self.location)]

    def subnet_prefixes(self) -> tuple[str, str]:
        """(gateway subnet, instance subnet): the first two /24s of the address space."""
        network = ipaddress.ip_network(self.vnet_address_space)
        subnets = network.subnets(new_prefix=24)
        return str(next(subnets)), str(next(subnets))

    def test_frontend_address(self) -> str:
        """The test listener's private address: a static one in the gateway subnet, past the first four
        addresses Azure keeps for itself (docs: virtual-networks-faq, "reserved IP addresses")."""
        gateway = ipaddress.ip_network(self.subnet_prefixes()[0])
        return str(gateway.network_address + 10)


class FrontendPorts(BaseModel):
    """The gateway's frontend ports for one service in one environment."""

    model_config = ConfigDict(extra="forbid")

    production: int = Field(ge=1, le=65535, description="Port of the listener users reach.")
    test: int = Field(ge=1, le=65535, description="Port of the test listener (smoke tests, preview).")

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.production == self.test:
            raise ValueError("production and test listeners need different ports")
        return self


# The scale set metrics an autoscale rule may follow (Azure Monitor's names for
# Microsoft.Compute/virtualMachineScaleSets).
AutoscaleMetric = Literal["Percentage CPU", "Available Memory Bytes"]
MIB = 1 << 20


@dataclass(frozen=True)
class AutoscaleRule:
    metric: AutoscaleMetric
    operator: Literal["GreaterThan", "LessThan"]
    threshold: float
    direction: Literal["Increase", "Decrease"]


class AutoscaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    minimum: int = Field(1, ge=0, le=100)
    maximum: int = Field(6, ge=1, le=100)
    metric: AutoscaleMetric = Field(
        "Percentage CPU",
        description="The scale set metric that scales the service: 'Percentage CPU' (scale out when busy) or "
        "'Available Memory Bytes' (scale out when memory runs short).",
    )
    scale_out_cpu_percent: float = Field(70.0, gt=0, le=100)
    scale_in_cpu_percent: float = Field(25.0, ge=0, lt=100)
    scale_out_available_memory_mib: int = Field(
        512, ge=1, description="Memory metric: scale out when the instances' average available memory falls below this."
    )
    scale_in_available_memory_mib: int = Field(
        2048, ge=1, description="Memory metric: scale in when it stays above this."
    )
    time_window_s: int = Field(300, ge=1, description="Window the metric's average is taken over.")
    cooldown_s: int = Field(300, ge=1, description="Wait after a scale action before the next.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError(f"autoscale minimum {self.minimum} is above maximum {self.maximum}")
        if self.scale_in_cpu_percent >= self.scale_out_cpu_percent:
            raise ValueError("scale_in_cpu_percent must be below scale_out_cpu_percent")
        if self.scale_in_available_memory_mib <= self.scale_out_available_memory_mib:
            # Otherwise one value could both scale out and in: autoscale would flap.
            raise ValueError("scale_in_available_memory_mib must be above scale_out_available_memory_mib")
        return self

    def rules(self) -> list[AutoscaleRule]:
        """The scale-out and scale-in rule of the chosen metric. Azure's rules compare the metric's
        value with a threshold, so for available memory the directions invert: scale out when it is
        LOW (LessThan), in when it is high (GreaterThan)."""
        if self.metric == "Available Memory Bytes":
            return [
                AutoscaleRule(self.metric, "LessThan", self.scale_out_available_memory_mib * MIB, "Increase"),
                AutoscaleRule(self.metric, "GreaterThan", self.scale_in_available_memory_mib * MIB, "Decrease"),
            ]
        return [
            AutoscaleRule(self.metric, "GreaterThan", self.scale_out_cpu_percent, "Increase"),
            AutoscaleRule(self.metric, "LessThan", self.scale_in_cpu_percent, "Decrease"),
        ]


class NotDeployedError(BadInput):
    """The service has no frontend ports in that environment: the fleet does not deploy it there."""


class ServiceConfig(BaseModel):
    """A service of the fleet: what it runs, where it listens, how big it is."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Service name; resource names derive from it.")
    app_dir: str = Field(description="Folder of the service's app (holding switchyard-app.json).")
    base: str = Field("debian-12", description="Base image of the service's images.")
    vm_size: str = Field("Standard_B2s", description="VM size of the scale-set instances.")
    capacity: int = Field(2, ge=1, le=100, description="Instances per color at release time.")
    service_port: int = Field(8000, ge=1, le=65535)
    health_path: str = Field("/health", pattern=r"^/")
    frontend_ports: dict[str, FrontendPorts] = Field(description="Gateway frontend ports per environment name.")
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig)
    integration_test: CommandHook | None = Field(
        None,
        description="The service's own tests, run against the new color through the test listener before users "
        "(after the smoke tests): an argv, run without a shell from the repository root, with SWITCHYARD_TEST_URL "
        "and SWITCHYARD_IMAGE_VERSION set; exit code 0 passes.",
    )
    hooks: ReleaseHooks = Field(
        default_factory=ReleaseHooks,
        description="The service's own release hooks, e.g. its schema migrations (pre_deploy: expand, "
        "post_promote: contract): each runs in place of the release policy's hook of the same name, which "
        "is shared by every service released under that policy.",
    )
    database: dict[str, str] = Field(
        default_factory=dict,
        description="The service's shared database per environment name, as a URL: the one database both "
        "colors use during a release (hence expand/contract migrations). Every instance is told its URL in "
        "its custom data, release hooks get it as SWITCHYARD_DATABASE_URL, and feature flags live in its "
        "switchyard_flags table. {state_dir} stands for switchyard's state folder, e.g. "
        "sqlite:///{state_dir}/databases/sample-staging.sqlite3. Never a password: custom data is readable "
        "on every VM (use a managed identity).",
    )
    synthetic_load_path: str | None = Field(
        None,
        pattern=r"^/",
        description="The read-only path (GET) the release policy's synthetic load requests of this service, instead "
        "of the policy's own synthetic_load.path: a policy belongs to an environment and every service there shares "
        "it, while a path belongs to one service's API.",
    )
    patch_wave: int = Field(
        1,
        ge=1,
        le=100,
        description="The monthly patch's order into production: once every service passed staging, "
        "production takes them in batches, wave 1 first (put the least critical, or those others "
        "depend on, first).",
    )
    probe_interval_s: int = Field(2, ge=1, le=86400)
    probe_timeout_s: int = Field(2, ge=1, le=86400)
    probe_unhealthy_threshold: int = Field(2, ge=1, le=20)
    request_timeout_s: int = Field(30, ge=1, le=86400)
    draining_timeout_s: int = Field(10, ge=1, le=3600)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name("service", value)

    @field_validator("frontend_ports")
    @classmethod
    def _environments(cls, value: dict[str, FrontendPorts]) -> dict[str, FrontendPorts]:
        for environment in value:
            check_name("environment", environment)
        return value

    @field_validator("database")
    @classmethod
    def _databases(cls, value: dict[str, str]) -> dict[str, str]:
        for environment, url in value.items():
            check_name("environment", environment)
            scheme, separator, rest = url.partition("://")
            if not separator or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) or not rest:
                raise ValueError(f"database of {environment!r}: {url!r} is not a URL (scheme://...)")
            credentials = rest.split("/", 1)[0].rpartition("@")[0]
            if ":" in credentials:
                # Azure: "Do not pass any secrets or passwords in customData property" (the VMSS OS
                # profile's customData, azure-rest-api-specs ComputeRP virtualMachineScaleSet.json).
                raise ValueError(
                    f"database of {environment!r} carries a password: instances read the URL from their custom "
                    "data, which is not for secrets; authenticate with a managed identity instead"
                )
        return value

    def database_url(self, environment: str, state_dir: str) -> str | None:
        """The environment's database URL with {state_dir} filled in, or None when it has none."""
        url = self.database.get(environment)
        return None if url is None else url.replace("{state_dir}", state_dir)

    def ports_in(self, environment: str) -> FrontendPorts:
        try:
            return self.frontend_ports[environment]
        except KeyError:
            known = ", ".join(sorted(self.frontend_ports)) or "none"
            raise NotDeployedError(
                f"service {self.name!r} is not deployed to environment {environment!r} (its environments: {known})"
            ) from None


def instance_settings(service: ServiceConfig, environment: str, state_dir: str) -> dict[str, str]:
    """What an instance of `service` in `environment` reads at start (from its custom data)."""
    settings = {"service": service.name, "environment": environment}
    database = service.database_url(environment, state_dir)
    if database is not None:
        settings["database_url"] = database
    return settings


class FaultProfile(BaseModel):
    """Faults built into an image on purpose, so a demo can ship a bad release the way it looks."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    extra_latency_ms: int = Field(0, ge=0, le=60_000)
    fail_health: bool = False
    crash_after_s: float | None = Field(
        None, gt=0, le=3600, description="The service exits with an error this long after it starts."
    )
    # A build-time fault (images/scripts/faults.sh): cloud-init's drop-in turns SSH password login
    # on, so hardening's control SWY-SSH-2 fails and the scan gate stops the image before the gallery.
    ssh_password_auth: bool = Field(
        False, description="Bake in cloud-init's PasswordAuthentication yes: the compliance gate must stop it."
    )

    @property
    def is_clean(self) -> bool:
        return (
            self.error_rate == 0
            and self.extra_latency_ms == 0
            and not self.fail_health
            and self.crash_after_s is None
            and not self.ssh_password_auth
        )


class ImageRecipe(BaseModel):
    """How a service's image is built."""

    model_config = ConfigDict(extra="forbid")

    service: str
    base: str | None = Field(None, description="Override of the service's base image.")
    fault_profile: FaultProfile = Field(default_factory=FaultProfile)
    packer_timeout_s: int = Field(900, ge=10, le=6 * 3600)
    template: str | None = Field(
        None,
        description="A Packer template to build with instead of the environment's builder's (images/local.pkr.hcl or "
        "images/azure.pkr.hcl).",
    )

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return check_name("service", value)


class ServiceContext(BaseModel):
    """One service in one environment: everything a task needs to reach the cloud."""

    model_config = ConfigDict(frozen=True)

    environment: AzureEnvironment
    service: ServiceConfig

    @property
    def topology(self) -> Topology:
        return Topology(service=self.service.name, environment=self.environment.name)

    def fingerprint(self) -> str:
        secret = self.environment.client_secret.get_secret_value() if self.environment.client_secret else ""
        raw = self.model_dump_json() + secret
        return hashlib.sha256(raw.encode()).hexdigest()
