"""Run a real emulator process for tests, the local stack and the demo.

    with run_emulator(tmp_path / "emulator") as emulator:
        clients = emulator.clients()
        clients.compute.galleries.begin_create_or_update(...)

The emulator runs as a child process in its own process group, started by
switchyard_emulator.launcher (as the local stack starts it); leaving the block SIGTERMs the group
and SIGKILLs it if it does not stop in time. Beside it runs Azurite (switchyard_emulator.azurite),
the blob storage of its storage accounts, unless `storage=False`: images are published from a page
blob there, as on Azure (`SampleTopology.publish` uploads one).
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError

from switchyard_emulator.azurite import BlobStorage, start_azurite, stop_azurite
from switchyard_emulator.dataplane.procfs import signal_group
from switchyard_emulator.launcher import LOG_FILE, log_tail, start_emulator
from switchyard_emulator.launcher import EmulatorStartError as EmulatorStartError  # what start() raises
from switchyard_emulator.ports import free_port as free_port  # for the tests' frontends and backends

_STOP_TIMEOUT_S = 20.0


class StaticTokenCredential:
    """A TokenCredential that always presents the emulator's bearer token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + 3600)

    def __repr__(self) -> str:  # never show the token
        return "StaticTokenCredential(<redacted>)"


@dataclass(frozen=True)
class ArmError:
    """The ARM error body of a refused call, as the SDK parsed it ("" where a field is absent)."""

    status: int
    code: str
    message: str
    target: str


def arm_error(refused: HttpResponseError) -> ArmError:
    """What the emulator (or ARM) answered a refused call with; fails when it sent no ARM error body."""
    body = refused.error
    assert body is not None, f"the answer ({refused.status_code}) had no ARM error body: {refused}"
    return ArmError(refused.status_code or 0, body.code or "", body.message or "", body.target or "")


def throttling_status(emulator_file: Path) -> dict[str, Any]:
    """`GET /switchyard/throttling` of the emulator an emulator.json describes: whether it throttles,
    and the Resource Manager calls it admitted and refused so far, by operation type (and admitted,
    by resource type)."""
    return _throttling_route(emulator_file, None)


def counts_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What each of two readings' counters gained (a counter appears once it counts something)."""
    return {name: count - before.get(name, 0) for name, count in sorted(after.items()) if count > before.get(name, 0)}


def set_throttling(emulator_file: Path, *, enforced: bool) -> dict[str, Any]:
    """`PUT /switchyard/throttling`: Resource Manager's throttling on or off, with full buckets and
    the counts at zero."""
    return _throttling_route(emulator_file, {"enforced": enforced})


def _throttling_route(emulator_file: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    info = json.loads(Path(emulator_file).read_text())
    context = ssl.create_default_context(cafile=info["ca_bundle"])
    headers = {"Authorization": f"Bearer {info['token']}"}
    data = None
    if settings is not None:
        data, headers["Content-Type"] = json.dumps(settings).encode(), "application/json"
    request = urllib.request.Request(
        f"{info['endpoint']}/switchyard/throttling", data=data, headers=headers, method="GET" if data is None else "PUT"
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        answered: dict[str, Any] = json.loads(answer.read())
    return answered


@dataclass
class EmulatorClients:
    compute: Any  # azure.mgmt.compute.ComputeManagementClient
    network: Any  # azure.mgmt.network.NetworkManagementClient
    monitor: Any  # azure.mgmt.monitor.MonitorManagementClient
    resource: Any  # azure.mgmt.resource.ResourceManagementClient
    logs: Any  # azure.monitor.query.LogsQueryClient
    storage: Any  # azure.mgmt.storage.StorageManagementClient
    # the storage account the emulator's Azurite serves (None: no blob storage) and the CA that signs
    # both servers: what a blob client needs beside the account key (listKeys)
    storage_account: str | None = None
    ca_bundle: str | None = None

    def close(self) -> None:
        for client in (self.compute, self.network, self.monitor, self.resource, self.logs, self.storage):
            client.close()


class EmulatorHandle:
    """A running emulator child process and what clients need to reach it."""

    def __init__(self, state_dir: Path, port: int | None, extra_args: Sequence[str], *, storage: bool = True) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.extra_args = list(extra_args)
        self._requested_port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._with_storage = storage
        self.azurite: subprocess.Popen[bytes] | None = None
        self.blob_storage: BlobStorage | None = None

    # what emulator.json says
    @property
    def endpoint(self) -> str:
        return str(self.info["endpoint"])

    @property
    def ca_bundle(self) -> str:
        return str(self.info["ca_bundle"])

    @property
    def token(self) -> str:
        return str(self.info["token"])

    @property
    def subscription_id(self) -> str:
        return str(self.info["subscription_id"])

    @property
    def log_analytics_workspace_id(self) -> str:
        return str(self.info["log_analytics_workspace_id"])

    @property
    def log_analytics_workspace_resource_id(self) -> str:
        """The workspace as an ARM resource: what a diagnostic setting's workspaceId names."""
        return str(self.info["log_analytics_workspace_resource_id"])

    @property
    def profile(self) -> str:
        return str(self.info.get("profile", "fast"))

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __repr__(self) -> str:
        return f"EmulatorHandle(state_dir={str(self.state_dir)!r}, endpoint={self.info.get('endpoint')!r})"

    @property
    def azurite_dir(self) -> Path:
        """Azurite's data, account and log: beside the emulator's state, like the stack's."""
        return self.state_dir.parent / f"{self.state_dir.name}-azurite"

    @property
    def storage_account(self) -> str:
        """The one storage account the emulator's Azurite serves (emulator.json's storage_accounts)."""
        accounts = self.info.get("storage_accounts") or []
        assert accounts, "this emulator runs without blob storage (run_emulator(..., storage=False))"
        return str(accounts[0])

    def start(self) -> None:
        # A killed test run must not leave emulators behind on a shared machine: it dies with us.
        args = list(self.extra_args)
        if self._with_storage:
            if self.azurite is None or self.azurite.poll() is not None:
                self.azurite, self.blob_storage = start_azurite(self.azurite_dir, self.state_dir, die_with_parent=True)
            args += ["--storage-file", str(self.azurite_dir / "storage.json")]
        try:
            self.process, self.info = start_emulator(
                self.state_dir, port=self._requested_port, extra_args=args, die_with_parent=True
            )
        except BaseException:
            self._stop_azurite()
            raise
        self._requested_port = self.port

    def _stop_azurite(self) -> None:
        if self.azurite is not None:
            azurite, self.azurite = self.azurite, None
            stop_azurite(azurite)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.state_dir, lines)

    def stop(self, *, keep_storage: bool = False) -> int | None:
        """SIGTERM the emulator's process group; SIGKILL it if it does not stop in time. Azurite
        stops too, unless `keep_storage` (a restart keeps the blobs' server, as Azure's storage stays)."""
        if not keep_storage:
            self._stop_azurite()
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
        else:
            signal_group(process.pid, signal.SIGKILL)
        return process.returncode

    def restart(self) -> None:
        """Stop and start again on the same state dir (and the same port if it is still free)."""
        port = self._requested_port
        self.stop(keep_storage=True)
        try:
            self._requested_port = port
            self.start()
        except EmulatorStartError:
            self.stop(keep_storage=True)
            self._requested_port = None
            self.start()

    def credential(self) -> StaticTokenCredential:
        return StaticTokenCredential(self.token)

    def client_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.endpoint, "connection_verify": self.ca_bundle}

    def clients(self, **kwargs: Any) -> EmulatorClients:
        """Real azure-mgmt clients (and a LogsQueryClient) pointed at this emulator."""
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.monitor import MonitorManagementClient
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient
        from azure.mgmt.storage import StorageManagementClient
        from azure.monitor.query import LogsQueryClient

        credential = self.credential()
        common = {**self.client_kwargs(), **kwargs}
        return EmulatorClients(
            compute=ComputeManagementClient(credential, self.subscription_id, **common),
            network=NetworkManagementClient(credential, self.subscription_id, **common),
            monitor=MonitorManagementClient(credential, self.subscription_id, **common),
            resource=ResourceManagementClient(credential, self.subscription_id, **common),
            storage=StorageManagementClient(credential, self.subscription_id, **common),
            storage_account=(self.info.get("storage_accounts") or [None])[0],
            ca_bundle=self.ca_bundle,
            logs=LogsQueryClient(
                credential,
                endpoint=self.endpoint,
                connection_verify=self.ca_bundle,
                **{k: v for k, v in kwargs.items() if k != "polling_interval"},
            ),
        )


@contextmanager
def run_emulator(
    state_dir: Path,
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    profile: str | None = None,
    storage: bool = True,
) -> Iterator[EmulatorHandle]:
    """`profile`: "fast" or "azure" (`--profile`; None keeps the emulator's default, fast).
    `storage`: start Azurite beside it (needed to publish images; False for tests that publish none)."""
    if profile is not None:
        extra_args = [*extra_args, "--profile", profile]
    handle = EmulatorHandle(state_dir, port, extra_args, storage=storage)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


SAMPLE_APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "sample"


def pack_sample_image(
    dest_dir: Path,
    *,
    app_version: str = "1.0.0",
    gallery_version: str = "1000000.20261100.1",
    fault_profile: dict[str, Any] | None = None,
    entrypoint: list[str] | None = None,
    app_dir: Path = SAMPLE_APP_DIR,
) -> Path:
    """A local image artifact (docs/architecture.md) of the sample service, as a test fixture.

    Packer builds the real ones (images/); this packs apps/sample/app plus a manifest.json so tests
    can publish an image version without running Packer.
    """
    import io
    import tarfile

    app_manifest = json.loads((app_dir / "switchyard-app.json").read_text())
    manifest = {
        "schema": "switchyard.image/v1",
        "name": app_dir.name,
        "base": "debian-12",
        "patch_level": "2026.11",
        "app_version": app_version,
        "gallery_version": gallery_version,
        "git_commit": "0" * 40,
        "entrypoint": entrypoint or app_manifest["entrypoint"],
        "service_port": app_manifest["service_port"],
        "health_path": app_manifest["health_path"],
        "fault_profile": fault_profile or {"error_rate": 0.0, "extra_latency_ms": 0, "fail_health": False},
        "built_at": "2026-11-26T10:00:00Z",
    }
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{app_dir.name}-{gallery_version}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))
        archive.add(app_dir / "app", arcname="app", filter=lambda t: None if "__pycache__" in t.name else t)
    return path


# where SampleTopology keeps the emulator's one storage account
STORAGE_RG = "switchyard-storage"


def upload_blob(
    account_url: str,
    account: str,
    key: str,
    ca_bundle: str,
    container: str,
    name: str,
    data: bytes,
    *,
    blob_type: str = "PageBlob",
) -> str:
    """Upload `data` to Azurite with the account's key; a page blob is zero-padded to 512 bytes (gzip
    readers skip the zeros). Returns the blob's URI."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient, BlobType

    service = BlobServiceClient(
        account_url, credential={"account_name": account, "account_key": key}, connection_verify=ca_bundle
    )
    with service:
        with suppress(ResourceExistsError):
            service.create_container(container)
        blob = service.get_blob_client(container, name)
        if blob_type == "PageBlob":
            data += b"\0" * (-len(data) % 512)
        blob.upload_blob(data, blob_type=BlobType(blob_type))
        return str(blob.url)


class SampleTopology:
    """Builds, through the real SDK clients, the Azure-shaped topology switchyard deploys into:
    resource group, virtual network (gateway + instance subnets), public IP, gallery and image
    definition, image versions from local artifacts, a Standard_v2 gateway with blue/green pools,
    and scale sets whose NICs join a pool. Bodies are plain dicts (the SDKs accept both)."""

    def __init__(
        self, clients: EmulatorClients, subscription_id: str, resource_group: str, location: str = "westus"
    ) -> None:
        self.c = clients
        self.sub = subscription_id
        self.rg = resource_group
        self.location = location

    # ids
    def rg_id(self) -> str:
        return f"/subscriptions/{self.sub}/resourceGroups/{self.rg}"

    def network_id(self, kind: str, name: str) -> str:
        return f"{self.rg_id()}/providers/Microsoft.Network/{kind}/{name}"

    def subnet_id(self, subnet: str, vnet: str = "vnet") -> str:
        return f"{self.network_id('virtualNetworks', vnet)}/subnets/{subnet}"

    def gateway_id(self, name: str = "agw") -> str:
        return self.network_id("applicationGateways", name)

    def pool_id(self, pool: str, gateway: str = "agw") -> str:
        return f"{self.gateway_id(gateway)}/backendAddressPools/{pool}"

    def image_id(self, gallery: str = "gallery", image: str = "sample") -> str:
        return f"{self.rg_id()}/providers/Microsoft.Compute/galleries/{gallery}/images/{image}"

    def version_id(self, version: str, gallery: str = "gallery", image: str = "sample") -> str:
        return f"{self.image_id(gallery, image)}/versions/{version}"

    # resources
    def network(self) -> None:
        """Resource group, vnet with 'gateway' and 'instances' subnets, public IP 'pip'."""
        self.c.resource.resource_groups.create_or_update(self.rg, {"location": self.location})
        self.c.network.virtual_networks.begin_create_or_update(
            self.rg,
            "vnet",
            {
                "location": self.location,
                "properties": {
                    "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                    "subnets": [
                        {"name": "gateway", "properties": {"addressPrefix": "10.0.0.0/24"}},
                        {"name": "instances", "properties": {"addressPrefix": "10.0.1.0/24"}},
                    ],
                },
            },
        ).result()
        self.c.network.public_ip_addresses.begin_create_or_update(
            self.rg,
            "pip",
            {
                "location": self.location,
                "sku": {"name": "Standard"},
                "properties": {"publicIPAllocationMethod": "Static"},
            },
        ).result()

    def gallery(self, gallery: str = "gallery", image: str = "sample") -> None:
        self.c.compute.galleries.begin_create_or_update(self.rg, gallery, {"location": self.location}).result()
        self.c.compute.gallery_images.begin_create_or_update(
            self.rg,
            gallery,
            image,
            {
                "location": self.location,
                "properties": {
                    "osType": "Linux",
                    "osState": "Generalized",
                    "identifier": {"publisher": "switchyard", "offer": image, "sku": "debian-12"},
                },
            },
        ).result()

    def storage_account_id(self) -> str:
        """The emulator's storage account (in resource group STORAGE_RG: its name is unique across the
        emulator, as across Azure), created when missing."""
        name = self.c.storage_account
        assert name, "this emulator runs without blob storage (run_emulator(..., storage=False))"
        self.c.resource.resource_groups.create_or_update(STORAGE_RG, {"location": self.location})
        account = self.c.storage.storage_accounts.begin_create(
            STORAGE_RG, name, {"location": self.location, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
        ).result()
        return str(account.id)

    def upload(self, artifact: Path, *, blob_type: str = "PageBlob", container: str = "images") -> tuple[str, str]:
        """Upload `artifact` to the emulator's storage account (a page blob, zero-padded to 512 bytes,
        as an image's VHD is, unless `blob_type` says otherwise); returns (blob URI, account id)."""
        account_id = self.storage_account_id()
        name = str(self.c.storage_account)
        keys = self.c.storage.storage_accounts.list_keys(STORAGE_RG, name)
        uri = upload_blob(
            self.c.storage.storage_accounts.get_properties(STORAGE_RG, name).primary_endpoints.blob,
            name,
            keys["keys"][0]["value"],  # a mapping: the model's .keys is the dict method
            str(self.c.ca_bundle),
            container,
            f"{artifact.name}-{uuid.uuid4().hex[:8]}.vhd",
            artifact.read_bytes(),
            blob_type=blob_type,
        )
        return uri, account_id

    def publish(
        self,
        version: str,
        artifact: Path,
        *,
        exclude_from_latest: bool = False,
        gallery: str = "gallery",
        image: str = "sample",
        tags: dict[str, str] | None = None,
    ) -> Any:
        """Upload the artifact as a page blob and publish the version from it ({uri, storageAccountId})."""
        uri, account_id = self.upload(artifact)
        return self.c.compute.gallery_image_versions.begin_create_or_update(
            self.rg,
            gallery,
            image,
            version,
            {
                "location": self.location,
                "tags": tags or {},
                "properties": {
                    "publishingProfile": {"excludeFromLatest": exclude_from_latest},
                    "storageProfile": {"osDiskImage": {"source": {"uri": uri, "storageAccountId": account_id}}},
                },
            },
        ).result()

    def gateway_body(
        self,
        port: int,
        *,
        live_pool: str = "blue",
        test_port: int | None = None,
        name: str = "agw",
        pools: tuple[str, ...] = ("blue", "green"),
        probe_interval: int = 1,
    ) -> dict[str, Any]:
        gw = self.gateway_id(name)
        ports = [{"name": "production", "properties": {"port": port}}]
        listeners = [self._listener(gw, "production")]
        rules = [self._rule(gw, "production", live_pool, 100)]
        if test_port is not None:
            ports.append({"name": "test", "properties": {"port": test_port}})
            listeners.append(self._listener(gw, "test"))
            rules.append(self._rule(gw, "test", "green" if live_pool == "blue" else "blue", 200))
        return {
            "location": self.location,
            "properties": {
                "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 1},
                "gatewayIPConfigurations": [
                    {"name": "gateway", "properties": {"subnet": {"id": self.subnet_id("gateway")}}}
                ],
                "frontendIPConfigurations": [
                    {
                        "name": "frontend",
                        "properties": {"publicIPAddress": {"id": self.network_id("publicIPAddresses", "pip")}},
                    }
                ],
                "frontendPorts": ports,
                "backendAddressPools": [{"name": p} for p in pools],
                "probes": [
                    {
                        "name": "health",
                        "properties": {
                            "protocol": "Http",
                            "host": "127.0.0.1",
                            "path": "/health",
                            "interval": probe_interval,
                            "timeout": 1,
                            "unhealthyThreshold": 2,
                        },
                    }
                ],
                "backendHttpSettingsCollection": [
                    {
                        "name": "service",
                        "properties": {
                            "port": 8000,
                            "protocol": "Http",
                            "requestTimeout": 10,
                            "probe": {"id": f"{gw}/probes/health"},
                            "connectionDraining": {"enabled": True, "drainTimeoutInSec": 5},
                        },
                    }
                ],
                "httpListeners": listeners,
                "requestRoutingRules": rules,
            },
        }

    @staticmethod
    def _listener(gw: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "properties": {
                "frontendIPConfiguration": {"id": f"{gw}/frontendIPConfigurations/frontend"},
                "frontendPort": {"id": f"{gw}/frontendPorts/{name}"},
                "protocol": "Http",
            },
        }

    @staticmethod
    def _rule(gw: str, name: str, pool: str, priority: int) -> dict[str, Any]:
        return {
            "name": name,
            "properties": {
                "ruleType": "Basic",
                "priority": priority,
                "httpListener": {"id": f"{gw}/httpListeners/{name}"},
                "backendAddressPool": {"id": f"{gw}/backendAddressPools/{pool}"},
                "backendHttpSettings": {"id": f"{gw}/backendHttpSettingsCollection/service"},
            },
        }

    def scale_set_body(
        self,
        image_ref_id: str,
        capacity: int,
        *,
        pool: str | None = None,
        mode: str = "Manual",
        gateway: str = "agw",
    ) -> dict[str, Any]:
        ip_config: dict[str, Any] = {"subnet": {"id": self.subnet_id("instances")}}
        if pool is not None:
            ip_config["applicationGatewayBackendAddressPools"] = [{"id": self.pool_id(pool, gateway)}]
        return {
            "location": self.location,
            "sku": {"name": "Standard_B1s", "tier": "Standard", "capacity": capacity},
            "properties": {
                "upgradePolicy": {"mode": mode},
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"id": image_ref_id}},
                    "osProfile": {"computerNamePrefix": "vm", "adminUsername": "switchyard"},
                    "networkProfile": {
                        "networkInterfaceConfigurations": [
                            {
                                "name": "nic",
                                "properties": {
                                    "primary": True,
                                    "ipConfigurations": [{"name": "ipconfig", "properties": ip_config}],
                                },
                            }
                        ]
                    },
                },
            },
        }
