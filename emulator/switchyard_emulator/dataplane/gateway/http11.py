"""The small, strict subset of HTTP/1.1 (RFC 9112) the gateway proxy speaks on both sides.

Heads are parsed from the bytes up to the blank line; bodies are framed by Content-Length,
chunked transfer coding or (responses only) the end of the connection. Chunked bodies are passed
through verbatim (chunk framing included) when both sides speak HTTP/1.1, so the proxy never
buffers a whole body. Anything ambiguous that could be used to smuggle requests between the
client and the backend (both Content-Length and Transfer-Encoding, a space before a colon,
obsolete line folding, a non-numeric length) is rejected instead of being guessed at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

# Heads longer than this are refused (431 from the client side, 502 from a backend).
MAX_HEAD_BYTES = 64 * 1024
# Bodies up to this size are read whole before forwarding: one write, and a retry is possible.
SMALL_BODY_BYTES = 64 * 1024
_COPY_CHUNK = 64 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, never the end-to-end message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class ByteSource(Protocol):
    """What the body copiers read from: an asyncio.StreamReader or a wrapper around one."""

    async def read(self, n: int) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readuntil(self, separator: bytes) -> bytes: ...


class HttpProtocolError(Exception):
    """The peer sent something this proxy will not interpret; `status` is what the client gets."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BodyKind(Enum):
    NONE = 0
    LENGTH = 1
    CHUNKED = 2
    UNTIL_CLOSE = 3  # responses only: the body ends when the backend closes the connection


@dataclass(slots=True)
class Headers:
    """Header lines as received: `lines` keeps each raw line (name case preserved) for forwarding;
    `values` maps lower-case names to their comma-joined values for the proxy's own decisions."""

    lines: list[tuple[bytes, bytes]]  # (lower-case name, raw line)
    values: dict[bytes, bytes]

    def get(self, name: bytes) -> bytes | None:
        return self.values.get(name)

    def connection_tokens(self) -> set[bytes]:
        value = self.values.get(b"connection")
        if not value:
            return set()
        return {token.strip().lower() for token in value.split(b",") if token.strip()}


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"HTTP/1.1" or b"HTTP/1.0"
    headers: Headers
    body: BodyKind
    content_length: int

    @property
    def keep_alive(self) -> bool:
        tokens = self.headers.connection_tokens()
        if self.version == b"HTTP/1.0":
            return b"keep-alive" in tokens
        return b"close" not in tokens


@dataclass(slots=True)
class ResponseHead:
    version: bytes
    status: int
    reason: bytes
    headers: Headers
    body: BodyKind
    content_length: int

    @property
    def keep_alive(self) -> bool:
        tokens = self.headers.connection_tokens()
        if self.version == b"HTTP/1.0":
            return b"keep-alive" in tokens
        return b"close" not in tokens


def _parse_header_lines(raw_lines: list[bytes]) -> Headers:
    lines: list[tuple[bytes, bytes]] = []
    values: dict[bytes, bytes] = {}
    for line in raw_lines:
        if not line:
            continue
        if line[0] in b" \t":
            raise HttpProtocolError("obsolete header line folding is not accepted")
        colon = line.find(b":")
        if colon <= 0:
            raise HttpProtocolError("malformed header line")
        name = line[:colon]
        if name != name.strip() or b" " in name or b"\t" in name:
            raise HttpProtocolError("whitespace in a header name")
        lower = name.lower()
        value = line[colon + 1 :].strip()
        lines.append((lower, line))
        previous = values.get(lower)
        values[lower] = value if previous is None else previous + b", " + value
    return Headers(lines, values)


def _body_framing(headers: Headers, *, is_request: bool) -> tuple[BodyKind, int]:
    transfer_encoding = headers.get(b"transfer-encoding")
    content_length = headers.get(b"content-length")
    if transfer_encoding is not None:
        if content_length is not None:
            raise HttpProtocolError("both Transfer-Encoding and Content-Length are present")
        codings = [c.strip().lower() for c in transfer_encoding.split(b",") if c.strip()]
        if codings and codings[-1] == b"chunked":
            if codings.count(b"chunked") > 1:
                raise HttpProtocolError("chunked transfer coding applied twice")
            return BodyKind.CHUNKED, -1
        if is_request:
            raise HttpProtocolError("a request's last transfer coding must be chunked", status=501)
        return BodyKind.UNTIL_CLOSE, -1
    if content_length is not None:
        # Repeated Content-Length headers were joined with ", ": they must all agree.
        candidates = {part.strip() for part in content_length.split(b",")}
        if len(candidates) != 1:
            raise HttpProtocolError("conflicting Content-Length values")
        text = candidates.pop()
        if not text.isdigit() or len(text) > 18:
            raise HttpProtocolError("invalid Content-Length")
        length = int(text)
        return (BodyKind.LENGTH, length) if length else (BodyKind.NONE, 0)
    return (BodyKind.NONE, 0) if is_request else (BodyKind.UNTIL_CLOSE, -1)


def parse_request_head(head: bytes) -> RequestHead:
    """Parse the bytes of a request head, including its final CRLFCRLF."""
    raw_lines = head[:-4].split(b"\r\n")
    parts = raw_lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpProtocolError("malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise HttpProtocolError("only HTTP/1.0 and HTTP/1.1 are spoken here", status=505)
        raise HttpProtocolError("malformed request line")
    if not method.isalpha() or not method.isupper():
        raise HttpProtocolError("malformed request method")
    headers = _parse_header_lines(raw_lines[1:])
    if version == b"HTTP/1.1" and headers.get(b"host") is None:
        raise HttpProtocolError("an HTTP/1.1 request must carry a Host header")
    body, length = _body_framing(headers, is_request=True)
    return RequestHead(method, target, version, headers, body, length)


def parse_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    """Parse a backend's response head; `request_method` decides whether a body can follow."""
    raw_lines = head[:-4].split(b"\r\n")
    status_line = raw_lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpProtocolError("malformed status line", status=502)
    version, status_text = parts[0], parts[1]
    reason = parts[2] if len(parts) == 3 else b""
    status = int(status_text)
    if not 100 <= status <= 599:
        raise HttpProtocolError("status code out of range", status=502)
    try:
        headers = _parse_header_lines(raw_lines[1:])
        if request_method == b"HEAD" or status < 200 or status in (204, 304):
            body, length = BodyKind.NONE, 0
        else:
            body, length = _body_framing(headers, is_request=False)
    except HttpProtocolError as error:
        raise HttpProtocolError(f"backend response: {error}", status=502) from error
    return ResponseHead(version, status, reason, headers, body, length)


def forwardable_lines(headers: Headers, drop: frozenset[bytes] | set[bytes] = frozenset()) -> list[bytes]:
    """The raw header lines that cross the proxy: end-to-end headers only."""
    named_by_connection = headers.connection_tokens()
    return [
        raw
        for lower, raw in headers.lines
        if lower not in HOP_BY_HOP and lower not in named_by_connection and lower not in drop
    ]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """The next head (through CRLFCRLF). IncompleteReadError when the peer closed first."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as error:
        raise HttpProtocolError("head too large", status=431) from error


async def copy_length(
    reader: ByteSource,
    write: Callable[[bytes], None],
    length: int,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Copy exactly `length` body bytes; IncompleteReadError if the sender stops short."""
    remaining = length
    while remaining:
        data = await reader.read(min(remaining, _COPY_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        write(data)
        remaining -= len(data)
        if drain is not None:
            await drain()
    return length


async def copy_chunked(
    reader: ByteSource,
    write: Callable[[bytes], None],
    *,
    decode: bool,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Copy one chunked body. With decode=False the chunk framing and trailers pass through
    verbatim; with decode=True only the payload is written (for an HTTP/1.0 client).
    Returns the number of bytes read from `reader`."""
    consumed = 0
    while True:
        try:
            size_line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as error:
            raise HttpProtocolError("chunk size line too long", status=502) from error
        consumed += len(size_line)
        size_text = size_line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as error:
            raise HttpProtocolError("malformed chunk size") from error
        if size < 0 or not size_text or len(size_text) > 15:
            raise HttpProtocolError("malformed chunk size")
        if not decode:
            write(size_line)
        if size == 0:
            while True:  # trailer section, ended by an empty line
                trailer = await reader.readuntil(b"\r\n")
                consumed += len(trailer)
                if not decode:
                    write(trailer)
                if trailer == b"\r\n":
                    return consumed
        consumed += await copy_length(reader, write, size, drain)
        crlf = await reader.readexactly(2)
        consumed += 2
        if crlf != b"\r\n":
            raise HttpProtocolError("chunk not followed by CRLF")
        if not decode:
            write(crlf)


async def copy_until_close(
    reader: ByteSource,
    write: Callable[[bytes], None],
    drain: Callable[[], Awaitable[None]] | None = None,
) -> int:
    total = 0
    while True:
        data = await reader.read(_COPY_CHUNK)
        if not data:
            return total
        write(data)
        total += len(data)
        if drain is not None:
            await drain()


def simple_response(status: int, body: bytes, *, close: bool, extra: bytes = b"") -> bytes:
    """A complete response the gateway itself generates (errors, 100 Continue)."""
    reason = REASONS.get(status, "Unknown").encode()
    head = b"HTTP/1.1 %d %s\r\nServer: Microsoft-Azure-Application-Gateway/v2\r\n" % (status, reason)
    if status >= 200:
        head += b"Content-Type: text/html\r\nContent-Length: %d\r\n" % len(body)
        if close:
            head += b"Connection: close\r\n"
    return head + extra + b"\r\n" + body


def gateway_error_page(status: int) -> bytes:
    """The body shape Application Gateway v2 answers its own errors with."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
