"""The gateway worker process: `python -m switchyard_emulator.dataplane.gateway.worker`.

It runs every gateway's listeners, probes and proxying on its own event loop, so the proxy never
waits on the ARM API's Python work in the emulator process. GatewayFleet starts it and drives it
over stdin/stdout (see protocol.py); its own logs go to stderr (GatewayFleet points that at a file).

It dies with its parent: PR_SET_PDEATHSIG delivers SIGTERM when the process that started it exits
(even by SIGKILL), and end-of-file on stdin means the same. Ctrl-C in a terminal is the parent's
business (it stops the worker through the control channel), so SIGINT is ignored here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from switchyard_emulator.dataplane.gateway.probes import log as probe_log
from switchyard_emulator.dataplane.gateway.protocol import ErrorKind, WorkerError, WorkerReply, WorkerRequest
from switchyard_emulator.dataplane.gateway.proxy import GatewayEngine, PortInUseError, UnknownGatewayError
from switchyard_emulator.dataplane.gateway.routing import GatewaySpecError
from switchyard_emulator.dataplane.gateway.telemetry import TelemetryError, TelemetryWriter
from switchyard_emulator.dataplane.procfs import set_parent_death_signal

log = logging.getLogger("switchyard.gateway.worker")

_SHUTDOWN_GRACE_S = 5.0


class _ControlChannel:
    """Replies go to a private duplicate of the original stdout; fd 1 itself is pointed at stderr
    so that a stray print() can never corrupt the protocol stream."""

    def __init__(self) -> None:
        self._out_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, message: dict[str, object]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._out_fd, view)
            view = view[written:]


async def _execute(engine: GatewayEngine, telemetry: TelemetryWriter, request: WorkerRequest) -> object:
    if request.op == "apply":
        if request.spec is None:
            raise ValueError("apply needs a spec")
        await engine.apply(request.spec)
        return None
    if request.op == "remove":
        if request.gateway_id is None:
            raise ValueError("remove needs a gateway_id")
        await engine.remove(request.gateway_id)
        return None
    if request.op == "health":
        if request.gateway_id is None:
            raise ValueError("health needs a gateway_id")
        return engine.health(request.gateway_id)
    if request.op == "flush":
        await telemetry.flush()
        return None
    if request.op == "ping":
        return {"pid": os.getpid(), "gateways": engine.gateway_ids()}
    raise ValueError(f"unknown op {request.op!r}")


def _error_kind(error: BaseException) -> ErrorKind:
    if isinstance(error, GatewaySpecError):
        return "invalid_spec"
    if isinstance(error, PortInUseError):
        return "port_in_use"
    if isinstance(error, UnknownGatewayError):
        return "unknown_gateway"
    if isinstance(error, TelemetryError):
        return "telemetry"
    if isinstance(error, (ValidationError, ValueError)):
        return "invalid_request"
    return "internal"


async def serve(telemetry_db: Path) -> None:
    loop = asyncio.get_running_loop()
    channel = _ControlChannel()
    telemetry = TelemetryWriter(telemetry_db)
    await telemetry.start()
    engine = GatewayEngine(telemetry)
    await engine.start()

    stdin = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), os.fdopen(0, "rb", buffering=0))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def command_loop() -> None:
        while True:
            line = await stdin.readline()
            if not line:
                log.info("control channel closed: the emulator is gone, shutting down")
                return
            try:
                request = WorkerRequest.model_validate_json(line)
            except ValidationError as error:
                log.error("unreadable control message: %s", error)
                continue
            if request.op == "shutdown":
                channel.send(WorkerReply(id=request.id, ok=True).model_dump(mode="json"))
                return
            try:
                result = await _execute(engine, telemetry, request)
                reply = WorkerReply(id=request.id, ok=True, result=result)
            except Exception as error:
                kind = _error_kind(error)
                if kind == "internal":
                    log.exception("%s failed", request.op)
                reply = WorkerReply(id=request.id, ok=False, error=WorkerError(kind=kind, message=str(error)))
            channel.send(reply.model_dump(mode="json"))

    commands = asyncio.create_task(command_loop(), name="control channel")
    stopped = asyncio.create_task(stop.wait(), name="SIGTERM")
    channel.send({"event": "ready", "pid": os.getpid()})
    log.info("gateway worker %d ready (telemetry %s)", os.getpid(), telemetry_db)
    await asyncio.wait({commands, stopped}, return_when=asyncio.FIRST_COMPLETED)
    commands.cancel()
    stopped.cancel()

    # A watchdog, so a shutdown that hangs still ends the process.
    watchdog = threading.Timer(_SHUTDOWN_GRACE_S, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    await engine.close()
    await telemetry.close()
    log.info("gateway worker %d stopped", os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard-gateway-worker")
    parser.add_argument("--telemetry-db", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s gateway-worker[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    probe_log.setLevel(logging.INFO)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent_pid:
        # The parent died between fork and prctl: nobody will ever send us a command.
        log.error("parent %d is already gone", args.parent_pid)
        return 1
    try:
        asyncio.run(serve(args.telemetry_db))
    except TelemetryError as error:
        log.error("%s", error)
        return 2
    # Skip interpreter teardown: the watchdog thread may still be counting down.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
