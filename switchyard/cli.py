"""`switchyard ...`: the command line.

Commands that run a flow run it in this process against the Prefect API in use: the local stack's
(`switchyard up`), PREFECT_API_URL's, or Prefect's own ephemeral one. Blocks missing from that
API are first registered from deployments/fleet.yaml (existing ones are never overwritten).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from switchyard.emulator.cli import app as emulator_app

app = typer.Typer(no_args_is_help=True, help="Immutable VM image delivery to Azure scale sets, on Prefect.")
app.add_typer(emulator_app, name="emulator", help="The local Azure emulator.")
image_app = typer.Typer(no_args_is_help=True, help="Images: build, scan, publish.")
app.add_typer(image_app, name="image")
fleet_app = typer.Typer(no_args_is_help=True, help="The fleet: services and environments as Prefect blocks.")
app.add_typer(fleet_app, name="fleet")


def _use_local_stack() -> None:
    """Talk to the local stack's Prefect server when it runs and nothing else was chosen."""
    from deployments.local_stack import default_state_dir

    stack_file = default_state_dir() / "stack.json"
    if os.environ.get("PREFECT_API_URL") or not stack_file.is_file():
        return
    try:
        api_url = json.loads(stack_file.read_text())["prefect_api_url"]
    except (ValueError, KeyError):
        return
    os.environ["PREFECT_API_URL"] = api_url


def _apply_fleet(quiet: bool = True) -> list[str]:
    from deployments.fleet import load_fleet, seed_blocks

    created = asyncio.run(seed_blocks(load_fleet()))
    if created and not quiet:
        for name in created:
            typer.echo(f"registered block {name}")
    return created


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.flush()
    typer.echo(json.dumps(payload, default=str))


@fleet_app.command("apply")
def fleet_apply() -> None:
    """Register deployments/fleet.yaml's services, environments and policies as blocks (missing ones only)."""
    _use_local_stack()
    created = _apply_fleet(quiet=False)
    typer.echo(f"{len(created)} block(s) registered; existing blocks were left as they are")


@image_app.command("build")
def image_build(
    service: Annotated[str, typer.Argument(help="A service of the fleet, e.g. sample.")],
    app_version: Annotated[str, typer.Option("--app-version", help="The app's version, MAJOR.MINOR.PATCH.")],
    base: Annotated[str | None, typer.Option(help="Base image (default: the service's).")] = None,
    environment: Annotated[str, typer.Option("--env", help="Environment whose gallery receives the image.")] = (
        "staging"
    ),
    force: Annotated[bool, typer.Option(help="Rebuild even if identical inputs were published.")] = False,
    git_commit: Annotated[str | None, typer.Option(help="Commit to record (default: the app's checkout).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Build, scan and publish an image of SERVICE (runs the image-pipeline flow)."""
    _use_local_stack()
    _apply_fleet()
    from flows.image_pipeline import image_pipeline

    try:
        published = image_pipeline(
            service=service,
            app_version=app_version,
            base=base,
            environment=environment,
            force=force,
            git_commit=git_commit,
        )
    except Exception as error:  # the flow's own error names what failed (findings, versions, ...)
        if as_json:
            _emit_json({"error": str(error), "type": type(error).__name__})
        _fail(f"image build failed: {error}")
        return
    typer.echo(
        f"{'reused' if published.reused else 'published'} {published.service} {published.gallery_version} "
        f"({published.base}, patch {published.patch_level}, app {published.app_version})"
    )
    if as_json:
        _emit_json(published.model_dump())


@app.command()
def provision(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
) -> None:
    """Create or update SERVICE's topology in an environment (runs the provision flow)."""
    _use_local_stack()
    _apply_fleet()
    from flows.provision import provision as provision_flow

    try:
        live = provision_flow(service=service, environment=environment)
    except Exception as error:
        _fail(f"provision failed: {error}")
        return
    typer.echo(f"{service} in {environment} is provisioned; production routes to {live}")


@app.command()
def release(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    image: Annotated[str, typer.Option("--image", help="Gallery version to release.")],
    strategy: Annotated[str | None, typer.Option(help="canary or blue-green (default: the policy's).")] = None,
    policy: Annotated[str, typer.Option(help="Release policy block.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Release an image of SERVICE to an environment (runs the release flow)."""
    _use_local_stack()
    _apply_fleet()
    from flows.release import release as release_flow
    from switchyard.core.rollout import Strategy

    chosen = Strategy(strategy) if strategy else None
    try:
        summary = release_flow(
            service=service, environment=environment, image_version=image, strategy=chosen, policy=policy
        )
    except Exception as error:
        if as_json:
            _emit_json({"outcome": "failed", "error": str(error)})
        _fail(f"release failed: {error}")
        return
    typer.echo(f"{service} {image} in {environment}: {summary.outcome}")
    if as_json:
        _emit_json(summary.model_dump(mode="json", exclude={"analyses"}))


@app.command()
def rollback(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the run and the event).")] = "requested by a person",
) -> None:
    """Put all of SERVICE's traffic back on the stable color (runs the rollback flow)."""
    _use_local_stack()
    _apply_fleet()
    from flows.rollback import rollback as rollback_flow

    try:
        report = rollback_flow(service=service, environment=environment, reason=reason)
    except Exception as error:
        _fail(f"rollback failed: {error}")
        return
    typer.echo(report.action)


@app.command()
def status(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Live color, the image on each color, the current split and health, read from the cloud."""
    _use_local_stack()
    _apply_fleet()
    from switchyard.core.status import service_status
    from tasks.context import ServiceContext, cloud_for, load_environment, load_service

    try:
        config = load_service(service)
        config.ports_in(environment)
        context = ServiceContext(environment=load_environment(environment), service=config)
        report = service_status(cloud_for(context).observe(context.topology))
    except Exception as error:
        _fail(f"status failed: {error}")
        return
    typer.echo(report.text())
    if as_json:
        _emit_json(report.model_dump(mode="json"))


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
    rate: Annotated[float, typer.Option(help="Steady synthetic traffic, requests per second.")] = 120.0,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="The local stack's state (default: $SWITCHYARD_STATE_DIR or .state)."),
    ] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(help="The fleet file the stack registers as blocks (default deployments/fleet.yaml)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port of the Prefect server and UI (default 4200, or a free one if it is taken)."),
    ] = None,
) -> None:
    """Bring the local stack up, then under steady traffic: release v1, a good v2 by canary, and a v3
    with 20% errors that is rolled back automatically. The stack keeps running for the UI."""
    from deployments.demo import run_demo
    from deployments.local_stack import (
        DEFAULT_FLEET_FILE,
        REPO_ROOT,
        StackError,
        StackPaths,
        UpOptions,
        default_state_dir,
    )
    from deployments.local_stack import up as start_stack

    options = UpOptions(state_dir=state_dir or default_state_dir(), port=port, fleet_file=fleet or DEFAULT_FLEET_FILE)
    try:
        state = start_stack(options, echo=typer.echo)
    except (StackError, ValueError) as error:
        _fail(f"switchyard demo: the local stack did not come up: {error}")
        return
    os.environ["SWITCHYARD_STATE_DIR"] = state.state_dir
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

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


def _mount_edge_commands() -> None:
    """Commands whose code lives with the local stack and the relay (deployments/)."""
    from deployments.relay_cli import relay
    from deployments.stack_cli import down, ui_url, up

    app.command("relay", help="Run the merge-webhook relay: signed Git pushes -> Prefect merge events.")(relay)
    app.command()(up)
    app.command()(down)
    app.command("ui-url")(ui_url)


_mount_edge_commands()

if __name__ == "__main__":
    app()
