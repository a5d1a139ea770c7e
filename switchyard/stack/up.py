"""The local stack behind `switchyard up` and `switchyard down`.

`up` brings up, on this machine and on loopback only:
  * Azurite, Microsoft's storage emulator (switchyard_emulator.azurite, data in STATE/azurite): the
    blob storage of the emulator's one storage account, where images are uploaded as page blobs
    before they are published; HTTPS signed by the emulator's CA; its account name and generated
    key in STATE/azurite (mode 0600), never on a command line or in a log,
  * the Azure emulator (`python -m switchyard_emulator start`, state in STATE/emulator), told where
    Azurite is (`--storage-file STATE/azurite/storage.json`),
  * a Prefect server with its UI (switchyard/stack/prefect_server.py, home STATE/prefect), on SQLite,
    or on PostgreSQL: a server of its own or one you name (switchyard/stack/postgres.py),
  * switchyard's block types and the fleet's blocks (blocks/seed.py, from deployments/fleet.yaml),
  * every service's topology in each environment of the fleet it is deployed to (the provision flow),
  * the work pool and the deployments of prefect.yaml (`prefect deploy --all`),
  * one or more process workers polling that pool (--workers N),
and writes STATE/stack.json: the API and UI addresses, the emulator.json path and the processes
it started (pid + start time, so that a pid the system reused is never mistaken for ours).

Every long-running process starts in its own session (process group) and outlives `up`. `down`
stops exactly those processes and everything they started (flow runs, scale-set instances, the
gateway worker), found by walking the process tree from the recorded pids *before* signalling
anything: SIGTERM, a grace period, SIGKILL. It leaves nothing behind and touches nothing else.

`up` is idempotent: what is running and healthy is kept and reported; only what is missing is
started or created. A failure stops whatever this invocation started and says what went wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr

from switchyard.checkout import PREFECT_FILE, REPO_ROOT
from switchyard.stack.launches import Clock, Echo, Launches, Register, collect, stop_because, stop_one
from switchyard.stack.postgres import DatabaseConfig, DatabaseKind, stop_postgres
from switchyard.stack.prefect_server import PrefectServer, PrefectServerError
from switchyard.stack.processes import (
    ProcessRecord,
    free_port,
    is_running,
    kill_process_group,
    log_tail,
    port_is_free,
    proc_stat,
    process_tree,
    stop_processes,
)
from switchyard.stack.server_database import choose_database, database_kind, prepare_database
from switchyard.stack.state import (
    AZURITE_START_TIMEOUT_S,
    DEFAULT_FLEET_FILE,
    DEFAULT_PORT,
    DEPLOY_TIMEOUT_S,
    EMULATOR_START_TIMEOUT_S,
    PROVISION_TIMEOUT_S,
    SERVER_START_TIMEOUT_S,
    STACK_SCHEMA,
    STOP_GRACE_S,
    STOP_ORDER,
    WORK_POOL,
    StackError,
    StackPaths,
    StackState,
    client_environment,
    component,
    emulator_answers,
    emulator_info,
    exclusive,
    prefect_client_settings,
    prefect_healthy,
    read_stack,
    stop_order,
)
from switchyard.stack.workers import ensure_workers
from switchyard_emulator.azurite import LOG_FILE as AZURITE_LOG_FILE
from switchyard_emulator.azurite import AzuriteError, BlobStorage, start_azurite
from switchyard_emulator.azurite import answers as azurite_answers
from switchyard_emulator.launcher import LOG_FILE as EMULATOR_LOG_FILE
from switchyard_emulator.launcher import EmulatorStartError, start_emulator

# The steps of `up` -------------------------------------------------------------------------------


class UpOptions(BaseModel):
    state_dir: Path
    port: int | None = None  # None: DEFAULT_PORT, or a free one when it is taken
    fleet_file: Path = DEFAULT_FLEET_FILE
    redeploy: bool = False
    database: DatabaseKind | None = None  # None: what the running stack uses, else SQLite
    database_url: SecretStr | None = None  # a PostgreSQL of your own (kind "external")
    workers: int | None = Field(default=None, ge=1)  # None: as many as run now, else one
    # Flow runs each worker runs at once (`prefect worker start --limit`); 0: no limit; None: as now.
    worker_limit: int | None = Field(default=None, ge=0)
    # The emulator's timing profile (fast or azure); None: what the running emulator uses, else fast.
    profile: Literal["fast", "azure"] | None = None


def _deployment_names() -> list[str]:
    spec = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    return [str(d["name"]) for d in spec.get("deployments", [])]


def _start_azurite(paths: StackPaths, clock: Clock, register: Register) -> ProcessRecord:
    # Not tied to this process's life: Azurite outlives `up`, like the emulator.
    try:
        process, storage = start_azurite(
            paths.azurite_dir,
            paths.emulator_dir,  # its certificate is signed by the emulator's CA
            timeout_s=AZURITE_START_TIMEOUT_S,
            on_spawn=lambda started: register(lambda: started),
        )
    except AzuriteError as error:
        raise StackError(str(error)) from None
    clock.say(f"Azurite ready at {storage.blob_endpoint} (pid {process.pid}, account {storage.accounts[0].name})")
    return _record(process, paths.azurite_dir / AZURITE_LOG_FILE)


def _record(process: subprocess.Popen[bytes], log: Path) -> ProcessRecord:
    """stack.json's record of a process a launcher started (pid, start time, command line, log)."""
    stat = proc_stat(process.pid)
    return ProcessRecord(
        pid=process.pid,
        start_ticks=stat.start_ticks if stat else -1,
        argv=[str(a) for a in process.args],  # type: ignore[union-attr]
        log=str(log),
    )


def _azurite_answers(paths: StackPaths) -> bool:
    try:
        return azurite_answers(BlobStorage.read(paths.storage_file))
    except AzuriteError:
        return False


def _start_emulator(paths: StackPaths, profile: str, clock: Clock, register: Register) -> ProcessRecord:
    # Not tied to this process's life (no die_with_parent): the emulator outlives `up`.
    try:
        process, info = start_emulator(
            paths.emulator_dir,
            extra_args=["--lro-retry-after", "0", "--profile", profile, "--storage-file", str(paths.storage_file)],
            timeout_s=EMULATOR_START_TIMEOUT_S,
            on_spawn=lambda started: register(lambda: started),
        )
    except EmulatorStartError as error:
        raise StackError(str(error)) from None
    clock.say(f"emulator ready at {info['endpoint']} (pid {process.pid}, {profile} profile)")
    return _record(process, paths.emulator_dir / EMULATOR_LOG_FILE)


def _choose_port(requested: int | None, clock: Clock) -> int:
    if requested is not None:
        if not 1 <= requested <= 65535:
            raise StackError(f"--port {requested} is not a TCP port (1-65535)")
        if not port_is_free(requested):
            raise StackError(
                f"port {requested} on 127.0.0.1 is in use by another program: stop it, or choose another "
                "port with --port"
            )
        return requested
    if port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    port = free_port()
    clock.say(f"port {DEFAULT_PORT} is in use by another program: the Prefect server uses port {port} instead")
    return port


def _start_prefect(
    paths: StackPaths, port: int, database: DatabaseConfig, clock: Clock, register: Register
) -> ProcessRecord:
    server = PrefectServer(paths.prefect_home, port, database_environment=database.server_environment())
    register(lambda: server.process)
    try:
        server.start(timeout_s=SERVER_START_TIMEOUT_S)
    except PrefectServerError as error:
        raise StackError(f"the Prefect server did not start on port {port}: {error}") from None
    assert server.process is not None
    stat = proc_stat(server.process.pid)
    clock.say(f"Prefect server ready at {server.ui_url} on {database.describe()} (pid {server.process.pid})")
    return ProcessRecord(
        pid=server.process.pid,
        start_ticks=stat.start_ticks if stat else -1,
        argv=[str(a) for a in server.process.args],  # type: ignore[union-attr]
        log=str(server.log_path),
    )


def _fleet_for_stack(fleet_file: Path, paths: StackPaths) -> Any:
    """fleet.yaml, with emulator environments pointed at this stack's emulator."""
    from switchyard.checkout import checkout_fleet

    fleet = checkout_fleet(fleet_file)
    for name, environment in fleet.environments.items():
        if environment.auth == "emulator":
            fleet.environments[name] = environment.model_copy(update={"emulator_file": str(paths.emulator_file)})
    return fleet


def flow_run_command() -> str:
    """How the local work pool's workers start a flow run: Prefect's engine under this interpreter,
    leading a process group of its own (switchyard/stack/flow_run_engine.py).

    Left unset, Prefect 3.9's process worker starts each run through a workspace supervisor, a
    first interpreter that imports Prefect, prepares the run's workspace and then replaces itself
    with the engine: a second start-up per run, over a CPU second before the flow's first line, and
    more on a busy machine. The stack's workers run in this checkout on this interpreter, so the
    engine is started directly; it runs the deployment's pull step itself (prefect.yaml)."""
    return shlex.join([sys.executable, "-m", "switchyard.stack.flow_run_engine"])


def _work_pool_template() -> dict[str, Any]:
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = flow_run_command()
    return template


async def _ensure_work_pool() -> Literal["created", "updated", "present"]:
    """The process work pool, created if missing, its flow-run command brought up to date."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    template = _work_pool_template()
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=WORK_POOL,
                        type="process",
                        description="switchyard's local work pool: flow runs as processes on this machine.",
                        base_job_template=template,
                    )
                )
            except ObjectAlreadyExists:
                return "present"
            return "created"
        if pool.base_job_template == template:
            return "present"
        # (a pool an older switchyard created, or one whose interpreter has moved)
        await client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))
        return "updated"


async def _register_blocks(fleet: Any) -> list[str]:
    """switchyard's block types, then the fleet's blocks that do not exist yet; returns those created."""
    from blocks import ALL_BLOCKS
    from blocks.seed import seed_blocks

    for block_type in ALL_BLOCKS:
        await block_type.register_type_and_schema()
    return await seed_blocks(fleet)


async def _missing_deployments() -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        present = {d.name for d in await client.read_deployments()}
    return [name for name in _deployment_names() if name not in present]


def _run_to_log(argv: list[str], env: dict[str, str], log: Path, timeout_s: float, what: str) -> None:
    """Run a command to completion, its output in `log`; a failure shows the log's end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_process_group(process.pid)
            process.wait()
            raise StackError(f"{what} did not finish within {timeout_s:.0f} s (log {log}):\n{log_tail(log)}") from None
    if code != 0:
        raise StackError(f"{what} failed with exit code {code} (log {log}):\n{log_tail(log)}")


def _deploy(paths: StackPaths, api_url: str, clock: Clock) -> None:
    clock.say("deploying prefect.yaml (prefect deploy --all) ...")
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)]
    _run_to_log(
        argv,
        client_environment(paths, api_url),
        paths.logs_dir / "deploy.log",
        DEPLOY_TIMEOUT_S,
        "prefect deploy --all",
    )
    clock.say(f"deployed: {', '.join(_deployment_names())}")


def _provision(paths: StackPaths, api_url: str, placements: dict[str, list[str]], clock: Clock) -> None:
    """Provision every service of the fleet in each environment it is deployed to (`placements`:
    service -> environments), one `switchyard provision` at a time (the provision flow)."""
    for service, environments in placements.items():
        clock.say(f"provisioning {service} in {', '.join(environments)} (the provision flow) ...")
        for environment in environments:
            argv = [sys.executable, "-m", "switchyard.cli", "provision", service, "--env", environment]
            _run_to_log(
                argv,
                client_environment(paths, api_url),
                paths.logs_dir / f"provision-{service}-{environment}.log",
                PROVISION_TIMEOUT_S,
                f"provisioning {service} in {environment}",
            )
        clock.say(f"{service} provisioned in {', '.join(environments)} (logs in {paths.logs_dir})")


def _placements(fleet: Any) -> dict[str, list[str]]:
    """service -> the environments of the fleet it is deployed to, in the fleet's order."""
    return {
        name: [environment for environment in fleet.environments if environment in service.frontend_ports]
        for name, service in fleet.services.items()
    }


def _frontend_port_conflicts(fleet: Any) -> list[str]:
    """Gateway frontend ports of the fleet's services that another program holds."""
    conflicts = []
    for service, config in fleet.services.items():
        for environment, ports in config.frontend_ports.items():
            for listener, port in (("production", ports.production), ("test", ports.test)):
                if not port_is_free(port):
                    conflicts.append(f"{service} {environment} {listener} listener: port {port}")
    return conflicts


def up(options: UpOptions, echo: Echo = print) -> StackState:
    with exclusive(StackPaths(state_dir=options.state_dir.resolve())):
        return _up(options, echo)


def _up(options: UpOptions, echo: Echo) -> StackState:
    """Start what is not running; report what is. Returns what stack.json now says.

    Order, with everything that can overlap overlapping (the server's first start, with its
    database migrations, is the long pole): PostgreSQL when asked for, then the Prefect server;
    meanwhile the fleet file and the emulator; then the work pool and `prefect deploy --all`;
    meanwhile the blocks, the workers and the provisioning of the fleet's services."""
    clock = Clock(echo)
    paths = StackPaths(state_dir=options.state_dir.resolve())
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    previous = read_stack(paths)
    kept: dict[str, ProcessRecord] = {}
    if previous is not None:
        kept = {name: record for name, record in previous.processes.items() if is_running(record)}
    kind = database_kind(options.database, options.database_url, previous)
    external = choose_database(options.database, options.database_url, paths)
    threads = ThreadPoolExecutor(max_workers=6, thread_name_prefix="switchyard-up")
    launches = Launches(threads)
    jobs: list[Future[None]] = []
    database = DatabaseConfig()
    try:
        # 1. the Prefect server (started first: it takes longest), after its database
        server = kept.get("prefect_server")
        postgres = kept.get("postgres")
        if server and previous and prefect_healthy(previous.prefect_api_url):
            port, api_url = previous.port, previous.prefect_api_url
            database = previous.database
            if kind != database.kind or (external is not None and external.url != database.url):
                raise StackError(
                    f"the running stack's Prefect server uses {database.describe()}; run `switchyard down` first to "
                    "move it to another database (its run history stays in the old one)"
                )
            if database.kind == "postgresql" and postgres is None:
                raise StackError(
                    "the stack's PostgreSQL is not running, but its Prefect server is: run `switchyard down`, "
                    "then `switchyard up` again (the data stays)"
                )
            clock.say(
                f"Prefect server already running at {previous.ui_url} on {database.describe()} (pid {server.pid})"
            )
            if options.port not in (None, port):
                clock.say(f"(it keeps port {port}; run `switchyard down` first to move it to {options.port})")
        else:
            if server:
                stop_because(server, "prefect_server", clock, "does not answer")
            server = None
            if postgres is not None and kind != "postgresql":
                stop_because(postgres, "postgres", clock, "is not the database asked for")
                postgres = None
            port = _choose_port(options.port, clock)
            api_url = f"http://127.0.0.1:{port}/api"
            database, postgres = prepare_database(kind, external, previous, postgres, paths, clock, launches)
            clock.say(f"starting the Prefect server on 127.0.0.1:{port} ...")
            database_ready = launches.pending.get("postgres")

            def start_server(register: Register) -> ProcessRecord:
                if database_ready is not None:
                    try:
                        database_ready.result()
                    except Exception:
                        raise StackError("the Prefect server was not started: its database did not start") from None
                return _start_prefect(paths, port, database, clock, register)

            launches.launch("prefect_server", start_server)

        # 2. meanwhile: the fleet file, Azurite and the emulator (which reads Azurite's storage.json)
        fleet = _fleet_for_stack(options.fleet_file, paths)
        azurite = kept.get("azurite")
        if azurite and _azurite_answers(paths):
            clock.say(f"Azurite already running (pid {azurite.pid})")
        else:
            if azurite:
                stop_because(azurite, "azurite", clock, "does not answer")
            azurite = None
            clock.say("starting Azurite ...")
            launches.launch("azurite", lambda register: _start_azurite(paths, clock, register))
        azurite_ready = launches.pending.get("azurite")
        emulator = kept.get("emulator")
        info = emulator_info(paths)
        if emulator and azurite is None:
            # it read the old Azurite's storage.json when it started: it starts again with the new one
            stop_because(emulator, "emulator", clock, "must start again with its new blob storage")
            emulator = None
        if emulator and info and info.get("pid") == emulator.pid and emulator_answers(info):
            running = info.get("profile", "fast")
            clock.say(f"emulator already running at {info['endpoint']} (pid {emulator.pid}, {running} profile)")
            if options.profile not in (None, running):
                clock.say(
                    f"(it keeps the {running} profile; run `switchyard down` first to start it as {options.profile})"
                )
        else:
            if emulator:
                stop_because(emulator, "emulator", clock, "does not answer")
            emulator = None
            conflicts = _frontend_port_conflicts(fleet)
            if conflicts:
                raise StackError(
                    "ports the fleet's gateways listen on are in use by another program:\n- "
                    + "\n- ".join(conflicts)
                    + f"\nStop that program or change frontend_ports in {options.fleet_file}"
                )
            clock.say("starting the emulator ...")
            profile = options.profile or "fast"

            def start_emulator_after_azurite(register: Register) -> ProcessRecord:
                if azurite_ready is not None:
                    try:
                        azurite_ready.result()
                    except Exception:
                        raise StackError(
                            "the emulator was not started: Azurite, its blob storage, did not start"
                        ) from None
                return _start_emulator(paths, profile, clock, register)

            launches.launch("emulator", start_emulator_after_azurite)
        if server is None:
            # the emulator is ready long before the server's first start: if it failed, stop now
            concurrent.futures.wait(
                [launches.pending[n] for n in ("prefect_server", "emulator") if n in launches.pending],
                return_when=concurrent.futures.FIRST_EXCEPTION,
            )
            if launches.failed("emulator"):
                launches.wait("emulator")
            if "postgres" in launches.pending:
                postgres = launches.wait("postgres")
            server = launches.wait("prefect_server")
        if emulator is None and launches.pending["emulator"].done():
            emulator = launches.wait("emulator")

        # 3. the work pool, then the deployments in the background
        with prefect_client_settings(paths, api_url):
            pool = asyncio.run(_ensure_work_pool())
            missing = asyncio.run(_missing_deployments())
            clock.say(f"work pool {WORK_POOL} {pool}")
            if missing or options.redeploy:
                jobs.append(threads.submit(_deploy, paths, api_url, clock))
            else:
                clock.say(f"deployments already present: {', '.join(_deployment_names())}")

            # 4. the blocks; the workers; once the emulator is ready, the services' topologies
            created = asyncio.run(_register_blocks(fleet))
        clock.say(f"blocks: {len(created)} created" + (f" ({', '.join(created)})" if created else ", all present"))
        workers = ensure_workers(options.workers, options.worker_limit, kept, paths, api_url, clock, launches)
        if emulator is None:
            emulator = launches.wait("emulator")
        if azurite is None:
            azurite = launches.wait("azurite")
        placements = _placements(fleet)
        if "emulator" in launches.started or created:
            jobs.append(threads.submit(_provision, paths, api_url, placements, clock))
        else:
            clock.say(f"{', '.join(placements)} already provisioned")
        errors = launches.settle() + collect(jobs)
        if errors:
            raise StackError("\n".join(errors))
        workers.update({name: launches.started[name] for name in launches.started if component(name) == "worker"})
    except BaseException:
        aborted = launches.abort()
        launches.settle()
        collect(jobs)  # a deploy or provisioning still running finishes before its server stops
        if launches.started or aborted:
            echo(f"stopping what this run started: {', '.join([*aborted, *launches.started])}")
            for name in stop_order(launches.started):
                stop_one(name, launches.started[name])
        raise
    finally:
        threads.shutdown(wait=True)

    started = launches.started
    assert emulator is not None and azurite is not None and server is not None and workers
    processes = {"azurite": azurite, "emulator": emulator, "prefect_server": server, **workers}
    if database.kind == "postgresql":
        assert postgres is not None
        processes["postgres"] = postgres
    now = datetime.now(UTC)
    state = StackState(
        schema=STACK_SCHEMA,
        state_dir=str(paths.state_dir),
        repo_root=str(REPO_ROOT),
        prefect_api_url=api_url,
        ui_url=api_url.removesuffix("/api"),
        prefect_home=str(paths.prefect_home),
        port=port,
        emulator_file=str(paths.emulator_file),
        database=database,
        processes=processes,
        started_at=previous.started_at if previous and not started else now,
        updated_at=now,
    )
    changed = previous is None or set(previous.processes) != set(processes)
    if started or changed:
        state.write(paths.stack_file)
    if started:
        clock.say(f"stack up; started {', '.join(started)}; state in {paths.stack_file}")
    elif changed:
        clock.say(f"stack up; stopped what was not asked for; state in {paths.stack_file}")
    else:
        clock.say("stack already up: nothing changed")
    echo(f"Prefect UI: {state.ui_url}")
    return state


# `down` ------------------------------------------------------------------------------------------


class DownReport(BaseModel):
    stopped: dict[str, int] = Field(default_factory=dict)  # component -> processes stopped
    already_gone: list[str] = Field(default_factory=list)
    survivors: list[int] = Field(default_factory=list)


def down(state_dir: Path, echo: Echo = print) -> DownReport:
    """Stop what stack.json says `up` started, and everything those processes started."""
    paths = StackPaths(state_dir=state_dir.resolve())
    if not paths.stack_file.exists():
        echo(f"no stack to stop: {paths.stack_file} does not exist")
        return DownReport()
    with exclusive(paths):
        return _down(paths, echo)


def _down(paths: StackPaths, echo: Echo) -> DownReport:
    state = read_stack(paths)
    report = DownReport()
    if state is None:
        echo(f"no stack to stop: {paths.stack_file} does not exist")
        return report
    for kind in STOP_ORDER:
        names = [name for name in stop_order(state.processes) if component(name) == kind]
        if not names and kind in ("worker", "prefect_server", "emulator", "azurite"):
            names = [kind]
        # The whole tree is walked before any of it is signalled: a killed parent's children are
        # re-parented and lose their link to it. (Flow runs are the worker's children.) Processes
        # of one kind (the workers) stop together: one grace period, not one each.
        trees = {name: process_tree(state.processes[name]) if name in state.processes else [] for name in names}
        for name in [name for name, tree in trees.items() if not tree]:
            report.already_gone.append(name)
            echo(f"{name}: not running")
        running = {name: tree for name, tree in trees.items() if tree}
        if not running:
            continue
        for name, tree in running.items():
            echo(f"stopping {name} (pid {tree[0].pid}, {len(tree)} process(es)) ...")
        if kind == "postgres":
            survivors = [pid for name in running for pid in stop_postgres(state.processes[name], STOP_GRACE_S[kind])]
        else:
            survivors = [stat.pid for stat in stop_processes(list(running.values()), STOP_GRACE_S[kind])]
        for name, tree in running.items():
            report.stopped[name] = len([stat for stat in tree if stat.pid not in survivors])
        report.survivors += survivors
    if report.survivors:
        raise StackError(f"processes {report.survivors} survived SIGKILL; stack.json is kept in {paths.stack_file}")
    paths.stack_file.unlink(missing_ok=True)
    echo(f"stack down: {sum(report.stopped.values())} process(es) stopped, none left")
    return report


def current_stack(state_dir: Path) -> StackState | None:
    """stack.json, if its Prefect server answers."""
    state = read_stack(StackPaths(state_dir=state_dir.resolve()))
    if state is None or not prefect_healthy(state.prefect_api_url):
        return None
    return state
