"""What Prefect charges for each thing a runbook records: a task run, a subflow run, a block load, an
artifact, a progress update, a log line. CPU in the flow's own process, in the stack's Prefect server
and in its database, measured one kind at a time.

    python bench/prefect_step_cost.py [--count 200] [--database sqlite|postgresql]

switchyard's flows are runbooks of small named steps: a service's monthly patch (its build and two
releases) records about 49 task runs, 3 subflow runs, 17 block loads, 8 artifacts, 14 progress
updates and 195 log lines (README, "Running at scale"). This starts a Prefect server as the stack
starts it (switchyard/stack/prefect_server.py: on SQLite, or on a PostgreSQL of its own), then runs,
in a fresh process, a flow that does nothing and, for each kind, a flow that does --count of it (a
tenth of it for subflows, the dearest; five times for log lines, the cheapest). An item's cost is
the difference between its flow and the empty one over the count: the flow's process (its CPU time
over the flow call), the server's processes and PostgreSQL's (from /proc, from the call until the
server shows what was recorded and the event persister has flushed, less the server's idle CPU over
that time).

Prints one JSON object as its last line and writes it to bench/results/prefect_step_cost.json
(prefect_step_cost.postgresql.json). Target: a task run costs the server, its database included, at
most 25 ms of CPU on this 2-core machine: a guard on the stack's batched task-run recorder (Prefect
3.9's default writes each state event in a transaction of its own: 48 ms on SQLite,
bench/results/prefect_step_cost.default-recorder.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
TARGET_SERVER_MS = 25.0
RECORDED_TIMEOUT_S = 120.0
# Longer than the event persister's flush interval (Prefect 3.9: 5 s), so a flow's events are in.
SETTLE_S = 6.0
IDLE_SAMPLE_S = 10.0
PAGE = 200  # the API's largest page (PREFECT_API_DEFAULT_LIMIT)
KINDS = ["task_run", "subflow_run", "block_load", "markdown_artifact", "progress_update", "log_line"]

# The flow's process: a warm-up flow, then one flow per line read ("<kind> <count>"), each answered
# with "<flow run id> <CPU seconds of the call>" (Prefect's own console logs go to stderr).
_FLOWS = """
import sys, time
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

@task(name="step", cache_policy=NO_CACHE)
def step(number: int) -> int:
    return number

@flow(name="sub")
def sub() -> None:
    pass

@flow(name="items")
def items(kind: str, count: int) -> str:
    if kind == "progress_update" and count:
        progress = create_progress_artifact(progress=0.0)
    for number in range(count):
        if kind == "task_run":
            step(number)
        elif kind == "subflow_run":
            sub()
        elif kind == "block_load":
            Secret.load("bench-item")
        elif kind == "markdown_artifact":
            create_markdown_artifact(markdown=f"# item {number}")
        elif kind == "progress_update":
            update_progress_artifact(progress, progress=100.0 * number / count)
        elif kind == "log_line":
            get_run_logger().info("item %d", number)
    return str(flow_run.id)

Secret(value="not a secret").save("bench-item", overwrite=True)
items("task_run", 1)
print("ready", flush=True)
for line in sys.stdin:
    kind, count = line.split()
    started = time.process_time()
    run_id = items(kind, int(count))
    print(run_id, time.process_time() - started, flush=True)
"""


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its descendants, reaped ones included."""
    from switchyard.stack.processes import ProcessRecord, proc_stat, process_tree

    stat = proc_stat(pid)
    if stat is None:
        raise RuntimeError(f"process {pid} is gone")
    record = ProcessRecord(pid=pid, start_ticks=stat.start_ticks, argv=[], log="")
    return sum(p.cpu_ticks for p in process_tree(record)) / os.sysconf("SC_CLK_TCK")


def wait_recorded(kind: str, run_id: str, count: int) -> None:
    """Until the server shows the flow run's `count` Completed task runs or log lines (both reach it
    in batches: the recorder's, the client's log worker's); the other kinds are written in the call."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    if kind not in ("task_run", "log_line") or count == 0:
        return
    deadline = time.monotonic() + RECORDED_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while True:
            if kind == "task_run":
                completed = TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED]))
                done = len(
                    client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])),
                        task_run_filter=TaskRunFilter(state=completed),
                        limit=count,
                    )
                )
            else:
                of_the_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)]))
                done, offset = 0, 0
                while page := client.read_logs(log_filter=of_the_run, limit=PAGE, offset=offset):
                    done += sum(1 for log in page if log.message.startswith("item "))
                    offset += len(page)
            if done >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server recorded {done} of {count} ({kind}) in {RECORDED_TIMEOUT_S:.0f} s")
            time.sleep(0.5)


class Measurer:
    """Runs one flow at a time in the flow process and charges each part its CPU."""

    def __init__(self, flows: subprocess.Popen[str], parts: dict[str, int]) -> None:
        self.flows = flows
        self.parts = parts
        self.idle_cores: dict[str, float] = {}

    def cpu(self) -> dict[str, float]:
        return {name: tree_cpu_s(pid) for name, pid in self.parts.items()}

    def measure_idle(self) -> None:
        """Each part's CPU per second while nothing runs (the server's own loops)."""
        before, started = self.cpu(), time.monotonic()
        time.sleep(IDLE_SAMPLE_S)
        after, elapsed = self.cpu(), time.monotonic() - started
        self.idle_cores = {name: (after[name] - before[name]) / elapsed for name in self.parts}

    def flow(self, kind: str, count: int) -> dict[str, float]:
        """CPU seconds of one flow doing `count` of `kind`: its call, and each part's until recorded."""
        stdin, stdout = self.flows.stdin, self.flows.stdout
        assert stdin is not None and stdout is not None
        before, started = self.cpu(), time.monotonic()
        stdin.write(f"{kind} {count}\n")
        stdin.flush()
        answer = stdout.readline().split()
        if len(answer) != 2:
            raise RuntimeError(f"the flow process answered {answer!r}")
        run_id, flow_cpu_s = answer[0], float(answer[1])
        wait_recorded(kind, run_id, count)
        time.sleep(SETTLE_S)  # the event persister's flush
        after, elapsed = self.cpu(), time.monotonic() - started
        used = {name: after[name] - before[name] - self.idle_cores[name] * elapsed for name in self.parts}
        return {"flow_process": flow_cpu_s} | used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=200, help="items of each kind (subflow runs: a tenth; log lines: five times)"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.count < 10:
        parser.error("--count must be at least 10")

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from switchyard.stack.postgres import LocalPostgres, stop_postgres
    from switchyard.stack.prefect_server import PrefectServer

    scratch = Path(tempfile.mkdtemp(prefix="switchyard-step-cost-", dir="/tmp"))
    scratch.chmod(0o711)  # PostgreSQL runs as the postgres user when we are root
    postgres_record = None
    server = None
    flows = None
    try:
        parts: dict[str, int] = {}
        database_environment: dict[str, str] = {}
        if args.database == "postgresql":
            print("starting PostgreSQL ...", file=sys.stderr)
            process, postgres_record, config = LocalPostgres(scratch / "postgres").start()
            parts["postgres"] = process.pid
            database_environment = config.server_environment()
        print(f"starting a Prefect server on {args.database} ...", file=sys.stderr)
        server = PrefectServer(scratch / "prefect", database_environment=database_environment)
        server.start()
        assert server.process is not None
        parts["prefect_server"] = server.process.pid
        env = {**os.environ, **server.environment()}
        flows = subprocess.Popen(
            [sys.executable, "-c", _FLOWS], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert flows.stdout is not None
        if flows.stdout.readline().strip() != "ready":
            raise RuntimeError("the flow process did not start")
        measurer = Measurer(flows, parts)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            time.sleep(SETTLE_S)  # the warm-up's events are recorded
            measurer.measure_idle()
            print("an empty flow ...", file=sys.stderr)
            empty = measurer.flow("none", 0)
            costs: dict[str, dict[str, float]] = {}
            for kind in KINDS:
                # Subflow runs are the dearest, log lines so cheap that the server's own idle work
                # would hide them in a small count.
                count = {"subflow_run": args.count // 10, "log_line": args.count * 5}.get(kind, args.count)
                print(f"a flow of {count} x {kind} ...", file=sys.stderr)
                used = measurer.flow(kind, count)
                costs[kind] = {part: round(1000 * (used[part] - empty[part]) / count, 2) for part in used}
    finally:
        if flows is not None:
            flows.kill()
            flows.wait()
        if server is not None:
            server.stop()
        if postgres_record is not None:
            stop_postgres(postgres_record)
        shutil.rmtree(scratch, ignore_errors=True)

    server_ms = costs["task_run"]["prefect_server"] + costs["task_run"].get("postgres", 0.0)
    result: dict[str, Any] = {
        "benchmark": "prefect_step_cost",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": args.database,
        "count": args.count,
        "cpu_ms_per_item": costs,
        "server_cpu_ms_per_task_run": round(server_ms, 2),
        "idle_cores": {part: round(cores, 4) for part, cores in measurer.idle_cores.items()},
        "target_server_ms": TARGET_SERVER_MS,
        "met": server_ms <= TARGET_SERVER_MS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    suffix = "" if args.database == "sqlite" else f".{args.database}"
    (RESULTS / f"prefect_step_cost{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
