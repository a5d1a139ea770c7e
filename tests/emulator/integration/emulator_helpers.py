"""Small helpers for the emulator integration tests (real HTTP, real /proc)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.rest import HttpRequest

DIAGNOSTIC_SETTINGS_API = "2021-05-01-preview"


def instance_version(ip: str, port: int = 8000) -> dict[str, Any]:
    """GET /version of one instance, straight to its loopback address."""
    with urllib.request.urlopen(f"http://{ip}:{port}/version", timeout=5) as response:
        return dict(json.loads(response.read()))


def gateway_get(port: int, path: str = "/version") -> tuple[int, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def eventually(check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll until `check()` is truthy (returns it) or fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s; last value: {last!r}")


def processes_using(directory: Path) -> list[int]:
    """PIDs of live processes whose working directory or command line is inside `directory`."""
    directory = directory.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if state == "Z":
            continue
        if cwd.startswith(str(directory)) or str(directory) in cmdline:
            found.append(int(entry.name))
    return found


def diagnostic_setting(
    clients: Any,
    resource_id: str,
    name: str,
    body: dict[str, Any] | None = None,
    *,
    method: str = "PUT",
) -> Any:
    """A diagnostic-settings REST call through the monitor SDK's pipeline: azure-mgmt-monitor 7 has no
    diagnostic_settings operations, and names its pipeline entry point `_send_request` (auth,
    retries and the emulator's TLS as for any SDK call). `name=""` addresses the list. Returns the
    azure.core HttpResponse."""
    url = f"{resource_id}/providers/Microsoft.Insights/diagnosticSettings" + (f"/{name}" if name else "")
    request = HttpRequest(method, url, params={"api-version": DIAGNOSTIC_SETTINGS_API}, json=body)
    return clients.monitor._send_request(request)


def send_access_log_to(
    clients: Any, resource_id: str, workspace_resource_id: str, *, dedicated: bool = False, name: str = "to-logs"
) -> dict[str, Any]:
    """A diagnostic setting that sends a gateway's access log to the workspace (AzureDiagnostics, or
    AGWAccessLogs when `dedicated`); raises for an error answer."""
    properties: dict[str, Any] = {
        "workspaceId": workspace_resource_id,
        "logs": [{"category": "ApplicationGatewayAccessLog", "enabled": True}],
    }
    if dedicated:
        properties["logAnalyticsDestinationType"] = "Dedicated"
    response = diagnostic_setting(clients, resource_id, name, {"properties": properties})
    response.raise_for_status()
    return dict(response.json())
