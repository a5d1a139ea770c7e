"""`switchyard demo`: bring the local stack up and run the demo on it (switchyard/demo/run.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from switchyard.stack.cli import (
    DatabaseOption,
    DatabaseUrlOption,
    FleetOption,
    PortOption,
    StateDirOption,
    WorkerLimitOption,
    WorkersOption,
    up_options,
)

app = typer.Typer(help="The demo on the local stack.")


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
    rate: Annotated[float, typer.Option(help="Steady synthetic traffic, requests per second.")] = 120.0,
    state_dir: StateDirOption = None,
    fleet: FleetOption = None,
    port: PortOption = None,
    database: DatabaseOption = None,
    database_url: DatabaseUrlOption = None,
    workers: WorkersOption = None,
    worker_limit: WorkerLimitOption = None,
) -> None:
    """Bring the local stack up, then under steady traffic: release the sample's v1, a good v2 by canary
    (after its expand migration), flip a feature flag on and off, and a v3 with 20% errors that is rolled
    back automatically; then release the second service, catalog. The stack keeps running for the UI."""
    from switchyard.checkout import REPO_ROOT
    from switchyard.stack.state import StackError, StackPaths
    from switchyard.stack.up import up as start_stack

    options = up_options(state_dir, port, fleet, database, database_url, workers, worker_limit)
    try:
        state = start_stack(options, echo=typer.echo)
    except (StackError, ValueError) as error:
        _fail(f"switchyard demo: the local stack did not come up: {error}")
        return
    os.environ["SWITCHYARD_STATE_DIR"] = state.state_dir
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from switchyard.demo.run import run_demo

    paths = StackPaths(state_dir=Path(state.state_dir))
    with temporary_settings(updates={PREFECT_API_URL: state.prefect_api_url, PREFECT_HOME: str(paths.prefect_home)}):
        try:
            report = run_demo(REPO_ROOT, rate=rate, say=typer.echo)
        except Exception as error:
            if as_json:
                _emit_json({"error": str(error), "type": type(error).__name__})
            _fail(f"switchyard demo failed: {error}")
            return
    typer.echo("")
    typer.echo(report.text())
    typer.echo("")
    typer.echo(f"The runs, their summaries and events are in the Prefect UI: {state.ui_url}")
    typer.echo("`switchyard down` stops the stack.")
    if as_json:
        _emit_json(report.model_dump(mode="json"))


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _emit_json(payload: dict[str, object]) -> None:
    sys.stdout.flush()
    typer.echo(json.dumps(payload, default=str))
