"""The sample service switchyard ships in its local demo image.

A small, fast HTTP/1.1 server on asyncio (standard library only, so the image carries no
third-party package). Endpoints:

  GET /health            200 {"status": "ok"}; 503 when the fault profile says fail_health
  GET /version           name, app_version, gallery_version, git_commit, instance_id
  GET|POST /work/echo    echoes method, path, query (and the request body's size)
  GET /work/compute?n=N  burns CPU: N rounds of sha256 (n <= 5_000_000)
  GET /work/sleep?ms=M   answers after M milliseconds (M <= 60_000)
  POST /work/notes       stores the body as a note in the shared database: {"id": N}
  GET /work/notes/N      the note N, whichever instance stored it: {"id": N, "text": ...}
  GET /work/greeting     {"greeting": ...}: the new one while feature flag new_greeting is on (flags.py)

Every answer carries `X-Instance-Id` (the scale-set instance id) and `X-Image-Version` (the
gallery version of the image it runs), so a client can see which
instance served it, errors included (e.g. to verify a canary's traffic split).

The image's fault profile (manifest.json "fault_profile") is applied to /work/* only:
error_rate is the share of requests answered 500, extra_latency_ms is added before answering;
crash_after_s makes the whole process exit with code 70 that long after it started listening.

Configuration comes from the environment the emulator (or a VM's init) sets:
SWITCHYARD_LISTEN_HOST, SWITCHYARD_LISTEN_PORT, SWITCHYARD_INSTANCE_ID, SWITCHYARD_MANIFEST; the
instance's custom data (SWITCHYARD_CUSTOM_DATA names the file; on Azure /var/lib/waagent/CustomData)
names the shared database (database_url, sqlite:///PATH), which both colors use and where the feature flags are.
SIGTERM (or SIGINT) stops accepting connections, lets requests in flight finish, closes idle
keep-alive connections, and exits 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from typing import Any
from urllib.parse import parse_qs

from flags import Flags
from notes import Notes

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_COMPUTE_ROUNDS = 5_000_000
MAX_SLEEP_MS = 60_000
# How long a SIGTERM waits for requests in flight before giving up on them.
SHUTDOWN_GRACE_S = 30.0
CRASH_EXIT_CODE = 70  # EX_SOFTWARE: what fault_profile.crash_after_s exits with

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


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
                raise SystemExit(f"sample: cannot read manifest {manifest_path!r}: {exc}") from exc
        self.host = env.get("SWITCHYARD_LISTEN_HOST", "127.0.0.1")
        try:
            self.port = int(env.get("SWITCHYARD_LISTEN_PORT", str(manifest.get("service_port", 8000))))
        except ValueError as exc:
            raise SystemExit(f"sample: SWITCHYARD_LISTEN_PORT is not a port number: {exc}") from exc
        self.instance_id = env.get("SWITCHYARD_INSTANCE_ID", "0")
        self.image_version = str(manifest.get("gallery_version", ""))
        self.version_body = json.dumps(
            {
                "name": manifest.get("name", "sample"),
                "app_version": manifest.get("app_version", "0.0.0"),
                "gallery_version": manifest.get("gallery_version", ""),
                "git_commit": manifest.get("git_commit", ""),
                "instance_id": self.instance_id,
            }
        ).encode()
        self.database_path = database_path(read_custom_data(env))
        faults = manifest.get("fault_profile") or {}
        self.error_rate = float(faults.get("error_rate", 0.0))
        self.extra_latency_s = float(faults.get("extra_latency_ms", 0)) / 1000.0
        self.fail_health = bool(faults.get("fail_health", False))
        crash_after = faults.get("crash_after_s")
        self.crash_after_s = float(crash_after) if crash_after is not None else None
        if self.crash_after_s is not None and self.crash_after_s <= 0:
            raise SystemExit("sample: fault_profile.crash_after_s must be positive")
        if not 0.0 <= self.error_rate <= 1.0:
            raise SystemExit(f"sample: fault_profile.error_rate must be within 0..1, got {self.error_rate}")
        if self.extra_latency_s < 0:
            raise SystemExit("sample: fault_profile.extra_latency_ms must not be negative")


# Where Azure's Linux provisioning agent leaves a VM's custom data; the emulator names its own file.
AZURE_CUSTOM_DATA = "/var/lib/waagent/CustomData"


def read_custom_data(env: dict[str, str]) -> dict[str, Any]:
    """The settings switchyard gives every instance (service, environment, database_url): JSON in
    the VM's custom data; none when the VM has none."""
    path = env.get("SWITCHYARD_CUSTOM_DATA") or (AZURE_CUSTOM_DATA if os.path.exists(AZURE_CUSTOM_DATA) else "")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"sample: cannot read the instance's custom data {path!r}: {exc}") from exc
    if not isinstance(settings, dict):
        raise SystemExit(f"sample: the instance's custom data {path!r} is not a JSON object")
    return settings


def database_path(settings: dict[str, Any]) -> str | None:
    url = settings.get("database_url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith("sqlite:///"):
        raise SystemExit(f"sample: database_url {url!r} is not sqlite:///PATH, the one kind this sample opens")
    return url.removeprefix("sqlite://")


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str], bool]:
    """Request line + headers -> (method, path, query, headers, keep_alive)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "undecodable request head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"malformed request line {lines[0][:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, f"malformed header line {line[:100]!r}")
        headers[name.lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked to keep it.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    path, _, query = target.partition("?")
    return method, path, query, headers, keep_alive


def decode_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at `start`; None if more bytes are needed."""
    body = bytearray()
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise BadRequest(400, "malformed chunk size") from exc
        pos = line_end + 2
        if size == 0:
            # Skip trailers up to the empty line.
            while True:
                trailer_end = buffer.find(b"\r\n", pos)
                if trailer_end < 0:
                    return None
                if trailer_end == pos:
                    return bytes(body), trailer_end + 2
                pos = trailer_end + 2
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos : pos + size]
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        pos += size + 2


class SampleService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self.random = random.Random()
        self.notes = Notes(config.database_path) if config.database_path else None
        self.flags = Flags(config.database_path)

    def health(self) -> tuple[int, bytes]:
        if self.config.fail_health:
            return 503, b'{"status":"unhealthy","reason":"fault_profile.fail_health"}'
        return 200, b'{"status":"ok"}'

    async def handle_work(self, request: Request) -> tuple[int, bytes]:
        config = self.config
        if config.extra_latency_s > 0:
            await asyncio.sleep(config.extra_latency_s)
        if request.path == "/work/sleep":
            ms = query_number(request.query, "ms", 0, MAX_SLEEP_MS)
            await asyncio.sleep(ms / 1000.0)
            body: dict[str, Any] = {"slept_ms": ms}
        elif request.path == "/work/compute":
            rounds = query_number(request.query, "n", 1000, MAX_COMPUTE_ROUNDS)
            digest = b"switchyard"
            for _ in range(rounds):
                digest = hashlib.sha256(digest).digest()
            body = {"n": rounds, "digest": digest.hex()}
        elif request.path == "/work/notes" or request.path.startswith("/work/notes/"):
            answer = await self.handle_notes(request)
            if answer[0] != 200:
                return answer
            body = json.loads(answer[1])
        elif request.path == "/work/greeting":
            # Released by flipping a flag, not by a deploy: `switchyard flag set sample new_greeting on`.
            new = self.flags.is_on("new_greeting")
            body = {"greeting": "hello, and welcome to the new greeting" if new else "hello"}
        elif request.path == "/work/echo":
            body = {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body_bytes": len(request.body),
            }
        else:
            return 404, b'{"error":"not found"}'
        # The fault is decided after the work, like a bug that fails a share of real requests.
        if config.error_rate > 0 and self.random.random() < config.error_rate:
            return 500, b'{"error":"injected fault (fault_profile.error_rate)"}'
        body["instance_id"] = config.instance_id
        return 200, json.dumps(body).encode()

    async def handle_notes(self, request: Request) -> tuple[int, bytes]:
        """POST /work/notes stores the body's text; GET /work/notes/<id> reads a note back, whichever
        instance (or color) stored it: the database is shared."""
        notes = self.notes
        if notes is None:
            return 503, b'{"error":"no database: the instance\'s custom data names no database_url"}'
        try:
            if request.path == "/work/notes" and request.method == "POST":
                text = request.body.decode("utf-8", errors="replace")
                note_id = await asyncio.to_thread(notes.add, text)
                return 200, json.dumps({"id": note_id}).encode()
            if request.path.startswith("/work/notes/") and request.method in ("GET", "HEAD"):
                number = request.path.removeprefix("/work/notes/")
                if not number.isdigit():
                    return 400, b'{"error":"a note id is a number"}'
                text = await asyncio.to_thread(notes.get, int(number))
                if text is None:
                    return 404, b'{"error":"no such note"}'
                return 200, json.dumps({"id": int(number), "text": text}).encode()
        except sqlite3.Error as exc:
            return 500, json.dumps({"error": f"database: {exc}"}).encode()
        return 405, b'{"error":"method not allowed"}'

    def route_sync(self, request: Request) -> tuple[int, bytes] | None:
        """Answer without awaiting when possible (the fast path); None means 'go async'."""
        path = request.path
        if path == "/health":
            if request.method not in ("GET", "HEAD"):
                return 405, b'{"error":"method not allowed"}'
            return self.health()
        if path == "/version":
            if request.method not in ("GET", "HEAD"):
                return 405, b'{"error":"method not allowed"}'
            return 200, self.config.version_body
        if path.startswith("/work/"):
            if request.method not in ("GET", "HEAD", "POST"):
                return 405, b'{"error":"method not allowed"}'
            config = self.config
            if path == "/work/echo" and config.extra_latency_s <= 0 and config.error_rate <= 0:
                body = {
                    "method": request.method,
                    "path": path,
                    "query": request.query,
                    "body_bytes": len(request.body),
                    "instance_id": config.instance_id,
                }
                return 200, json.dumps(body).encode()
            return None
        return 404, b'{"error":"not found"}'


def query_number(query: str, name: str, default: int, maximum: int) -> int:
    values = parse_qs(query).get(name)
    if not values:
        return default
    try:
        number = int(values[0])
    except ValueError as exc:
        raise BadRequest(400, f"query parameter {name} must be an integer") from exc
    if number < 0 or number > maximum:
        raise BadRequest(400, f"query parameter {name} must be within 0..{maximum}")
    return number


class HttpConnection(asyncio.Protocol):
    """One client connection: parses pipelined requests and answers them in order."""

    def __init__(self, service: SampleService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: list[Request] = []
        self.worker: asyncio.Task[None] | None = None
        self.closing = False

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.service.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.service.connections.discard(self)
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self.parse_requests()
        except BadRequest as exc:
            self.fail(exc.status, str(exc))
            return
        if self.worker is None and self.pending:
            self.answer_ready()

    # -- parsing ------------------------------------------------------------------------
    def parse_requests(self) -> None:
        buffer = self.buffer
        while not self.closing:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise BadRequest(431, "request head too large")
                return
            method, path, query, headers, keep_alive = parse_head(bytes(buffer[:head_end]))
            body_start = head_end + 4
            if "chunked" in headers.get("transfer-encoding", "").lower():
                decoded = decode_chunked(buffer, body_start)
                if decoded is None:
                    return
                body, consumed = decoded
            else:
                length_text = headers.get("content-length", "0")
                try:
                    length = int(length_text)
                except ValueError as exc:
                    raise BadRequest(400, "malformed Content-Length") from exc
                if length < 0 or length > MAX_BODY_BYTES:
                    raise BadRequest(413, "request body too large")
                if len(buffer) < body_start + length:
                    return
                body = bytes(buffer[body_start : body_start + length])
                consumed = body_start + length
            del buffer[:consumed]
            self.pending.append(Request(method, path, query, headers, body, keep_alive))

    # -- answering ----------------------------------------------------------------------
    def answer_ready(self) -> None:
        """Answer queued requests synchronously until one needs awaiting."""
        while self.pending and not self.closing:
            request = self.pending[0]
            try:
                answer = self.service.route_sync(request)
            except BadRequest as exc:
                answer = (exc.status, json.dumps({"error": str(exc)}).encode())
            if answer is None:
                self.worker = asyncio.get_running_loop().create_task(self.answer_async())
                return
            self.pending.pop(0)
            self.respond(request, *answer)

    async def answer_async(self) -> None:
        try:
            while self.pending and not self.closing:
                request = self.pending[0]
                try:
                    answer = self.service.route_sync(request)
                    if answer is None:
                        answer = await self.service.handle_work(request)
                except BadRequest as exc:
                    answer = (exc.status, json.dumps({"error": str(exc)}).encode())
                except Exception as exc:  # a bug in a handler answers 500, it does not kill the server
                    print(f"sample: handler error on {request.path}: {exc!r}", file=sys.stderr)
                    answer = (500, b'{"error":"internal error"}')
                self.pending.pop(0)
                self.respond(request, *answer)
        finally:
            self.worker = None

    def respond(self, request: Request, status: int, body: bytes) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        keep_alive = request.keep_alive and not self.service.stopping
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: application/json\r\n"
            f"X-Instance-Id: {self.service.config.instance_id}\r\n"
            f"X-Image-Version: {self.service.config.image_version}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode("latin-1")
        transport.write(head if request.method == "HEAD" else head + body)
        if not keep_alive:
            self.closing = True
            transport.close()

    def fail(self, status: int, message: str) -> None:
        if self.transport is None:
            return
        body = json.dumps({"error": message}).encode()
        self.transport.write(
            (
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        self.closing = True
        self.transport.close()

    @property
    def idle(self) -> bool:
        """Nothing read and unanswered, nothing half-received: safe to close at shutdown."""
        return not self.pending and self.worker is None and not self.buffer


async def serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    service = SampleService(config)
    server = await loop.create_server(
        lambda: HttpConnection(service), config.host, config.port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(
        f"sample: instance {config.instance_id} listening on {config.host}:{config.port} (pid {os.getpid()})",
        flush=True,
    )
    if config.crash_after_s is not None:
        loop.call_later(config.crash_after_s, _crash, config.crash_after_s)
    await stop.wait()

    # Graceful stop: no new connections; idle keep-alive connections close now; busy ones close
    # after their answer (respond() sends Connection: close once `stopping` is set).
    service.stopping = True
    server.close()
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while True:
        for connection in list(service.connections):
            if connection.idle and connection.transport is not None:
                connection.closing = True
                connection.transport.close()
        if not service.connections or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    in_flight = len(service.connections)
    print(f"sample: stopped ({in_flight} connection(s) cut at the grace deadline)", flush=True)
    return 0


def _crash(after_s: float) -> None:
    print(f"sample: crashing on purpose after {after_s:g} s (fault_profile.crash_after_s)", file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_CODE)


def main() -> int:
    config = Config(dict(os.environ))
    try:
        return asyncio.run(serve(config))
    except OSError as exc:
        print(f"sample: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
