"""Steady synthetic traffic: real HTTP requests at a fixed rate, every answer recorded.

A release's synthetic load (tasks/canary.py: where users are too few to judge a canary on), and
the demo's and the end-to-end tests' production users: it sends a steady rate over
several keep-alive connections (as a fleet of clients would) and records, per request, when it
started and ended, the status (0 when the connection failed) and which image version answered
(the sample service's X-Image-Version header). From those records come the numbers users feel:
failed requests, and when traffic really moved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

_HEADER_END = b"\r\n\r\n"
NO_ANSWER = "no answer"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    started: float  # time.time()
    finished: float
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    image_version: str
    instance_id: str = ""
    # When the steady rate meant to send it. A slow server delays the requests behind it on the same
    # connection; latency counted from here includes that wait, as a user arriving on schedule would
    # feel it (the "coordinated omission" correction wrk2 makes). 0: not recorded.
    scheduled: float = 0.0

    @property
    def latency_s(self) -> float:
        """Finished minus scheduled (or started, when nothing was scheduled)."""
        return self.finished - (self.scheduled or self.started)

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


@dataclass
class TrafficReport:
    records: list[RequestRecord] = field(default_factory=list)

    def between(self, start: float, end: float) -> TrafficReport:
        return TrafficReport([r for r in self.records if start <= r.started < end])

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.failed)

    @property
    def by_version(self) -> Counter[str]:
        return Counter(r.image_version for r in self.records)

    @property
    def failed_by_version(self) -> Counter[str]:
        """Failed requests per image version that answered them ("no answer": nothing answered)."""
        return Counter(r.image_version or NO_ANSWER for r in self.records if r.failed)

    @property
    def by_instance(self) -> Counter[tuple[str, str]]:
        """Answers per (image version, instance id): which instance served how many requests."""
        return Counter((r.image_version, r.instance_id) for r in self.records if r.status)

    def _answered_by(self, image_version: str) -> list[float]:
        """When each request `image_version` answered started."""
        return [r.started for r in self.records if r.image_version == image_version]

    def last_answer_from(self, image_version: str) -> float | None:
        """When the last request answered by `image_version` started."""
        return max(self._answered_by(image_version), default=None)

    def around_verdict(self, image_version: str, verdict_at: float) -> tuple[float | None, float | None]:
        """How long users met a version judged bad, in seconds: from its first answer to the verdict,
        and from the verdict to its last answer (what taking it out took to reach them; 0 when it
        answered nothing after). None where it answered nothing at all. The one definition the
        benchmarks report as first_bad_to_verdict_s and verdict_to_traffic_back_s."""
        answered = self._answered_by(image_version)
        if not answered:
            return None, None
        return verdict_at - min(answered), max(0.0, max(answered) - verdict_at)

    def rate(self) -> float:
        if len(self.records) < 2:
            return 0.0
        span = self.records[-1].started - self.records[0].started
        return (len(self.records) - 1) / span if span > 0 else 0.0


class SteadyTraffic:
    """`rate` requests per second to http://host:port/path until stopped."""

    def __init__(
        self, host: str, port: int, *, rate: float = 100.0, connections: int = 8, path: str = "/work/echo"
    ) -> None:
        if rate <= 0 or connections < 1:
            raise ValueError("rate must be positive and connections at least 1")
        self.host, self.port, self.rate, self.connections, self.path = host, port, rate, connections, path
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SteadyTraffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="steady-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> TrafficReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.report()

    def report(self) -> TrafficReport:
        with self._lock:
            return TrafficReport(sorted(self._records, key=lambda r: r.started))

    async def _run(self) -> None:
        interval = self.connections / self.rate
        start = time.monotonic()
        workers = [
            asyncio.create_task(self._worker(start + i * interval / self.connections, interval))
            for i in range(self.connections)
        ]
        await asyncio.gather(*workers)

    async def _worker(self, first: float, interval: float) -> None:
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: switchyard-traffic\r\n\r\n"
        ).encode()
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        due = first
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled = time.time() - (time.monotonic() - due)  # the due moment on the wall clock
            due += interval
            started = time.time()
            status, version, instance = 0, "", ""
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
                assert reader is not None and writer is not None
                writer.write(request)
                status, version, instance, keep_alive = await asyncio.wait_for(self._response(reader), 10)
                if not keep_alive:
                    writer.close()
                    writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                if writer is not None:
                    writer.close()
                writer = None
            with self._lock:
                self._records.append(RequestRecord(started, time.time(), status, version, instance, scheduled))
        if writer is not None:
            writer.close()

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, str, str, bool]:
        head = await reader.readuntil(_HEADER_END)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        keep_alive = headers.get("connection", "").lower() != "close"
        return status, headers.get("x-image-version", ""), headers.get("x-instance-id", ""), keep_alive
