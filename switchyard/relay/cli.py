"""`switchyard relay`: run the merge-webhook relay (switchyard/relay/app.py) in the foreground.

The main command line loads this sub-app when `relay` is used; it also runs on its own:
`python -m switchyard.relay.cli --port 8765`.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from switchyard.checkout import REPO_ROOT
from switchyard.relay.config import RelayConfig, RelaySetupError, load_secret


def _prefect_api_url() -> str:
    """The relay only makes sense against a real Prefect server: refuse the ephemeral fallback."""
    from switchyard.stack.cli import use_local_stack

    use_local_stack()  # the local stack's server when it runs and nothing else was chosen (before Prefect loads)
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RelaySetupError(
            "no Prefect API to send events to: set PREFECT_API_URL (or start the local stack with `switchyard up`)"
        )
    return str(url)


app = typer.Typer(help="The merge-webhook relay: signed Git merges (GitHub, GitLab) -> Prefect merge events.")


@app.command()
def relay(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(help="Relay configuration (YAML): branch, repositories -> services. Default: this checkout."),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="File holding the webhook secret (default: $SWITCHYARD_RELAY_SECRET[_FILE])."),
    ] = None,
) -> None:
    """Relay Git merges (GitHub pushes, GitLab pushes and merged merge requests, or the generic shape) to Prefect
    as switchyard.git.merged events."""
    import uvicorn

    from switchyard.relay.app import MergeRelay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        secret = load_secret(secret_file)
        routing = RelayConfig.load(config) if config else RelayConfig.for_checkout(REPO_ROOT)
        api_url = _prefect_api_url()
    except RelaySetupError as error:
        typer.secho(f"relay not started: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections whose socket says TCP (no Nagle stalls).
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        typer.secho(
            f"relay not started: cannot listen on {host}:{port}: {error.strerror}", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(2) from None
    listener.listen(128)
    bound = listener.getsockname()[1]
    routes = ", ".join(f"{name}: {sorted(r.services)}" for name, r in routing.repositories.items())
    typer.echo(f"switchyard relay listening on http://{host}:{bound} (refs/heads/{routing.branch}; {routes})")
    typer.echo(
        "  POST /webhooks/github (GitHub push), /webhooks/gitlab (GitLab push, merged merge request), "
        f"/webhooks/merge (generic); events go to {api_url}, duplicates looked up there for "
        f"{routing.replay_window_days:g} days"
    )
    server = uvicorn.Server(
        uvicorn.Config(MergeRelay(routing, secret).app(), log_level="info", access_log=True, lifespan="off")
    )
    server.run(sockets=[listener])


if __name__ == "__main__":
    app()
