"""The monthly patch over fleets of 1, 5 and 20 services: how its wall time grows with the fleet.

    python bench/fleet_patch.py [--sizes 1,5,20] [--repeat 3] [--workers 3] [--worker-limit 8]
                                [--services-per-run N] [--in-process] [--arm-throttling]

Brings up a local stack of its own (`switchyard up --database postgresql --workers N`, in a
temporary state directory, on free ports), with a fleet of services `svc-01` .. `svc-20` (the
sample app, capacity 1) and a fast release profile (blue-green, one-second windows: no traffic is
needed, and what is measured is orchestration, builds and instance start-up, not analysis windows).
Each service is provisioned in staging and production and put live in production first (not
timed). Then, per fleet size, the monthly-patch deployment runs on the workers over the first N
services, as its schedule would start it (all of them in one production batch, each step in
patch-services runs of --services-per-run services, by default the flow's own default); with --in-process
the flow runs in this process instead (the services then run as threads of one run, as the monthly
patch did before it fanned out).

The stack's scheduled deployments are paused first (retire-idle-colors every 5 minutes, the
reports): a scheduled run landing in one measurement and not another charged it a process start
and a read of the whole fleet, and made runs of the same size differ by 20 s. What that schedule
does still happens, untimed, before every run (retire()): a monthly patch meets each service with
one color running in each environment, its last release's warm color long retired. Without it every
patch left the fleet's old colors running, a stack of 20 services went from 40 instances to 80 for
its gateways to probe and its sampler to read, and each size was measured on a fleet in another
state (the 20 after the smaller sizes had left their colors warm).

Each size is patched --repeat times and reported by its median run (every run's wall time and the
stack's CPU seconds are kept, `runs_wall_s` and `runs_cpu_s`):
on a shared 2-core machine one run of a single service moved by 8 s between measurements, most of
it in when a worker's poll picked up each run. Before each run the benchmark waits for the stack to
idle again (settle()), so that no run is charged, or spared, the work the one before it left behind.

Prints one JSON object as its last line, and writes it to bench/results/fleet_patch.json (or
fleet_patch.in_process.json): wall seconds per fleet size; the CPU seconds each part of the stack
used meanwhile (on a small machine, what grows with the fleet is CPU); the Azure Resource Manager
requests the emulator answered (by operation type: Azure throttles each principal's reads at 25 a
second, emulator/switchyard_emulator/throttling.py, and by what they were about,
`arm_requests_by_resource_type`: on Azure a fleet's reads, paced to that budget, bound its patch's
wall time, and this says which reads to cut); each stage's share of the services' summed time
(waiting for a worker, the image build, the release to each environment, the rest); and the ratio of
the largest fleet's wall time to the smallest's. Target: ratio at most 2.5. Also the stack's CPU
seconds per service added past the smallest fleet (`cpu_s_per_added_service`): once the largest
fleet keeps the machine busy, that times the fleet over the cores is about its wall time. And how
fast the host is (`machine.calibration_cpu_s`, a fixed piece of Python timed before the stack
starts): the same code has measured a third slower on one 2-core host than on another.

With --arm-throttling the emulator throttles the patches as Resource Manager would, and
Microsoft.Compute behind it per scale set (the fast profile reads far faster than Azure's timing
does, so this is a fleet well over Azure's read rate): what it shows is whether the patch still
succeeds, and how many requests were refused (`throttled_read`, ..., `throttled_compute`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
TARGET_RATIO = 2.5
# None: the build takes HEAD (git archive of the commit); a made-up id would be refused.
COMMIT: str | None = None
ENVIRONMENTS = ["staging", "production"]
# Before each size: the stack's CPU use is sampled over SETTLE_SAMPLE_S until it is at most
# SETTLED_CORES and no longer falling (settle()), for at most SETTLE_TIMEOUT_S.
SETTLE_SAMPLE_S = 5.0
SETTLED_CORES = 0.6
SETTLE_TIMEOUT_S = 300.0
FAST_PROFILE = {
    "strategy": "blue-green",
    "promoted_analysis_window_s": 1,
    "min_ready_s": 1,
    "scale_down_delay_s": 1,
    "healthy_timeout_s": 120,
    "check_interval_s": 0.2,
    # The benchmark measures orchestration, not judgement: no synthetic load under full traffic.
    "synthetic_load": None,
}


def service_names(count: int) -> list[str]:
    return [f"svc-{n:02d}" for n in range(1, count + 1)]


def write_fleet(path: Path, count: int) -> None:
    import yaml

    from switchyard.stack.processes import free_port

    fleet = yaml.safe_load((REPO / "deployments" / "fleet.yaml").read_text())

    def frontend_ports() -> dict[str, dict[str, int]]:
        return {env: {"production": free_port(), "test": free_port()} for env in ENVIRONMENTS}

    for service in fleet["services"].values():  # the stack provisions them all: on free ports
        service["frontend_ports"] = frontend_ports()
    sample = fleet["services"]["sample"]
    for name in service_names(count):
        service = {**sample, "capacity": 1}
        service["frontend_ports"] = frontend_ports()
        service["autoscale"] = {**sample["autoscale"], "minimum": 1, "maximum": 2}
        fleet["services"][name] = service
        fleet["image_recipes"][name] = {"service": name}
    for policy in fleet["release_policies"].values():
        policy.update(FAST_PROFILE)
    for environment in fleet["environments"].values():
        environment["soak_s"] = 0  # a fixed wait per chain would only flatter the ratio of 20 to 1
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))


def run_all(deployment: str, parameter_sets: list[dict[str, Any]], timeout_s: float = 1800) -> list[Any]:
    """Start a run of `deployment` per parameter set, all at once; wait for all; fail on any failure."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    name = f"{deployment_flow(deployment)}/{deployment}"
    runs: list[FlowRun] = [run_deployment(name, parameters=p, timeout=0) for p in parameter_sets]  # type: ignore[misc]
    return wait_runs([run.id for run in runs], timeout_s, get_client)


def deployment_flow(deployment: str) -> str:
    from switchyard.runbooks import load_flow

    return str(load_flow(deployment).name)


def wait_runs(ids: list[UUID], timeout_s: float, get_client: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            if len(runs) == len(ids) and all(r.state is not None and r.state.is_final() for r in runs):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished within {timeout_s:.0f} s")
            time.sleep(1.0)
    failed = [r for r in runs if not r.state.is_completed()]
    if failed:
        raise RuntimeError("; ".join(f"{r.name}: {r.state.message}" for r in failed))
    return list(runs)


def prepare(count: int) -> None:
    """Every service provisioned in both environments and v1.0.0 live in production (not timed)."""
    from blocks import load_environment, load_service
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.config import ServiceContext

    names = service_names(count)
    run_all("provision", [{"service": n, "environment": e} for n in names for e in ENVIRONMENTS])
    run_all("image-pipeline", [{"service": n, "app_version": "1.0.0", "git_commit": COMMIT} for n in names])
    releases = []
    for name in names:
        context = ServiceContext(environment=load_environment("production"), service=load_service(name))
        (version,) = [v.gallery_version for v in cloud_for(context).gallery.image_versions(name) if v.exists]
        releases.append({"service": name, "environment": "production", "image_version": version})
    run_all("release", releases)


def stage_times(since: datetime, services: list[str]) -> dict[str, float]:
    """Seconds the services spent in each stage, summed, from the flow runs Prefect recorded."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)), limit=200
        )
        flows = {f.id: f.name for f in client.read_flows(limit=50)}
    totals = {"wait_for_worker": 0.0, "build": 0.0, "release_staging": 0.0, "release_production": 0.0}
    per_service = 0.0
    for run in runs:
        if run.start_time is None or run.end_time is None:
            continue
        seconds = (run.end_time - run.start_time).total_seconds()
        flow = flows.get(run.flow_id, "")
        if flow == "patch-services":
            # Each of its services waited for the run's start, and took part in the whole run.
            group = [name for name in run.parameters.get("services", []) if name in services]
            per_service += seconds * len(group)
            if run.expected_start_time is not None:
                totals["wait_for_worker"] += (run.start_time - run.expected_start_time).total_seconds() * len(group)
        elif run.parameters.get("service") not in services:
            continue
        elif flow == "image-pipeline":
            totals["build"] += seconds
        elif flow == "release":
            totals[f"release_{run.parameters.get('environment')}"] += seconds
    if per_service:
        totals["other"] = max(
            0.0, per_service - totals["build"] - totals["release_staging"] - totals["release_production"]
        )
    return totals


def stack_cpu_s(state: Any) -> dict[str, float]:
    """CPU seconds each part of the stack has used so far, its descendants included: a process's own
    time, what its finished (reaped) children used, and its living descendants' the same way. The
    workers' share holds the flow-run processes and their Packer and Trivy; the emulator's, the
    instances (the apps' processes) it runs; this process's, the patch when run --in-process."""
    from switchyard.stack.processes import process_tree

    ticks = os.sysconf("SC_CLK_TCK")
    parts: dict[str, float] = {}
    for name, record in state.processes.items():
        part = "workers" if name.startswith("worker") else name
        parts[part] = parts.get(part, 0.0) + sum(p.cpu_ticks for p in process_tree(record)) / ticks
    here = os.times()
    parts["bench"] = here.user + here.system + here.children_user + here.children_system
    return parts


def arm_requests(paths: Any) -> dict[str, int]:
    """The Resource Manager requests the stack's emulator has answered so far, by operation type (it
    counts them whether or not it throttles), and those it refused with 429 (`throttled_read`, ...);
    then the scale-set calls Microsoft.Compute's policies cover (`compute`) and those it refused, and
    the Log Analytics queries (`log_queries`) and those it refused."""
    from switchyard_emulator.testing import throttling_status

    status = throttling_status(paths.emulator_file)
    compute, queries = status["compute"], status["log_queries"]
    return {
        **status["admitted"],
        **{f"throttled_{kind}": count for kind, count in status["throttled"].items()},
        "compute": sum(compute["admitted"].values()),
        "throttled_compute": sum(compute["throttled"].values()),
        "log_queries": queries["admitted"],
        "throttled_log_queries": sum(queries["throttled"].values()),
    }


def arm_requests_by_resource_type(paths: Any) -> dict[str, int]:
    """The same requests by what they were about (`GET microsoft.compute/virtualmachinescalesets`):
    where a fleet's reads go."""
    from switchyard_emulator.testing import throttling_status

    counted: dict[str, int] = throttling_status(paths.emulator_file)["admitted_by_resource_type"]
    return counted


def enforce_arm_throttling(paths: Any) -> None:
    """Resource Manager's throttling on in the stack's emulator (its admin route), buckets full."""
    from switchyard_emulator.testing import set_throttling

    set_throttling(paths.emulator_file, enforced=True)
    print(
        "Resource Manager's throttling enforced (reads 250 + 25/s, writes 200 + 10/s), and Microsoft.Compute's "
        "per scale set (a GET: 36 + 12 a minute)",
        file=sys.stderr,
    )


def pause_schedules() -> None:
    """Pause every deployment with a schedule (Prefect then deletes its scheduled runs); a paused
    deployment still runs when asked, as the monthly patch is here."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if deployment.schedules and not deployment.paused:
                client.pause_deployment(deployment.id)
                print(f"paused the schedule of {deployment.name}", file=sys.stderr)


def retire(count: int) -> float:
    """What the paused retire-idle-colors schedule would have done by the next monthly patch: every
    service's old color scaled to zero (the fast profile's warm period is a second). Untimed; returns
    how long it took."""
    started = time.monotonic()
    run_all("retire-idle-colors", [{"services": service_names(count)}])
    return round(time.monotonic() - started, 1)


def settle(state: Any) -> dict[str, Any]:
    """Wait until the stack is back to idling: what ran before (the set-up, the previous size) leaves
    work behind it (the Prefect server's events and state writes, instances still winding down),
    and timing a size meanwhile would charge it that work, or hide the work in the size before.

    Idling is a low rate of CPU use that has stopped falling: the stack never rests entirely (health
    probes, the workers' polls, the server's loops). Returns how long that took and the idle rate."""
    started = time.monotonic()
    previous: float | None = None
    while True:
        before = stack_busy_s(state)
        time.sleep(SETTLE_SAMPLE_S)
        rate = (stack_busy_s(state) - before) / SETTLE_SAMPLE_S
        steady = previous is not None and abs(rate - previous) <= max(0.2 * previous, 0.05)
        waited = time.monotonic() - started
        if (steady and rate <= SETTLED_CORES) or waited > SETTLE_TIMEOUT_S:
            return {"settle_s": round(waited, 1), "idle_cores": round(rate, 2), "settled": waited <= SETTLE_TIMEOUT_S}
        previous = rate


def stack_busy_s(state: Any) -> float:
    """CPU seconds the stack (not this process) has used so far."""
    return sum(used for part, used in stack_cpu_s(state).items() if part != "bench")


def patch(services: list[str], in_process: bool, services_per_run: int) -> tuple[float, dict[str, float]]:
    from datetime import UTC

    since = datetime.now(UTC)
    started = time.perf_counter()
    # One production batch for the whole fleet: the batches pace a real fleet on purpose (a bad patch
    # stops early), while this measures how the fan-out itself grows with the fleet.
    parameters: dict[str, Any] = {
        "services": services,
        "environments": ENVIRONMENTS,
        "production_batch_size": len(services),
        "services_per_run": services_per_run,
    }
    if in_process:
        from flows.monthly_patch import monthly_patch

        results = monthly_patch(**parameters)
        assert all(r.result == "patched" for r in results), results
    else:
        run_all("monthly-patch", [parameters])
    wall = time.perf_counter() - started
    return wall, stage_times(since, services)


def measured(
    wall: float,
    quiet: dict[str, Any],
    cpu: dict[str, float],
    arm: dict[str, int],
    arm_by_type: dict[str, int],
    stages: dict[str, float],
) -> dict[str, Any]:
    total = sum(stages.values()) or 1.0
    return {
        "wall_s": round(wall, 1),
        "before": quiet,
        "cpu_s": {part: round(used, 1) for part, used in sorted(cpu.items(), key=lambda kv: -kv[1])},
        "arm_requests": arm,
        "arm_reads_per_s": round(arm["read"] / wall, 1),
        "arm_requests_by_resource_type": dict(sorted(arm_by_type.items(), key=lambda kv: -kv[1])),
        "stage_s": {k: round(v, 1) for k, v in stages.items()},
        "stage_shares": {k: round(v / total, 3) for k, v in stages.items()},
    }


# A fixed piece of pure-Python work (what the stack's parts mostly are), timed on one core before the
# stack starts: how fast this host is, so that runs on different hosts can be told apart.
CALIBRATION_ROUNDS = 3


def host_calibration_s() -> float:
    """The best of CALIBRATION_ROUNDS timings of the same work: JSON out and back, hashing, a
    dictionary built and summed. The same code measured 96.9 s and 131.3 s for 20 services on two
    2-core hosts of the same name; this says which kind of host a run had."""
    import hashlib

    document = {"services": [{"name": f"svc-{n:02d}", "instances": list(range(20))} for n in range(200)]}
    best = float("inf")
    for _ in range(CALIBRATION_ROUNDS):
        started = time.process_time()
        for round_number in range(30):
            text = json.dumps(document)
            parsed = json.loads(text)
            digest = hashlib.sha256(text.encode()).hexdigest()
            table = {f"{digest}-{n}": n * round_number for n in range(20_000)}
            assert sum(table.values()) >= 0 and parsed["services"]
        best = min(best, time.process_time() - started)
    return best


def stack_cpu_of(cpu_s: dict[str, float]) -> float:
    """A run's CPU seconds of the stack, by part, summed: the benchmark's own left out."""
    return sum(used for part, used in cpu_s.items() if part != "bench")


def cpu_s_per_added_service(results: dict[str, dict[str, Any]], sizes: list[int]) -> float | None:
    """The stack's CPU seconds that each service past the smallest fleet added, between the smallest
    and the largest size. On a machine the largest fleet keeps busy, its wall time is about this
    times the fleet over the cores: the measure to cut."""
    if len(sizes) < 2:
        return None
    stack_cpu = [stack_cpu_of(results[str(size)]["cpu_s"]) for size in (sizes[0], sizes[-1])]
    return (stack_cpu[1] - stack_cpu[0]) / (sizes[-1] - sizes[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--worker-limit", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the median one is reported")
    parser.add_argument(
        "--services-per-run", type=int, default=None, help="services per patch-services run (default: the flow's)"
    )
    parser.add_argument("--in-process", action="store_true", help="run the flow here (threads), not on the workers")
    parser.add_argument("--keep", action="store_true", help="leave the stack running (and say where)")
    parser.add_argument(
        "--arm-throttling",
        action="store_true",
        help="the emulator throttles the patches like Resource Manager (the set-up is not throttled); "
        "results go to fleet_patch.arm_throttling.json",
    )
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})

    from pydantic import SecretStr  # noqa: F401  (the stack's options import it)

    from switchyard.core.routine import PatchRollout
    from switchyard.stack.state import StackPaths, prefect_client_settings
    from switchyard.stack.up import UpOptions, down, up
    from switchyard_emulator.testing import counts_between

    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    services_per_run = args.services_per_run or PatchRollout().services_per_run

    calibration = host_calibration_s()
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-bench-", dir="/tmp"))
    scratch.chmod(0o711)  # PostgreSQL runs as the postgres user when we are root
    fleet_file = scratch / "fleet.yaml"
    write_fleet(fleet_file, max(sizes))
    options = UpOptions(
        state_dir=scratch / "state",
        fleet_file=fleet_file,
        database="postgresql",
        workers=args.workers,
        worker_limit=args.worker_limit,
        port=None,
    )
    results: dict[str, Any] = {}
    try:
        state = up(options, echo=lambda line: print(line, file=sys.stderr))
        os.environ["SWITCHYARD_STATE_DIR"] = state.state_dir
        os.environ["PREFECT_API_URL"] = state.prefect_api_url
        paths = StackPaths(state_dir=Path(state.state_dir))
        with prefect_client_settings(paths, state.prefect_api_url):
            pause_schedules()
            prepare(max(sizes))
            if args.arm_throttling:
                enforce_arm_throttling(paths)
            for size in sizes:
                runs = []
                for attempt in range(1, args.repeat + 1):
                    retire_s = retire(max(sizes))
                    quiet = {**settle(state), "retire_s": retire_s}
                    print(
                        f"old colors retired in {retire_s} s; stack idle after {quiet['settle_s']} s "
                        f"({quiet['idle_cores']} cores)",
                        file=sys.stderr,
                    )
                    cpu_before, arm_before = stack_cpu_s(state), arm_requests(paths)
                    by_type_before = arm_requests_by_resource_type(paths)
                    wall, stages = patch(service_names(size), args.in_process, services_per_run)
                    cpu = {part: used - cpu_before.get(part, 0.0) for part, used in stack_cpu_s(state).items()}
                    arm = {kind: count - arm_before[kind] for kind, count in arm_requests(paths).items()}
                    by_type = counts_between(by_type_before, arm_requests_by_resource_type(paths))
                    runs.append(measured(wall, quiet, cpu, arm, by_type, stages))
                    parts = ", ".join(f"{part} {used:.1f}" for part, used in sorted(cpu.items()))
                    print(
                        f"{size} service(s), run {attempt} of {args.repeat}: {wall:.1f} s, "
                        f"{stack_cpu_of(cpu):.1f} CPU s of the stack ({parts})",
                        file=sys.stderr,
                    )
                median = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
                # Every run's wall and CPU, not only the median's: runs of one size on one stack can
                # drift as the stack gathers state, and only the sequence shows it.
                results[str(size)] = {
                    **median,
                    "runs_wall_s": [run["wall_s"] for run in runs],
                    "runs_cpu_s": [round(stack_cpu_of(run["cpu_s"]), 1) for run in runs],
                }
    finally:
        if args.keep:
            print(f"stack left running: switchyard down --state-dir {scratch / 'state'}", file=sys.stderr)
        else:
            down(scratch / "state", echo=lambda line: print(line, file=sys.stderr))
            shutil.rmtree(scratch, ignore_errors=True)
    # One size has no ratio: it neither meets the target nor misses it.
    ratio = results[str(sizes[-1])]["wall_s"] / results[str(sizes[0])]["wall_s"] if len(sizes) > 1 else None
    per_service = cpu_s_per_added_service(results, sizes)
    result = {
        "benchmark": "fleet_patch",
        "mode": "in-process threads" if args.in_process else f"deployment runs on {args.workers} workers",
        "arm_throttling": args.arm_throttling,
        "database": "postgresql",
        "workers": args.workers,
        "worker_limit": args.worker_limit,
        "services_per_run": services_per_run,
        "repeat": args.repeat,
        "sizes": results,
        f"ratio_{sizes[-1]}_to_{sizes[0]}": None if ratio is None else round(ratio, 2),
        "cpu_s_per_added_service": None if per_service is None else round(per_service, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": None if ratio is None else ratio <= TARGET_RATIO,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "calibration_cpu_s": round(calibration, 3),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    variant = (".in_process" if args.in_process else "") + (".arm_throttling" if args.arm_throttling else "")
    name = f"fleet_patch{variant}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
