"""The catalog, the fleet's second service, as a real process: what the gateway probes, what users
and switchyard's traffic generator read, the faults an image can carry, and a graceful stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchyard_emulator.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVER = REPO_ROOT / "apps" / "catalog" / "app" / "server.py"
APP_MANIFEST = json.loads((REPO_ROOT / "apps" / "catalog" / "switchyard-app.json").read_text())
GALLERY_VERSION = "1000000.20261200.1"


class Catalog:
    """One catalog server process, configured as the emulator configures an instance."""

    def __init__(self, root: Path, faults: dict[str, Any] | None = None) -> None:
        manifest = root / "manifest.json"
        manifest.write_text(
            json.dumps(
                {
                    "name": "catalog",
                    "app_version": "1.0.0",
                    "gallery_version": GALLERY_VERSION,
                    "git_commit": "a" * 40,
                    "health_path": APP_MANIFEST["health_path"],
                    "fault_profile": faults or {},
                }
            )
        )
        self.port = free_port()
        env = {
            "SWITCHYARD_LISTEN_PORT": str(self.port),
            "SWITCHYARD_INSTANCE_ID": "7",
            "SWITCHYARD_MANIFEST": str(manifest),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/version", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=40)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Callable[..., Catalog]]:
    started: list[Catalog] = []

    def start(faults: dict[str, Any] | None = None) -> Catalog:
        (tmp_path / str(len(started))).mkdir()
        started.append(Catalog(tmp_path / str(len(started)), faults))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_the_catalog_answers_its_own_health_path_and_api_and_says_which_image_answered(
    catalog: Callable[..., Catalog],
) -> None:
    server = catalog()
    assert APP_MANIFEST["health_path"] == "/healthz" and APP_MANIFEST["service_port"] == 8100
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    items = httpx.get(f"{server.url}/catalog/items").json()["items"]
    assert len(items) == 6 and {"sku", "name", "price_cents"} <= set(items[0])
    one = httpx.get(f"{server.url}/catalog/items/{items[2]['sku']}")
    assert one.status_code == 200 and one.json() == items[2]
    missing = httpx.get(f"{server.url}/catalog/items/SY-0000")
    assert missing.status_code == 404
    version = httpx.get(f"{server.url}/version").json()
    assert version["gallery_version"] == GALLERY_VERSION and version["instance_id"] == "7"
    # every answer, an error too, says which image and instance gave it (the traffic generator reads them)
    for answer in (health, one, missing):
        assert answer.headers["X-Image-Version"] == GALLERY_VERSION and answer.headers["X-Instance-Id"] == "7"
    # the sample's paths are not the catalog's
    assert httpx.get(f"{server.url}/health").status_code == 404
    assert httpx.get(f"{server.url}/work/echo").status_code == 404


def test_an_image_built_with_faults_fails_its_api_or_its_health_probe_as_told(
    catalog: Callable[..., Catalog],
) -> None:
    erring = catalog({"error_rate": 1.0})
    assert httpx.get(f"{erring.url}/catalog/items").status_code == 500
    assert httpx.get(f"{erring.url}/healthz").status_code == 200  # errors, yet healthy: only a canary sees it
    sick = catalog({"fail_health": True})
    assert httpx.get(f"{sick.url}/healthz").status_code == 503
    assert httpx.get(f"{sick.url}/catalog/items").status_code == 200


def test_a_fault_profile_out_of_range_stops_the_server_with_a_reason(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"fault_profile": {"error_rate": 2}}))
    result = subprocess.run(
        [sys.executable, str(SERVER)],
        env={"SWITCHYARD_LISTEN_PORT": str(free_port()), "SWITCHYARD_MANIFEST": str(manifest)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    assert "fault_profile.error_rate must be within 0..1, got 2" in result.stderr


def test_sigterm_lets_a_request_in_flight_finish_and_exits_0(catalog: Callable[..., Catalog]) -> None:
    server = catalog({"extra_latency_ms": 800})
    with httpx.Client() as client:
        slow = client.build_request("GET", f"{server.url}/catalog/items")
        answers: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answers.append(client.send(slow)))
        asking.start()
        time.sleep(0.3)  # the request is being answered
        assert server.stop() == 0
        asking.join(timeout=10)
    [answer] = answers
    assert answer.status_code == 200 and answer.headers.get("Connection", "").lower() == "close"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=1)
