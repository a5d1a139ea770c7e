"""`switchyard ...`: the command line."""

from __future__ import annotations

import typer

from switchyard.emulator.cli import app as emulator_app

app = typer.Typer(no_args_is_help=True, help="Immutable VM image delivery to Azure scale sets, on Prefect.")
app.add_typer(emulator_app, name="emulator", help="The local Azure emulator.")


if __name__ == "__main__":
    app()
