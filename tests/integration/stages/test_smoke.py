"""Smoke tests against a real HTTP server on localhost that answers like a pool of instances
behind the test listener: each request goes to the next instance, round robin."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switchyard.core.rollout import HttpCheck
from switchyard.stages.smoke import run_smoke_tests

V1, V2 = "1000000.20261100.1", "1001000.20261100.1"


@dataclass
class Instance:
    """How one instance answers."""

    version: str = V2
    health: int = 200
    version_body: str | None = None  # None: {"gallery_version": version}
    echo_status: int = 200
    echo_body: str = "echo ok"


class Pool:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.requests: list[tuple[int, str, str]] = []  # (instance, method, path)
        self._next = 0
        self._lock = threading.Lock()

    def pick(self, method: str, path: str) -> Instance:
        with self._lock:
            index = self._next % len(self.instances)
            self._next += 1
            self.requests.append((index, method, path))
            return self.instances[index]


@contextmanager
def serve(pool: Pool) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self, with_body: bool) -> None:
            instance = pool.pick(self.command, self.path)
            if self.path == "/health":
                status, body = instance.health, "ok"
            elif self.path == "/version":
                status = 200
                body = instance.version_body or json.dumps({"gallery_version": instance.version})
            elif self.path == "/echo":
                status, body = instance.echo_status, instance.echo_body
            else:
                status, body = 404, "not found"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self.answer(with_body=True)

        def do_HEAD(self) -> None:
            self.answer(with_body=False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[str, Pool]]:
    pool = Pool(request.param)
    with serve(pool) as url:
        yield url, pool


def pool_of(*instances: Instance) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("listener", [list(instances)], indirect=True)


ECHO = HttpCheck(path="/echo", expect_body_contains="echo ok")


@pool_of(Instance(), Instance(), Instance())
def test_a_healthy_pool_passes_and_every_instance_was_asked_everything(listener: tuple[str, Pool]) -> None:
    url, pool = listener
    result = run_smoke_tests(url, instances=3, health_path="/health", image_version=V2, checks=[ECHO])

    assert result.ok, result.failures
    assert result.passed == ["6x GET /health", f"/version serves {V2}", *["GET /echo -> 200"] * 3]
    for instance in range(3):
        asked = [(method, path) for index, method, path in pool.requests if index == instance]
        assert sorted(asked) == [("GET", "/echo"), ("GET", "/health"), ("GET", "/health"), ("GET", "/version")]


@pool_of(Instance(), Instance(health=503))
def test_an_unhealthy_instance_fails_on_each_of_its_health_checks(listener: tuple[str, Pool]) -> None:
    url, _ = listener
    result = run_smoke_tests(url, instances=2, health_path="/health", image_version=V2)
    assert result.failures == ["GET /health -> 503", "GET /health -> 503"]


@pool_of(Instance(), Instance(version=V1))
def test_an_instance_serving_another_version_is_named(listener: tuple[str, Pool]) -> None:
    url, _ = listener
    result = run_smoke_tests(url, instances=2, health_path="/health", image_version=V2)
    assert result.failures == [f"GET /version served {V1!r}, expected {V2}"]


@pool_of(Instance(version_body="<html>proxy error</html>"))
def test_a_version_answer_that_is_not_json_fails(listener: tuple[str, Pool]) -> None:
    url, _ = listener
    [failure] = run_smoke_tests(url, instances=1, health_path="/health", image_version=V2).failures
    assert failure.startswith("GET /version -> ")


@pool_of(Instance(), Instance(echo_status=500), Instance(echo_body="something else"))
def test_a_policy_check_fails_on_the_wrong_status_or_a_body_without_the_expected_text(
    listener: tuple[str, Pool],
) -> None:
    url, _ = listener
    result = run_smoke_tests(url, instances=3, health_path="/health", image_version=V2, checks=[ECHO])
    assert result.failures == ["GET /echo -> 500, expected 200", "GET /echo: body lacks 'echo ok'"]
    assert result.passed[-1] == "GET /echo -> 200"  # the one instance that kept the promise


@pool_of(Instance(), Instance())
def test_head_checks_are_sent_as_head(listener: tuple[str, Pool]) -> None:
    url, pool = listener
    check = HttpCheck(path="/echo", method="HEAD")
    result = run_smoke_tests(url, instances=2, health_path="/health", image_version=V2, checks=[check])
    assert result.ok and result.passed[-2:] == ["HEAD /echo -> 200", "HEAD /echo -> 200"]
    assert [method for _, method, path in pool.requests if path == "/echo"] == ["HEAD", "HEAD"]


def test_a_listener_nobody_answers_on_fails_every_request_with_the_reason() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, and nothing listens on it
    result = run_smoke_tests(
        f"http://127.0.0.1:{port}", instances=1, health_path="/health", image_version=V2, checks=[ECHO]
    )
    assert len(result.failures) == 4 and not result.ok
    assert [f.split(" -> ")[0] for f in result.failures] == ["GET /health", "GET /health", "GET /version", "GET /echo"]
    assert result.failures[0].startswith("GET /health -> ConnectError: ")
