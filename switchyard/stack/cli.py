"""`switchyard up`, `switchyard down`, `switchyard ui-url` and `switchyard emulator ...`: the local stack.

The main command line (switchyard/cli.py) loads this sub-app when one of its commands is used;
`python -m switchyard.stack.cli` runs it on its own.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from switchyard.checkout import default_state_dir
from switchyard.stack.state import DEFAULT_FLEET_FILE, DEFAULT_PORT, StackError, StackPaths, plain_http_api_trust

if TYPE_CHECKING:
    from switchyard.stack.up import UpOptions

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the stack keeps its state (default: $SWITCHYARD_STATE_DIR or .state in the repository).",
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(help=f"Port of the Prefect server and UI (default {DEFAULT_PORT}, or a free one if it is taken)."),
]
FleetOption = Annotated[
    Path | None,
    typer.Option(help="The fleet file the stack registers as blocks (default deployments/fleet.yaml)."),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="The Prefect server's database: sqlite (default) or postgresql (a PostgreSQL server of the "
        "stack's own, from Debian's package). Default: what the running stack uses.",
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SWITCHYARD_DATABASE_URL",
        show_envvar=True,
        show_default=False,
        help="A PostgreSQL of your own: postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB. Prefer the "
        "environment variable (argv is visible to every user); the password is kept only in a 0600 pgpass file.",
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="The emulator's timing: fast (second-scale metrics, the default) or azure (Azure's: one-minute "
        "metric grains published late, logs minutes late, slow gateway and scale-set writes, Resource "
        "Manager's request throttling). Default: what the running emulator uses.",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Process workers on the work pool (default: as many as run now, else 1).",
    ),
]
WorkerLimitOption = Annotated[
    int | None,
    typer.Option(
        "--worker-limit",
        min=0,
        help="Flow runs each worker runs at once (prefect worker start --limit); 0: no limit. A limit spreads "
        "runs over the workers. Default: as the running workers do, else no limit.",
    ),
]


def up_options(
    state_dir: Path | None,
    port: int | None,
    fleet: Path | None,
    database: str | None,
    database_url: str | None,
    workers: int | None,
    worker_limit: int | None = None,
    redeploy: bool = False,
    profile: str | None = None,
) -> UpOptions:
    """The options of `up` (and of the demo, which brings the stack up first), checked."""
    from pydantic import SecretStr

    from switchyard.stack.up import UpOptions

    if database not in (None, "sqlite", "postgresql"):
        raise typer.BadParameter(
            f"{database!r} is not a database switchyard runs: sqlite or postgresql", param_hint="--database"
        )
    if profile not in (None, "fast", "azure"):
        raise typer.BadParameter(f"{profile!r} is not an emulator profile: fast or azure", param_hint="--profile")
    return UpOptions(
        state_dir=state_dir or default_state_dir(),
        profile=profile,  # type: ignore[arg-type]
        port=port,
        fleet_file=fleet or DEFAULT_FLEET_FILE,
        redeploy=redeploy,
        database="external" if database_url else database,  # type: ignore[arg-type]
        database_url=SecretStr(database_url) if database_url else None,
        workers=workers,
        worker_limit=worker_limit,
    )


def use_local_stack() -> None:
    """Talk to the local stack's Prefect server when it runs and no other API was chosen."""
    paths = StackPaths(state_dir=default_state_dir())
    if os.environ.get("PREFECT_API_URL") or not paths.stack_file.is_file():
        return
    try:
        api_url = json.loads(paths.stack_file.read_text())["prefect_api_url"]
    except (ValueError, KeyError):
        return
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.update(plain_http_api_trust(paths, api_url))


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


app = typer.Typer(no_args_is_help=True, help="The local stack: emulator, Prefect server and UI, worker.")


@app.command()
def up(
    state_dir: StateDirOption = None,
    port: PortOption = None,
    fleet: FleetOption = None,
    database: DatabaseOption = None,
    database_url: DatabaseUrlOption = None,
    workers: WorkersOption = None,
    worker_limit: WorkerLimitOption = None,
    profile: ProfileOption = None,
    redeploy: Annotated[
        bool,
        typer.Option(help="Run `prefect deploy --all` even if every deployment exists (after editing prefect.yaml)."),
    ] = False,
) -> None:
    """Start the local stack: the Azure emulator, a Prefect server with its UI (on SQLite or
    PostgreSQL), the blocks, the fleet's services' topologies, the deployments and the workers.
    Running it again keeps what runs."""
    from switchyard.stack.up import up as start_stack

    started = time.monotonic()
    options = up_options(state_dir, port, fleet, database, database_url, workers, worker_limit, redeploy, profile)
    try:
        state = start_stack(options, echo=typer.echo)
    except (StackError, ValueError) as error:  # FleetError is a ValueError with the file named
        _fail(f"switchyard up failed: {error}")
        return
    typer.echo(f"up in {time.monotonic() - started:.1f} s; `switchyard down` stops it. Open {state.ui_url}")


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop everything `switchyard up` started (and what those processes started), nothing else."""
    from switchyard.stack.up import down as stop_stack

    try:
        stop_stack(state_dir or default_state_dir(), echo=typer.echo)
    except StackError as error:
        _fail(f"switchyard down failed: {error}")


@app.command("ui-url")
def ui_url(state_dir: StateDirOption = None) -> None:
    """Print the Prefect UI address of the running local stack."""
    from switchyard.stack.up import current_stack

    try:
        state = current_stack(state_dir or default_state_dir())
    except StackError as error:
        _fail(str(error))
        return
    if state is None:
        _fail("the local stack is not running: start it with `switchyard up`")
        return
    typer.echo(state.ui_url)


if __name__ == "__main__":
    app()
