"""The instance supervisor: every scale-set instance is a real process of its image.

`sync(scale_set_id, specs)` makes exactly those instances run. Each instance has a small
reconcile loop (one asyncio task) that drives it through

    creating --(listens on ip:port)--> running --(process exits)--> failed
        \\--(exits or never listens in time)--> failed
    any --(removed)--> stopped

A changed spec (a new `generation`: reimage or model update) replaces the process: SIGTERM to
its process group, wait for the graceful stop, SIGKILL after a grace period, then start anew.
A crashed process stays failed (Azure does not restart a crashed app inside a VM); only a new
spec (reimage, update) starts it again.

Each process runs in its own session/process group, with PR_SET_PDEATHSIG so that it dies with
the emulator even if the emulator is SIGKILLed, and with stdout/stderr appended to a per-instance
log file. The pids are also recorded on disk so a later start can clean up after a crash that
PDEATHSIG could not cover.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchyard_emulator.dataplane.api import InstanceRuntime, InstanceSpec, InstanceState
from switchyard_emulator.dataplane.artifacts import ArtifactCache, ArtifactError, UnpackedImage
from switchyard_emulator.dataplane.procfs import (
    CLOCK_TICKS,
    GroupUsage,
    GroupUsageReader,
    is_listening,
    read_stat,
    signal_group,
)
from switchyard_emulator.dataplane.telemetry import InstanceAddress, InstanceSample, canonical_id

log = logging.getLogger(__name__)


def vcpu_percent(*, busy_s: float, waited_s: float, interval_s: float) -> float:
    """Percentage CPU of an instance's one vCPU over a sampling interval.

    A VM's vCPU is its own: on Azure a busy VM reads near 100 % however busy its host is. Here
    every instance shares this machine's CPUs with every other instance and program, so the time
    an instance was ready to run but waited for a CPU (its run-queue wait) is time its VM would
    have had; it is left out of the interval rather than counted as idle. Without this a
    CPU-bound instance on a loaded machine reads a fraction of 100 % and autoscale never fires."""
    available_s = max(interval_s - waited_s, busy_s)
    if available_s <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * busy_s / available_s))


# Runs first in the child: ask the kernel to SIGKILL us when the emulator (our parent) dies,
# make sure the parent is still the one that started us, then become the image's entrypoint.
# (subprocess' preexec_fn would do the same but is unsafe in a threaded process.)
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:\n"
    "    sys.exit('switchyard launcher: prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('switchyard launcher: the emulator exited before the instance started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 16 * 1024


@dataclass
class SupervisorSettings:
    start_timeout_s: float = 30.0  # from spawn until it must listen on ip:port
    stop_grace_s: float = 10.0  # SIGTERM -> SIGKILL
    ready_poll_s: float = 0.05
    # The memory of a VM whose size the SKU table does not know (InstanceSpec.memory_bytes is None).
    vm_memory_bytes: int = 1 << 30


@dataclass
class _Slot:
    scale_set_id: str
    instance_id: str
    desired: InstanceSpec | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # What runs (or last ran) and how it is doing.
    current: InstanceSpec | None = None
    state: InstanceState = "creating"
    generation: int = 0
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    log_tail: list[str] = field(default_factory=list)
    log_path: Path | None = None
    log_offset: int = 0
    # Since when the instance (its VM) holds its address: the network metrics count from then.
    created_at: float = field(default_factory=time.time)
    # CPU accounting between two samples.
    last_usage: GroupUsage | None = None
    last_sample_at: float | None = None

    def runtime(self) -> InstanceRuntime:
        if self.desired is not None and self.current != self.desired:
            # A new spec (generation) was asked for and its process is not up yet.
            return InstanceRuntime(instance_id=self.instance_id, generation=self.desired.generation, state="creating")
        return InstanceRuntime(
            instance_id=self.instance_id,
            generation=self.generation,
            state=self.state,
            pid=self.pid if self.state in ("creating", "running") else None,
            exit_code=self.exit_code,
            started_at=self.started_at,
            log_tail=list(self.log_tail),
        )


def _process_of(spec: InstanceSpec) -> InstanceSpec:
    """What of a spec its process is made from: all but the VM size's memory."""
    return spec.model_copy(update={"memory_bytes": None})


def _safe_name(text: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.rstrip("/").rsplit("/", 1)[-1])[:60] or "x"
    return f"{tail}-{hashlib.sha256(text.lower().encode()).hexdigest()[:10]}"


def _resolve_entrypoint(argv: list[str]) -> list[str]:
    if argv[0] in ("python3", "python"):
        # An image's `python3` is the machine's own interpreter: here, the one the emulator's virtual
        # environment was made from, which (like a VM's) has none of that environment's packages.
        # Not a PATH lookup: on a host with pyenv that finds a shim, a chain of bash processes
        # costing ~80 ms of CPU before each instance starts, which a fleet's releases pay often.
        interpreter = getattr(sys, "_base_executable", None) or sys.executable
        return [interpreter, *argv[1:]]
    return list(argv)


async def _accepts(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _read_tail(path: Path, start_offset: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            begin = max(start_offset, size - LOG_TAIL_BYTES)
            handle.seek(begin)
            data = handle.read()
    except OSError as exc:
        return [f"(log unreadable: {exc})"]
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-LOG_TAIL_LINES:]


class InstanceSupervisor:
    def __init__(self, state_dir: Path, settings: SupervisorSettings | None = None) -> None:
        self.root = state_dir / "dataplane"
        self.settings = settings or SupervisorSettings()
        self._usage_reader = GroupUsageReader()
        self.artifacts = ArtifactCache(self.root / "images")
        self._slots: dict[str, dict[str, _Slot]] = {}
        self._pid_file = self.root / "processes.json"
        self._live_pids: dict[int, dict[str, int]] = {}
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------
    def clean_up_previous_run(self) -> list[int]:
        """Kill process groups a previous emulator run left behind (if PDEATHSIG could not)."""
        killed: list[int] = []
        try:
            recorded = json.loads(self._pid_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        for pid_text, info in recorded.items():
            if int(pid_text) in self._live_pids:
                continue  # ours, started by this run
            stat = read_stat(int(pid_text))
            # Same pid AND same start time: the very process we started, not a reused pid.
            same = stat is not None and stat.start_ticks == info.get("start_ticks")
            if same and signal_group(int(info["pgid"]), signal.SIGKILL):
                killed.append(int(pid_text))
        self._save_pids()
        return killed

    async def stop(self) -> None:
        self._stopping = True
        for slots in self._slots.values():
            for slot in slots.values():
                slot.desired = None
                slot.changed.set()
        tasks = [slot.task for slots in self._slots.values() for slot in slots.values() if slot.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the DataPlane surface -------------------------------------------------------------
    def sync(self, scale_set_id: str, specs: list[InstanceSpec]) -> None:
        if self._stopping:
            raise RuntimeError("the data plane is stopping; no instance can be started")
        key = canonical_id(scale_set_id)
        wanted = {spec.instance_id: spec for spec in specs}
        if len(wanted) != len(specs):
            raise ValueError(f"scale set {scale_set_id}: duplicate instance ids in {[s.instance_id for s in specs]}")
        slots = self._slots.setdefault(key, {})
        for instance_id, slot in slots.items():
            if instance_id not in wanted and slot.desired is not None:
                slot.desired = None
                slot.changed.set()
        for instance_id, spec in wanted.items():
            existing = slots.get(instance_id)
            # No live reconcile task (new, stopped, or ended by a supervisor error): start afresh.
            if existing is None or existing.task is None:
                slot = _Slot(scale_set_id=key, instance_id=instance_id, desired=spec, generation=spec.generation)
                slots[instance_id] = slot
                slot.task = asyncio.get_running_loop().create_task(
                    self._run_slot(slot), name=f"instance {key}/{instance_id}"
                )
            elif existing.desired != spec:
                same_process = existing.desired is not None and _process_of(existing.desired) == _process_of(spec)
                if same_process and existing.current == existing.desired:
                    # Only the VM size's memory changed: what is measured, not what runs.
                    existing.current = spec
                existing.desired = spec
                existing.changed.set()

    async def remove_scale_set(self, scale_set_id: str) -> None:
        key = canonical_id(scale_set_id)
        slots = self._slots.get(key, {})
        for slot in slots.values():
            slot.desired = None
            slot.changed.set()
        tasks = [slot.task for slot in slots.values() if slot.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._slots.pop(key, None)

    def states(self, scale_set_id: str) -> dict[str, InstanceRuntime]:
        return {iid: slot.runtime() for iid, slot in self._slots.get(canonical_id(scale_set_id), {}).items()}

    def scale_set_ids(self) -> list[str]:
        return list(self._slots)

    # -- one instance's reconcile loop -------------------------------------------------------
    async def _run_slot(self, slot: _Slot) -> None:
        try:
            while True:
                slot.changed.clear()
                want = slot.desired
                if want is None:
                    await self._terminate(slot)
                    if slot.desired is not None:  # wanted again while it was stopping
                        slot.current = None
                        continue
                    slot.state = "stopped"
                    return
                if slot.current != want:
                    await self._terminate(slot)
                    slot.current = want
                    slot.state, slot.generation = "creating", want.generation
                    slot.exit_code, slot.log_tail = None, []
                    await self._start(slot, want)
                if slot.state == "creating" and slot.process is not None:
                    await self._await_ready(slot, want)
                    continue
                await self._await_exit_or_change(slot)
        except asyncio.CancelledError:
            await self._terminate(slot)
            slot.state = "stopped"
            raise
        except Exception as exc:  # never let one instance's bug take the supervisor down
            log.exception("instance %s/%s: supervisor error", slot.scale_set_id, slot.instance_id)
            await self._terminate(slot)
            slot.state, slot.log_tail = "failed", [f"emulator supervisor error: {exc!r}"]
        finally:
            slot.task = None

    async def _start(self, slot: _Slot, spec: InstanceSpec) -> None:
        instance_dir = self.root / "instances" / _safe_name(slot.scale_set_id) / slot.instance_id
        instance_dir.mkdir(parents=True, exist_ok=True)
        log_path = instance_dir / "console.log"
        slot.log_path = log_path
        with log_path.open("ab") as log_file:
            slot.log_offset = log_file.tell()
            log_file.write(
                f"--- {datetime.now(UTC).isoformat()} starting generation {spec.generation} "
                f"on {spec.ip}:{spec.port} from {spec.artifact_path}\n".encode()
            )
        try:
            image: UnpackedImage = await asyncio.to_thread(self.artifacts.unpack, Path(spec.artifact_path))
        except ArtifactError as exc:
            self._fail(slot, None, [f"image artifact unusable: {exc}"])
            return
        argv = _resolve_entrypoint(image.manifest.entrypoint)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(instance_dir),
            # The console log is how an operator sees a crash: do not let it sit in a buffer.
            "PYTHONUNBUFFERED": "1",
            # The unpacked image is shared by every instance of it: keep it read-only in spirit.
            "PYTHONDONTWRITEBYTECODE": "1",
            "SWITCHYARD_LISTEN_HOST": spec.ip,
            "SWITCHYARD_LISTEN_PORT": str(spec.port),
            "SWITCHYARD_INSTANCE_ID": spec.instance_id,
            "SWITCHYARD_MANIFEST": str(image.manifest_path),
        }
        if spec.custom_data is not None:
            # What Azure's provisioning agent does on a Linux VM: the customData, decoded, in a file
            # only root reads (/var/lib/waagent/CustomData); the app learns its path from the variable.
            custom_data_path = instance_dir / "CustomData"
            custom_data_path.unlink(missing_ok=True)
            descriptor = os.open(custom_data_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(base64.b64decode(spec.custom_data))
            env["SWITCHYARD_CUSTOM_DATA"] = str(custom_data_path)
        try:
            with log_path.open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _LAUNCHER,
                    str(os.getpid()),
                    *argv,
                    cwd=str(image.root),
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail(slot, None, [f"cannot start {argv!r}: {exc}"])
            return
        slot.process = process
        slot.pid = process.pid
        slot.started_at = datetime.now(UTC)
        slot.last_usage = slot.last_sample_at = None
        stat = read_stat(process.pid)
        self._live_pids[process.pid] = {"pgid": process.pid, "start_ticks": stat.start_ticks if stat else -1}
        self._save_pids()

    async def _await_ready(self, slot: _Slot, spec: InstanceSpec) -> None:
        process = slot.process
        assert process is not None
        deadline = time.monotonic() + self.settings.start_timeout_s
        while True:
            if process.returncode is not None:
                self._on_exit(slot)
                return
            # A connect is cheap; /proc/net/tcp (which can hold thousands of sockets) is read only
            # to confirm that the listener is on exactly ip:port, not a wildcard one on the port.
            if await _accepts(spec.ip, spec.port) and is_listening(spec.ip, spec.port):
                slot.state = "running"
                return
            if slot.changed.is_set():
                return
            if time.monotonic() > deadline:
                await self._terminate(slot)
                self._fail(
                    slot,
                    None,
                    [
                        *self._tail(slot),
                        f"instance did not listen on {spec.ip}:{spec.port} within "
                        f"{self.settings.start_timeout_s:g} s; stopped it",
                    ],
                )
                return
            await asyncio.sleep(self.settings.ready_poll_s)

    async def _await_exit_or_change(self, slot: _Slot) -> None:
        process = slot.process
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(slot.changed.wait())}
        if process is not None and process.returncode is None:
            waiters.add(asyncio.ensure_future(process.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        if process is not None and process.returncode is not None and slot.process is process:
            self._on_exit(slot)

    def _on_exit(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None and process.returncode is not None
        # Whatever the app left in its process group goes with it (a VM whose app crashed keeps
        # running, but here the "VM" is the app's process group).
        signal_group(process.pid, signal.SIGKILL)
        self._forget(process.pid)
        slot.process = None
        code = process.returncode
        reason = f"process exited with code {code}" if code >= 0 else f"process killed by signal {-code}"
        self._fail(slot, code, [*self._tail(slot), reason])

    def _fail(self, slot: _Slot, exit_code: int | None, log_tail: list[str]) -> None:
        slot.state = "failed"
        slot.exit_code = exit_code
        slot.log_tail = log_tail[-LOG_TAIL_LINES:]
        log.warning("instance %s/%s failed: %s", slot.scale_set_id, slot.instance_id, log_tail[-1] if log_tail else "")

    def _tail(self, slot: _Slot) -> list[str]:
        if slot.log_path is None:
            return []
        return [line for line in _read_tail(slot.log_path, slot.log_offset) if not line.startswith("--- ")]

    async def _terminate(self, slot: _Slot) -> None:
        process = slot.process
        if process is None:
            return
        slot.process = None
        pgid = process.pid
        if process.returncode is None:
            signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), self.settings.stop_grace_s)
            except TimeoutError:
                log.warning("instance %s/%s ignored SIGTERM; killing", slot.scale_set_id, slot.instance_id)
                signal_group(pgid, signal.SIGKILL)
                await process.wait()
        signal_group(pgid, signal.SIGKILL)
        self._forget(pgid)
        slot.pid = None

    def _forget(self, pid: int) -> None:
        if self._live_pids.pop(pid, None) is not None:
            self._save_pids()

    def _save_pids(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self._pid_file.with_suffix(".tmp")
        staging.write_text(json.dumps({str(pid): info for pid, info in self._live_pids.items()}))
        staging.replace(self._pid_file)

    # -- telemetry -------------------------------------------------------------------------
    def process_groups(self) -> set[int]:
        """The process groups of live instances (each instance's pid leads its group)."""
        return {
            slot.process.pid
            for slots in self._slots.values()
            for slot in slots.values()
            if slot.process is not None and slot.process.returncode is None
        }

    def addresses(self) -> list[InstanceAddress]:
        """The address every instance that exists holds (its process running or not: a VM keeps its
        NIC while its app is down), for attributing the gateway's traffic to instances."""
        return [
            (slot.scale_set_id, slot.instance_id, slot.desired.vm_name, slot.desired.ip, slot.created_at)
            for slots in self._slots.values()
            for slot in slots.values()
            if slot.desired is not None
        ]

    async def sample_async(self) -> list[InstanceSample]:
        """sample(), with the /proc scan in a worker thread so the event loop keeps serving."""
        groups = self.process_groups()
        usage = await asyncio.to_thread(self._usage_reader.usage, groups)
        return self.sample(usage=usage)

    def sample(
        self,
        now: float | None = None,
        *,
        usage: dict[int, GroupUsage] | None = None,
    ) -> list[InstanceSample]:
        """CPU % (of one vCPU) and available memory for every live instance (call ~1/s).

        Available memory is the VM size's memory (the SKU table) less the resident memory of the
        instance's process group, read from /proc: the instance is the only tenant of its VM, and
        the memory of the machine the emulator runs on is no VM's, so it is not subtracted."""
        now = time.time() if now is None else now
        live = [
            slot
            for slots in self._slots.values()
            for slot in slots.values()
            if slot.process is not None and slot.process.returncode is None and slot.current is not None
        ]
        if usage is None:
            usage = self._usage_reader.usage({slot.process.pid for slot in live if slot.process is not None})
        samples: list[InstanceSample] = []
        for slot in live:
            assert slot.process is not None and slot.current is not None
            group = usage.get(slot.process.pid)
            if group is None:
                continue
            previous, previous_at = slot.last_usage, slot.last_sample_at
            slot.last_usage, slot.last_sample_at = group, now
            if previous is None or previous_at is None or now <= previous_at:
                continue  # the first look only sets the baseline
            cpu_percent = vcpu_percent(
                busy_s=(group.cpu_ticks - previous.cpu_ticks) / CLOCK_TICKS,
                waited_s=(group.run_queue_wait_ns - previous.run_queue_wait_ns) / 1e9,
                interval_s=now - previous_at,
            )
            memory = slot.current.memory_bytes or self.settings.vm_memory_bytes
            available = max(0, memory - group.rss_bytes)
            samples.append(
                (
                    now,
                    slot.scale_set_id,
                    slot.instance_id,
                    slot.current.vm_name,
                    cpu_percent,
                    float(available),
                )
            )
        return samples
