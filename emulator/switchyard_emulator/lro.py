"""Long-running operations, answered the way the SDK's ARMPolling polls them.

An operation is persisted (so a restart resumes it) and run as an asyncio task by its *kind*:
each resource module registers `kind -> async run(op)`. The initial answer carries
`Azure-AsyncOperation: .../locations/{region}/operations/{id}` (status `InProgress` ->
`Succeeded` / `Failed` with an ARM error) and, for POST/DELETE, `Location:
.../operationResults/{id}` (202 while running, then 200 with the result or 204).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from switchyard_emulator.common import Ctx, error_response, json_response, route
from switchyard_emulator.errors import ArmError
from switchyard_emulator.store import OperationRecord

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

log = logging.getLogger("switchyard_emulator.lro")

OperationRunner = Callable[[OperationRecord], Awaitable[Any]]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Operations:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self._runners: dict[str, OperationRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The timing profile's slow Azure writes: the operation's work starts only this long after
        # the operation did; until then the resource shows its transitional provisioning state
        # (Creating/Updating) and the operation stays InProgress. Application Gateway updates
        # commonly take tens of seconds or more (Azure/azure-cli#2134).
        timing = em.timing
        self._min_seconds: dict[str, float] = {
            kind: seconds
            for kind, seconds in (
                ("gateway.apply", timing.gateway_write_s),  # create / update
                ("scaleset.converge", timing.scale_set_write_s),  # create/update/manualUpgrade/reimage/restart
            )
            if seconds > 0
        }

    def register(self, kind: str, runner: OperationRunner) -> None:
        self._runners[kind] = runner

    def slow(self, op: OperationRecord) -> bool:
        """A write the timing profile makes slow: in the azure profile it answers without Retry-After,
        as some Azure resource providers do (Azure/azure-sdk-for-net#3439), so a client that does not
        set its own polling interval waits the SDK's default 30 s between polls (azure-mgmt-core
        ARMPolling; Azure/azure-cli#1162)."""
        return op.kind in self._min_seconds

    def start(
        self,
        kind: str,
        resource_key: str,
        *,
        namespace: str,
        region: str,
        params: dict[str, Any] | None = None,
    ) -> OperationRecord:
        op = OperationRecord(
            id=str(uuid.uuid4()),
            kind=kind,
            resource_key=resource_key,
            namespace=namespace,
            region=(region or "local").replace(" ", "").lower(),
            status="InProgress",
            params=params or {},
            result=None,
            error=None,
            started_at=time.time(),
            ended_at=None,
        )
        self.em.store.put_operation(op)
        self._spawn(op)
        return op

    def _spawn(self, op: OperationRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._run(op), name=f"lro-{op.kind}-{op.id}")
        self._tasks[op.id] = task
        task.add_done_callback(functools.partial(self._forget, op.id))

    def _forget(self, op_id: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(op_id, None)

    async def _run(self, op: OperationRecord) -> None:
        runner = self._runners[op.kind]
        try:
            # measured from the persisted start, so an operation resumed after a restart waits only
            # for what is left
            wait = op.started_at + self._min_seconds.get(op.kind, 0.0) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            op.result = await runner(op)
            op.status = "Succeeded"
        except asyncio.CancelledError:
            raise  # emulator shutting down: the operation stays InProgress and resumes on restart
        except ArmError as exc:
            op.status = "Failed"
            op.error = exc.to_error()
            log.info("operation %s (%s) failed: %s", op.id, op.kind, exc.message)
        except Exception as exc:  # a bug in the emulator: fail the operation, say so in the log
            log.exception("operation %s (%s) crashed", op.id, op.kind)
            op.status = "Failed"
            op.error = {
                "code": "InternalServerError",
                "message": f"The emulator failed: {type(exc).__name__}",
            }
        op.ended_at = time.time()
        self.em.store.put_operation(op)

    def resume_all(self) -> None:
        """Restart every operation that was in progress when the emulator stopped."""
        for op in self.em.store.operations_in_progress():
            if op.kind in self._runners:
                log.info("resuming operation %s (%s)", op.id, op.kind)
                self._spawn(op)

    async def shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the wire ----------------------------------------------------------------------------------

    def _url(self, ctx: Ctx, op: OperationRecord, leaf: str) -> str:
        return (
            f"{ctx.base_url}/subscriptions/{ctx.subscription}/providers/{op.namespace}/locations/{op.region}/"
            f"{leaf}/{op.id}?api-version={ctx.api_version}"
        )

    def headers(self, ctx: Ctx, op: OperationRecord, *, with_location: bool) -> dict[str, str]:
        headers = {"Azure-AsyncOperation": self._url(ctx, op, "operations")}
        if with_location:
            headers["Location"] = self._url(ctx, op, "operationResults")
        if self._retry_after(op):
            headers["Retry-After"] = str(self.em.lro_retry_after)
        return headers

    def _retry_after(self, op: OperationRecord) -> bool:
        if not self.em.lro_retry_after:
            return False
        return not (self.em.timing.lro_without_retry_after and self.slow(op))

    def accepted(self, ctx: Ctx, op: OperationRecord) -> Response:
        """The 202 answer of a POST/DELETE action that runs as `op`."""
        return json_response(202, None, self.headers(ctx, op, with_location=True))

    def routes(self) -> list[Any]:
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/{ns}/locations/{loc}/operations/{op}",
                self._status,
                None,
            ),
            route(
                "GET",
                "/subscriptions/{sub}/providers/{ns}/locations/{loc}/operationResults/{op}",
                self._result,
                None,
            ),
        ]

    def _find(self, ctx: Ctx) -> OperationRecord:
        op = self.em.store.get_operation(ctx.params["op"])
        if op is None or op.namespace.lower() != ctx.params["ns"].lower():
            raise ArmError(404, "OperationNotFound", f"The operation '{ctx.params['op']}' was not found.")
        return op

    async def _status(self, ctx: Ctx) -> Response:
        op = self._find(ctx)
        body: dict[str, Any] = {
            "name": op.id,
            "status": op.status,
            "startTime": _iso(op.started_at),
        }
        if op.ended_at is not None:
            body["endTime"] = _iso(op.ended_at)
        if op.error is not None:
            body["error"] = op.error
        headers = {}
        if op.status == "InProgress" and self._retry_after(op):
            headers["Retry-After"] = str(self.em.lro_retry_after)
        return json_response(200, body, headers)

    async def _result(self, ctx: Ctx) -> Response:
        op = self._find(ctx)
        if op.status == "InProgress":
            return json_response(202, None, self.headers(ctx, op, with_location=True))
        if op.status == "Failed":
            error = op.error or {"code": "OperationFailed", "message": "The operation failed."}
            return error_response(ArmError(400, error.get("code", "OperationFailed"), error.get("message", "")))
        if op.result is None:
            return json_response(204, None)
        return json_response(200, op.result)
