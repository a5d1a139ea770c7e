"""The local stack behind `switchyard up` and `switchyard down`.

`up` brings up, on this machine and on loopback only:
  * the Azure emulator (`python -m switchyard_emulator start`, state in STATE/emulator),
  * a Prefect server with its UI (switchyard/stack/prefect_server.py, home STATE/prefect), on SQLite,
    or on PostgreSQL: a server of its own or one you name (switchyard/stack/postgres.py),
  * switchyard's block types and the fleet's blocks (blocks/seed.py, from deployments/fleet.yaml),
  * the sample service's topology in every environment of the fleet (the provision flow),
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
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr

from switchyard.checkout import PREFECT_FILE, REPO_ROOT
from switchyard.stack.postgres import (
    DatabaseConfig,
    DatabaseError,
    DatabaseKind,
    LocalPostgres,
    external_database,
    stop_postgres,
)
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
    spawn,
    stop_processes,
)
from switchyard.stack.state import (
    DEFAULT_FLEET_FILE,
    DEFAULT_PORT,
    DEPLOY_TIMEOUT_S,
    EMULATOR_START_TIMEOUT_S,
    PROVISION_TIMEOUT_S,
    SAMPLE_SERVICE,
    SERVER_START_TIMEOUT_S,
    STACK_SCHEMA,
    STOP_GRACE_S,
    STOP_ORDER,
    WORK_POOL,
    WORKER_HEARTBEAT_SECONDS,
    WORKER_ONLINE_TIMEOUT_S,
    WORKER_QUERY_SECONDS,
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
    worker_name,
    worker_process,
)
from switchyard_emulator.launcher import LOG_FILE as EMULATOR_LOG_FILE
from switchyard_emulator.launcher import EmulatorStartError, start_emulator

Echo = Callable[[str], None]
# A launch tells its launcher how to find the process it spawned, so that an aborted `up` can kill
# a process that is still starting.
Register = Callable[[Callable[[], "subprocess.Popen[bytes] | None"]], None]

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


class _Clock:
    def __init__(self, echo: Echo) -> None:
        self.start = time.monotonic()
        self.echo = echo

    def say(self, message: str) -> None:
        self.echo(f"[{time.monotonic() - self.start:5.1f}s] {message}")


def _deployment_names() -> list[str]:
    spec = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    return [str(d["name"]) for d in spec.get("deployments", [])]


def _start_emulator(paths: StackPaths, profile: str, clock: _Clock, register: Register) -> ProcessRecord:
    # Not tied to this process's life (no die_with_parent): the emulator outlives `up`.
    try:
        process, info = start_emulator(
            paths.emulator_dir,
            extra_args=["--lro-retry-after", "0", "--profile", profile],
            timeout_s=EMULATOR_START_TIMEOUT_S,
            on_spawn=lambda started: register(lambda: started),
        )
    except EmulatorStartError as error:
        raise StackError(str(error)) from None
    stat = proc_stat(process.pid)
    clock.say(f"emulator ready at {info['endpoint']} (pid {process.pid}, {profile} profile)")
    return ProcessRecord(
        pid=process.pid,
        start_ticks=stat.start_ticks if stat else -1,
        argv=[str(a) for a in process.args],  # type: ignore[union-attr]
        log=str(paths.emulator_dir / EMULATOR_LOG_FILE),
    )


def _choose_port(requested: int | None, clock: _Clock) -> int:
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
    paths: StackPaths, port: int, database: DatabaseConfig, clock: _Clock, register: Register
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


async def _ensure_work_pool() -> bool:
    """Create the process work pool if it is missing; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(WORK_POOL)
            return False
        except ObjectNotFound:
            pass
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=WORK_POOL,
                    type="process",
                    description="switchyard's local work pool: flow runs as processes on this machine.",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:
            return False
    return True


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


async def _worker_online(name: str, since: datetime) -> bool:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        workers = await client.read_workers_for_work_pool(WORK_POOL)
    return any(w.name == name and w.last_heartbeat_time is not None and w.last_heartbeat_time >= since for w in workers)


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


def _deploy(paths: StackPaths, api_url: str, clock: _Clock) -> None:
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


def _provision(paths: StackPaths, api_url: str, environments: list[str], clock: _Clock) -> None:
    clock.say(f"provisioning {SAMPLE_SERVICE} in {', '.join(environments)} (the provision flow) ...")
    for environment in environments:
        argv = [sys.executable, "-m", "switchyard.cli", "provision", SAMPLE_SERVICE, "--env", environment]
        _run_to_log(
            argv,
            client_environment(paths, api_url),
            paths.logs_dir / f"provision-{environment}.log",
            PROVISION_TIMEOUT_S,
            f"provisioning {SAMPLE_SERVICE} in {environment}",
        )
    clock.say(f"{SAMPLE_SERVICE} provisioned in {', '.join(environments)} (logs in {paths.logs_dir})")


def _worker_argv(number: int, limit: int) -> list[str]:
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"]
    argv += ["--name", worker_name(number)]
    # A limit is what spreads runs: a worker without one takes every run that is due when it polls.
    return argv + (["--limit", str(limit)] if limit else [])


def _running_limit(record: ProcessRecord) -> int:
    """The --limit a running worker was started with (0: none)."""
    argv = record.argv
    return int(argv[argv.index("--limit") + 1]) if "--limit" in argv[:-1] else 0


def _start_worker(
    paths: StackPaths, api_url: str, number: int, limit: int, clock: _Clock, register: Register
) -> ProcessRecord:
    env = {
        **client_environment(paths, api_url),
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        "PREFECT_WORKER_HEARTBEAT_SECONDS": str(WORKER_HEARTBEAT_SECONDS),
    }
    argv = _worker_argv(number, limit)
    name = worker_name(number)
    since = datetime.now(UTC)
    process, record = spawn(argv, env=env, log=paths.logs_dir / f"{worker_process(number)}.log")
    register(lambda: process)
    deadline = time.monotonic() + WORKER_ONLINE_TIMEOUT_S
    with prefect_client_settings(paths, api_url):
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"the worker exited with code {process.returncode}:\n{log_tail(record.log)}")
            if asyncio.run(_worker_online(name, since)):
                clock.say(f"worker {name} polls work pool {WORK_POOL} (pid {process.pid})")
                return record
            time.sleep(0.5)
    stop_processes([process_tree(record)], STOP_GRACE_S["worker"])
    raise StackError(
        f"worker {name} did not come online within {WORKER_ONLINE_TIMEOUT_S:.0f} s:\n{log_tail(record.log)}"
    )


def _frontend_port_conflicts(fleet: Any, service: str) -> list[str]:
    """Gateway frontend ports of the sample service that another program holds."""
    conflicts = []
    config = fleet.services.get(service)
    if config is None:
        raise StackError(f"{service!r} is not a service of the fleet file; the stack provisions it")
    for environment, ports in config.frontend_ports.items():
        for listener, port in (("production", ports.production), ("test", ports.test)):
            if not port_is_free(port):
                conflicts.append(f"{service} {environment} {listener} listener: port {port}")
    return conflicts


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, StackError) else f"{type(error).__name__}: {error}"


def _stop(record: ProcessRecord, name: str, clock: _Clock, why: str) -> None:
    clock.say(f"{name} (pid {record.pid}) {why}: stopping it")
    _stop_one(name, record)


def _stop_one(name: str, record: ProcessRecord) -> list[int]:
    """Stop one of the stack's processes with everything it started; return the survivors' pids."""
    if component(name) == "postgres":
        return stop_postgres(record, STOP_GRACE_S["postgres"])
    return [stat.pid for stat in stop_processes([process_tree(record)], STOP_GRACE_S[component(name)])]


def _choose_database(options: UpOptions, previous: StackState | None, paths: StackPaths) -> DatabaseConfig | None:
    """The database asked for: a config for an external one, None for the local kinds (decided
    when they start). A running stack keeps its database: moving it is `down` first."""
    if options.database_url is not None:
        if options.database not in (None, "external", "postgresql"):
            raise StackError("--database-url names a PostgreSQL: it does not go with --database sqlite")
        try:
            return external_database(options.database_url.get_secret_value(), paths.database_passfile)
        except DatabaseError as error:
            raise StackError(str(error)) from None
    return None


def _database_kind(options: UpOptions, previous: StackState | None) -> DatabaseKind:
    if options.database_url is not None:
        return "external"
    if options.database is not None:
        return options.database
    return previous.database.kind if previous is not None else "sqlite"


class _Launches:
    """Background starts of long-running processes: whatever happens, each one that started is
    known, so that a failure stops it, and one still starting can be killed."""

    def __init__(self, threads: ThreadPoolExecutor) -> None:
        self.threads = threads
        self.pending: dict[str, Future[ProcessRecord]] = {}
        self.handles: dict[str, Callable[[], subprocess.Popen[bytes] | None]] = {}
        self.started: dict[str, ProcessRecord] = {}

    def launch(self, name: str, start: Callable[[Register], ProcessRecord]) -> None:
        def register(handle: Callable[[], subprocess.Popen[bytes] | None]) -> None:
            self.handles[name] = handle

        self.pending[name] = self.threads.submit(start, register)

    def wait(self, name: str) -> ProcessRecord:
        future = self.pending.pop(name)
        record = future.result()
        self.started[name] = record
        return record

    def failed(self, name: str) -> bool:
        future = self.pending.get(name)
        return future is not None and future.done() and future.exception() is not None

    def abort(self) -> list[str]:
        """Kill the processes of launches that are still starting; return their names."""
        killed = []
        for name, future in self.pending.items():
            process = self.handles.get(name, lambda: None)()
            if not future.done() and process is not None and process.poll() is None:
                kill_process_group(process.pid)
                killed.append(name)
        return killed

    def settle(self) -> list[str]:
        """Wait for every pending start; record what started, return what failed."""
        errors = []
        for name in list(self.pending):
            try:
                self.wait(name)
            except Exception as error:
                errors.append(_describe(error))
        return errors


def _collect(jobs: list[Future[None]]) -> list[str]:
    errors = []
    for job in jobs:
        try:
            job.result()
        except Exception as error:
            errors.append(_describe(error))
    return errors


def up(options: UpOptions, echo: Echo = print) -> StackState:
    with exclusive(StackPaths(state_dir=options.state_dir.resolve())):
        return _up(options, echo)


def _up(options: UpOptions, echo: Echo) -> StackState:
    """Start what is not running; report what is. Returns what stack.json now says.

    Order, with everything that can overlap overlapping (the server's first start, with its
    database migrations, is the long pole): PostgreSQL when asked for, then the Prefect server;
    meanwhile the fleet file and the emulator; then the work pool and `prefect deploy --all`;
    meanwhile the blocks, the workers and the provisioning of the sample service."""
    clock = _Clock(echo)
    paths = StackPaths(state_dir=options.state_dir.resolve())
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    previous = read_stack(paths)
    kept: dict[str, ProcessRecord] = {}
    if previous is not None:
        kept = {name: record for name, record in previous.processes.items() if is_running(record)}
    kind = _database_kind(options, previous)
    external = _choose_database(options, previous, paths)
    threads = ThreadPoolExecutor(max_workers=6, thread_name_prefix="switchyard-up")
    launches = _Launches(threads)
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
                _stop(server, "prefect_server", clock, "does not answer")
            server = None
            if postgres is not None and kind != "postgresql":
                _stop(postgres, "postgres", clock, "is not the database asked for")
                postgres = None
            port = _choose_port(options.port, clock)
            api_url = f"http://127.0.0.1:{port}/api"
            database, postgres = _prepare_database(kind, external, previous, postgres, paths, clock, launches)
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

        # 2. meanwhile: the fleet file and the emulator
        fleet = _fleet_for_stack(options.fleet_file, paths)
        emulator = kept.get("emulator")
        info = emulator_info(paths)
        if emulator and info and info.get("pid") == emulator.pid and emulator_answers(info):
            running = info.get("profile", "fast")
            clock.say(f"emulator already running at {info['endpoint']} (pid {emulator.pid}, {running} profile)")
            if options.profile not in (None, running):
                clock.say(
                    f"(it keeps the {running} profile; run `switchyard down` first to start it as {options.profile})"
                )
        else:
            if emulator:
                _stop(emulator, "emulator", clock, "does not answer")
            emulator = None
            conflicts = _frontend_port_conflicts(fleet, SAMPLE_SERVICE)
            if conflicts:
                raise StackError(
                    "ports the sample service's gateways listen on are in use by another program:\n- "
                    + "\n- ".join(conflicts)
                    + f"\nStop that program or change frontend_ports in {options.fleet_file}"
                )
            clock.say("starting the emulator ...")
            profile = options.profile or "fast"
            launches.launch("emulator", lambda register: _start_emulator(paths, profile, clock, register))
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
            pool_created = asyncio.run(_ensure_work_pool())
            missing = asyncio.run(_missing_deployments())
            clock.say(f"work pool {WORK_POOL} " + ("created" if pool_created else "present"))
            if missing or options.redeploy:
                jobs.append(threads.submit(_deploy, paths, api_url, clock))
            else:
                clock.say(f"deployments already present: {', '.join(_deployment_names())}")

            # 4. the blocks; the workers; once the emulator is ready, the sample service's topologies
            created = asyncio.run(_register_blocks(fleet))
        clock.say(f"blocks: {len(created)} created" + (f" ({', '.join(created)})" if created else ", all present"))
        workers = _ensure_workers(options, kept, paths, api_url, clock, launches)
        if emulator is None:
            emulator = launches.wait("emulator")
        deployed_to = fleet.services[SAMPLE_SERVICE].frontend_ports
        environments = [name for name in fleet.environments if name in deployed_to]
        if "emulator" in launches.started or created:
            jobs.append(threads.submit(_provision, paths, api_url, environments, clock))
        else:
            clock.say(f"{SAMPLE_SERVICE} already provisioned in {', '.join(environments)}")
        errors = launches.settle() + _collect(jobs)
        if errors:
            raise StackError("\n".join(errors))
        workers.update({name: launches.started[name] for name in launches.started if component(name) == "worker"})
    except BaseException:
        aborted = launches.abort()
        launches.settle()
        _collect(jobs)  # a deploy or provisioning still running finishes before its server stops
        if launches.started or aborted:
            echo(f"stopping what this run started: {', '.join([*aborted, *launches.started])}")
            for name in stop_order(launches.started):
                _stop_one(name, launches.started[name])
        raise
    finally:
        threads.shutdown(wait=True)

    started = launches.started
    assert emulator is not None and server is not None and workers
    processes = {"emulator": emulator, "prefect_server": server, **workers}
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


def _prepare_database(
    kind: DatabaseKind,
    external: DatabaseConfig | None,
    previous: StackState | None,
    postgres: ProcessRecord | None,
    paths: StackPaths,
    clock: _Clock,
    launches: _Launches,
) -> tuple[DatabaseConfig, ProcessRecord | None]:
    """The database of a Prefect server about to start: SQLite, the URL you gave (or gave last
    time: its password stays in its passfile), or the stack's own PostgreSQL, kept if it still
    runs, else started in the background on its previous port when that is free."""
    if kind == "sqlite":
        return DatabaseConfig(), None
    if kind == "external":
        if external is not None:
            return external, None
        if previous is not None and previous.database.kind == "external":
            return previous.database, None
        raise StackError("--database external needs the URL: --database-url or $SWITCHYARD_DATABASE_URL")
    local = LocalPostgres(paths.postgres_dir)
    before = previous.database if previous is not None and previous.database.kind == "postgresql" else None
    if postgres is not None and before is not None and before.port is not None:
        clock.say(f"PostgreSQL already running on 127.0.0.1:{before.port} (pid {postgres.pid})")
        return before, postgres
    if postgres is not None:
        _stop(postgres, "postgres", clock, "is not the one stack.json describes")
    pg_port = before.port if before is not None and before.port and port_is_free(before.port) else free_port()
    clock.say(f"starting PostgreSQL on 127.0.0.1:{pg_port} (data in {local.paths.data}) ...")

    def start(register: Register) -> ProcessRecord:
        try:
            process, record, _ = local.start(pg_port)
        except DatabaseError as error:
            raise StackError(str(error)) from None
        register(lambda: process)
        clock.say(f"PostgreSQL ready on 127.0.0.1:{pg_port} (pid {record.pid})")
        return record

    launches.launch("postgres", start)
    return local.config(pg_port), None


def _ensure_workers(
    options: UpOptions,
    kept: dict[str, ProcessRecord],
    paths: StackPaths,
    api_url: str,
    clock: _Clock,
    launches: _Launches,
) -> dict[str, ProcessRecord]:
    """As many process workers as asked for (default: as many as run now, at least one). Workers
    that polled a previous Prefect server, or that are more than asked for, are stopped."""
    running = {name: record for name, record in kept.items() if component(name) == "worker"}
    count = options.workers or max(1, len(running))
    limits = {_running_limit(record) for record in running.values()}
    limit = options.worker_limit if options.worker_limit is not None else (limits.pop() if len(limits) == 1 else 0)
    keep: dict[str, ProcessRecord] = {}
    for name, record in sorted(running.items()):
        if "prefect_server" in launches.started or "prefect_server" in launches.pending:
            _stop(record, name, clock, "polled the previous Prefect server")
        elif name not in {worker_process(n) for n in range(1, count + 1)}:
            _stop(record, name, clock, f"is more than the {count} worker(s) asked for")
        elif _running_limit(record) != limit:
            _stop(
                record, name, clock, f"runs {_running_limit(record) or 'any number of'} flow runs at once, not {limit}"
            )
        else:
            keep[name] = record
    for number in range(1, count + 1):
        name = worker_process(number)
        if name in keep:
            clock.say(f"worker already running: {worker_name(number)} (pid {keep[name].pid})")
            continue
        clock.say(f"starting worker {worker_name(number)} on work pool {WORK_POOL} ...")
        launches.launch(name, lambda register, n=number: _start_worker(paths, api_url, n, limit, clock, register))  # type: ignore[misc]
    return keep


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
        if not names and kind in ("worker", "prefect_server", "emulator"):
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
