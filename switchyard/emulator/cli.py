"""`switchyard emulator ...` (placeholder until the control plane lands)."""

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def start() -> None:
    """Run the emulator in the foreground."""
    raise typer.Exit(2)
