"""A small HTTP/1.1 keep-alive backend for the gateway tests, run as its own process:

    python backend_app.py HOST PORT NAME

It prints "READY" once it listens. Every response carries `X-Backend: NAME`. Endpoints:
  GET  /health                 200 "ok" (or the status set by /admin/health)
  GET  /whoami                 200 NAME
  GET  /sleep?ms=N             waits N ms, then 200 NAME
  GET  /admin/inflight         how many /sleep requests are being served right now
  GET  /admin/hits?path=P      how many requests for path P arrived (any method)
  POST /echo                   200 with the request body (Content-Length or chunked request)
  GET  /chunked?n=K            a chunked response of K chunks "NAME-i\n"
  GET  /headers                200 JSON of the request headers it received
  GET  /until-close            a response without length, ended by closing the connection
  GET  /truncate?size=N        promises N bytes (default 1000), sends half, closes
  GET  /hangup                 closes the connection without answering
  POST /admin/health?status=N[&delay_ms=D]  sets what /health answers (after D ms)
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health_status = 200
        self.health_delay_s = 0.0
        self.sleeping = 0
        self.hits: dict[str, int] = {}

    def head(self, extra: str) -> bytes:
        return f"HTTP/1.1 200 X\r\nX-Backend: {self.name}\r\n{extra}\r\n".encode()

    def respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, extra: str = "") -> None:
        head = (
            f"HTTP/1.1 {status} X\r\nX-Backend: {self.name}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: text/plain\r\n{extra}\r\n"
        )
        writer.write(head.encode() + body)

    async def read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return body
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _method, target, _ = lines[0].split(" ")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await self.read_body(reader, headers)
                url = urlsplit(target)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                path = url.path
                self.hits[path] = self.hits.get(path, 0) + 1
                if path == "/health":
                    await asyncio.sleep(self.health_delay_s)
                    self.respond(writer, self.health_status, b"ok")
                elif path == "/whoami":
                    self.respond(writer, 200, self.name.encode())
                elif path == "/sleep":
                    self.sleeping += 1
                    try:
                        await asyncio.sleep(int(query.get("ms", "0")) / 1000)
                    finally:
                        self.sleeping -= 1
                    self.respond(writer, 200, self.name.encode())
                elif path == "/admin/hits":
                    self.respond(writer, 200, str(self.hits.get(query["path"], 0)).encode())
                elif path == "/admin/inflight":
                    self.respond(writer, 200, str(self.sleeping).encode())
                elif path == "/echo":
                    self.respond(writer, 200, body)
                elif path == "/chunked":
                    writer.write(self.head("Transfer-Encoding: chunked\r\n"))
                    for i in range(int(query.get("n", "3"))):
                        chunk = f"{self.name}-{i}\n".encode()
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                elif path == "/headers":
                    self.respond(writer, 200, json.dumps(headers).encode())
                elif path == "/until-close":
                    writer.write(f"HTTP/1.1 200 X\r\nX-Backend: {self.name}\r\nConnection: close\r\n\r\n".encode())
                    writer.write(b"streamed until close by " + self.name.encode())
                    await writer.drain()
                    return
                elif path == "/truncate":
                    promised = int(query.get("size", "1000"))
                    writer.write(self.head(f"Content-Length: {promised}\r\n"))
                    writer.write(b"x" * (promised // 2))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    return
                elif path == "/hangup":
                    return
                elif path == "/admin/health":
                    self.health_status = int(query["status"])
                    self.health_delay_s = int(query.get("delay_ms", "0")) / 1000
                    self.respond(writer, 200, b"set")
                else:
                    self.respond(writer, 404, b"no such path")
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()


async def main(host: str, port: int, name: str) -> None:
    backend = Backend(name)
    server = await asyncio.start_server(backend.serve, host, port, reuse_address=True)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
