"""LocalDataPlane: the emulator's data plane on this machine, with real processes.

It composes
* the instance supervisor (supervisor.py): one real process per scale-set instance;
* B1's GatewayFleet (gateway/): the Application Gateway reverse proxy in its own process;
* telemetry (telemetry.py): DIR/telemetry.sqlite, plus a 1 s sampler of instance CPU/memory; all
  of it (access log included) is kept for `sample_retention_s` (2 days), then pruned;
* Azure Monitor answers: metrics.py (Metrics - List), metric_definitions.py (Metric Definitions)
  and logs.py + kql.py (Log Analytics queries over AzureDiagnostics and AGWAccessLogs, as
  diagnostic settings fill them), timed by the timing profile (profiles.py: metric latency, log ingestion delay);
* autoscale.py: evaluates autoscale settings every few seconds and changes capacity through the
  control plane's ArmFacade.

The control plane constructs it with the state dir and uses it only through the DataPlane
protocol (api.py). It must run on the event loop of the emulator's main thread: instance
processes are tied to the thread that started them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane import telemetry
from switchyard_emulator.dataplane.api import (
    ArmFacade,
    BackendServerHealth,
    GatewaySpec,
    InstanceRuntime,
    InstanceSpec,
    LogCollection,
)
from switchyard_emulator.dataplane.autoscale import Autoscaler
from switchyard_emulator.dataplane.gateway import GatewayFleet, GatewayWorkerError
from switchyard_emulator.dataplane.logs import LogsEngine
from switchyard_emulator.dataplane.metric_definitions import metric_definitions_body
from switchyard_emulator.dataplane.metrics import MetricsEngine
from switchyard_emulator.dataplane.supervisor import InstanceSupervisor, SupervisorSettings
from switchyard_emulator.profiles import TimingProfile, timing_profile

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0


class LocalDataPlane:
    """Implements switchyard_emulator.dataplane.api.DataPlane with real processes."""

    def __init__(
        self,
        state_dir: Path,
        *,
        supervisor_settings: SupervisorSettings | None = None,
        sample_interval_s: float = 1.0,
        autoscale_interval_s: float = 5.0,
        sample_retention_s: float = 2 * 86_400.0,
        timing: TimingProfile | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.timing = timing or timing_profile("fast")
        self.telemetry_db = self.state_dir / "telemetry.sqlite"
        self.supervisor = InstanceSupervisor(self.state_dir, supervisor_settings)
        self.fleet = GatewayFleet(self.state_dir, self.telemetry_db)
        self.metrics_engine = MetricsEngine(self.telemetry_db, self.timing)
        self.logs_engine = LogsEngine(self.telemetry_db, ingestion_delay_s=self.timing.log_ingestion_delay_s)
        self.sample_interval_s = sample_interval_s
        self.autoscale_interval_s = autoscale_interval_s
        self.sample_retention_s = sample_retention_s
        self.autoscaler: Autoscaler | None = None
        self._arm: ArmFacade | None = None
        self._writer: telemetry.SampleWriter | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, arm: ArmFacade) -> None:
        if self._started:
            return
        self._arm = arm
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(telemetry.ensure_schema, self.telemetry_db)
        killed = self.supervisor.clean_up_previous_run()
        if killed:
            log.warning("killed %d instance process(es) left behind by a previous run: %s", len(killed), killed)
        self._writer = telemetry.SampleWriter(self.telemetry_db)
        await self.fleet.start()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_loop(), name="instance sampler")
        self.autoscaler = Autoscaler(
            arm, self.telemetry_db, self.autoscale_interval_s, available_until=self.metrics_engine.available_until
        )
        self.autoscaler.start()
        self._started = True

    async def stop(self) -> None:
        """Stop every process the data plane started; nothing is left behind."""
        self._started = False
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        try:
            await self.supervisor.stop()
        finally:
            await self.fleet.stop()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    async def _sample_loop(self) -> None:
        last_prune = 0.0
        while True:
            started = time.monotonic()
            try:
                samples = await self.supervisor.sample_async()
                writer = self._writer
                if writer is not None:
                    await asyncio.to_thread(writer.write, samples)
                    await asyncio.to_thread(writer.record_addresses, self.supervisor.addresses(), time.time())
                    if time.time() - last_prune > PRUNE_EVERY_S:
                        last_prune = time.time()
                        await asyncio.to_thread(writer.prune, last_prune - self.sample_retention_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("instance sampling failed")
            await asyncio.sleep(max(0.0, self.sample_interval_s - (time.monotonic() - started)))

    # -- instances -------------------------------------------------------------------------
    async def sync_scale_set(self, scale_set_id: str, instances: list[InstanceSpec]) -> None:
        """Exactly these instances must run; returns at once (instance_states shows progress)."""
        self.supervisor.sync(scale_set_id, instances)
        writer = self._writer
        if writer is not None:  # at once: a new instance's first probes count from its creation
            await asyncio.to_thread(writer.record_addresses, self.supervisor.addresses(), time.time())

    async def remove_scale_set(self, scale_set_id: str) -> None:
        await self.supervisor.remove_scale_set(scale_set_id)

    def instance_states(self, scale_set_id: str) -> dict[str, InstanceRuntime]:
        return self.supervisor.states(scale_set_id)

    # -- gateways (B1's GatewayFleet) ------------------------------------------------------
    async def apply_gateway(self, spec: GatewaySpec) -> None:
        await self.fleet.apply(spec)

    async def remove_gateway(self, gateway_id: str) -> None:
        await self.fleet.remove(gateway_id)

    async def backend_health(self, gateway_id: str) -> dict[str, list[BackendServerHealth]]:
        return await self.fleet.health(gateway_id)

    # -- Azure Monitor ---------------------------------------------------------------------
    async def _flush_gateway_telemetry(self) -> None:
        try:
            await self.fleet.flush()
        except GatewayWorkerError as exc:
            # Answer from what is recorded (Azure Monitor is eventually consistent too).
            log.warning("gateway telemetry could not be flushed before a query: %s", exc)

    def _region_of(self, resource_id: str, resource_type: str) -> str:
        # One lookup by id: every metrics query asks, and listing the type grew with the fleet.
        resource = self._arm.resource(resource_type, resource_id) if self._arm is not None else None
        if resource is None:
            return "local"
        return str(resource.get("location") or "local").replace(" ", "").lower()

    async def metrics(self, resource_id: str, resource_type: str, query: dict[str, str]) -> dict[str, Any]:
        """Raises MetricsQueryError (errors.py) for a query Azure would refuse with 400."""
        await self._flush_gateway_telemetry()
        region = self._region_of(resource_id, resource_type)
        return await asyncio.to_thread(self.metrics_engine.query, resource_id, resource_type, query, region=region)

    def metric_definitions(self, resource_id: str, resource_type: str) -> dict[str, Any]:
        return metric_definitions_body(resource_id, resource_type, self.timing)

    async def query_logs(
        self, workspace_id: str, kql: str, timespan: str | None, collections: list[LogCollection]
    ) -> dict[str, Any]:
        """Raises LogsQueryError (errors.py) for KQL outside the subset in KQL.md, or malformed."""
        await self._flush_gateway_telemetry()
        return await asyncio.to_thread(self.logs_engine.query, workspace_id, kql, timespan, collections)
