"""Azurite, Microsoft's storage emulator, as the blob data plane behind the emulator's storage accounts.

Azure takes a gallery image version's OS disk from a VHD *page blob* in a storage account
(`storageProfile.osDiskImage.source {uri, storageAccountId}`; GalleryImageVersion_Create_WithVHD.json
in the Azure REST API specs), never from a local path. Locally that blob lives in Azurite
(https://github.com/Azure/Azurite, npm package `azurite`, installed by `make setup` into
.tools/azurite). Azurite serves only the accounts it was started with (its AZURITE_ACCOUNTS
variable), so this module starts it with one account of its own and writes what the emulator needs
to reach it to DIR/storage.json (mode 0600: it holds the account key):

    {"blob_endpoint": "https://127.0.0.1:PORT", "ca_bundle": ".../ca.pem",
     "accounts": [{"name": "...", "key": "..."}]}

Azurite serves HTTPS with a certificate signed by the emulator's CA (switchyard_emulator.tls), so
the one ca_bundle of emulator.json lets clients trust both. URLs are path-style, as Azurite's are
on an IP address: the account is the first path segment (https://127.0.0.1:PORT/ACCOUNT/container/blob).

Used by the local stack (`switchyard up`) and by switchyard_emulator.testing; the emulator process
itself only reads storage.json (`--storage-file`).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, SecretStr

from switchyard_emulator.dataplane.procfs import signal_group
from switchyard_emulator.launcher import _die_with_parent  # the same death signal as the emulator's
from switchyard_emulator.ports import free_port, port_is_free
from switchyard_emulator.tls import ensure_tls

# The version `make setup` installs (Makefile AZURITE_VERSION); another 3.x works the same here.
AZURITE_VERSION = "3.35.0"
STORAGE_FILE = "storage.json"
ACCOUNT_FILE = "account.json"
LOG_FILE = "azurite.log"
START_TIMEOUT_S = 60.0
# Where `make setup` puts it, relative to the repository root (this file is emulator/switchyard_emulator/).
_REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_INSTALL = _REPO_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azure's rule for account names: 3-24 characters, digits and lower-case letters only
# (Microsoft.Storage error AccountNameInvalid; "Storage account name" in
# https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftstorage).
ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


class AzuriteError(RuntimeError):
    """Azurite is missing, or did not start (the message says why and what to do)."""


class StorageAccountSecret(BaseModel):
    name: str
    key: SecretStr  # never printed: SecretStr's repr hides it

    def credential(self) -> dict[str, str]:
        """What azure-storage-blob takes as a shared-key credential."""
        return {"account_name": self.name, "account_key": self.key.get_secret_value()}


class BlobStorage(BaseModel):
    """What the emulator knows of the blob service behind its storage accounts (storage.json)."""

    blob_endpoint: str  # https://127.0.0.1:PORT
    ca_bundle: Path
    accounts: list[StorageAccountSecret]

    def account(self, name: str) -> StorageAccountSecret | None:
        return next((a for a in self.accounts if a.name == name), None)

    def account_url(self, name: str) -> str:
        """The account's blob endpoint, as a storage account's primaryEndpoints.blob shows it."""
        return f"{self.blob_endpoint.rstrip('/')}/{name}/"

    @classmethod
    def read(cls, path: Path) -> BlobStorage:
        try:
            return cls.model_validate_json(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise AzuriteError(f"{path} is not a readable storage.json: {error}") from None

    def write(self, path: Path) -> None:
        data = {
            "blob_endpoint": self.blob_endpoint,
            "ca_bundle": str(self.ca_bundle),
            "accounts": [{"name": a.name, "key": a.key.get_secret_value()} for a in self.accounts],
        }
        _write_private(path, json.dumps(data, indent=2).encode())


def _write_private(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    partial.replace(path)


def find_azurite() -> Path:
    """azurite-blob: $SWITCHYARD_AZURITE_BLOB, else the project's .tools/azurite, else the PATH."""
    named = os.environ.get("SWITCHYARD_AZURITE_BLOB")
    if named:
        if not Path(named).is_file():
            raise AzuriteError(f"SWITCHYARD_AZURITE_BLOB names {named}, which does not exist")
        return Path(named)
    if LOCAL_INSTALL.is_file():
        return LOCAL_INSTALL
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise AzuriteError(
        "Azurite (npm package azurite) is not installed: run `make setup`, which installs it into "
        f"{LOCAL_INSTALL.parents[2]}, or set SWITCHYARD_AZURITE_BLOB to an azurite-blob executable"
    )


def ensure_account(data_dir: Path) -> tuple[StorageAccountSecret, int | None]:
    """The account this Azurite serves (and the port it last used), made on first use and kept in
    DIR/account.json (mode 0600): its data on disk belongs to that account."""
    path = data_dir / ACCOUNT_FILE
    try:
        data = json.loads(path.read_text())
        return StorageAccountSecret(name=data["name"], key=data["key"]), data.get("port")
    except FileNotFoundError:
        pass
    except (ValueError, KeyError) as error:
        raise AzuriteError(f"{path} is not a valid account file ({error}); move it away to make a new one") from None
    # Azure account keys are 64 random bytes, base64: azure-storage-blob signs with them as such.
    account = StorageAccountSecret(
        name=f"switchyard{secrets.token_hex(4)}", key=SecretStr(base64.b64encode(secrets.token_bytes(64)).decode())
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps({"name": account.name, "key": account.key.get_secret_value()}).encode())
    return account, None


def _remember_port(data_dir: Path, account: StorageAccountSecret, port: int) -> None:
    body = {"name": account.name, "key": account.key.get_secret_value(), "port": port}
    _write_private(data_dir / ACCOUNT_FILE, json.dumps(body).encode())


def answers(storage: BlobStorage, timeout_s: float = 3.0) -> bool:
    """Any HTTPS answer of the blob endpoint (403 without a signature is an answer)."""
    host_port = storage.blob_endpoint.removeprefix("https://")
    host, _, port = host_port.rpartition(":")
    context = ssl.create_default_context(cafile=str(storage.ca_bundle))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=timeout_s)
    try:
        connection.request("GET", f"/{storage.accounts[0].name}?comp=list")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def log_tail(data_dir: Path, lines: int = 30) -> str:
    try:
        text = (data_dir / LOG_FILE).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_azurite(
    data_dir: Path,
    ca_state_dir: Path,
    *,
    port: int | None = None,
    die_with_parent: bool = False,
    timeout_s: float = START_TIMEOUT_S,
    on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[subprocess.Popen[bytes], BlobStorage]:
    """Start azurite-blob on `data_dir` (its blobs, its account, its log) with HTTPS signed by the CA of
    the emulator state dir `ca_state_dir`; wait until it answers; write DIR/storage.json.

    The process runs in its own session (process group), so stopping the group stops all of it. Its
    account key reaches it in the AZURITE_ACCOUNTS variable (Azurite's documented way), never on
    its command line. A failed start raises AzuriteError and leaves nothing running."""
    binary = find_azurite()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    account, last_port = ensure_account(data_dir)
    # The port of the last start while it is free (the blob endpoint the stack's clients knew).
    chosen = port or (last_port if last_port and port_is_free(last_port) else free_port())
    tls = ensure_tls(Path(ca_state_dir).resolve(), [], name="azurite", out_dir=data_dir / "tls")
    argv = [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(chosen),
        "--location",
        str(data_dir / "data"),
        "--cert",
        str(tls.cert_chain),
        "--key",
        str(tls.private_key),
        "--disableTelemetry",
        # The path names the account even on a host name: URLs stay the same on 127.0.0.1 and localhost.
        "--disableProductStyleUrl",
        # azure-storage-blob sends a newer x-ms-version than Azurite 3.x knows; the operations used
        # here (page blobs, properties, metadata, conditional creates) are old ones it implements.
        "--skipApiVersionCheck",
        "--silent",
    ]
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{account.name}:{account.key.get_secret_value()}"}
    (data_dir / "data").mkdir(exist_ok=True)
    with (data_dir / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    if on_spawn is not None:
        on_spawn(process)
    storage = BlobStorage(blob_endpoint=f"https://127.0.0.1:{chosen}", ca_bundle=tls.ca_bundle, accounts=[account])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise AzuriteError(
                f"Azurite exited with code {code} before it was ready (log {data_dir / LOG_FILE}):\n"
                f"{log_tail(data_dir)}"
            )
        if answers(storage, timeout_s=1.0):
            _remember_port(data_dir, account, chosen)
            storage.write(data_dir / STORAGE_FILE)
            return process, storage
        time.sleep(0.1)
    signal_group(process.pid, signal.SIGKILL)
    process.wait()
    raise AzuriteError(f"Azurite was not ready within {timeout_s:.0f} s:\n{log_tail(data_dir)}")


def stop_azurite(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM Azurite's process group; SIGKILL it if it does not stop in time."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    signal_group(process.pid, signal.SIGKILL)
    process.wait()
