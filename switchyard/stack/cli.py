"""`switchyard up`, `switchyard down` and `switchyard ui-url`: the local stack from the command line.

switchyard/cli.py mounts these functions (`app.command()(up)` ...); `python -m deployments.stack_cli`
runs them on their own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from deployments.local_stack import (
    DEFAULT_FLEET_FILE,
    DEFAULT_PORT,
    StackError,
    UpOptions,
    current_stack,
    default_state_dir,
)
from deployments.local_stack import down as stop_stack
from deployments.local_stack import up as start_stack

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the stack keeps its state (default: $SWITCHYARD_STATE_DIR or .state in the repository).",
    ),
]


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def up(
    state_dir: StateDirOption = None,
    port: Annotated[
        int | None,
        typer.Option(help=f"Port of the Prefect server and UI (default {DEFAULT_PORT}, or a free one if it is taken)."),
    ] = None,
    fleet: Annotated[Path, typer.Option(help="The fleet file to register as blocks.")] = DEFAULT_FLEET_FILE,
    redeploy: Annotated[
        bool,
        typer.Option(help="Run `prefect deploy --all` even if every deployment exists (after editing prefect.yaml)."),
    ] = False,
) -> None:
    """Start the local stack: the Azure emulator, a Prefect server with its UI, the blocks, the sample
    service's topologies, the deployments and a worker. Running it again keeps what runs."""
    started = time.monotonic()
    options = UpOptions(state_dir=state_dir or default_state_dir(), port=port, fleet_file=fleet, redeploy=redeploy)
    try:
        state = start_stack(options, echo=typer.echo)
    except (StackError, ValueError) as error:  # FleetError is a ValueError with the file named
        _fail(f"switchyard up failed: {error}")
        return
    typer.echo(f"up in {time.monotonic() - started:.1f} s; `switchyard down` stops it. Open {state.ui_url}")


def down(state_dir: StateDirOption = None) -> None:
    """Stop everything `switchyard up` started (and what those processes started), nothing else."""
    try:
        stop_stack(state_dir or default_state_dir(), echo=typer.echo)
    except StackError as error:
        _fail(f"switchyard down failed: {error}")


def ui_url(state_dir: StateDirOption = None) -> None:
    """Print the Prefect UI address of the running local stack."""
    try:
        state = current_stack(state_dir or default_state_dir())
    except StackError as error:
        _fail(str(error))
        return
    if state is None:
        _fail("the local stack is not running: start it with `switchyard up`")
        return
    typer.echo(state.ui_url)


app = typer.Typer(no_args_is_help=True, help="The local stack: emulator, Prefect server and UI, worker.")
app.command()(up)
app.command()(down)
app.command("ui-url")(ui_url)

if __name__ == "__main__":
    app()
