"""The control channel between GatewayFleet (emulator process) and the gateway worker process.

One JSON object per line: requests on the worker's stdin, replies (matched by `id`) and events on
its stdout. The worker announces itself with `{"event": "ready", "pid": ...}` once it can serve.
Commands are executed one at a time, in the order received.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from switchyard_emulator.dataplane.api import GatewaySpec

Op = Literal["apply", "remove", "health", "flush", "ping", "shutdown"]
# Why a command failed, so the fleet can raise the matching exception type.
ErrorKind = Literal["invalid_spec", "port_in_use", "unknown_gateway", "telemetry", "invalid_request", "internal"]


class WorkerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    op: Op
    spec: GatewaySpec | None = None  # apply
    gateway_id: str | None = None  # remove, health


class WorkerError(BaseModel):
    kind: ErrorKind
    message: str


class WorkerReply(BaseModel):
    id: int
    ok: bool
    result: Any = None
    error: WorkerError | None = None


class WorkerEvent(BaseModel):
    event: Literal["ready"]
    pid: int
