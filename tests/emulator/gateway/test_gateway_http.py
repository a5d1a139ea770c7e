"""HTTP/1.1 through the gateway: bodies in every framing, keep-alive, forwarded headers, and the
gateway's own answers when a backend is slow or breaks. One gateway serves every test here."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from gateway_harness import (
    GATEWAY_ID,
    Backend,
    BackendSet,
    make_spec,
    running_fleet,
    wait_for_health,
)

from switchyard_emulator.testing import free_port

StartBackends = Callable[[int], BackendSet]


@pytest.fixture
def backend(start_backends: StartBackends) -> Backend:
    return start_backends(1)[0]


@pytest.fixture
def gateway(tmp_path: Path, backend: Backend) -> Iterator[int]:
    """A running gateway on one backend (b0) with a 1 s request timeout; yields its port.
    The fleet's event loop runs only inside this fixture's set-up and tear-down calls: the worker
    is a separate process and serves on its own meanwhile."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = loop.run_until_complete
    context = running_fleet(tmp_path)
    fleet = ready(context.__aenter__())
    spec = make_spec(
        {"blue": [backend.ip]}, {"production": port}, {"production": ("production", "blue")},
        backend.port, request_timeout_s=1.0,
    )  # fmt: skip
    ready(fleet.apply(spec))
    ready(wait_for_health(fleet, GATEWAY_ID, {backend.ip: "Up"}))
    try:
        yield port
    finally:
        ready(context.__aexit__(None, None, None))
        loop.close()


def test_bodies_pass_through_in_every_framing(gateway: int) -> None:
    base = f"http://127.0.0.1:{gateway}"
    big = bytes(range(256)) * 4096  # 1 MiB: streamed, not buffered

    def chunks() -> Iterator[bytes]:
        for index in range(50):
            yield f"part-{index};".encode()

    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/echo", content=big).content == big
        assert client.post("/echo", content=b"small").content == b"small"
        chunked_request = client.post("/echo", content=chunks())  # Transfer-Encoding: chunked
        assert chunked_request.content == b"".join(chunks())
        chunked_response = client.get("/chunked?n=5")
        assert chunked_response.headers["transfer-encoding"] == "chunked"
        assert chunked_response.text == "".join(f"b0-{i}\n" for i in range(5))
        until_close = client.get("/until-close")
        assert until_close.text == "streamed until close by b0"
        head = client.head("/whoami")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "2")


def test_keep_alive_and_an_http10_client(gateway: int) -> None:
    with socket.create_connection(("127.0.0.1", gateway)) as sock:
        reader = sock.makefile("rb")
        for _ in range(3):  # three requests, one connection
            sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: agw\r\n\r\n")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            headers = _read_headers(reader)
            assert reader.read(int(headers[b"content-length"])) == b"b0"
        reader.close()

    # HTTP/1.0 cannot take chunked encoding: the gateway decodes it and closes the connection.
    with socket.create_connection(("127.0.0.1", gateway)) as sock:
        sock.sendall(b"GET /chunked?n=3 HTTP/1.0\r\n\r\n")
        data = _read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"b0-0\nb0-1\nb0-2\n"


def test_forwarded_headers_are_added(gateway: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway}") as client:
        seen = json.loads(client.get("/headers", headers={"X-Forwarded-For": "203.0.113.9"}).text)
    first, client_entry = (part.strip() for part in seen["x-forwarded-for"].split(","))
    assert first == "203.0.113.9"
    ip, _, client_port = client_entry.partition(":")  # Azure appends "ip:port"
    assert ip == "127.0.0.1" and client_port.isdigit()
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-port"] == str(gateway)


def test_slow_and_broken_backends_get_gateway_errors(gateway: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway}", timeout=10) as client:
        assert client.get("/sleep?ms=3000").status_code == 504  # request timeout is 1 s
        assert client.get("/hangup").status_code == 502
        assert client.get("/truncate").status_code == 502  # buffered: a clean 502
        # Streamed: the head already went out, so the client connection is cut mid-body.
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/truncate?size=400000")
        # The gateway itself is fine afterwards.
        assert client.get("/whoami").text == "b0"


def test_a_non_idempotent_request_is_never_sent_twice(gateway: int, backend: Backend) -> None:
    def hits() -> int:
        return int(httpx.get(f"http://{backend.address}/admin/hits?path=/hangup").text)

    with httpx.Client(base_url=f"http://127.0.0.1:{gateway}") as client:
        # The backend takes the request and closes without answering. For a GET on a pooled
        # keep-alive connection that looks like a stale connection: the gateway sends it once more
        # on a fresh one. A POST is never sent again.
        client.get("/whoami")  # leaves a pooled connection to the backend
        assert client.post("/hangup", content=b"pay once").status_code == 502
        assert hits() == 1
        client.get("/whoami")
        assert client.get("/hangup").status_code == 502
        assert hits() == 3


def test_malformed_requests_are_refused(gateway: int) -> None:
    cases = {
        b"NOT-HTTP\r\n\r\n": b"400",
        b"GET / HTTP/1.1\r\n\r\n": b"400",  # no Host
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n": b"400",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n": b"505",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n": b"400",  # bad chunk
    }
    for request, status in cases.items():
        with socket.create_connection(("127.0.0.1", gateway)) as sock:
            sock.sendall(request)
            assert _read_all(sock).split(b" ")[1] == status, request


def _read_headers(reader: BinaryIO) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            return headers
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
