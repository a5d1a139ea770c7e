"""Run the emulator in the foreground: HTTPS (uvicorn) + the data plane, until SIGTERM/SIGINT.

Start-up order: persisted identity and TLS, bind the socket (port 0 -> a free port), start the data
plane and replay the stored desired state, accept connections, then write DIR/emulator.json (so a
client that sees the file can connect at once). On SIGTERM/SIGINT: stop accepting, stop the data
plane (no child process left), remove emulator.json, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn
from pydantic import BaseModel, Field

from switchyard_emulator.app import Emulator, create_app
from switchyard_emulator.faults import FaultConfig, FaultInjector
from switchyard_emulator.identity import load_or_create_identity
from switchyard_emulator.profiles import ProfileName, TimingOverrides, timing_profile
from switchyard_emulator.resources.quotas import DEFAULT_VCPU_QUOTA
from switchyard_emulator.tls import ensure_tls

log = logging.getLogger("switchyard_emulator")


class EmulatorSettings(BaseModel):
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    allow_remote: bool = False
    faults: FaultConfig = Field(default_factory=FaultConfig)
    page_size: int = Field(default=100, ge=1, le=1000)
    lro_retry_after: int = Field(default=1, ge=0, le=60)
    vcpu_quota: int = Field(default=DEFAULT_VCPU_QUOTA, ge=0)
    profile: ProfileName = "fast"
    timing: TimingOverrides = Field(default_factory=TimingOverrides)
    log_level: str = "info"
    # storage.json of the Azurite that holds the storage accounts' blobs (switchyard_emulator.azurite);
    # None: the emulator refuses to create storage accounts
    storage_file: Path | None = None


class RemoteHostRefused(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    if not is_loopback(host) and not allow_remote:
        raise RemoteHostRefused(
            f"refusing to listen on non-loopback host {host!r}: the emulator's API controls processes on "
            "this machine. Pass --allow-remote if you really want that."
        )


class _Server(uvicorn.Server):
    """uvicorn's server, but a handled SIGTERM/SIGINT ends in a clean exit (uvicorn re-raises it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_exit, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _request_exit(self, sig: int) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on connections whose socket
    # says TCP, and accepted sockets inherit proto 0 from a listener made without it; with Nagle on,
    # a response written in two parts waits for the client's delayed ACK, ~40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.setblocking(False)
    return sock


def _write_private_json(path: Path, data: dict[str, object]) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    partial.replace(path)


def run(settings: EmulatorSettings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    check_host(settings.host, settings.allow_remote)
    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    info_path = state_dir / "emulator.json"
    info_path.unlink(missing_ok=True)
    identity = load_or_create_identity(state_dir)
    tls = ensure_tls(state_dir, [settings.host])
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]

    from switchyard_emulator.azurite import BlobStorage
    from switchyard_emulator.dataplane.local import LocalDataPlane

    storage = BlobStorage.read(settings.storage_file) if settings.storage_file else None

    timing = timing_profile(settings.profile, settings.timing)
    emulator = Emulator(
        state_dir,
        identity,
        LocalDataPlane(state_dir, timing=timing),
        faults=FaultInjector(settings.faults),
        page_size=settings.page_size,
        lro_retry_after=settings.lro_retry_after,
        vcpu_quota=settings.vcpu_quota,
        timing=timing,
        storage=storage,
    )
    config = uvicorn.Config(
        create_app(emulator),
        ssl_certfile=str(tls.cert_chain),
        ssl_keyfile=str(tls.private_key),
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,  # SSL peers that never close would hold it up
        timeout_keep_alive=30,
    )
    server = _Server(config)
    host_in_url = f"[{settings.host}]" if ":" in settings.host else settings.host

    async def main() -> bool:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if not server.started:
            await serving
            return False
        _write_private_json(
            info_path,
            {
                "endpoint": f"https://{host_in_url}:{port}",
                "ca_bundle": str(tls.ca_bundle),
                "token": identity.token,
                "subscription_id": identity.subscription_id,
                "log_analytics_workspace_id": identity.log_analytics_workspace_id,
                # the same workspace as an ARM resource: what a diagnostic setting's workspaceId names
                "log_analytics_workspace_resource_id": identity.log_analytics_workspace_resource_id,
                "profile": timing.name,
                # the storage accounts its blob storage (Azurite) serves, by name (keys: listKeys)
                "storage_accounts": [a.name for a in storage.accounts] if storage else [],
                "pid": os.getpid(),
            },
        )
        log.info(
            "switchyard emulator serving https://%s:%s (state %s, profile %s)",
            host_in_url,
            port,
            state_dir,
            timing.name,
        )
        try:
            await serving
        finally:
            info_path.unlink(missing_ok=True)
        return True

    try:
        ok = asyncio.run(main())
    finally:
        sock.close()
    if not ok:
        log.error("the emulator failed to start (see the errors above)")
        return 1
    log.info("switchyard emulator stopped")
    return 0
