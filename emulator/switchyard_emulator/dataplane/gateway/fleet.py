"""GatewayFleet: the emulator process's handle on the gateway worker process.

One worker subprocess serves every gateway. The fleet remembers the last spec it applied
successfully for each gateway; if the worker dies unexpectedly it is started again and those specs
are applied again, and a call that was waiting when it died is sent once more to the new worker
(every command is idempotent). Access records the dead worker had not yet written are lost.

The worker's stderr goes to STATE_DIR/gateway/worker.log.

PR_SET_PDEATHSIG fires when the *thread* that started the worker exits: call `start()` from the
thread whose event loop lives as long as the emulator (normally the main thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane.api import BackendServerHealth, GatewaySpec

log = logging.getLogger(__name__)

WORKER_MODULE = "switchyard_emulator.dataplane.gateway.worker"
READY_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
MAX_LOG_BYTES = 10 * 1024 * 1024
# Crash-loop brake: restarts within this window beyond the count are delayed, up to the cap.
CRASH_WINDOW_S = 60.0
CRASHES_BEFORE_BACKOFF = 3
MAX_RESTART_DELAY_S = 5.0


class GatewayError(RuntimeError):
    """Base of everything GatewayFleet raises."""


class GatewayConfigError(GatewayError, ValueError):
    """apply() refused the spec (it names what is wrong); the previous configuration stays."""


class GatewayPortInUseError(GatewayConfigError):
    """A listener's frontend port could not be bound; the message names gateway, listener, port."""


class GatewayNotFoundError(GatewayError, LookupError):
    """health() of a gateway that was never applied (or was removed)."""


class GatewayWorkerError(GatewayError):
    """The worker process could not be started, did not answer, or failed internally."""


class _WorkerExited(Exception):
    pass


_ERRORS: dict[str, type[GatewayError]] = {
    "invalid_spec": GatewayConfigError,
    "port_in_use": GatewayPortInUseError,
    "unknown_gateway": GatewayNotFoundError,
    "telemetry": GatewayWorkerError,
    "invalid_request": GatewayWorkerError,
    "internal": GatewayWorkerError,
}


class GatewayFleet:
    def __init__(self, state_dir: Path, telemetry_db: Path) -> None:
        self.state_dir = Path(state_dir)
        self.telemetry_db = Path(telemetry_db)
        self.log_path = self.state_dir / "gateway" / "worker.log"
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        # Each worker process's reply reader; it ends after that process's exit was handled.
        self._readers: dict[asyncio.subprocess.Process, asyncio.Task[None]] = {}
        self._restarter: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._specs: dict[str, GatewaySpec] = {}
        self._available = asyncio.Event()  # set while a worker is up with every spec applied
        self._started = False
        self._stopping = False
        self._needs_restart = False
        self._crashes: deque[float] = deque(maxlen=32)
        self._send_lock = asyncio.Lock()
        self._restart_lock = asyncio.Lock()

    @property
    def worker_pid(self) -> int | None:
        """The worker's pid while it runs (tests and diagnostics)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the worker (one for all gateways); returns once it is ready for commands."""
        if self._started:
            return
        self._stopping = False
        self._needs_restart = False
        await self._spawn()
        self._started = True
        self._available.set()

    async def stop(self) -> None:
        """Stop the worker and wait for it; no process is left behind."""
        self._stopping = True
        self._started = False
        self._available.clear()
        if self._restarter is not None:
            self._restarter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarter
            self._restarter = None
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._request("shutdown", {}), timeout=STOP_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_S)
            if process.returncode is None:
                log.warning("gateway worker %d ignored shutdown; killing it", process.pid)
                process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._fail_pending(GatewayWorkerError("GatewayFleet was stopped"))
        self._process = None

    # ---- the interface -------------------------------------------------------------------------

    async def apply(self, spec: GatewaySpec) -> None:
        """Returns once new requests use `spec`. GatewayConfigError (GatewayPortInUseError for a
        port that cannot be bound) leaves the gateway's previous configuration serving."""
        await self._call("apply", {"spec": spec.model_dump(mode="json")})
        self._specs[spec.gateway_id] = spec

    async def remove(self, gateway_id: str) -> None:
        """Close the gateway's listeners (in-flight requests drain per their settings)."""
        await self._call("remove", {"gateway_id": gateway_id})
        self._specs.pop(gateway_id, None)

    async def health(self, gateway_id: str) -> dict[str, list[BackendServerHealth]]:
        """Per backend pool, each member's health: Up / Down / Unknown / Draining, with a log line."""
        result = await self._call("health", {"gateway_id": gateway_id})
        return {pool: [BackendServerHealth(**entry) for entry in entries] for pool, entries in result.items()}

    async def flush(self) -> None:
        """Returns once every access record and health sample made so far is in telemetry_db."""
        await self._call("flush", {})

    # ---- the worker process --------------------------------------------------------------------

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > MAX_LOG_BYTES:  # keep one previous log, not all
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
        self.telemetry_db.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--telemetry-db",
                str(self.telemetry_db),
                "--parent-pid",
                str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=64 * 1024 * 1024,
            )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=READY_TIMEOUT_S)
            ready = json.loads(line) if line else {}
        except (TimeoutError, ValueError):
            ready = {}
        if ready.get("event") != "ready":
            with contextlib.suppress(TimeoutError):
                # Its stdout closed: it is exiting on its own; let it finish writing its log.
                await asyncio.wait_for(process.wait(), timeout=5.0)
            if process.returncode is None:
                process.kill()
            code = await process.wait()
            tail = self._log_tail()
            last = tail.splitlines()[-1] if tail.strip() else "(no log)"
            raise GatewayWorkerError(
                f"gateway worker did not start (exit code {code}): {last}\nlog tail ({self.log_path}):\n{tail}"
            )
        self._process = process
        self._reader = asyncio.create_task(self._read_replies(process), name="gateway worker replies")
        self._readers[process] = self._reader
        self._reader.add_done_callback(lambda _: self._readers.pop(process, None))
        log.info("gateway worker %d started", process.pid)

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.error("unreadable line from the gateway worker: %r", line[:200])
                continue
            future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
        code = await process.wait()
        self._fail_pending(_WorkerExited(f"gateway worker {process.pid} exited with code {code}"))
        if self._stopping or process is not self._process:
            return
        self._available.clear()
        if code == 0:
            # It was told to stop (SIGTERM, normally because the whole emulator is stopping):
            # start a new one only if someone still calls.
            log.warning("gateway worker %d stopped on its own; it will be restarted on the next call", process.pid)
            self._needs_restart = True
            return
        log.error(
            "gateway worker %d died (code %s); restarting it. Log tail:\n%s",
            process.pid,
            code,
            self._log_tail(),
        )
        self._crashes.append(time.monotonic())
        self._restarter = asyncio.create_task(self._restart(), name="gateway worker restart")

    async def _restart(self) -> None:
        async with self._restart_lock:
            if self._available.is_set() or self._stopping:
                return
            attempt = 0
            while not self._stopping:
                recent = [t for t in self._crashes if time.monotonic() - t < CRASH_WINDOW_S]
                if len(recent) > CRASHES_BEFORE_BACKOFF or attempt:
                    excess = max(len(recent) - CRASHES_BEFORE_BACKOFF, attempt)
                    await asyncio.sleep(min(MAX_RESTART_DELAY_S, 0.1 * 2**excess))
                attempt += 1
                try:
                    await self._spawn()
                    for spec in list(self._specs.values()):
                        try:
                            await self._request("apply", {"spec": spec.model_dump(mode="json")})
                        except GatewayError as error:
                            log.error("re-applying gateway %s after a restart failed: %s", spec.gateway_id, error)
                    self._needs_restart = False
                    self._available.set()
                    return
                except (GatewayWorkerError, _WorkerExited) as error:
                    log.error("restarting the gateway worker failed: %s", error)

    async def _call(self, op: str, payload: dict[str, Any]) -> Any:
        if not self._started:
            raise GatewayWorkerError(f"GatewayFleet.{op}() called before start() (or after stop())")
        for attempt in range(2):
            if self._needs_restart and not self._available.is_set():
                await self._restart()
            try:
                await asyncio.wait_for(self._available.wait(), timeout=REPLY_TIMEOUT_S)
            except TimeoutError:
                raise GatewayWorkerError("the gateway worker is not available (restart failing)") from None
            process = self._process
            try:
                return await self._request(op, payload)
            except _WorkerExited as error:
                if attempt == 1 or self._stopping:
                    raise GatewayWorkerError(f"{op} failed: {error}") from error
                log.warning("%s interrupted by a worker exit; sending it again to the new worker", op)
                # Wait until the fleet has handled that exit (so the next attempt waits for the new
                # worker instead of writing to the dead one).
                if process is not None:
                    reader = self._readers.get(process)
                    if reader is not None:
                        await asyncio.wait({reader}, timeout=REPLY_TIMEOUT_S)
        raise AssertionError("unreachable")

    async def _request(self, op: str, payload: dict[str, Any]) -> Any:
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None:
            raise _WorkerExited("gateway worker is not running")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"id": request_id, "op": op, **payload}, separators=(",", ":")).encode() + b"\n"
        try:
            async with self._send_lock:
                process.stdin.write(line)
                await process.stdin.drain()
        except (ConnectionError, RuntimeError) as error:
            self._pending.pop(request_id, None)
            raise _WorkerExited(f"gateway worker closed its control channel ({error})") from error
        try:
            message = await asyncio.wait_for(future, timeout=REPLY_TIMEOUT_S)
        except TimeoutError:
            self._pending.pop(request_id, None)
            log.error("gateway worker %d did not answer %s within %ss; killing it", process.pid, op, REPLY_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            raise GatewayWorkerError(f"the gateway worker did not answer {op!r} in {REPLY_TIMEOUT_S:g}s") from None
        if message.get("ok"):
            return message.get("result")
        failure = message.get("error") or {}
        kind = str(failure.get("kind", "internal"))
        raise _ERRORS.get(kind, GatewayWorkerError)(str(failure.get("message", "gateway worker error")))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 16384))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.splitlines()[-lines:])
