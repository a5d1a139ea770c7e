"""The sample service (apps/sample/app/server.py) as a real process: endpoints, HTTP/1.1, SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane_harness import SAMPLE_APP, address_block


class Service:
    def __init__(self, process: subprocess.Popen[str], ip: str, port: int) -> None:
        self.process, self.ip, self.port = process, ip, port

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.ip, self.port, timeout=10)

    def get(self, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None):
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def start_service(tmp_path: Path, manifest: dict[str, object] | None) -> Service:
    block = address_block()
    env = {
        "PATH": "/usr/bin:/bin",
        "SWITCHYARD_LISTEN_HOST": block.ip(0),
        "SWITCHYARD_LISTEN_PORT": str(block.port),
        "SWITCHYARD_INSTANCE_ID": "4",
    }
    if manifest is not None:
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(manifest))
        env["SWITCHYARD_MANIFEST"] = str(path)
    process = subprocess.Popen(
        [sys.executable, str(SAMPLE_APP / "server.py")], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert "listening on" in banner, banner
    return Service(process, block.ip(0), block.port)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    started = start_service(
        tmp_path,
        {
            "name": "sample",
            "app_version": "3.2.1",
            "gallery_version": "3002001.20261100.1",
            "git_commit": "feed",
        },
    )
    yield started
    if started.process.poll() is None:
        started.process.kill()
    started.process.wait(timeout=10)


def test_health_version_and_work_endpoints(service: Service) -> None:
    assert service.get("/health") == (200, b'{"status":"ok"}')
    status, body = service.get("/version")
    assert status == 200
    assert json.loads(body) == {
        "name": "sample",
        "app_version": "3.2.1",
        "gallery_version": "3002001.20261100.1",
        "git_commit": "feed",
        "instance_id": "4",
    }
    status, body = service.get("/work/echo?x=1")
    assert status == 200 and json.loads(body) == {
        "method": "GET", "path": "/work/echo", "query": "x=1", "body_bytes": 0, "instance_id": "4",
    }  # fmt: skip
    status, body = service.get("/work/compute?n=3")
    assert status == 200 and json.loads(body)["n"] == 3 and len(json.loads(body)["digest"]) == 64
    status, body = service.get("/work/sleep?ms=20")
    assert status == 200 and json.loads(body)["slept_ms"] == 20


def test_errors_are_clear(service: Service) -> None:
    assert service.get("/nope")[0] == 404
    assert service.get("/health", method="DELETE")[0] == 405
    status, body = service.get("/work/sleep?ms=999999")
    assert status == 400 and b"must be within 0..60000" in body
    status, body = service.get("/work/compute?n=lots")
    assert status == 400 and b"must be an integer" in body


def test_request_bodies_with_content_length_and_chunked(service: Service) -> None:
    status, body = service.get("/work/echo", method="POST", body=b"x" * 5000)
    assert status == 200 and json.loads(body)["body_bytes"] == 5000
    connection = service.connection()
    connection.putrequest("POST", "/work/echo")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for chunk in (b"hello ", b"chunked ", b"world"):
        connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert json.loads(response.read())["body_bytes"] == 19
    connection.close()


def test_keep_alive_and_pipelined_requests_answer_in_order(service: Service) -> None:
    with socket.create_connection((service.ip, service.port), timeout=10) as sock:
        sock.sendall(
            b"GET /work/sleep?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3
    assert b'"slept_ms": 50' in answers[0]
    assert b'"app_version": "3.2.1"' in answers[1]
    assert b'{"status":"ok"}' in answers[2] and b"Connection: close" in answers[2]


def test_a_malformed_request_gets_400_and_the_connection_closes(service: Service) -> None:
    with socket.create_connection((service.ip, service.port), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 400 ")
        assert sock.recv(65536) == b""


def test_sigterm_finishes_in_flight_requests_then_exits_zero(service: Service) -> None:
    idle = service.connection()
    idle.request("GET", "/health")
    idle.getresponse().read()  # an idle keep-alive connection must not hold the stop up
    with socket.create_connection((service.ip, service.port), timeout=20) as slow:
        slow.sendall(b"GET /work/sleep?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        # The slow request's bytes are in the service's socket before this probe connects, so the
        # service has read it (it is in flight) by the time the probe is answered.
        with socket.create_connection((service.ip, service.port), timeout=10) as probe:
            probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert probe.recv(65536).startswith(b"HTTP/1.1 200")
        service.process.send_signal(signal.SIGTERM)
        received = b""
        while chunk := slow.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in received and b'"slept_ms": 1500' in received
    assert service.process.wait(timeout=20) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((service.ip, service.port), timeout=5)


def test_fault_profile_latency_and_health_failure(tmp_path: Path) -> None:
    service = start_service(tmp_path, {"fault_profile": {"error_rate": 1.0, "fail_health": True}})
    try:
        assert service.get("/health")[0] == 503
        assert service.get("/work/echo")[0] == 500
        assert service.get("/version")[0] == 200  # faults touch /work/* and /health only
    finally:
        service.process.kill()
        service.process.wait(timeout=10)


def test_a_bad_fault_profile_stops_the_service_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"fault_profile": {"error_rate": 7}}))
    finished = subprocess.run(
        [sys.executable, str(SAMPLE_APP / "server.py")],
        env={"PATH": "/usr/bin:/bin", "SWITCHYARD_MANIFEST": str(path), "SWITCHYARD_LISTEN_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode != 0
    assert "error_rate must be within 0..1" in finished.stderr
