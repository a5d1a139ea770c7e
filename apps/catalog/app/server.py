"""The catalog service: the second service of switchyard's local fleet, beside the sample.

A read-only product catalog over HTTP/1.1, standard library only (the image carries no third-party
package). It is deliberately not the sample renamed: another port (8100), another health path
(/healthz), another API, and another server design (http.server with a thread per connection,
where the sample is an asyncio protocol), so that the fleet shows switchyard delivering services
that differ. Endpoints:

  GET /healthz                 200 {"status": "ok"}; 503 when the fault profile says fail_health
                               (the path is the manifest's health_path, from switchyard-app.json)
  GET /version                 name, app_version, gallery_version, git_commit, instance_id
  GET /catalog/items           every item: sku, name, price_cents
  GET /catalog/items/<sku>     one item, or 404
(HEAD too.) Every answer carries `X-Instance-Id` (the scale-set instance id) and `X-Image-Version`
(the gallery version of the image it runs), errors included: switchyard's traffic generator reads
them to tell which version answered whom.

The image's fault profile (manifest.json "fault_profile") applies to /catalog/* only: error_rate is
the share of requests answered 500, extra_latency_ms is added before answering; fail_health makes
the health path answer 503; crash_after_s makes the process exit with code 70 that long after it
started listening.

Configuration comes from the environment the emulator (or a VM's systemd unit) sets:
SWITCHYARD_LISTEN_HOST, SWITCHYARD_LISTEN_PORT, SWITCHYARD_INSTANCE_ID, SWITCHYARD_MANIFEST.
SIGTERM (or SIGINT) stops accepting connections, closes idle keep-alive connections, lets requests
in flight finish (answered with Connection: close), and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

# How long a SIGTERM waits for requests in flight before giving up on them.
SHUTDOWN_GRACE_S = 30.0
# An idle keep-alive connection is closed after this long (the gateway reconnects when it needs to).
IDLE_TIMEOUT_S = 75.0
CRASH_EXIT_CODE = 70  # EX_SOFTWARE: what fault_profile.crash_after_s exits with
ITEMS_PATH = "/catalog/items"

# The catalog: fixed data, so that every instance of every version answers the same.
ITEMS: dict[str, dict[str, Any]] = {
    sku: {"sku": sku, "name": name, "price_cents": price}
    for sku, name, price in (
        ("SY-1001", "signal lamp", 4_250),
        ("SY-1002", "point lever", 12_900),
        ("SY-1003", "rail clamp", 780),
        ("SY-1004", "buffer stop", 56_000),
        ("SY-1005", "track gauge", 3_150),
        ("SY-1006", "fishplate", 1_120),
    )
}
ITEMS_BODY = json.dumps({"items": list(ITEMS.values())}).encode()


class Config:
    """What the service knows about itself: the manifest and the instance it runs as."""

    def __init__(self, env: dict[str, str]) -> None:
        manifest_path = env.get("SWITCHYARD_MANIFEST", "")
        manifest: dict[str, Any] = {}
        if manifest_path:
            try:
                with open(manifest_path, encoding="utf-8") as handle:
                    manifest = json.load(handle)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"catalog: cannot read manifest {manifest_path!r}: {exc}") from exc
        self.host = env.get("SWITCHYARD_LISTEN_HOST", "127.0.0.1")
        try:
            self.port = int(env.get("SWITCHYARD_LISTEN_PORT", str(manifest.get("service_port", 8100))))
        except ValueError as exc:
            raise SystemExit(f"catalog: SWITCHYARD_LISTEN_PORT is not a port number: {exc}") from exc
        # The gateway probes the path switchyard-app.json names; the manifest carries it into the image.
        self.health_path = str(manifest.get("health_path") or "/healthz")
        if not self.health_path.startswith("/") or self.health_path.startswith(("/version", ITEMS_PATH)):
            raise SystemExit(f"catalog: health_path {self.health_path!r} must be a path of its own")
        self.instance_id = env.get("SWITCHYARD_INSTANCE_ID", "0")
        self.image_version = str(manifest.get("gallery_version", ""))
        self.version_body = json.dumps(
            {
                "name": manifest.get("name", "catalog"),
                "app_version": manifest.get("app_version", "0.0.0"),
                "gallery_version": manifest.get("gallery_version", ""),
                "git_commit": manifest.get("git_commit", ""),
                "instance_id": self.instance_id,
            }
        ).encode()
        faults = manifest.get("fault_profile") or {}
        self.error_rate = float(faults.get("error_rate", 0.0))
        self.extra_latency_s = float(faults.get("extra_latency_ms", 0)) / 1000.0
        self.fail_health = bool(faults.get("fail_health", False))
        crash_after = faults.get("crash_after_s")
        self.crash_after_s = float(crash_after) if crash_after is not None else None
        if not 0.0 <= self.error_rate <= 1.0:
            raise SystemExit(f"catalog: fault_profile.error_rate must be within 0..1, got {self.error_rate}")
        if self.extra_latency_s < 0:
            raise SystemExit("catalog: fault_profile.extra_latency_ms must not be negative")
        if self.crash_after_s is not None and self.crash_after_s <= 0:
            raise SystemExit("catalog: fault_profile.crash_after_s must be positive")


class CatalogServer(socketserver.ThreadingTCPServer):
    """Accepts connections, one thread each; knows which of them are idle, for a graceful stop."""

    allow_reuse_address = True
    # The stop below waits for requests in flight itself, up to a deadline; daemon threads never
    # hold the process beyond it.
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = False
        self.random = random.Random()
        self._lock = threading.Lock()
        self._busy: dict[CatalogHandler, bool] = {}  # every open connection: is a request being answered?
        super().__init__((config.host, config.port), CatalogHandler)

    def route(self, target: str) -> tuple[int, bytes]:
        """(status, JSON body) for a GET of `target`."""
        config = self.config
        path = urlsplit(target).path
        if path == config.health_path:
            if config.fail_health:
                return 503, b'{"status":"unhealthy","reason":"fault_profile.fail_health"}'
            return 200, b'{"status":"ok"}'
        if path == "/version":
            return 200, config.version_body
        if path == ITEMS_PATH or path.startswith(ITEMS_PATH + "/"):
            if config.extra_latency_s > 0:
                time.sleep(config.extra_latency_s)
            if path == ITEMS_PATH:
                answer = 200, ITEMS_BODY
            else:
                item = ITEMS.get(path[len(ITEMS_PATH) + 1 :])
                answer = (200, json.dumps(item).encode()) if item else (404, b'{"error":"no such item"}')
            # The fault is decided after the work, like a bug that fails a share of real requests.
            if config.error_rate > 0 and self.random.random() < config.error_rate:
                return 500, b'{"error":"injected fault (fault_profile.error_rate)"}'
            return answer
        return 404, b'{"error":"not found"}'

    # Connection bookkeeping ---------------------------------------------------------------------
    def opened(self, handler: CatalogHandler) -> None:
        with self._lock:
            self._busy[handler] = False

    def closed(self, handler: CatalogHandler) -> None:
        with self._lock:
            self._busy.pop(handler, None)

    def mark(self, handler: CatalogHandler, busy: bool) -> None:
        with self._lock:
            if handler in self._busy:
                self._busy[handler] = busy

    def stop(self, grace_s: float) -> int:
        """Graceful stop: no new connections; idle keep-alive connections close now; busy ones after
        their answer (which says Connection: close). Returns how many were cut at the deadline."""
        self.stopping = True
        self.shutdown()  # serve_forever returns: nothing new is accepted
        self.server_close()
        deadline = time.monotonic() + grace_s
        while True:
            with self._lock:
                idle = [handler for handler, busy in self._busy.items() if not busy]
                remaining = len(self._busy)
            for handler in idle:
                handler.hang_up()
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.02)


class CatalogHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway pools its connections to the instances
    disable_nagle_algorithm = True  # one write per answer, sent at once
    timeout = IDLE_TIMEOUT_S
    server: CatalogServer

    # -- connection life ---------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.server.opened(self)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.closed(self)

    def handle_one_request(self) -> None:
        # Waiting for the next request line: idle, so a graceful stop may close this connection.
        self.server.mark(self, busy=False)
        if self.server.stopping:
            self.close_connection = True
            return
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.server.mark(self, busy=True)  # a request line arrived: answer it before stopping
        return super().parse_request()

    def hang_up(self) -> None:
        """Close an idle connection: its thread's read returns and the thread ends. Only the read
        side: a request whose line was read just before (between the read and parse_request marking
        the connection busy, the stop sees it idle) can still be answered, instead of being lost."""
        with contextlib.suppress(OSError):  # already gone
            self.connection.shutdown(socket.SHUT_RD)

    # -- requests ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        # A body on a GET is not read: answer, then close, so the connection never falls out of step.
        has_body = self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers
        try:
            status, body = self.server.route(self.path)
        except Exception as exc:  # a bug in a handler answers 500, it does not kill the connection's thread
            print(f"catalog: handler error on {self.path}: {exc!r}", file=sys.stderr, flush=True)
            status, body = 500, b'{"error":"internal error"}'
        self.reply(status, body, close=has_body)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        # Read-only service; the request's body is not read, so the connection closes after the answer.
        self.reply(405, b'{"error":"method not allowed"}', close=True, allow="GET, HEAD")

    do_PUT = do_PATCH = do_DELETE = do_POST

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request, an unknown method) as JSON with the
        instance headers, closing the connection as http.server does."""
        reason = message or HTTPStatus(code).phrase
        self.reply(code, json.dumps({"error": reason}).encode(), close=True)

    def reply(self, status: int, body: bytes, *, close: bool = False, allow: str | None = None) -> None:
        config = self.server.config
        keep_alive = not (close or self.close_connection or self.server.stopping)
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json",
            f"X-Instance-Id: {config.instance_id}",
            f"X-Image-Version: {config.image_version}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if allow:
            head.append(f"Allow: {allow}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(data if self.command == "HEAD" else data + body)
        self.close_connection = not keep_alive

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per request would fill the console log; failures answer for themselves."""


def _crash(after_s: float) -> None:
    message = f"catalog: crashing on purpose after {after_s:g} s (fault_profile.crash_after_s)"
    print(message, file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_CODE)


def main() -> int:
    config = Config(dict(os.environ))
    try:
        server = CatalogServer(config)
    except OSError as exc:
        print(f"catalog: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr, flush=True)
        return 3
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    accepting = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    accepting.start()
    print(
        f"catalog: instance {config.instance_id} listening on {config.host}:{config.port} (pid {os.getpid()})",
        flush=True,
    )
    if config.crash_after_s is not None:
        crash = threading.Timer(config.crash_after_s, _crash, args=(config.crash_after_s,))
        crash.daemon = True
        crash.start()
    # Signal handlers run in this (the main) thread: wait in short slices so they run promptly.
    while not stop.wait(0.2):
        pass
    cut = server.stop(SHUTDOWN_GRACE_S)
    print(f"catalog: stopped ({cut} connection(s) cut at the grace deadline)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
